"""Rule job_resources: every training job's wall time, CPU time and peak memory."""

from pathlib import Path

from perturbot.logs import log_to_file
from perturbot.plotting import job_resources

log_to_file(snakemake.log[0])
job_resources([Path(p).parent / "benchmark.tsv" for p in snakemake.input]).to_csv(snakemake.output[0], index=False)
