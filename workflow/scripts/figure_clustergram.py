"""Rule figure_clustergram: mean transport cost per perturbation and control cell state, clustered."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

import anndata as ad
import pandas as pd

from perturbot.atomic import remove_stale_outputs, write_csv
from perturbot.cell_states import mean_cost_by_state
from perturbot.logs import log_job
from perturbot.plotting import clustergram, save_figure

log_job(snakemake)
remove_stale_outputs(snakemake.output.table)
states = pd.read_csv(snakemake.input.states, index_col="cell", dtype={"cell": str}, keep_default_na=False)["state"]
costs = []
for path in snakemake.params.predictions:
    obs = ad.read_h5ad(path, backed="r").obs
    costs.append(pd.DataFrame({"cell": obs.index.astype(str), "perturbation": obs["perturbation"], "transport_cost": obs["transport_cost"]}))
table = mean_cost_by_state(pd.concat(costs, ignore_index=True), states)
write_csv(table, snakemake.output.table)
model = snakemake.params.label  # the run's label, as its predictions carry it
title = f"{snakemake.wildcards.experiment}: transport cost of {model} (holdout {snakemake.params.holdout})"
figure = clustergram(table, states.value_counts(), model=model, kinds=snakemake.params.kinds, title=title)
save_figure(figure, snakemake.output.pdf)
