"""Model registry: ``perturbot.models.get(name)`` returns the estimator class."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from perturbot.models.declarations import TAGS

if TYPE_CHECKING:
    from perturbot.models.base import NotFittedError, PerturbationModel


def __getattr__(name: str):
    """The base classes load on first use: the planning layer (perturbot.config) reads this registry without torch."""
    if name in ("NotFittedError", "PerturbationModel"):
        from perturbot.models import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# name -> "module:Class"; imported lazily so that light models need no torch start-up.
_REGISTRY: dict[str, str] = {
    "identity": "perturbot.models.simple:Identity",
    "observed": "perturbot.models.simple:Observed",
    "cellot": "perturbot.models.cellot:CellOT",
    "w1ot": "perturbot.models.w1ot:W1OT",
    "scgen": "perturbot.models.scgen:ScGen",
    "cae": "perturbot.models.cae:ConditionalAutoencoder",
    "gaussian_ot": "perturbot.models.gaussian_ot:GaussianOT",
    "popalign": "perturbot.models.popalign:PopAlign",
    "otfm": "perturbot.models.otfm:OTFlowMatching",
}

#: Names registered by :func:`register` in this process (their declarations are read from the class).
_REGISTERED_AT_RUN_TIME: set[str] = set()


def register(name: str, path: str) -> None:
    """Register a model class under ``name`` (``path`` is ``"module:Class"``).

    Its tags and hyper-parameters are then read from the class itself (which imports it); a model
    the workflow plans with belongs in the source registry above and in ``declarations.json``.
    """
    _REGISTRY[name] = path
    _REGISTERED_AT_RUN_TIME.add(name)


def available() -> list[str]:
    return sorted(_REGISTRY)


def name_of(cls: type) -> str | None:
    """Registry name of a model class (None if it is not registered)."""
    path = f"{cls.__module__}:{cls.__qualname__}"
    return next((name for name, registered in _REGISTRY.items() if registered == path), None)


def tags(name: str) -> dict[str, str | bool]:
    """A registered model's capability tags, plus its registry name under ``model`` (read without importing it)."""
    from perturbot.models.declarations import declaration

    return {"model": name, **declaration(name).tags}


def get(name: str) -> type[PerturbationModel]:
    """Return the model class registered under ``name``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available models: {', '.join(available())}")
    module, cls_name = _REGISTRY[name].split(":")
    return getattr(import_module(module), cls_name)


__all__ = ["TAGS", "NotFittedError", "PerturbationModel", "available", "get", "name_of", "register", "tags"]
