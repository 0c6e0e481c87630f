"""Rule figure_training_time: CellOT and W1-OT training time against dimension."""

from pathlib import Path

from perturbot.logs import log_to_file
from perturbot.plotting import save_figure, training_runs, training_time

log_to_file(snakemake.log[0])
save_figure(training_time(training_runs([Path(p).parent for p in snakemake.input])), snakemake.output.pdf)
