"""Rule figure_w1ot_group_size: the benchmark's metrics against W1-OT's GroupSort group count."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

import pandas as pd

from perturbot.logs import log_job
from perturbot.plotting import save_figure, w1ot_group_size

log_job(snakemake)
save_figure(w1ot_group_size(pd.read_csv(snakemake.input[0])), snakemake.output.pdf)
