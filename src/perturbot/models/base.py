"""The estimator contract every perturbation model follows.

Scikit-learn style: constructor keyword arguments are the hyper-parameters and
nothing else happens in ``__init__``; learned state ends in ``_`` and exists only
after ``fit``; ``fit`` returns ``self``. Models persist as ``model.json``
(class name, hyper-parameters, small learned scalars) plus ``weights.safetensors``
(tensors only), so loading a model never unpickles code.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from perturbot.atomic import atomic_path, json_default, write_json
from perturbot.errors import ClearError
from perturbot.params import Interval, validate_params

MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.safetensors"


class PerturbationError(ValueError, KeyError):
    """A perturbation a model was not trained on, or none named where several were."""

    __str__ = BaseException.__str__  # KeyError would quote the message


class NotFittedError(RuntimeError):
    """Raised when a model is used before ``fit``."""


def as_float_array(x: Any, name: str = "x") -> np.ndarray:
    """Dense float32 2-D array, with a clear error for NaN/inf or wrong rank."""
    if hasattr(x, "toarray"):
        x = x.toarray()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (cells x features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no cells")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or infinite values in {bad} cell(s)")
    return arr


def fit_inputs(source: Any, targets: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The checked float32 arrays every ``fit_many`` starts from, with clear errors for bad input.

    No target, NaN/inf, a wrong rank or a target whose width differs from the
    source's all stop here, naming the offending population.
    """
    if not targets:
        raise ValueError("targets must hold at least one perturbation")
    source = as_float_array(source, "source")
    checked = {}
    for name, target in targets.items():
        target = as_float_array(target, f"target {name!r}")
        if target.shape[1] != source.shape[1]:
            raise ValueError(f"target {name!r} has {target.shape[1]} features but source has {source.shape[1]}")
        checked[str(name)] = target
    return source, checked


def read_model_json(directory: Path) -> dict[str, Any]:
    """The description a saved model's directory holds (``model.json``), or a clear error if it has none."""
    path = directory / MODEL_JSON
    if not path.exists():
        raise FileNotFoundError(f"no saved model in {directory} (missing {MODEL_JSON})")
    return json.loads(path.read_text())


