"""Rule aggregate_metrics: one long-format metrics table per experiment."""

from perturbot.tables import aggregate_metrics
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
aggregate_metrics(list(snakemake.input), snakemake.output[0])
