"""Rule job_resources: every training job's wall time, CPU time and peak memory."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

from perturbot.atomic import remove_stale_outputs, write_csv
from perturbot.logs import log_job
from perturbot.plotting import job_resources

log_job(snakemake)
remove_stale_outputs(*snakemake.output)
write_csv(job_resources([Path(p).parent / "benchmark.tsv" for p in snakemake.input]), snakemake.output[0], index=False)
