"""Rule figure_toy_maps: every model on every 2-D data set, from the saved mapped points."""

from pathlib import Path

import pandas as pd

from perturbot.logs import log_to_file
from perturbot.plotting import save_figure, toy_maps

log_to_file(snakemake.log[0])
maps = {(Path(p).parts[-3], Path(p).parts[-2]): pd.read_csv(p) for p in snakemake.input}
save_figure(toy_maps(maps, seed=snakemake.params.seed), snakemake.output.pdf)
