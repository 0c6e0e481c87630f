"""Hyper-parameters are checked for type and range at start-up (the config) and at ``fit`` (Python users)."""

from __future__ import annotations

import copy
import json
import typing

import numpy as np
import pytest
import yaml
from helpers import REPO, small_features_config
from snakemake.utils import validate

from perturbot import models
from perturbot.config import ConfigError, check_config, model_specs
from perturbot.models.autoencoder import AutoEncoder
from perturbot.params import Interval, Options, ParameterError, constraints_of, validate_params

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
EVERY_CLASS = [models.get(name) for name in models.available()] + [AutoEncoder]


def _checked(text: str) -> dict:
    """A config whose toy_iid experiment gets the YAML ``text`` (as a user would write it), validated."""
    config = small_features_config()
    config["experiments"]["toy_iid"].update(yaml.safe_load(text))
    validate(config, schema=SCHEMA)
    check_config(config)
    return config


# ------------------------------------------------------------------ the config, at start-up
def test_yaml_numeric_strings_become_numbers_of_the_hinted_type():
    assert yaml.safe_load("lr: 1e-3\nn_iters: 1e5") == {"lr": "1e-3", "n_iters": "1e5"}  # what YAML 1.1 does
    config = _checked("models: [{name: cellot, params: {lr: 1e-3, n_iters: 1e5, hidden_units: [32, 1.6e1]}}]")
    params = model_specs(config, "toy_iid")[0].params
    assert params["lr"] == 0.001 and type(params["lr"]) is float
    assert params["n_iters"] == 100_000 and type(params["n_iters"]) is int
    assert params["hidden_units"] == [32, 16] and all(type(h) is int for h in params["hidden_units"])
    # the config itself holds the numbers: every later reader (hashes, provenance) sees them
    assert config["experiments"]["toy_iid"]["models"][0]["params"]["lr"] == 0.001


def test_numbers_from_model_params_and_the_autoencoder_are_converted_too():
    config = small_features_config(models=["otfm"])
    config["model_params"] = {"otfm": {"lr": "2e-3", "batch_size": "6.4e1"}}
    config["experiments"]["toy_iid"]["autoencoder"] = {"n_iters": "2e3", "dropout": "0.1"}
    check_config(config)
    assert config["model_params"]["otfm"] == {"lr": 0.002, "batch_size": 64}
    assert config["experiments"]["toy_iid"]["autoencoder"] == {"n_iters": 2000, "dropout": 0.1}
    assert model_specs(config, "toy_iid")[0].params["batch_size"] == 64


@pytest.mark.parametrize(
    "text, message",
    [
        ('models: [{name: cellot, params: {standardize: "false"}}]',
         "experiments.toy_iid.models.cellot.standardize: 'false' is a string, not a boolean (write true or false "
         "without quotes); standardize must be true, false or None (null)"),
        ("models: [{name: cellot, params: {lr: abc}}]",
         "experiments.toy_iid.models.cellot.lr: 'abc' is not a number; lr must be a number > 0 or None (null)"),
        ("models: [{name: cellot, params: {n_iters: 0}}]",
         "experiments.toy_iid.models.cellot.n_iters: 0 is not >= 1; n_iters must be an integer >= 1 or None (null)"),
        ("models: [{name: cellot, params: {n_iters: 1.5e3}}]", None),  # 1500: a whole number, accepted
        ("models: [{name: cellot, params: {n_iters: 12.5}}]",
         "experiments.toy_iid.models.cellot.n_iters: 12.5 is not a whole number"),
        ("models: [{name: cellot, params: {preset: quick}}]",
         "experiments.toy_iid.models.cellot.preset: 'quick' is not one of 'paper', 'fast', 'accurate'"),
        ("models: [{name: cellot, params: {beta1: 1.0}}]",
         "experiments.toy_iid.models.cellot.beta1: 1.0 is not in [0, 1)"),
        ("models: [{name: my_w1, model: w1ot, params: {hidden_units: [64, 0]}}]",
         "experiments.toy_iid.models.my_w1.hidden_units: [64, 0] has item 1 = 0, which is not >= 1"),
        ("models: [{name: w1ot, params: {hidden_units: 64}}]",
         "experiments.toy_iid.models.w1ot.hidden_units: 64 is an int, not a list; hidden_units must be a list of "
         "integers >= 1"),
        ("models: [{name: otfm, params: {coupling: sinkhorn}}]",
         "experiments.toy_iid.models.otfm.coupling: 'sinkhorn' is not one of 'exact', 'global', 'independent'"),
        ("models: [{name: otfm, params: {lr: nan}}]",
         "experiments.toy_iid.models.otfm.lr: 'nan' is not a finite number"),
        ("models: [{name: popalign, params: {reg_covar: automatic}}]",
         "experiments.toy_iid.models.popalign.reg_covar: 'automatic' is not allowed; reg_covar must be a number >= 0 "
         "or 'auto'"),
        ("model_params: {cellot: {n_iters: many}}\nmodels: [cellot]",
         "experiments.toy_iid.model_params.cellot.n_iters: 'many' is not a number"),
        ("autoencoder: {lr: -1}\nmodels: [identity]",
         "experiments.toy_iid.autoencoder.lr: -1 is not >= 0; lr must be a number >= 0"),
    ],
)
def test_config_check_names_key_path_value_and_what_is_allowed(text, message):
    if message is None:
        assert model_specs(_checked(text), "toy_iid")[0].params["n_iters"] == 1500
        return
    with pytest.raises(ConfigError) as err:
        _checked(text)
    assert str(err.value).startswith(message), str(err.value)


