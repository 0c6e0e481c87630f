"""Run any perturbation model in a fitted autoencoder's latent space.

:class:`LatentModel` encodes control and perturbed cells, fits the inner model
on the codes, and at prediction encodes, transports and decodes, so inputs and
outputs stay in feature (gene) space. It is built by the workflow rather than
looked up in the model registry, so load a saved model with :func:`load_model`
(which also loads plain models and bundles): ``load_model(directory).transport(x, perturbation=p)``.

Saved layout::

    directory/model.json         {"model": "latent", "inner": "inner", "autoencoder": "autoencoder"}
    directory/inner/             the inner model (PerturbationModel.save)
    directory/autoencoder/       a copy of the autoencoder, so the directory is self-contained
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from perturbot.atomic import write_json
from perturbot.models.autoencoder import AutoEncoder
from perturbot.models.base import MODEL_JSON, PerturbationModel

LATENT = "latent"
INNER_DIR = "inner"
AUTOENCODER_DIR = "autoencoder"


class LatentModel(PerturbationModel):
    """``inner`` fitted on ``autoencoder``'s codes; inputs and outputs in feature space."""

    name = LATENT

    def __init__(self, inner: PerturbationModel, autoencoder: AutoEncoder) -> None:
        self.inner = inner
        self.autoencoder = autoencoder

    @property
    def multi_perturbation(self) -> bool:  # type: ignore[override]
        return self.inner.multi_perturbation

    def _check_autoencoder(self) -> None:
        if not getattr(self.autoencoder, "n_features_in_", None):
            raise ValueError("LatentModel needs a fitted AutoEncoder: fit it before the inner model")

    def _adopt(self) -> None:
        """Mirror the inner model's learned attributes that the workflow reads."""
        self.n_features_in_ = self.autoencoder.n_features_in_
        for attr in ("perturbations_", "history_"):
            if hasattr(self.inner, attr):
                setattr(self, attr, getattr(self.inner, attr))

    def fit(self, source: Any, target: Any, *, checkpoint: str | Path | None = None) -> "LatentModel":
        self._check_autoencoder()
        z_source = self.autoencoder.encode(source)
        z_target = self.autoencoder.encode(target)
        self.inner.fit(z_source, z_target, checkpoint=checkpoint)
        self._adopt()
        return self

    def fit_many(
        self, source: Any, targets: dict[str, Any], *, checkpoint: str | Path | None = None
    ) -> "LatentModel":
        if not self.inner.multi_perturbation:
            raise NotImplementedError(f"{type(self.inner).__name__} trains one perturbation at a time")
        self._check_autoencoder()
        z_source = self.autoencoder.encode(source)
        z_targets = {name: self.autoencoder.encode(t) for name, t in targets.items()}
        self.inner.fit_many(z_source, z_targets, checkpoint=checkpoint)
        self._adopt()
        return self

    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        x = self._check_input(x)
        z = self.autoencoder.encode(x)
        return self.autoencoder.decode(self.inner.transport(z, perturbation=perturbation))

    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.inner.save(directory / INNER_DIR)
        self.autoencoder.save(directory / AUTOENCODER_DIR)
        meta = {"model": LATENT, "inner": INNER_DIR, "autoencoder": AUTOENCODER_DIR}
        write_json(directory / MODEL_JSON, meta, indent=2)  # last, and whole: it marks a complete model
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "LatentModel":
        directory = Path(directory)
        meta = _read_meta(directory)
        if meta.get("model") != LATENT:
            raise ValueError(f"{directory} holds a {meta.get('model')!r} model, not a latent-space one")
        inner = load_model(directory / meta["inner"])  # a registered model or a bundle of them
        autoencoder = AutoEncoder.load(directory / meta["autoencoder"])
        model = cls(inner, autoencoder)  # type: ignore[arg-type]
        model._adopt()
        return model


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / MODEL_JSON
    if not path.exists():
        raise FileNotFoundError(f"no saved model in {directory} (missing {MODEL_JSON})")
    return json.loads(path.read_text())


def load_model(directory: str | Path) -> PerturbationModel:
    """Load any saved model: a :class:`LatentModel`, a :class:`perturbot.bundle.PerturbationBundle` or a registered one."""
    from perturbot.bundle import BUNDLE, PerturbationBundle

    directory = Path(directory)
    kind = _read_meta(directory).get("model")
    if kind == LATENT:
        return LatentModel.load(directory)
    if kind == BUNDLE:
        return PerturbationBundle.load(directory)
    return PerturbationModel.load(directory)
