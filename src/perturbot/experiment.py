"""What the workflow's rules do, as plain functions on files (thin rules call these).

Which cells play which role (training source and target, model input,
evaluation target, observed's reference cells) is said in :mod:`perturbot.cells`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from perturbot import models as registry
from perturbot.cells import (  # noqa: F401  (the roles of cells, re-exported for the rules' scripts)
    _info,
    evaluation_target,
    model_input,
    observed_reference,
    training_source,
    training_target,
)
from perturbot.config import ModelSpec
from perturbot.latent import load_model
from perturbot.markers import evaluation_features
from perturbot.metrics import all_metrics, logfc_mae
from perturbot.tables import METRICS_COLUMNS, aggregate_metrics  # noqa: F401
from perturbot.models.base import PerturbationModel, json_default
from perturbot.training import live_history, set_threads

#: Models that always learn every perturbation at once (the cAE's condition labels).
JOINT_ONLY = {"cae"}


def build_model(spec: ModelSpec, autoencoder_dir: str | Path | None = None) -> PerturbationModel:
    """Instantiate a model; latent-space models are wrapped around the shared autoencoder."""
    model = registry.get(spec.model)(**spec.params)
    if spec.needs_autoencoder:
        from perturbot.latent import LatentModel
        from perturbot.models.autoencoder import AutoEncoder

        if autoencoder_dir is None:
            raise ValueError(f"model {spec.label!r} runs in the latent space but no autoencoder was given")
        model = LatentModel(model, AutoEncoder.load(autoencoder_dir))
    return model


def train(
    data_path: str | Path,
    spec: ModelSpec,
    perturbations: list[str],
    out_dir: str | Path,
    *,
    autoencoder_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    threads: int = 1,
) -> PerturbationModel:
    """Fit one model on one perturbation, or jointly on several, and save it with its history."""
    set_threads(threads)
    adata = ad.read_h5ad(data_path)
    source = training_source(adata)
    model = build_model(spec, autoencoder_dir)
    fit_kwargs: dict[str, Any] = {"checkpoint": checkpoint} if checkpoint else {}
    out_dir = Path(out_dir)
    with live_history(out_dir / "history.csv", label=str(out_dir)):
        if spec.model == "observed":
            # the lower bound: real perturbed cells the evaluation never sees
            model.fit(source, observed_reference(adata, perturbations[0]))
        elif len(perturbations) > 1 or spec.model in JOINT_ONLY:
            model.fit_many(source, {p: training_target(adata, p) for p in perturbations}, **fit_kwargs)
        else:
            model.fit(source, training_target(adata, perturbations[0]), **fit_kwargs)
    model.save(out_dir)
    write_history(model, out_dir / "history.csv")
    (out_dir / "preprocessing.json").write_text(json.dumps(_info(adata)["recipe"], indent=1, default=json_default))
    return model


def write_history(model: PerturbationModel, path: Path) -> None:
    """history.csv: the model's training log, or just the header for models that do not train."""
    history = getattr(model, "history_", None)
    frame = history if isinstance(history, pd.DataFrame) and not history.empty else pd.DataFrame(columns=["iteration"])
    frame.to_csv(path, index=False)


def known_perturbations(model: PerturbationModel) -> list[str]:
    """Perturbations a model can predict; one entry (or none) for a model fitted on one perturbation."""
    names = getattr(model, "perturbations_", None)
    return [] if names is None else [str(n) for n in names]


