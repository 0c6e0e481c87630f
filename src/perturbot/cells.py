"""Which cells of a prepared (experiment, holdout) AnnData play which role; no torch here.

training source = control cells of the training split; training target = a
perturbation's cells of the training split; model input = control cells of
the test split; evaluation target = a perturbation's test cells not marked
``reference``; observed's prediction = its ``reference`` cells; every model
is scored on :func:`scored_size` of its predicted cells. Figures read
cells through these functions, so their jobs need no deep-learning stack.
"""

from __future__ import annotations

import anndata as ad
import numpy as np


def _info(adata: ad.AnnData) -> dict:
    return adata.uns["perturbot"]


def _mask(adata: ad.AnnData, condition: str, split: str) -> np.ndarray:
    info = _info(adata)
    return ((adata.obs[info["condition_key"]].astype(str) == condition) & (adata.obs["split"] == split)).to_numpy()


def training_source(adata: ad.AnnData) -> np.ndarray:
    return adata.X[_mask(adata, _info(adata)["control"], "train")]


def training_target(adata: ad.AnnData, perturbation: str) -> np.ndarray:
    return adata.X[_mask(adata, perturbation, "train")]


def model_input(adata: ad.AnnData) -> ad.AnnData:
    return adata[_mask(adata, _info(adata)["control"], "test")]


def evaluation_target(adata: ad.AnnData, perturbation: str) -> np.ndarray:
    mask = _mask(adata, perturbation, "test")
    if _info(adata)["setting"] != "iid":
        mask &= ~adata.obs["reference"].to_numpy()
    return adata.X[mask]


def observed_reference(adata: ad.AnnData, perturbation: str) -> np.ndarray:
    info = _info(adata)
    mask = (adata.obs[info["condition_key"]].astype(str) == perturbation).to_numpy() & adata.obs["reference"].to_numpy()
    return adata.X[mask]


def scored_size(adata: ad.AnnData, perturbation: str) -> int:
    """How many predicted cells every model is scored on for ``perturbation``: one number for all models.

    The biased MMD's floor grows as 1/n (docs/metrics.md), so models compare
    fairly only on equal numbers of cells. ``observed`` has only its reference
    cells, never repeated (duplicates would inflate its score), so no model is
    scored on more. A held-out run counts its input as its i.i.d. companion's
    (the holdout's control cells less the half the companion trains on), so the
    two runs of a holdout are scored alike whether or not the companion runs.
    """
    n_input = int(_mask(adata, _info(adata)["control"], "test").sum())
    if _info(adata)["setting"] != "iid":
        n_input -= n_input // 2
    n_reference = len(observed_reference(adata, perturbation))
    if min(n_input, n_reference) < 1:
        raise ValueError(
            f"perturbation {perturbation!r}: nothing to score ({n_input} input cells, {n_reference} reference cells)"
        )
    return min(n_input, n_reference)
