"""Rule figure_toy_maps: every model on every 2-D data set, from the saved mapped points."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

from perturbot.logs import log_job
from perturbot.plotting import save_figure, toy_maps
from perturbot.tables import read_table

log_job(snakemake)
maps = {(Path(p).parts[-3], Path(p).parts[-2]): read_table(p, ["set"], ["x", "y", "tx", "ty"]) for p in snakemake.input}
save_figure(toy_maps(maps, seed=snakemake.params.seed), snakemake.output.pdf)
