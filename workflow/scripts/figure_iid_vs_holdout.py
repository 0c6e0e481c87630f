"""Rule figure_iid_vs_holdout: MMD and energy distance of each holdout under the i.i.d. and the held-out model."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from perturbot.logs import log_job
from perturbot.plotting import iid_vs_holdout, save_figure
from perturbot.tables import read_metrics

log_job(snakemake)
metrics = read_metrics(snakemake.input[0])
figure = iid_vs_holdout(metrics, kinds=snakemake.params.kinds, title=snakemake.wildcards.experiment)
save_figure(figure, snakemake.output.pdf)
