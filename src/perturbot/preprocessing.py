"""Preparation of one (experiment, holdout): subsample, split, normalise, select genes, rank markers.

Gene selection and marker genes use the training split only, so nothing about
the test cells leaks into what the models see. The recipe is recorded in
``uns['perturbot']`` so that new cells can be prepared exactly the same way
(:mod:`perturbot.predict`).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
from scipy import sparse

from perturbot.markers import marker_table, stored_markers
from perturbot.splits import assign_splits, subsample_per_condition

TARGET_SUM = 1e4


def normalize_log1p(adata: ad.AnnData) -> None:
    """Library-size normalisation to TARGET_SUM counts per cell, then log1p (in place)."""
    import scanpy as sc  # scanpy's import costs seconds; jobs on feature data never need it

    sc.pp.normalize_total(adata, target_sum=TARGET_SUM)
    sc.pp.log1p(adata)


def training_hvgs(adata: ad.AnnData, n_hvg: int) -> list[str]:
    """Top highly variable genes, computed on the training cells only (log data)."""
    import scanpy as sc

    train = adata[adata.obs["split"] == "train"].copy()
    n = min(n_hvg, adata.n_vars)
    if n >= adata.n_vars:
        return list(adata.var_names)
    sc.pp.highly_variable_genes(train, n_top_genes=n, flavor="seurat")
    return list(train.var_names[train.var["highly_variable"].to_numpy()])


def training_markers(
    adata: ad.AnnData, condition_key: str, control: str, perturbations: list[str], n_markers: int
) -> dict[str, list[str]]:
    """Top marker genes per perturbation vs control (scanpy rank_genes_groups, Wilcoxon) on the training split."""
    import scanpy as sc

    train = adata[adata.obs["split"] == "train"].copy()
    sc.tl.rank_genes_groups(
        train,
        groupby=condition_key,
        groups=perturbations,
        reference=control,
        method="wilcoxon",
        n_genes=min(n_markers, adata.n_vars),
    )
    names = train.uns["rank_genes_groups"]["names"]
    return {p: [str(g) for g in names[p]] for p in perturbations}


def prepare(
    adata: ad.AnnData,
    *,
    perturbations: list[str],
    condition_key: str,
    control: str,
    modality: str,
    setting: str = "iid",
    holdout_key: str | None = None,
    holdout: str = "all",
    test_fraction: float = 0.2,
    min_cells: int = 10,
    n_hvg: int = 1000,
    n_markers: int = 50,
    max_cells: int | None = None,
    seed: int = 0,
    companion: bool = False,
) -> ad.AnnData:
    """Return the prepared AnnData: dense float32 X, ``obs['split']``, ``obs['reference']``, markers, recipe."""
    keep = subsample_per_condition(adata.obs, condition_key, max_cells, seed)
    adata = adata[keep].copy()
    splits = assign_splits(
        adata.obs,
        condition_key=condition_key,
        control=control,
        perturbations=perturbations,
        setting=setting,
        holdout_key=holdout_key,
        holdout=None if setting == "iid" else holdout,
        test_fraction=test_fraction,
        min_cells=min_cells,
        seed=seed,
        companion=companion,
    )
    adata.obs["split"] = splits["split"]
    adata.obs["reference"] = splits["reference"]
    recipe = {"modality": modality, "normalize_total": None, "log1p": False}
    if modality == "counts":
        normalize_log1p(adata)
        recipe.update(normalize_total=TARGET_SUM, log1p=True)
    markers: dict[str, list[str]] = {}
    stored: dict[str, list[str]] = {}
    if modality in ("counts", "expression"):
        genes = training_hvgs(adata, n_hvg)
        adata = adata[:, genes].copy()
        markers = training_markers(adata, condition_key, control, perturbations, n_markers)
        stored = stored_markers(adata, condition_key, perturbations, n_markers)  # the authors' ranking, if any
    for key in list(adata.varm):
        del adata.varm[key]
    if sparse.issparse(adata.X):
        adata.X = adata.X.toarray()
    adata.X = np.asarray(adata.X, dtype=np.float32)
    recipe["genes"] = list(adata.var_names)
    adata.uns["perturbot"] = {
        "condition_key": condition_key,
        "control": control,
        "perturbations": list(perturbations),
        "setting": "iid" if companion else setting,
        "holdout_key": holdout_key or "",
        "holdout": holdout,
        "recipe": recipe,
        "markers": marker_table(markers),  # a table, not a dict keyed by name: any name survives the .h5ad
        "stored_markers": marker_table(stored),
        "n_markers": n_markers,
    }
    if "pseudo_perturbation" in adata.uns:
        adata.uns["perturbot"]["pseudo_perturbation"] = adata.uns.pop("pseudo_perturbation")
    adata.uns.pop("log1p", None)
    return adata
