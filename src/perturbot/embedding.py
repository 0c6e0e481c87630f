"""Joint UMAP embeddings of control, observed and predicted cells.

Computed once by a tool rule (``umap_embeddings``) and only drawn by the
figure (:func:`perturbot.plotting.joint_umap`), so restyling a figure never
re-embeds. The embedding is an AnnData, as scanpy writes it: the embedded
cells in ``X``, where each came from in ``obs['origin']``, the coordinates in
``obsm['X_umap']``.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

CONTROL = "control"
OBSERVED = "observed perturbed"


def joint_embedding(blocks: dict[str, np.ndarray], *, max_cells: int = 500, n_pcs: int = 50, seed: int = 0) -> ad.AnnData:
    """UMAP of several populations embedded together (scanpy ``pp.neighbors`` + ``tl.umap``).

    Each block is subsampled to at most ``max_cells`` rows (seeded); data wider
    than ``n_pcs`` are reduced by PCA first.
    """
    import scanpy as sc  # scanpy (and numba's compilation) only where an embedding is computed

    from perturbot.jit_cache import cache_umap_compilation

    cache_umap_compilation()  # umap's JIT code compiled once per machine, not once per job

    rng = np.random.default_rng(seed)
    origins, cells = [], []
    for name, x in blocks.items():
        x = np.asarray(x, dtype=np.float32)
        keep = np.sort(rng.choice(len(x), size=min(max_cells, len(x)), replace=False))
        origins += [name] * len(keep)
        cells.append(x[keep])
    stacked = np.concatenate(cells)
    adata = ad.AnnData(stacked, obs=pd.DataFrame({"origin": pd.Categorical(origins, categories=list(blocks))},
                                                 index=[str(i) for i in range(len(stacked))]))
    if stacked.shape[1] > n_pcs:
        sc.pp.pca(adata, n_comps=min(n_pcs, stacked.shape[0] - 1, stacked.shape[1] - 1), random_state=seed)
        rep = "X_pca"
    else:
        rep = "X"
    sc.pp.neighbors(adata, n_neighbors=15, use_rep=rep, random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    return adata


def embedding_frame(embedding: ad.AnnData) -> pd.DataFrame:
    """``origin``, ``umap1``, ``umap2`` per embedded cell: what the figure draws."""
    umap = np.asarray(embedding.obsm["X_umap"])
    return pd.DataFrame({"origin": embedding.obs["origin"].astype(str).to_numpy(), "umap1": umap[:, 0], "umap2": umap[:, 1]})


def embedded_models(embedding: ad.AnnData) -> list[str]:
    """The model labels embedded, in the order they were given."""
    return [str(c) for c in embedding.obs["origin"].cat.categories if c not in (CONTROL, OBSERVED)]
