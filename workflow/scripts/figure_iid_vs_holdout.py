"""Rule figure_iid_vs_holdout: MMD of each holdout under the i.i.d. and the held-out model."""

import pandas as pd

from perturbot.logs import log_to_file
from perturbot.plotting import iid_vs_holdout, save_figure

log_to_file(snakemake.log[0])
metrics = pd.read_csv(snakemake.input[0])
figure = iid_vs_holdout(metrics, kinds=snakemake.params.kinds, title=snakemake.wildcards.experiment)
save_figure(figure, snakemake.output.pdf)
