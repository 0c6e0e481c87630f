"""Rule statistics: tests between every pair of models from the metrics table (BH-adjusted)."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from perturbot.atomic import remove_stale_outputs, write_csv
from perturbot.logs import log_job
from perturbot.statistics import model_tests
from perturbot.tables import read_metrics

log_job(snakemake)
remove_stale_outputs(*snakemake.output)
write_csv(model_tests(read_metrics(snakemake.input[0]), test=snakemake.params.test), snakemake.output[0], index=False)
