"""Rule provenance: what produced these results."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from perturbot.atomic import remove_stale_outputs, write_json
from perturbot.logs import log_job
from perturbot.provenance import ENVIRONMENT_FILE, job_environments, provenance

log_job(snakemake)
remove_stale_outputs(*snakemake.output)
records = {
    "train_autoencoder": snakemake.input.train_autoencoder,
    "train": snakemake.input.train,
    "predict": [f"{folder}/{ENVIRONMENT_FILE}" for folder in snakemake.input.predict],
}
record = provenance(snakemake.params.config, snakemake.params.code_by_rule, job_environments(records))
write_json(snakemake.output[0], record, indent=2)
