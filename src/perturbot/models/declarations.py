"""What the planning layer knows of each model without importing it: capability tags, hyper-parameters, presets.

The Snakefile plans with the standard library, PyYAML and Snakemake alone (no numpy,
torch or anndata), yet it must check a config's hyper-parameters, resolve presets and
decide jobs from the models' tags. The estimator classes stay the one source of truth;
``declarations.json`` beside this file is their plain-data record, written from the
classes by :mod:`perturbot.models.declare`::

    python -m perturbot.models.declare        # after adding a model or changing its tags, parameters or presets

and ``tests/test_declarations.py`` fails, naming the model, when the file and the
classes disagree.
"""

from __future__ import annotations

import collections.abc
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from perturbot.params import Constraint, Interval, Options

RECORD = Path(__file__).with_name("declarations.json")
#: Declared beside the registry's models: the shared autoencoder of the latent-space models.
EXTRA = {"autoencoder": "perturbot.models.autoencoder:AutoEncoder"}
#: The capability tags a model class declares (see :class:`perturbot.models.base.PerturbationModel`).
TAGS = ("role", "is_ot", "is_neural", "joint_only", "default_space", "needs_reference_cells", "copies_input",
        "multi_perturbation", "cheap_fit")
#: Names a hint is written with in the record; anything else is recorded as ``Any`` (no type check).
HINT_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "None": None, "Any": Any,
              "tuple": tuple, "list": list, "dict": dict, "Sequence": collections.abc.Sequence,
              "Mapping": collections.abc.Mapping}


@dataclass(frozen=True)
class Declaration:
    """A model class as plain data: ``declaration("cellot").is_ot`` reads a tag without importing torch."""

    name: str
    path: str  # "module:Class"
    tags: dict[str, Any]
    defaults: dict[str, Any]  # hyper-parameter -> default, in the constructor's order
    hints: dict[str, str]  # hyper-parameter -> type hint, as text (:func:`hint_text`)
    constraints: dict[str, list[dict]] = field(default_factory=dict)  # serialised Interval / Options
    modality_presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # the class's PRESETS
    named_presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # what each ``preset`` value sets

    def __getattr__(self, name: str) -> Any:
        tags = self.__dict__.get("tags", {})
        if name in tags:
            return tags[name]
        raise AttributeError(f"{type(self).__name__} {self.__dict__.get('name')!r} has no attribute {name!r}")

    def default_params(self) -> dict[str, Any]:
        return self._typed(self.defaults)

    def type_hints(self) -> dict[str, Any]:
        """The constructor's hints as typing objects, built from their text without importing the model."""
        return {name: _eval_hint(text) for name, text in self.hints.items()}

    def parameter_constraints(self) -> dict[str, tuple[Constraint, ...]]:
        return {name: tuple(_constraint(rule) for rule in rules) for name, rules in self.constraints.items()}

    def modality_preset(self, modality: str) -> dict[str, Any]:
        """The papers' settings for a data modality (e.g. 4i ``features``): {} where the model has none."""
        return self._typed(self.modality_presets.get(modality, {}))

    def named_preset(self, name: str) -> dict[str, Any]:
        """What a named recipe (the ``preset`` hyper-parameter) sets; {} for a model without one or an unknown name."""
        return self._typed(self.named_presets.get(name, {}))

    @staticmethod
    def _typed(values: dict[str, Any]) -> dict[str, Any]:
        """JSON has no tuples: the classes write every sequence of a default or preset as one
        (tests/test_declarations.py compares them with their types)."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


# ---------------------------------------------------------------- reading the record
@lru_cache(maxsize=1)
def _record() -> dict[str, dict]:
    return json.loads(RECORD.read_text()) if RECORD.exists() else {}


def declaration(name: str) -> Declaration:
    """The declaration of a registered model (or of ``"autoencoder"``); KeyError names the known models."""
    from perturbot.models import _REGISTERED_AT_RUN_TIME, _REGISTRY, available

    paths = {**_REGISTRY, **EXTRA}
    if name not in paths:
        raise KeyError(f"unknown model {name!r}; available models: {', '.join(available())}")
    if name in _REGISTERED_AT_RUN_TIME:  # a Python user's own model (perturbot.models.register): read its class
        from perturbot.models.declare import from_class

        return from_class(name, paths[name])
    recorded = _record().get(name)
    if recorded is None or recorded["path"] != paths[name]:
        raise KeyError(f"model {name!r} ({paths[name]}) is not declared in {RECORD.name}: "
                       "run python -m perturbot.models.declare to record its tags and hyper-parameters")
    return Declaration(name=name, **recorded)


def _eval_hint(text: str) -> Any:
    hint = eval(text, {"__builtins__": {}}, dict(HINT_NAMES))  # noqa: S307 (text from our own record)
    return type(None) if hint is None else hint


def _constraint(record: dict) -> Constraint:
    if "interval" in record:
        low, high, closed = record["interval"]
        return Interval(low, high, closed)
    return Options(tuple(record["options"]))
