"""Load a configured dataset into AnnData and check it before any work starts."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from perturbot.data.synthetic import make_synthetic
from perturbot.data.catalog import read_list
from perturbot.errors import DataError
from perturbot.slugs import SlugError, slug_map


class DuplicateNamesWarning(UserWarning):
    """Cell or gene names that occur more than once were made unique."""


def read_source(spec: dict, *, name: str = "dataset", base_dir: str | Path = ".") -> ad.AnnData:
    """Read a dataset: the embedded generator, a local ``.h5ad``, or a verified download."""
    source = spec["source"]
    if source == "synthetic":
        return make_synthetic(spec.get("modality", "features"), **spec.get("synthetic", {}))
    if isinstance(source, dict):
        from perturbot.data.download import fetch_dataset

        path = fetch_dataset(spec, name=name)["path"]
    else:
        path = Path(base_dir) / source
    return read_h5ad_checked(path, name)


def read_h5ad_checked(path: str | Path, name: str = "dataset") -> ad.AnnData:
    """``anndata.read_h5ad`` whose failure on a truncated or damaged file is one line naming the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset {name!r}: file {path} does not exist")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py and anndata raise OSError, KeyError, ValueError... on a damaged file
        reason = (str(err).splitlines() or [""])[0][:200]
        extracted = next((p for p in path.parents if p.parent.name.endswith(".extracted")), None)
        if extracted is not None:
            archive = extracted.parent.with_name(extracted.parent.name.removesuffix(".extracted"))
            fix = (
                f"delete {extracted} and run again to extract it anew; if the error comes back, "
                f"the archive is damaged: delete {archive} and run again to download it"
            )
        else:
            fix = "replace it with a complete copy (a download or copy may have been cut short)"
        raise DataError(
            f"dataset {name!r}: {path} is not a readable .h5ad file ({type(err).__name__}: {reason}); "
            f"it is probably truncated or damaged: {fix}."
        ) from None


def restrict(adata: ad.AnnData, spec: dict, name: str = "dataset") -> ad.AnnData:
    """Apply the dataset's ``subset`` (cells) and ``features_file`` (columns), as CellOT's data loader does."""
    mask = np.ones(adata.n_obs, dtype=bool)
    for column, values in (spec.get("subset") or {}).items():
        if column not in adata.obs:
            raise DataError(
                f"dataset {name!r}: subset reads missing obs column {column!r}; columns: {', '.join(adata.obs.columns)}"
            )
        values = [values] if isinstance(values, str) else [str(v) for v in values]
        present = adata.obs[column].astype(str)
        absent = [v for v in values if v not in set(present)]
        if len(absent) == len(values):
            raise DataError(
                f"dataset {name!r}: none of the subset values {values} occurs in obs[{column!r}]; "
                f"values: {', '.join(sorted(set(present))[:20])}"
            )
        if absent:
            warnings.warn(f"dataset {name!r}: subset value(s) {', '.join(absent)} do not occur in obs[{column!r}]")
        mask &= present.isin(values).to_numpy()
    if not mask.all():
        adata = adata[mask].copy()
    features_file = spec.get("features_file")
    if features_file:
        if not Path(features_file).exists():
            raise DataError(f"dataset {name!r}: features_file {features_file} does not exist")
        features = read_list(features_file)
        missing = [f for f in features if f not in adata.var_names]
        if missing:
            raise DataError(
                f"dataset {name!r}: {len(missing)} feature(s) of {features_file} are not in the data, "
                f"e.g. {', '.join(missing[:5])}"
            )
        adata = adata[:, features].copy()
    return adata


def make_names_unique(adata: ad.AnnData, name: str = "dataset") -> None:
    """Make repeated cell and gene names unique in place, with a warning, as scanpy's readers do.

    Cells are matched by name across files (cell states, predictions) and genes are
    selected by name (features_file, highly variable genes, markers), so a repeated
    name would mix two cells or fail in pandas. The first occurrence keeps its name,
    later ones get ``-1``, ``-2``, ... (``AnnData.obs_names_make_unique``).
    """
    for axis, what in (("obs", "cell"), ("var", "gene/feature")):
        names = getattr(adata, f"{axis}_names")
        if names.is_unique:
            continue
        repeated = pd.unique(names[names.duplicated()])
        warnings.warn(
            f"dataset {name!r}: {len(repeated)} {what} name(s) occur more than once, e.g. "
            f"{', '.join(map(repr, repeated[:5]))}; made unique by appending -1, -2, ... to the repeats "
            f"(the first keeps its name, as AnnData.{axis}_names_make_unique does)",
            DuplicateNamesWarning,
            stacklevel=2,
        )
        with warnings.catch_warnings():  # anndata's own warning about the suffixes says nothing more
            warnings.simplefilter("ignore", UserWarning)
            getattr(adata, f"{axis}_names_make_unique")()


