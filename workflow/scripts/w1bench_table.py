"""Rule w1bench_table: every (dimension, funnels, group count) row in one table."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

import json

import pandas as pd

from perturbot.atomic import write_csv
from perturbot.logs import log_job

log_job(snakemake)
rows = [json.loads(open(path).read()) for path in snakemake.input]
table = pd.DataFrame(rows).sort_values(["dim", "width", "n_groups"])
write_csv(table, snakemake.output[0], index=False)
