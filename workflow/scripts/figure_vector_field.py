"""Rule figure_vector_field: mean response on a PCA grid, true response (if known), the OT model and scGen."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

import anndata as ad
import numpy as np

from perturbot.cells import model_input
from perturbot.logs import log_job
from perturbot.plotting import save_figure, vector_field

log_job(snakemake)
data = ad.read_h5ad(Path(snakemake.input.data) / f"{snakemake.params.holdout}.h5ad")
inputs = model_input(data)
control = np.asarray(inputs.X)
model = snakemake.params.label  # the run's label, as its predictions carry it
responses = {p: {} for p in snakemake.params.perturbations}
for p in responses:
    if f"X_true_{p}" in inputs.obsm:
        responses[p]["truth"] = np.asarray(inputs.obsm[f"X_true_{p}"])
for path in snakemake.params.predictions:
    pred = ad.read_h5ad(path)
    if not (pred.obs_names == inputs.obs_names).all():
        raise ValueError(f"{path}: predicted cells are not the holdout's test control cells in order")
    responses[pred.obs["perturbation"].iloc[0]][pred.obs["model"].iloc[0]] = np.asarray(pred.X)
order = ["truth", model] + sorted({m for r in responses.values() for m in r} - {"truth", model})
responses = {p: {m: r[m] for m in order if m in r} for p, r in responses.items()}
title = f"{snakemake.wildcards.experiment}: response in control PCA space (holdout {snakemake.params.holdout})"
figure = vector_field(control, responses, bins=snakemake.params.figures["vector_field_bins"], kinds=snakemake.params.kinds, title=title)
save_figure(figure, snakemake.output.pdf)
