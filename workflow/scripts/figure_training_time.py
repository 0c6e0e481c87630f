"""Rule figure_training_time: OT training time against dimension, and every training job's resources."""

from pathlib import Path

from perturbot.logs import log_to_file
from perturbot.plotting import job_resources, save_figure, training_runs, training_time

log_to_file(snakemake.log[0])
model_dirs = [Path(p).parent for p in snakemake.input]
job_resources([d / "benchmark.tsv" for d in model_dirs]).to_csv(snakemake.output.table, index=False)
save_figure(training_time(training_runs(model_dirs)), snakemake.output.pdf)