def test_top_level_model_params_are_checked_under_their_own_path():
    config = small_features_config()
    config["model_params"] = {"otfm": {"standardize": "no"}}
    with pytest.raises(ConfigError, match=r"^model_params\.otfm\.standardize: 'no' is a string, not a boolean"):
        check_config(config)


def test_the_toy_maps_hyper_parameters_are_checked_and_converted():
    config = small_features_config()
    config["toy_maps"] = {"model_params": {"w1ot": {"n_iters_potential": "1.5e3"}, "cellot": {"lr": "fast"}}}
    with pytest.raises(ConfigError, match=r"^toy_maps\.model_params\.cellot\.lr: 'fast' is not a number"):
        check_config(config)
    assert config["toy_maps"]["model_params"]["w1ot"] == {"n_iters_potential": 1500}


def test_a_refused_value_leaves_the_config_as_it_was():
    config = small_features_config(models=[{"name": "cellot", "params": {"lr": "1e-3", "n_iters": "x"}}])
    before = copy.deepcopy(config)
    with pytest.raises(ConfigError):
        check_config(config)
    assert config == before


# ------------------------------------------------------------------ the estimator, at fit
@pytest.mark.parametrize(
    "name, params, message",
    [
        ("cellot", {"lr": "abc"}, "CellOT.lr: 'abc' is a string, not a number; lr must be a number > 0 or None (null)"),
        ("cellot", {"lr": "1e-3"}, "CellOT.lr: '1e-3' is a string, not a number"),  # no conversion in Python
        ("cellot", {"standardize": "false"}, "CellOT.standardize: 'false' is a string, not a boolean"),
        ("w1ot", {"n_iters": 1e5}, "W1OT.n_iters: 100000.0 is not a whole number"),
        ("otfm", {"keep_best": 1}, "OTFlowMatching.keep_best: 1 is an int, not a boolean"),
        ("gaussian_ot", {"ridge": -1.0}, "GaussianOT.ridge: -1.0 is not >= 0"),
        ("popalign", {"validation_fraction": 1.0}, "PopAlign.validation_fraction: 1.0 is not in [0, 1)"),
        ("cae", {"dropout": "0.1"}, "ConditionalAutoencoder.dropout: '0.1' is a string, not a number"),
        ("scgen", {"seed": -1}, "ScGen.seed: -1 is not >= 0"),
        ("identity", {"seed": "0"}, "Identity.seed: '0' is a string, not a number"),
    ],
)
def test_fit_refuses_bad_hyper_parameters_with_the_same_message(name, params, message):
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(40, 3)).astype(np.float32), rng.normal(size=(40, 3)).astype(np.float32)
    with pytest.raises(ParameterError) as err:
        models.get(name)(**params).fit(source, target)
    assert str(err.value).startswith(message), str(err.value)