def derive_columns(adata: ad.AnnData, derive: dict[str, dict], name: str = "dataset") -> None:
    """Add obs columns computed by a regex with one group from another column (in place)."""
    for column, rule in derive.items():
        source = rule["from"]
        if source not in adata.obs:
            raise DataError(f"dataset {name!r}: derive_obs.{column} reads missing obs column {source!r}")
        pattern = re.compile(rule["regex"])
        if pattern.groups < 1:
            raise DataError(f"dataset {name!r}: derive_obs.{column} regex needs one capture group")
        values = adata.obs[source].astype(str)
        extracted = values.str.extract(pattern, expand=False)
        if isinstance(extracted, pd.DataFrame):
            extracted = extracted.iloc[:, 0]
        missing = extracted.isna()
        if missing.any():
            raise DataError(
                f"dataset {name!r}: derive_obs.{column} regex {rule['regex']!r} does not match "
                f"{int(missing.sum())} value(s) of {source!r}, e.g. {values[missing].iloc[0]!r}"
            )
        adata.obs[column] = pd.Categorical(extracted)


def select_matrix(adata: ad.AnnData, layer: str | None, name: str = "dataset") -> ad.AnnData:
    """Return a copy whose X is the configured layer, as float32."""
    if layer is not None:
        if layer not in adata.layers:
            raise DataError(
                f"dataset {name!r}: layer {layer!r} not found; layers: {', '.join(adata.layers) or 'none'}"
            )
        x = adata.layers[layer]
    else:
        x = adata.X
    out = ad.AnnData(
        x.astype(np.float32) if not sparse.issparse(x) else sparse.csr_matrix(x, dtype=np.float32),
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        obsm={k: v for k, v in adata.obsm.items() if k.startswith("X_true_")},
        varm={k: v for k, v in adata.varm.items() if k.startswith("marker_genes-")},  # the authors' rankings
    )
    return out


def check_dataset(adata: ad.AnnData, spec: dict, name: str = "dataset") -> list[str]:
    """Validate obs columns, control and perturbation names, and values. Returns the perturbations."""
    key, control = spec.get("condition_key", "condition"), spec.get("control", "control")
    if key not in adata.obs:
        raise DataError(
            f"dataset {name!r}: condition_key {key!r} is not an obs column; columns: {', '.join(adata.obs.columns)}"
        )
    unlabelled = adata.obs[key].isna().to_numpy()
    wanted = spec.get("perturbations", "all")
    if unlabelled.any() and wanted == "all":
        raise DataError(
            f"dataset {name!r}: {int(unlabelled.sum())} cell(s) have no value in obs[{key!r}] (NaN); under "
            f"perturbations: all they would become a perturbation named 'nan'. Label those cells, leave them out "
            f"with subset, or list the perturbations to use"
        )
    conditions = adata.obs[key][~unlabelled].astype(str)
    present = list(pd.unique(conditions))
    if control not in present:
        raise DataError(
            f"dataset {name!r}: control value {control!r} does not occur in obs[{key!r}]; "
            f"values: {', '.join(sorted(present)[:20])}"
        )
    if wanted == "all":
        perturbations = sorted(p for p in present if p != control)
    else:
        unknown = [p for p in wanted if p not in present]
        if unknown:
            raise DataError(
                f"dataset {name!r}: unknown perturbation(s) {', '.join(map(repr, unknown))} in obs[{key!r}]"
            )
        perturbations = list(wanted)
    if not perturbations:
        raise DataError(f"dataset {name!r}: no perturbed cells (only {control!r} in obs[{key!r}])")
    try:  # each perturbation's models, predictions and metrics are files named by its slug
        slug_map(perturbations, "perturbation")
    except SlugError as err:
        raise DataError(f"dataset {name!r}, perturbations in obs[{key!r}]: {err}") from None
    x = adata.X.data if sparse.issparse(adata.X) else np.asarray(adata.X)
    if not np.isfinite(x).all():
        raise DataError(f"dataset {name!r}: the expression matrix contains NaN or infinite values")
    modality = spec.get("modality", "features")
    if modality == "counts" and (x < 0).any():
        raise DataError(f"dataset {name!r}: modality counts but the matrix has negative values")
    return perturbations


