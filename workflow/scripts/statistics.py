"""Rule statistics: tests between every pair of models from the metrics table (BH-adjusted)."""

from perturbot.logs import log_to_file
from perturbot.statistics import model_tests
from perturbot.tables import read_metrics

log_to_file(snakemake.log[0])
model_tests(read_metrics(snakemake.input[0]), test=snakemake.params.test).to_csv(snakemake.output[0], index=False)
