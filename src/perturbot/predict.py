"""Predict the perturbed state of new control cells with a trained model.

The model directory (``results/<experiment>/models/<holdout>/<model>/<perturbation>/``)
carries ``preprocessing.json``: the genes in training order and the
normalisation applied. New cells get exactly that preprocessing, then the
model (and, for latent-space models, its autoencoder) transports them.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
from scipy import sparse

from perturbot.atomic import atomic_path
from perturbot.errors import DataError
from perturbot.models.base import check_prediction, known_perturbations
from perturbot.latent import load_model
from perturbot.preprocessing import normalize_log1p

RECIPE_FILE = "preprocessing.json"


class GeneMismatchError(DataError):
    """The new cells lack genes (or features) the model was trained on, or name one of them twice."""


def _prepare_like_training(adata: ad.AnnData, recipe: dict, layer: str | None) -> np.ndarray:
    if layer and layer not in adata.layers:
        raise DataError(f"layer {layer!r} not found; layers: {', '.join(adata.layers) or 'none'}")
    x = adata.layers[layer] if layer else adata.X
    cells = ad.AnnData(sparse.csr_matrix(x, dtype=np.float32) if sparse.issparse(x) else np.asarray(x, dtype=np.float32),
                       obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
    genes = list(recipe["genes"])
    missing = [g for g in genes if g not in cells.var_names]
    if missing:
        raise GeneMismatchError(
            f"{len(missing)} of the model's {len(genes)} genes/features are missing from the input, "
            f"e.g. {', '.join(missing[:10])}"
        )
    twice = set(cells.var_names[cells.var_names.duplicated()])
    repeated = [g for g in genes if g in twice]
    if repeated:
        raise GeneMismatchError(
            f"{len(repeated)} of the model's genes/features occur more than once in the input, "
            f"e.g. {', '.join(repeated[:10])}: which column to use is ambiguous; give each gene one column "
            f"(AnnData.var_names_make_unique keeps the first under the plain name)"
        )
    if recipe.get("normalize_total"):
        normalize_log1p(cells)  # on all input genes, as in training
    cells = cells[:, genes]
    out = cells.X.toarray() if sparse.issparse(cells.X) else np.asarray(cells.X)
    if not np.isfinite(out).all():
        raise DataError("the input contains NaN or infinite values")
    return out.astype(np.float32)


def predict(
    adata: ad.AnnData, model_dir: str | Path, *, perturbation: str | None = None, layer: str | None = None
) -> ad.AnnData:
    """Return predicted perturbed cells (AnnData with the input's obs and the model's genes)."""
    model_dir = Path(model_dir)
    recipe_path = model_dir / RECIPE_FILE
    if not recipe_path.exists():
        raise FileNotFoundError(f"{model_dir} has no {RECIPE_FILE}: is it a model directory from results/?")
    recipe = json.loads(recipe_path.read_text())
    model = load_model(model_dir)
    if getattr(model, "needs_reference_cells", False):  # observed: its real reference cells, not a map
        raise ValueError(
            f"{str(model_dir)!r} holds {type(model).__name__}, a benchmark bound made of real perturbed cells: "
            f"it has no prediction for new cells; use a model that maps control cells (e.g. cellot, w1ot, otfm)"
        )
    known = known_perturbations(model)
    kwargs = {}
    if len(known) > 1:  # trained on several perturbations at once: the caller picks one
        if perturbation not in known:
            raise DataError(f"perturbation {perturbation!r} is not one the model learned; it knows: {', '.join(known)}")
        kwargs["perturbation"] = perturbation
    x = _prepare_like_training(adata, recipe, layer)
    predicted = np.asarray(model.transport(x, **kwargs), dtype=np.float32)
    check_prediction(predicted, f"model {str(model_dir)!r}", perturbation or (known[0] if known else None))
    out = ad.AnnData(predicted, obs=adata.obs.copy())
    out.var_names = list(recipe["genes"])
    out.obs["perturbation"] = perturbation or ""
    out.uns["perturbot"] = {"model_dir": str(model_dir), "perturbation": perturbation or "", "recipe": recipe}
    return out


def predict_file(input_path: str | Path, model_dir: str | Path, output_path: str | Path, **kwargs) -> ad.AnnData:
    """File version of :func:`predict`; writes the output atomically."""
    out = predict(ad.read_h5ad(input_path), model_dir, **kwargs)
    with atomic_path(output_path) as tmp:
        out.write_h5ad(tmp)
    return out
