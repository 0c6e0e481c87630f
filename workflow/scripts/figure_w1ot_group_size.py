"""Rule figure_w1ot_group_size: the benchmark's metrics against W1-OT's GroupSort group count."""

import pandas as pd

from perturbot.logs import log_to_file
from perturbot.plotting import save_figure, w1ot_group_size

log_to_file(snakemake.log[0])
save_figure(w1ot_group_size(pd.read_csv(snakemake.input[0])), snakemake.output.pdf)
