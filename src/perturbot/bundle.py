"""Fit a model once per perturbation inside one job, and keep the fits together in one directory.

A model that learns nothing (identity, observed) or fits in closed form (Gaussian
OT, PopAlign, scGen's mean shift) takes less time per perturbation than the
start-up of a job; its ``cheap_fit`` tag makes the workflow fit all of a run's
perturbations in one job (:func:`perturbot.jobs.training_jobs`), so the
number of jobs does not grow with the perturbations of a screen.

:class:`PerturbationBundle` fits a fresh model per perturbation, built the way a
job of its own would build it, on the same cells: the numbers are those of one
job per perturbation. ``fit_many`` of the model itself is not the same thing: it
may share state between perturbations (PopAlign draws each mixture's seed from
one generator), which is what ``joint_training`` asks for.

Saved layout::

    directory/model.json             {"model": "bundle", "members": {"<perturbation>": "<slug>", ...}, ...}
    directory/members/<slug>/        that perturbation's model (PerturbationModel.save)

Members are registered models: a bundle of latent-space models sits inside its
:class:`perturbot.latent.LatentModel`, which keeps one autoencoder for all of
them. So this module needs nothing of :mod:`perturbot.latent`, whose
``load_model`` reads bundles.

Members are read when first used, so predicting one perturbation of a bundle of
a thousand reads one of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perturbot.atomic import write_text
from perturbot.models.base import MODEL_JSON, PerturbationModel, read_model_json
from perturbot.slugs import slug_map

BUNDLE = "bundle"
MEMBERS_DIR = "members"


class PerturbationBundle(PerturbationModel):
    """One model per perturbation, each fitted on its own by a fresh model from ``make``."""

    name = BUNDLE
    multi_perturbation = True

    def __init__(self, make: Callable[[], PerturbationModel] | None = None) -> None:
        self.make = make

    def fit_many(self, source: Any, targets: dict[str, Any], **kwargs: Any) -> "PerturbationBundle":
        """Fit ``make()`` on ``source`` and each target in turn.

        ``kwargs`` (a checkpoint) are not passed on: one checkpoint file cannot hold
        several models, and a member's fit takes seconds.
        """
        if self.make is None:
            raise ValueError("PerturbationBundle needs make, a function that builds a fresh model, to fit")
        if not targets:
            raise ValueError("targets must hold at least one perturbation")
        slug_map(list(targets), "perturbation")  # each member is saved under its slug
        self.members_ = {str(name): self.make().fit(source, target) for name, target in targets.items()}
        self.perturbations_ = list(self.members_)
        self.n_features_in_ = next(iter(self.members_.values())).n_features_in_
        histories = [
            m.history_.assign(perturbation=name)
            for name, m in self.members_.items()
            if isinstance(getattr(m, "history_", None), pd.DataFrame) and not m.history_.empty
        ]
        self.history_ = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
        return self

    def member(self, perturbation: str | None = None) -> PerturbationModel:
        """The model fitted on ``perturbation`` (``None``: the only one), read from disk on first use."""
        name = self.perturbations_[self._perturbation_index(perturbation)]
        if name not in self.members_:
            self.members_[name] = PerturbationModel.load(self._paths[name])
        return self.members_[name]

    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        return self.member(perturbation).transport(x)

    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        slugs = {name: slug for slug, name in slug_map(self.perturbations_, "perturbation").items()}
        for name in self.perturbations_:
            self.member(name).save(directory / MEMBERS_DIR / slugs[name])
        meta = {"model": BUNDLE, "members": slugs, "n_features_in_": int(self.n_features_in_)}
        write_text(directory / MODEL_JSON, json.dumps(meta, indent=2))  # last: it marks a complete bundle
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "PerturbationBundle":
        directory = Path(directory)
        meta = read_model_json(directory)
        if meta.get("model") != BUNDLE:
            raise ValueError(f"{directory} holds a {meta.get('model')!r} model, not a bundle")
        bundle = cls()
        bundle.perturbations_ = list(meta["members"])
        bundle.n_features_in_ = int(meta["n_features_in_"])
        bundle.members_ = {}
        bundle._paths = {name: directory / MEMBERS_DIR / slug for name, slug in meta["members"].items()}
        return bundle
