"""Rule figure_mmd_boxplot."""

import pandas as pd

from perturbot.logs import log_to_file
from perturbot.plotting import mmd_boxplot, save_figure

log_to_file(snakemake.log[0])
metrics = pd.read_csv(snakemake.input[0])
save_figure(mmd_boxplot(metrics, title=snakemake.wildcards.experiment), snakemake.output.pdf)
