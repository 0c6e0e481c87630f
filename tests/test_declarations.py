"""The planning layer's record of the models (declarations.json) says what the classes say.

The classes are the source of truth; the record lets the Snakefile read tags,
hyper-parameters and presets without importing torch. These tests fail, naming
the model, when a class changes and the record was not rewritten
(`python -m perturbot.models.declare`).
"""

from __future__ import annotations

import sys
import typing
from importlib import import_module

import pytest

from perturbot import models
from perturbot.models import declare
from perturbot.models.declarations import EXTRA, RECORD, TAGS, Declaration, declaration
from perturbot.params import Interval, Options, ParameterError, constraints_of, hints_of, validate_params

NAMES = [*models.available(), *EXTRA]


def model_class(name: str) -> type:
    module, cls = {**models._REGISTRY, **EXTRA}[name].split(":")
    return getattr(import_module(module), cls)


def test_the_record_is_what_the_classes_write_now():
    assert RECORD.read_text() == declare.record_of(declare.declare_all()), (
        "src/perturbot/models/declarations.json is out of date: run python -m perturbot.models.declare"
    )
    assert declare.main(["--check"]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_tags_defaults_and_presets_match_the_class_with_their_types(name):
    cls, decl = model_class(name), declaration(name)
    assert decl.tags == {tag: getattr(cls, tag) for tag in TAGS}
    assert decl.default_params() == cls.default_params()
    for key, value in decl.default_params().items():  # a tuple stays a tuple, 1e-3 a float
        assert type(value) is type(cls.default_params()[key]), (name, key)
    for modality, preset in (getattr(cls, "PRESETS", None) or {}).items():
        assert decl.modality_preset(modality) == preset
        assert all(type(decl.modality_preset(modality)[k]) is type(v) for k, v in preset.items())
    module = sys.modules[cls.__module__]
    if "preset" in cls.default_params():
        named = getattr(module, "PRESETS")
        assert set(decl.named_presets) == set(named)
        for recipe, values in named.items():
            assert decl.named_preset(recipe) == values
            assert all(type(decl.named_preset(recipe)[k]) is type(v) for k, v in values.items())


@pytest.mark.parametrize("name", NAMES)
def test_hints_and_constraints_match_the_class(name):
    cls, decl = model_class(name), declaration(name)
    hints = hints_of(cls)
    for param, hint in decl.type_hints().items():
        if decl.hints[param] != "Any":
            assert typing.get_args(hint) == typing.get_args(hints[param]) or hint == hints[param], (param, hint)
    assert normal(decl.parameter_constraints()) == normal(constraints_of(cls))


def normal(constraints: dict) -> dict:
    """Constraints compared by what they allow (an Options may hold a mapping; the record holds its keys)."""
    return {p: [r.allowed() if isinstance(r, Options) else r for r in rules] for p, rules in constraints.items()}


@pytest.mark.parametrize("name", NAMES)
def test_the_record_refuses_what_the_class_refuses(name):
    """Every constrained parameter: a value outside its range is refused with the class's message."""
    cls, decl = model_class(name), declaration(name)
    for param, rules in constraints_of(cls).items():
        for rule in rules:
            if isinstance(rule, Interval) and rule.low is not None and "int" in decl.hints[param]:
                bad = {param: int(rule.low) - 1}
            elif isinstance(rule, Options):
                bad = {param: "no such option"}
            else:
                continue
            with pytest.raises(ParameterError) as from_class:
                validate_params(cls, bad, "x", convert=True)
            with pytest.raises(ParameterError) as from_record:
                validate_params(decl, bad, "x", convert=True)
            assert str(from_record.value) == str(from_class.value)


def test_a_model_missing_from_the_record_is_named_with_the_command_that_records_it(monkeypatch):
    monkeypatch.setitem(models._REGISTRY, "brand_new", "perturbot.models.simple:Identity")
    with pytest.raises(KeyError, match="python -m perturbot.models.declare"):
        declaration("brand_new")


def test_numeric_strings_convert_through_the_record_as_through_the_class():
    params = {"lr": "1e-3", "n_iters": "1e3"}
    assert validate_params(declaration("cellot"), params, "x", convert=True) == {"lr": 1e-3, "n_iters": 1000}
    assert isinstance(declaration("cellot"), Declaration) and declaration("cellot").is_ot


def test_a_model_registered_at_run_time_is_read_from_its_class(monkeypatch):
    """A Python user's perturbot.models.register(): the library plans its jobs from the class's tags."""
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    monkeypatch.setattr(models, "_REGISTERED_AT_RUN_TIME", set())
    models.register("my_identity", "perturbot.models.simple:Identity")
    assert declaration("my_identity").tags == declaration("identity").tags
