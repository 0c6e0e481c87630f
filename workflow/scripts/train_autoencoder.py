"""Rule train_autoencoder: a shared autoencoder, keyed by the data and settings it is trained on."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

from perturbot.atomic import remove_stale_outputs, write_json
from perturbot.experiment import train_autoencoder
from perturbot.logs import log_job
from perturbot.provenance import job_environment

log_job(snakemake)
run = snakemake.params.run
out_dir = Path(snakemake.output.model).parent
remove_stale_outputs(*snakemake.output, within=out_dir)  # what a killed run of this job left
train_autoencoder(
    Path(snakemake.input.data) / f"{run['holdout']}.h5ad",
    out_dir,
    params=run["key"]["autoencoder"],
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    checkpoint=snakemake.params.checkpoint,
    threads=snakemake.threads,
)
# what this autoencoder was trained on, for people reading results/autoencoders/
write_json(out_dir / "trained_on.json", run, indent=1, default=str)
write_json(snakemake.output.environment, job_environment(), indent=1)  # the packages this job ran with