def predict_and_evaluate(
    data_path: str | Path,
    model_dir: str | Path,
    spec: ModelSpec,
    perturbation: str,
    *,
    experiment: str,
    out_prediction: str | Path,
    out_metrics: str | Path,
    evaluation: dict | None = None,
    threads: int = 1,
) -> pd.DataFrame:
    """Transport the test control cells, write the predicted cells and their metrics."""
    set_threads(threads)
    adata = ad.read_h5ad(data_path)
    info = _info(adata)
    model = load_model(model_dir)
    inputs = model_input(adata)
    x = np.asarray(inputs.X)
    kwargs = {"perturbation": perturbation} if len(known_perturbations(model)) > 1 else {}
    predicted = np.asarray(model.transport(x, **kwargs), dtype=np.float32)
    target = evaluation_target(adata, perturbation)

    pred = ad.AnnData(predicted, obs=inputs.obs.copy(), var=adata.var.copy())
    pred.obs["perturbation"] = perturbation
    pred.obs["model"] = spec.label
    if spec.model != "observed":
        pred.obs["transport_cost"] = ((predicted - x) ** 2).sum(1)
    pred.uns["perturbot"] = {**info, "model": spec.label, "perturbation": perturbation}
    _atomic_write_h5ad(pred, out_prediction)

    truth_key = f"X_true_{perturbation}"
    truth = None
    if spec.model != "observed" and truth_key in inputs.obsm:
        truth = np.asarray(inputs.obsm[truth_key])
    protocol = (evaluation or {}).get("markers", "training")
    columns, every_metric = evaluation_features(adata, perturbation, protocol, x, target)
    if every_metric and columns is not None:  # a paper's protocol: every metric on its marker genes
        predicted_scored, target = predicted[:, columns], target[:, columns]
        truth = None if truth is None else truth[:, columns]
    else:
        predicted_scored = predicted
    mmd_columns = None if every_metric else columns
    key = {"experiment": experiment, "setting": info["setting"], "holdout": info["holdout"],
           "model": spec.label, "perturbation": perturbation, "seed": spec.seed}
    rows = []
    for n_cells, draw, pred_idx, target_idx in evaluation_draws(len(predicted), len(target), evaluation, spec.seed):
        values = all_metrics(
            predicted_scored[pred_idx], target[target_idx], None if truth is None else truth[pred_idx], mmd_features=mmd_columns
        )
        pseudo = info.get("pseudo_perturbation")
        if pseudo and pseudo["name"] == perturbation:
            features = adata.var_names.get_indexer(list(pseudo["features"]))
            values["logfc_mae"] = logfc_mae(predicted[pred_idx], x, features, float(np.log2(pseudo["factor"])))
        rows += [{**key, "n_cells": n_cells, "draw": draw, "metric": m, "value": v} for m, v in values.items()]
    frame = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    frame.to_csv(out_metrics, index=False)
    return frame


def evaluation_draws(n_pred: int, n_target: int, evaluation: dict | None, seed: int):
    """(n_cells, draw, prediction rows, target rows) to score: all cells, or seeded subsamples.

    With ``evaluation = {n_cells: [...], draws: k}`` each size is drawn ``k`` times
    (without replacement; capped at the smaller population), as in the papers'
    evaluation.
    """
    evaluation = evaluation or {}
    sizes = evaluation.get("n_cells")
    if not sizes:
        yield min(n_pred, n_target), 0, np.arange(n_pred), np.arange(n_target)
        return
    for size in sizes:
        n = min(int(size), n_pred, n_target)
        for draw in range(int(evaluation.get("draws", 1))):
            rng = np.random.default_rng([seed, n, draw])
            yield n, draw, np.sort(rng.choice(n_pred, n, replace=False)), np.sort(rng.choice(n_target, n, replace=False))


def _atomic_write_h5ad(adata: ad.AnnData, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.h5ad")
    adata.write_h5ad(tmp)
    tmp.replace(path)


def train_autoencoder(
    data_path: str | Path,
    out_dir: str | Path,
    *,
    params: dict | None = None,
    seed: int = 0,
    device: str = "auto",
    checkpoint: str | Path | None = None,
    threads: int = 1,
) -> PerturbationModel:
    """Fit the shared autoencoder on the training split (all conditions, class-balanced)."""
    from perturbot.models.autoencoder import AutoEncoder

    set_threads(threads)
    adata = ad.read_h5ad(data_path)
    info = _info(adata)
    train_cells = adata[adata.obs["split"] == "train"]
    preset = AutoEncoder.PRESETS.get(info["recipe"]["modality"], {})
    model = AutoEncoder(**{**preset, **(params or {}), "seed": seed, "device": device})
    labels = train_cells.obs[info["condition_key"]].astype(str).to_numpy()
    out_dir = Path(out_dir)
    with live_history(out_dir / "history.csv", label=str(out_dir)):
        model.fit(np.asarray(train_cells.X), labels=labels, **({"checkpoint": checkpoint} if checkpoint else {}))
    model.save(out_dir)
    write_history(model, out_dir / "history.csv")
    return model
