"""Rule figure_umap: draw the joint UMAP of one perturbation (computed by rule umap_embeddings)."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

import anndata as ad
import numpy as np

from perturbot.embedding import OBSERVED, embedded_models, embedding_frame
from perturbot.logs import log_job
from perturbot.plotting import changing_features, joint_umap, save_figure

log_job(snakemake)
options = snakemake.params.figures
embedding = ad.read_h5ad(snakemake.params.embedding)
frame = embedding_frame(embedding)
feature = None
if snakemake.params.modality == "features":
    cells, genes = np.asarray(embedding.X), list(embedding.var_names)
    control, observed = cells[frame["origin"] == "control"], cells[frame["origin"] == OBSERVED]
    name = options.get("umap_feature") or changing_features(control, observed, genes, 1)[0]
    feature = (name, cells[:, genes.index(name)])
title = f"{snakemake.wildcards.experiment}: {embedding.uns['perturbation']} (holdout {snakemake.params.holdout})"
save_figure(joint_umap(frame, embedded_models(embedding), feature=feature, kinds=snakemake.params.kinds, title=title), snakemake.output.pdf)
