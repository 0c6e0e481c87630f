"""Rule aggregate_metrics: one long-format metrics table per experiment."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

from perturbot.atomic import is_temporary, remove_stale_outputs
from perturbot.tables import aggregate_metrics
from perturbot.logs import log_job

log_job(snakemake)
remove_stale_outputs(*snakemake.output)
# one directory per (holdout, run) prediction job, one table per perturbation inside
tables = sorted(p for d in snakemake.input for p in Path(d).glob("*.csv") if not is_temporary(p))
aggregate_metrics(tables, snakemake.output[0])
