"""Rule figure_umap: observed perturbed and predicted cells of one perturbation in one joint UMAP."""

from pathlib import Path

import anndata as ad
import numpy as np

from perturbot.cells import evaluation_target, model_input
from perturbot.logs import log_to_file
from perturbot.plotting import changing_features, joint_embedding, joint_umap, model_order, save_figure
from perturbot.plotting.embedding import CONTROL, OBSERVED

log_to_file(snakemake.log[0])
options = snakemake.params.figures
perturbation = snakemake.params.perturbation
kinds = snakemake.params.kinds
data = ad.read_h5ad(Path(snakemake.input.data) / f"{snakemake.params.holdout}.h5ad")
info = data.uns["perturbot"]
control = np.asarray(model_input(data).X)
observed = np.asarray(evaluation_target(data, perturbation))
predicted = {}
for path in snakemake.input.predictions:
    pred = ad.read_h5ad(path)
    predicted[pred.obs["model"].iloc[0]] = np.asarray(pred.X)
# identity's prediction is the control cells, embedded once as control
models = [m for m in model_order(predicted, kinds) if kinds[m] != "identity"]
blocks = {CONTROL: control, OBSERVED: observed, **{m: predicted[m] for m in models}}
frame, cells = joint_embedding(blocks, max_cells=options["umap_max_cells"], seed=snakemake.params.seed)
feature = None
if info["recipe"]["modality"] == "features":
    name = options.get("umap_feature") or changing_features(control, observed, list(data.var_names), 1)[0]
    feature = (name, cells[:, list(data.var_names).index(name)])
title = f"{snakemake.wildcards.experiment}: {perturbation} (holdout {snakemake.params.holdout})"
save_figure(joint_umap(frame, models, feature=feature, kinds=kinds, title=title), snakemake.output.pdf)