class PerturbationModel:
    """Base class: maps control cells (source) to their perturbed state (target).

    Subclasses implement ``fit`` and ``transport``; torch-based ones also
    implement ``_get_tensors``/``_set_tensors`` and, if they learn scalars,
    ``_get_state``/``_set_state`` (JSON-serialisable).
    """

    #: Registry name, declared by each model class (a class registered at run time may leave it empty:
    #: its registry name is then found by :func:`perturbot.models.name_of`). ``get`` only reads it.
    name: str = ""
    #: Whether ``fit_many`` trains several perturbations jointly: ``joint_training: true`` then trains a run
    #: in one job, and so does ``auto`` above ``joint_training_threshold`` for a model without ``cheap_fit``.
    multi_perturbation: bool = False

    # Capability tags: what the workflow and the figures need to know about a model, said once, here
    # (read through ``perturbot.models.tags(name)``; in the spirit of scikit-learn's estimator tags).
    #: ``"bound"`` (the worst and the best sensible prediction), ``"baseline"`` or ``"method"``.
    role: str = "method"
    #: A transport map between the two populations: drawn in the transport-cost and vector-field figures.
    is_ot: bool = False
    #: Trains a network for many iterations: drawn in the training-time figure and on the 2-D toy maps.
    is_neural: bool = False
    #: Learns every perturbation at once, always (one training job, whatever ``joint_training`` says).
    joint_only: bool = False
    #: Space it runs in by default: ``"data"``; ``"latent"`` (the autoencoder's, for counts and expression
    #: data); ``"latent_only"`` (always the latent space).
    default_space: str = "data"
    #: ``fit`` takes held-out real perturbed cells (the lower bound), not the training target.
    needs_reference_cells: bool = False
    #: Its prediction is the input cells themselves: figures draw it once, as the control cells.
    copies_input: bool = False
    #: Its fit takes seconds (it learns nothing, or in closed form): the workflow fits every perturbation
    #: of a run in one job, each on its own (:mod:`perturbot.bundle`), instead of one job each.
    cheap_fit: bool = False
    #: Name under which such a model's ``fit`` stores its one perturbation.
    single_perturbation: str = "target"

    #: Range (``perturbot.params.Interval``) or choices (``Options``) of each hyper-parameter, merged with
    #: the subclasses' own; the type comes from the constructor's hints (scikit-learn's ``_parameter_constraints``).
    parameter_constraints: dict[str, Any] = {"seed": Interval(0)}

    # ----------------------------------------------------------- parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {n: sig.parameters[n].default for n in cls._param_names()}

    def get_params(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self._param_names()}

    def _validate_params(self) -> None:
        """Refuse a hyper-parameter of the wrong type or range, naming it (called first by every ``fit``).

        The configuration check runs the same validation at start-up, and converts YAML's
        numeric strings there; a Python caller gets no conversion, only the message.
        """
        validate_params(type(self), self.get_params(), type(self).__name__, convert=False)

    def resolved_params(self) -> dict[str, Any]:
        """The hyper-parameters a fit uses (what a checkpoint's fingerprint records); models whose
        ``None`` defers to a preset return the preset's value in its place."""
        return self.get_params()

    def __repr__(self) -> str:
        defaults = self.default_params()
        changed = {k: v for k, v in self.get_params().items() if defaults.get(k) != v}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------- contract
    def fit(self, source: np.ndarray, target: np.ndarray, **kwargs: Any) -> "PerturbationModel":
        """Learn the map from ``source`` to ``target`` cells (cells x features).

        For multi-perturbation models this is ``fit_many`` with one entry,
        named ``single_perturbation``.
        """
        if not self.multi_perturbation:
            raise NotImplementedError(f"{type(self).__name__} must implement fit")
        return self.fit_many(source, {self.single_perturbation: target}, **kwargs)

    def fit_many(
        self, source: np.ndarray, targets: dict[str, np.ndarray], **kwargs: Any
    ) -> "PerturbationModel":
        raise NotImplementedError(f"{type(self).__name__} trains one perturbation at a time")

    def transport(self, x: np.ndarray, perturbation: str | None = None) -> np.ndarray:
        raise NotImplementedError

    def transport_cost(self, x: np.ndarray, perturbation: str | None = None) -> np.ndarray:
        """Per-cell transport cost ||T(x) - x||^2 (the clustergram's quantity)."""
        x = self._check_input(x)
        return ((self.transport(x, perturbation=perturbation) - x) ** 2).sum(1)

    # ----------------------------------------------------------- validation
    def _check_fitted(self) -> None:
        if not getattr(self, "n_features_in_", None):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() first")

    def _perturbation_index(self, perturbation: str | None) -> int:
        """Position of ``perturbation`` in ``perturbations_``; ``None`` names the only one."""
        self._check_fitted()
        names = [str(p) for p in self.perturbations_]
        if perturbation is None:
            if len(names) != 1:
                raise PerturbationError(
                    f"{type(self).__name__} was trained on {len(names)} perturbations; "
                    f"pass perturbation= one of {', '.join(names)}"
                )
            return 0
        if str(perturbation) not in names:
            raise PerturbationError(f"unknown perturbation {perturbation!r}; known: {', '.join(names)}")
        return names.index(str(perturbation))

    def _check_input(self, x: Any, name: str = "x") -> np.ndarray:
        self._check_fitted()
        arr = as_float_array(x, name)
        if arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{type(self).__name__} was fitted on {self.n_features_in_} features, "
                f"but {name} has {arr.shape[1]}"
            )
        return arr

    # ---------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, Any]:
        """JSON-serialisable learned state (besides tensors); the training history travels with it."""
        state: dict[str, Any] = {"n_features_in_": int(self.n_features_in_)}
        history = getattr(self, "history_", None)
        if isinstance(history, pd.DataFrame):
            state["history_"] = history.to_dict(orient="records")
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "history_" in state:
            self.history_ = pd.DataFrame(state.pop("history_"))
        for key, value in state.items():
            setattr(self, key, value)

    def _get_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` and ``weights.safetensors`` into ``directory``."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self._get_tensors().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:  # each file whole; model.json, read first, last
            save_file(tensors, str(tmp))
        from perturbot.models import name_of

        meta = {
            "model": self.name or name_of(type(self)) or type(self).__name__,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": self.get_params(),
            "state": self._get_state(),
        }
        write_json(directory / MODEL_JSON, meta, indent=2, default=json_default)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "PerturbationModel":
        """Rebuild a saved model; ``PerturbationModel.load`` dispatches on the saved name."""
        directory = Path(directory)
        meta = read_model_json(directory)
        target_cls = cls
        from perturbot.models import get, name_of

        if cls is PerturbationModel or (cls.name or name_of(cls)) != meta["model"]:

            target_cls = get(meta["model"])
        model = target_cls(**meta["params"])
        model._set_state(meta["state"])
        weights = directory / WEIGHTS_FILE
        tensors = load_file(str(weights)) if weights.exists() else {}
        model._set_tensors(tensors)
        return model


def known_perturbations(model: PerturbationModel) -> list[str]:
    """Perturbations a model can predict; one entry (or none) for a model fitted on one perturbation."""
    names = getattr(model, "perturbations_", None)
    return [] if names is None else [str(n) for n in names]


class PredictionError(ClearError, ValueError):
    """A model returned cells that cannot be scored."""

    kind = "Prediction error"


def check_prediction(predicted: np.ndarray, run: str, perturbation: str | None) -> None:
    """Refuse a prediction with NaN or infinite values, naming the run and the perturbation.

    Its metrics would be NaN, and a comparison that left them out would make
    the model look better for having failed.
    """
    bad = ~np.isfinite(predicted)
    if bad.any():
        cells = int(bad.reshape(len(predicted), -1).any(1).sum())
        name = repr(perturbation) if perturbation else "(the one it learned)"
        raise PredictionError(
            f"{run}: the prediction for perturbation {name} has {int(bad.sum())} NaN or infinite "
            f"value(s), in {cells} of {len(predicted)} cells; the model failed on it (e.g. training diverged), "
            f"and its metrics would be undefined. Look at its training history, then retrain or remove the run"
        )
