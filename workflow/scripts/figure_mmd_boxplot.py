"""Rule figure_mmd_boxplot: MMD, L2 and R² of means per model, with the stars of statistics.csv."""

import pandas as pd

from perturbot.logs import log_to_file
from perturbot.plotting import mmd_boxplot, save_figure

log_to_file(snakemake.log[0])
metrics = pd.read_csv(snakemake.input.metrics)
statistics = pd.read_csv(snakemake.input.statistics)
setting = metrics["setting"].iloc[0]
title = f"{snakemake.wildcards.experiment} ({setting})"
figure = mmd_boxplot(metrics, statistics, kinds=snakemake.params.kinds, title=title)
save_figure(figure, snakemake.output.pdf)
