"""Cell states of control cells (Leiden clusters) and the transport cost each perturbation spends on them.

The CellOT paper asks which cell states a drug moves most: cluster the control
cells on the full feature set, then average each cell's transport cost
‖T(x) − x‖² over the cells of each state.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd


def leiden_states(cells: ad.AnnData, *, resolution: float = 1.0, n_neighbors: int = 15, n_pcs: int = 50, seed: int = 0) -> pd.Series:
    """Leiden cluster of every cell, named ``S0, S1, ...`` by decreasing size, indexed by obs name.

    Features wider than ``n_pcs`` (scRNA-seq genes) are reduced by PCA first;
    imaging features are clustered as they are.
    """
    import scanpy as sc

    from perturbot.jit_cache import cache_umap_compilation

    cache_umap_compilation()  # umap's JIT code compiled once per machine, not once per job

    adata = ad.AnnData(np.asarray(cells.X, dtype=np.float32), obs=pd.DataFrame(index=cells.obs_names.astype(str)))
    rep = "X"
    if adata.n_vars > n_pcs:
        sc.pp.pca(adata, n_comps=min(n_pcs, adata.n_obs - 1, adata.n_vars - 1), random_state=seed)
        rep = "X_pca"
    sc.pp.neighbors(adata, n_neighbors=min(n_neighbors, adata.n_obs - 1), use_rep=rep, random_state=seed)
    sc.tl.leiden(adata, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    raw = adata.obs["leiden"].astype(str)
    rename = {old: f"S{i}" for i, old in enumerate(raw.value_counts().index)}
    return raw.map(rename).rename("state")


def mean_cost_by_state(costs: pd.DataFrame, states: pd.Series) -> pd.DataFrame:
    """Mean transport cost per perturbation (rows) and state (columns).

    ``costs``: one row per (cell, perturbation) with the cell's obs name as
    ``cell``, ``perturbation`` and ``transport_cost``.
    """
    if not states.index.is_unique:  # the merge would count a repeated cell once per repeat
        repeated = states.index[states.index.duplicated()].unique()
        raise ValueError(
            f"cell states name {len(repeated)} cell(s) more than once, e.g. {', '.join(map(repr, repeated[:5]))}: "
            f"cell names must be unique (the data are loaded with unique names: perturbot.data.io.make_names_unique)"
        )
    joined = costs.merge(states.rename("state"), left_on="cell", right_index=True, how="inner")
    if joined.empty:
        raise ValueError("no predicted cell has a cell state: the predictions and the cell states come from different cells")
    table = joined.pivot_table(index="perturbation", columns="state", values="transport_cost", aggfunc="mean")
    order = sorted(table.columns, key=lambda s: int(s[1:]) if s[1:].isdigit() else s)
    return table[order]