def add_pseudo_perturbation(
    adata: ad.AnnData,
    condition_key: str,
    control: str,
    *,
    name: str = "pseudo",
    n_features: int = 5,
    min_expressed: float = 0.6,
    factor: float = 2.0,
    seed: int = 0,
) -> ad.AnnData:
    """The W1-OT paper's sensitivity test: a perturbation with a known effect, made from control cells.

    Picks ``n_features`` features expressed (> 0) in at least ``min_expressed`` of the
    control cells and multiplies them by ``factor`` in a random half of those cells,
    which are relabelled ``name``. The true log2 fold change is log2(factor) on those
    features and 0 elsewhere; the choice is recorded in ``uns['pseudo_perturbation']``.
    """
    rng = np.random.default_rng(seed)
    is_control = (adata.obs[condition_key].astype(str) == control).to_numpy()
    x = adata.X.toarray() if sparse.issparse(adata.X) else np.array(adata.X, dtype=np.float32)
    expressed = (x[is_control] > 0).mean(0) >= min_expressed
    candidates = np.flatnonzero(expressed)
    if len(candidates) < n_features:
        raise DataError(
            f"pseudo_perturbation: only {len(candidates)} feature(s) are expressed in at least "
            f"{min_expressed:.0%} of control cells, {n_features} needed"
        )
    chosen = np.sort(rng.choice(candidates, size=n_features, replace=False))
    cells = rng.permutation(np.flatnonzero(is_control))[: int(is_control.sum()) // 2]
    x[np.ix_(cells, chosen)] *= factor
    out = ad.AnnData(x, obs=adata.obs.copy(), var=adata.var.copy())
    labels = out.obs[condition_key].astype(str).to_numpy().astype(object)
    labels[cells] = name
    out.obs[condition_key] = labels
    out.uns["pseudo_perturbation"] = {
        "name": name,
        "features": [str(f) for f in adata.var_names[chosen]],
        "factor": float(factor),
    }
    return out


def load_dataset(spec: dict, name: str = "dataset", base_dir: str | Path = ".") -> tuple[ad.AnnData, list[str]]:
    """Read, derive columns, pick the matrix, keep control + chosen perturbations, and check."""
    if isinstance(spec.get("source"), dict):
        from perturbot.data.download import fetch_dataset

        spec = {**spec, **fetch_dataset(spec, name=name)}
        spec["source"] = spec.pop("path")
    raw = read_source(spec, name=name, base_dir=base_dir)
    make_names_unique(raw, name)
    derive_columns(raw, spec.get("derive_obs", {}), name)
    raw = restrict(raw, spec, name)
    adata = select_matrix(raw, spec.get("layer"), name)
    pseudo = spec.get("pseudo_perturbation")
    if pseudo:
        key, control = spec.get("condition_key", "condition"), spec.get("control", "control")
        if key not in adata.obs:
            check_dataset(adata, spec, name)  # raises the clear missing-column error
        adata = add_pseudo_perturbation(adata, key, control, **pseudo)
        spec = {**spec, "perturbations": [pseudo.get("name", "pseudo")]}
    perturbations = check_dataset(adata, spec, name)
    key, control = spec.get("condition_key", "condition"), spec.get("control", "control")
    # cells without a condition are not 'nan' (check_dataset refuses them under perturbations: all)
    keep = adata.obs[key].astype(str).isin([control, *perturbations]).to_numpy() & adata.obs[key].notna().to_numpy()
    adata = adata[keep].copy()
    adata.obs[key] = pd.Categorical(adata.obs[key].astype(str), categories=[control, *perturbations])
    return adata, perturbations
