"""Rule statistics: rank-sum tests between models from the metrics table."""

import pandas as pd

from perturbot.logs import log_to_file
from perturbot.statistics import rank_sum_table

log_to_file(snakemake.log[0])
rank_sum_table(pd.read_csv(snakemake.input[0])).to_csv(snakemake.output[0], index=False)
