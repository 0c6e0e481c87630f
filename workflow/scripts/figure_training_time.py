"""Rule figure_training_time: the neural OT models' training time against dimension."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

from perturbot.logs import log_job
from perturbot.plotting import save_figure, training_runs, training_time

log_job(snakemake)
runs = training_runs([Path(p).parent for p in snakemake.input])
save_figure(training_time(runs, snakemake.params.models), snakemake.output.pdf)
