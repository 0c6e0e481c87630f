"""Rule figure_mmd_boxplot: MMD, L2 and R² of means per model, with rank-sum stars."""

import pandas as pd

from perturbot.logs import log_to_file
from perturbot.plotting import mmd_boxplot, save_figure

log_to_file(snakemake.log[0])
metrics = pd.read_csv(snakemake.input[0])
setting = metrics["setting"].iloc[0]
title = f"{snakemake.wildcards.experiment} ({setting})"
save_figure(mmd_boxplot(metrics, kinds=snakemake.params.kinds, title=title), snakemake.output.pdf)
