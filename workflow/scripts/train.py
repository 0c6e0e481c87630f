"""Rule train: one training job of a model run (every perturbation at once, or one); saves the model and its history."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

from perturbot.atomic import remove_stale_outputs, write_json
from perturbot.experiment import train
from perturbot.logs import log_job
from perturbot.provenance import job_environment

log_job(snakemake)
model_dir = Path(snakemake.output.model).parent
remove_stale_outputs(*snakemake.output, within=model_dir)  # what a killed run of this job left
data = Path(snakemake.input.data) / f"{snakemake.wildcards.holdout}.h5ad"
autoencoder = Path(snakemake.input.autoencoder).parent if snakemake.input.autoencoder else None
train(
    data,
    snakemake.params.spec,
    snakemake.wildcards.job,
    snakemake.params.perturbations,
    model_dir,
    autoencoder_dir=autoencoder,
    checkpoint=snakemake.params.checkpoint,
    threads=snakemake.threads,
)
write_json(snakemake.output.environment, job_environment(), indent=1)  # the packages this job ran with
