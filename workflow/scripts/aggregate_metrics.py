"""Rule aggregate_metrics: one long-format metrics table per experiment."""

from perturbot.tables import aggregate_metrics
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
aggregate_metrics(snakemake.params.files, snakemake.output[0])
