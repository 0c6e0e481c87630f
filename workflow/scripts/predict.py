"""Rule predict: transport the test control cells with one model run and score them, every perturbation."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

from perturbot.atomic import remove_stale_outputs, write_json
from perturbot.experiment import Prediction, predict_and_evaluate
from perturbot.logs import log_job
from perturbot.provenance import ENVIRONMENT_FILE, job_environment

log_job(snakemake)
for folder in snakemake.output:  # what a killed run of this job left in its folders
    remove_stale_outputs(folder, within=folder)
predict_and_evaluate(
    Path(snakemake.input.data) / f"{snakemake.wildcards.holdout}.h5ad",
    snakemake.params.spec,
    [Prediction(p["perturbation"], Path(p["model_dir"]), Path(p["cells"]), Path(p["metrics"])) for p in snakemake.params.predictions],
    experiment=snakemake.wildcards.experiment,
    evaluation=snakemake.params.evaluation,
    threads=snakemake.threads,
)
write_json(Path(snakemake.output.predictions) / ENVIRONMENT_FILE, job_environment(), indent=1)  # the packages it ran with
