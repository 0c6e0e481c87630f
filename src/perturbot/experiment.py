"""What the workflow's rules do, as plain functions on files (thin rules call these).

Which cells play which role (training source and target, model input,
evaluation target, observed's reference cells) is said in :mod:`perturbot.cells`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from perturbot import models as registry
from perturbot.atomic import atomic_path, write_csv, write_json
from perturbot.cells import (  # noqa: F401  (the roles of cells, re-exported for the rules' scripts)
    _info,
    evaluation_target,
    model_input,
    observed_reference,
    scored_size,
    training_source,
    training_target,
)
from perturbot.config import ModelSpec
from perturbot.jobs import (  # noqa: F401  (re-exported: the planning of jobs, which train() follows)
    EACH_JOB,
    JOINT_JOB,
    JOINT_TRAINING_THRESHOLD,
    RUN_JOBS,
    auto_joint,
    auto_joint_note,
    job_of,
    training_jobs,
)
from perturbot.latent import load_model
from perturbot.markers import evaluation_features
from perturbot.metrics import score, scored_rows, subsamples
from perturbot.tables import METRICS_COLUMNS, aggregate_metrics  # noqa: F401
from perturbot.atomic import json_default
from perturbot.models.base import (  # noqa: F401  (PredictionError: re-exported)
    PerturbationModel,
    PredictionError,
    check_prediction,
    known_perturbations,
)
from perturbot.training import live_history, set_threads


def build_model(spec: ModelSpec, autoencoder_dir: str | Path | None = None, *, each: bool = False) -> PerturbationModel:
    """Instantiate a model; latent-space models are wrapped around the shared autoencoder.

    ``each``: a :class:`perturbot.bundle.PerturbationBundle` of such models, one per
    perturbation (inside the autoencoder wrapper, so the bundle keeps one autoencoder).
    """
    cls = registry.get(spec.model)
    if each:
        from perturbot.bundle import PerturbationBundle

        model: PerturbationModel = PerturbationBundle(lambda: cls(**spec.params))
    else:
        model = cls(**spec.params)
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
    job: str,
    perturbations: list[str],
    out_dir: str | Path,
    *,
    autoencoder_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    threads: int = 1,
) -> PerturbationModel:
    """Run one training job of :func:`training_jobs`: fit the model and save it with its history."""
    set_threads(threads)
    adata = ad.read_h5ad(data_path)
    source = training_source(adata)
    model = build_model(spec, autoencoder_dir, each=job == EACH_JOB)
    fit_kwargs: dict[str, Any] = {"checkpoint": checkpoint} if checkpoint else {}
    out_dir = Path(out_dir)
    # the lower bound learns from real perturbed cells the evaluation never sees
    target = observed_reference if registry.get(spec.model).needs_reference_cells else training_target
    with live_history(out_dir / "history.csv", label=str(out_dir)):
        if job == EACH_JOB:  # each perturbation on its own, as in a job of its own
            model.fit_many(source, {p: target(adata, p) for p in perturbations})
        elif registry.get(spec.model).needs_reference_cells:
            model.fit(source, target(adata, perturbations[0]))
        elif job == JOINT_JOB:
            model.fit_many(source, {p: training_target(adata, p) for p in perturbations}, **fit_kwargs)
        else:
            model.fit(source, training_target(adata, perturbations[0]), **fit_kwargs)
    model.save(out_dir)
    write_history(model, out_dir / "history.csv")
    write_json(out_dir / "preprocessing.json", _info(adata)["recipe"], indent=1, default=json_default)
    return model


def write_history(model: PerturbationModel, path: Path) -> None:
    """history.csv: the model's training log, or just the header for models that do not train."""
    history = getattr(model, "history_", None)
    frame = history if isinstance(history, pd.DataFrame) and not history.empty else pd.DataFrame(columns=["iteration"])
    write_csv(frame, path, index=False)


@dataclass(frozen=True)
class Prediction:
    """One perturbation of a model run: the model that predicts it and the two files it goes to."""

    perturbation: str
    model_dir: Path
    cells: Path  # the predicted cells (.h5ad)
    metrics: Path  # their scores (.csv)


