"""Marker genes the metrics are computed on, under each paper's evaluation protocol.

* ``training`` (this project's default): markers ranked on the training split
  (:func:`perturbot.preprocessing.training_markers`); only the ``mmd`` uses them.
* ``cellot``: CellOT's ``scripts/evaluate.py`` takes the top genes of the ranking
  stored in the file, ``varm['marker_genes-<condition>-rank'][perturbation]`` sorted
  ascending, and computes every metric on them; feature data (4i) use every feature.
* ``w1ot``: the W1-OT repository's ``evaluate`` uses that stored ranking when the
  file has it, otherwise ranks genes with scanpy's ``rank_genes_groups`` (t-test,
  perturbation vs control) on the test cells, and computes every metric on them;
  with fewer genes than markers asked for, every gene.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from perturbot.errors import DataError

PROTOCOLS = ("training", "cellot", "w1ot")
#: Columns of a marker table: one row per (perturbation, gene), genes in rank order.
MARKER_COLUMNS = ["perturbation", "gene"]


def marker_table(markers: dict[str, list[str]]) -> pd.DataFrame:
    """Marker genes per perturbation as a long table, the form they are stored in ``uns['perturbot']``.

    Perturbation names are values here, never keys: anndata writes a dict key
    with a ``/`` as nested groups in the .h5ad, so the markers of ``a/b``
    would come back under ``a``, then ``b``, and the metrics fall back to
    every gene without a word.
    """
    rows = [(str(p), str(g)) for p, genes in markers.items() for g in genes]
    return pd.DataFrame(rows, columns=MARKER_COLUMNS, dtype=object)


def markers_of(info: dict, perturbation: str, key: str = "markers") -> list[str] | None:
    """The marker genes of one perturbation in ``uns['perturbot'][key]``, in rank order; None without any."""
    markers = info.get(key)
    if markers is None:
        return None
    if isinstance(markers, pd.DataFrame):
        genes = [str(g) for g in markers.loc[markers["perturbation"].astype(str) == perturbation, "gene"]]
        return genes or None
    # a mapping perturbation -> genes (made in memory, or prepared by an earlier version)
    genes = markers.get(perturbation)
    if genes is None and "/" in perturbation and perturbation.split("/")[0] in markers:
        raise DataError(
            f"the markers of perturbation {perturbation!r} were split at its '/' when the data were written "
            f"(prepared by an earlier version); prepare the data again"
        )
    return None if genes is None or not len(genes) else [str(g) for g in genes]


def stored_ranking_key(adata: ad.AnnData, condition_key: str) -> str | None:
    """The varm key of the authors' marker ranking (CellOT also accepts the generic ``condition`` key)."""
    for key in (f"marker_genes-{condition_key}-rank", "marker_genes-condition-rank"):
        if key in adata.varm and isinstance(adata.varm[key], pd.DataFrame):
            return key
    return None


def stored_markers(adata: ad.AnnData, condition_key: str, perturbations: list[str], n_markers: int) -> dict[str, list[str]]:
    """Top ``n_markers`` genes per perturbation of the stored ranking (lowest rank first); {} without one."""
    key = stored_ranking_key(adata, condition_key)
    if key is None:
        return {}
    ranking = adata.varm[key]
    return {
        p: [str(g) for g in ranking[p].sort_values().index[:n_markers]] for p in perturbations if p in ranking.columns
    }


def markers_on_test_cells(control: np.ndarray, target: np.ndarray, var_names: pd.Index, n_markers: int) -> list[str]:
    """Top genes of the target vs the control cells by scanpy's t-test, as the W1-OT repository ranks them."""
    import scanpy as sc  # here, not at the top: scanpy's import costs seconds in every prediction job

    obs = pd.DataFrame({"group": ["control"] * len(control) + ["target"] * len(target)})
    obs.index = obs.index.astype(str)
    cells = ad.AnnData(np.vstack([control, target]).astype(np.float32), obs=obs, var=pd.DataFrame(index=var_names))
    sc.tl.rank_genes_groups(cells, "group", groups=["target"], reference="control", method="t-test", n_genes=n_markers)
    return [str(g) for g in cells.uns["rank_genes_groups"]["names"]["target"]]


def evaluation_features(
    adata: ad.AnnData, perturbation: str, protocol: str, control: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray | None, bool]:
    """Columns to score (None: every feature) and whether every metric uses them (else the mmd alone)."""
    if protocol not in PROTOCOLS:
        raise DataError(f"evaluation.markers {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    info = adata.uns["perturbot"]
    modality = info["recipe"]["modality"]
    if protocol == "training":
        markers = markers_of(info, perturbation)
        return (adata.var_names.get_indexer(markers) if markers else None), False
    n_markers = int(info.get("n_markers", 50))
    stored = markers_of(info, perturbation, "stored_markers")
    if modality == "features" or (protocol == "w1ot" and n_markers >= adata.n_vars):
        return None, True
    if stored:
        return adata.var_names.get_indexer(stored), True
    if protocol == "cellot":
        raise DataError(
            f"evaluation.markers cellot needs the marker ranking stored in the data file "
            f"(varm['marker_genes-{info['condition_key']}-rank'] with a column {perturbation!r}), which it lacks; "
            f"use evaluation.markers training or w1ot"
        )
    return adata.var_names.get_indexer(markers_on_test_cells(control, target, adata.var_names, n_markers)), True
