"""Rule figure_mmd_boxplot: MMD, energy distance, L2 and R² of means per model, with the stars of statistics.csv."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from perturbot.logs import log_job
from perturbot.plotting import mmd_boxplot, save_figure
from perturbot.tables import read_metrics, read_statistics

log_job(snakemake)
metrics = read_metrics(snakemake.input.metrics)
statistics = read_statistics(snakemake.input.statistics)
setting = metrics["setting"].iloc[0]
title = f"{snakemake.wildcards.experiment} ({setting})"
figure = mmd_boxplot(metrics, statistics, kinds=snakemake.params.kinds, title=title)
save_figure(figure, snakemake.output.pdf)