def predict_and_evaluate(
    data_path: str | Path,
    spec: ModelSpec,
    predictions: Sequence[Prediction],
    *,
    experiment: str,
    evaluation: dict | None = None,
    threads: int = 1,
) -> pd.DataFrame:
    """Transport the test control cells for each perturbation; write the predicted cells and their metrics.

    One call per model run: the data are read, and the libraries imported, once
    for all of its perturbations. Each model is loaded afresh, so a prediction
    never depends on the ones before it.
    """
    set_threads(threads)
    adata = ad.read_h5ad(data_path)
    inputs = model_input(adata)
    x = np.asarray(inputs.X)
    run = f"experiment {experiment!r}, holdout {_info(adata)['holdout']!r}, run {spec.run or spec.label!r}"
    frames = []
    for job in predictions:
        model = load_model(job.model_dir)
        kwargs = {"perturbation": job.perturbation} if len(known_perturbations(model)) > 1 else {}
        predicted = np.asarray(model.transport(x, **kwargs), dtype=np.float32)
        check_prediction(predicted, f"{run} ({job.model_dir})", job.perturbation)
        with atomic_path(job.cells) as tmp:
            predicted_cells(adata, inputs, predicted, spec, job.perturbation).write_h5ad(tmp)
        frame = score_prediction(
            adata, inputs, predicted, spec, job.perturbation, experiment=experiment, evaluation=evaluation
        )
        with atomic_path(job.metrics) as tmp:
            frame.to_csv(tmp, index=False)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METRICS_COLUMNS)


def predicted_cells(
    adata: ad.AnnData, inputs: ad.AnnData, predicted: np.ndarray, spec: ModelSpec, perturbation: str
) -> ad.AnnData:
    """The predicted cells as AnnData: the input cells' obs, the data's genes, what predicted them.

    Real reference cells (``observed``) have no correspondence with the input,
    and may be fewer: they are named ``reference_<i>``, with no transport cost.
    """
    if registry.get(spec.model).needs_reference_cells:
        obs = pd.DataFrame(index=pd.Index([f"reference_{i}" for i in range(len(predicted))]))
    else:
        obs = inputs.obs.copy()
    pred = ad.AnnData(predicted, obs=obs, var=adata.var.copy())
    pred.obs["perturbation"] = perturbation
    pred.obs["model"] = spec.label
    if not registry.get(spec.model).needs_reference_cells:
        pred.obs["transport_cost"] = ((predicted - np.asarray(inputs.X)) ** 2).sum(1)
    pred.uns["perturbot"] = {**_info(adata), "model": spec.label, "perturbation": perturbation}
    return pred


def score_prediction(
    adata: ad.AnnData,
    inputs: ad.AnnData,
    predicted: np.ndarray,
    spec: ModelSpec,
    perturbation: str,
    *,
    experiment: str,
    evaluation: dict | None = None,
) -> pd.DataFrame:
    """The metrics rows of one prediction: gathers from the prepared data what :func:`metrics.score` needs.

    ``inputs`` are the cells the model transported (:func:`model_input`), passed in
    so that a run's perturbations share them. Every model is scored on the same
    number of predicted cells (:func:`perturbot.cells.scored_size`; the same
    input cells for every model of one seed), ``observed`` on real cells
    without repeats.
    """
    info = _info(adata)
    x = np.asarray(inputs.X)
    check_prediction(predicted, f"experiment {experiment!r}, holdout {info['holdout']!r}, run {spec.run or spec.label!r}",
                     perturbation)
    observed = evaluation_target(adata, perturbation)
    truth_key = f"X_true_{perturbation}"  # known per-cell responses (synthetic data)
    # a model that predicts with real reference cells has no per-cell correspondence with the input
    per_cell = not registry.get(spec.model).needs_reference_cells
    truth = np.asarray(inputs.obsm[truth_key]) if per_cell and truth_key in inputs.obsm else None
    rows = scored_rows(len(predicted), scored_size(adata, perturbation), spec.seed)
    predicted, truth = predicted[rows], None if truth is None else truth[rows]
    protocol = (evaluation or {}).get("markers", "training")
    columns, every_metric = evaluation_features(adata, perturbation, protocol, x, observed)
    logfc = None
    pseudo = info.get("pseudo_perturbation")
    if pseudo and pseudo["name"] == perturbation:
        features = adata.var_names.get_indexer(list(pseudo["features"]))
        logfc = (x, features, float(np.log2(pseudo["factor"])))
    evaluation = evaluation or {}
    scores = score(
        predicted,
        observed,
        truth=truth,
        columns=columns if every_metric else None,
        mmd_columns=None if every_metric else columns,
        draws=subsamples(len(predicted), len(observed), n_cells=evaluation.get("n_cells"),
                         draws=evaluation.get("draws", 1), seed=spec.seed),
        logfc=logfc,
    )
    key = {"experiment": experiment, "setting": info["setting"], "holdout": info["holdout"],
           "model": spec.label, "perturbation": perturbation, "seed": spec.seed}
    return pd.DataFrame([{**key, **row} for row in scores], columns=METRICS_COLUMNS)


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
