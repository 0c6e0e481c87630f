"""Rule umap_embeddings: one joint UMAP of control, observed and predicted cells per drawn perturbation."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

import anndata as ad
import numpy as np

from perturbot.atomic import atomic_path, remove_stale_outputs
from perturbot.cells import evaluation_target, model_input
from perturbot.embedding import CONTROL, OBSERVED, joint_embedding
from perturbot.logs import log_job
from perturbot.plotting.style import model_order

log_job(snakemake)
remove_stale_outputs(*snakemake.output)
kinds = snakemake.params.kinds
data = ad.read_h5ad(Path(snakemake.input.data) / f"{snakemake.params.holdout}.h5ad")
control = np.asarray(model_input(data).X)
with atomic_path(snakemake.output[0]) as out:
    out.mkdir()
    for slug, drawn in snakemake.params.perturbations.items():
        predicted = {}
        for path in drawn["predictions"]:
            pred = ad.read_h5ad(path)
            predicted[pred.obs["model"].iloc[0]] = np.asarray(pred.X)
        # a prediction that is the control cells themselves (identity) is embedded once, as control
        models = [m for m in model_order(predicted, kinds) if not kinds[m]["copies_input"]]
        blocks = {CONTROL: control, OBSERVED: np.asarray(evaluation_target(data, drawn["name"])), **{m: predicted[m] for m in models}}
        embedding = joint_embedding(blocks, max_cells=snakemake.params.max_cells, seed=snakemake.params.seed)
        embedding.var_names = data.var_names
        embedding.uns["perturbation"] = drawn["name"]
        embedding.write_h5ad(out / f"{slug}.h5ad")