def test_the_autoencoder_refuses_bad_hyper_parameters_at_fit():
    with pytest.raises(ParameterError, match=r"^AutoEncoder\.hidden_units: \(16, -2\) has item 1 = -2, which is not >= 1"):
        AutoEncoder(hidden_units=[16, -2]).fit(np.ones((20, 3), dtype=np.float32))


def test_numpy_numbers_and_tuples_are_accepted_at_fit():
    checked = validate_params(models.get("otfm"), {"n_iters": np.int64(5), "lr": np.float32(1e-3),
                                                   "hidden_units": (8, np.int32(8)), "keep_best": np.bool_(True)},
                              "OTFlowMatching", convert=False)
    assert checked["hidden_units"] == (8, 8)
    assert validate_params(models.get("otfm"), {"hidden_units": np.array([4, 4])}, "x", convert=False)["hidden_units"] == [4, 4]
    with pytest.raises(ParameterError, match=r"keep_best must be true, false or None \(null\)$"):
        validate_params(models.get("otfm"), {"keep_best": "yes"}, "OTFlowMatching", convert=True)
    with pytest.raises(ParameterError, match=r"standardize must be true or false$"):
        validate_params(models.get("otfm"), {"standardize": "yes"}, "OTFlowMatching", convert=True)


# ------------------------------------------------------------------ every model's declarations
@pytest.mark.parametrize("cls", EVERY_CLASS, ids=lambda c: c.__name__)
def test_declared_constraints_name_real_parameters_and_every_default_and_preset_passes(cls):
    hints = typing.get_type_hints(cls.__init__)
    params = cls.default_params()
    assert set(hints) - {"return"} == set(params), "every hyper-parameter has a type hint"
    assert set(constraints_of(cls)) <= set(params), "a constraint names a parameter the constructor does not take"
    for rule in (r for rules in constraints_of(cls).values() for r in rules):
        assert isinstance(rule, (Interval, Options))
    validate_params(cls, params, cls.__name__, convert=False)
    for modality, preset in getattr(cls, "PRESETS", {}).items():
        validate_params(cls, preset, f"{cls.__name__}.PRESETS[{modality}]", convert=False)


def test_named_presets_pass_their_models_constraints():
    from perturbot.models import cellot, w1ot

    for cls, presets in ((cellot.CellOT, cellot.PRESETS), (w1ot.W1OT, w1ot.PRESETS)):
        for name, preset in presets.items():
            validate_params(cls, preset, f"{cls.__name__} PRESETS[{name}]", convert=False)


def test_interval_and_options_say_what_they_allow():
    assert str(Interval(0, closed="neither")) == "> 0"
    assert str(Interval(1)) == ">= 1"
    assert str(Interval(0, 1, closed="left")) == "in [0, 1)"
    assert 0 in Interval(0) and 0 not in Interval(0, closed="neither") and 1 not in Interval(0, 1, closed="left")
    assert str(Options(("auto",))) == "'auto'" and str(Options({"a": 1, "b": 2})) == "one of 'a', 'b'"


# ------------------------------------------------------------------ the Snakefile, at start-up
@pytest.mark.slow
def test_the_workflow_stops_at_start_up_on_a_bad_value_and_trains_with_converted_ones(tmp_path):
    from helpers import run_workflow

    bad = small_features_config(models=[{"name": "cellot", "params": {"lr": "abc", "n_iters": "1e2"}}])
    proc = run_workflow(tmp_path / "bad", bad, "-n", check=False)
    assert proc.returncode != 0
    assert ("Invalid configuration: experiments.toy_iid.models.cellot.lr: 'abc' is not a number"
            in proc.stderr + proc.stdout), (proc.stderr + proc.stdout)[-3000:]
    assert not (tmp_path / "bad" / "results").exists()  # before any job
    # what YAML gives for `lr: 1e-3` and `n_iters: 2e1` trains (it died with a TypeError in the job before)
    params = {"lr": "1e-3", "n_iters": "2e1", "eval_every": "1e1", "hidden_units": [8], "val_size": 20}
    good = small_features_config(models=[{"name": "cellot", "params": params}])
    run_workflow(tmp_path / "good", good, "--cores", "1", "results/toy_iid/metrics.csv")
    saved = [json.loads(p.read_text()) for p in (tmp_path / "good" / "results").rglob("cellot/*/model.json")]
    assert saved and all(m["params"]["lr"] == 0.001 and m["params"]["n_iters"] == 20 for m in saved)
