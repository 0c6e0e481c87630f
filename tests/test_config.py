"""Configuration: the JSON schema (structure, defaults) and the semantic checks."""

import copy

import pytest
import yaml
from snakemake.utils import validate

from perturbot.config import ConfigError, check_config, holdouts, model_specs
from helpers import REPO, small_features_config

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def validated(config):
    config = copy.deepcopy(config)
    validate(config, schema=SCHEMA)
    check_config(config)
    return config


def test_defaults_are_filled():
    config = validated(small_features_config())
    exp = config["experiments"]["toy_iid"]
    assert exp["test_fraction"] == 0.2 and exp["n_hvg"] == 1000 and exp["n_markers"] == 50
    assert exp["setting"] == "iid" and exp["joint_training"] == "auto" and exp["joint_training_threshold"] == 50
    assert config["model_params"] == {}
    assert holdouts(config, "toy_iid") == ["all"]


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("experiments", "toy_iid", "n_hgv"), 10, "n_hgv"),
        (("colour",), "red", "colour"),
        (("datasets", "toy", "conditon_key"), "drug", "conditon_key"),
        (("experiments", "toy_iid", "setting"), "crossval", "crossval"),
        (("device",), "tpu", "tpu"),
        (("experiments", "toy_iid", "joint_training"), "sometimes", "sometimes.*auto"),
        (("experiments", "toy_iid", "joint_training_threshold"), -1, "-1"),
    ],
)
def test_schema_rejects_unknown_keys_and_values(path, value, message):
    config = small_features_config()
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(Exception, match=message):
        validate(config, schema=SCHEMA)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["experiments"]["toy_iid"].update(models=["identity", "cellott"]), "unknown model 'cellott'"),
        (lambda c: c["experiments"]["toy_iid"].update(dataset="missing"), "unknown dataset 'missing'"),
        (lambda c: c["experiments"]["toy_iid"].update(setting="oos"), "needs holdout_key"),
        (lambda c: c.update(run=["nope"]), "unknown experiment 'nope'"),
        (lambda c: c.update(model_params={"observed": {"n_iters": 5}}), "unknown hyper-parameter.*n_iters.*observed"),
        (lambda c: c["experiments"]["toy_iid"].update(models=["identity", "identity"]), "used twice"),
    ],
)
def test_semantic_errors_name_the_problem(mutate, message):
    config = small_features_config()
    mutate(config)
    validate(config, schema=SCHEMA)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_model_spec_precedence_and_spaces():
    config = small_features_config(models=["identity", {"name": "obs2", "model": "observed", "params": {}}])
    config["seed"] = 7
    config = validated(config)
    specs = {s.label: s for s in model_specs(config, "toy_iid")}
    assert specs["obs2"].model == "observed" and specs["obs2"].space == "data"
    assert specs["identity"].params == {"seed": 7, "device": "cpu"}


def test_shipped_configs_validate():
    for path in [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]:
        config = yaml.safe_load(path.read_text())
        validated(config)


@pytest.mark.parametrize(
    "where",
    ["experiment", "dataset", "model"],
)
@pytest.mark.parametrize("bad", ["../x", "with space", ".hidden", "a/b"])
def test_names_that_become_paths_are_checked_by_the_schema(where, bad):
    import jsonschema

    config = small_features_config()
    if where == "experiment":
        config["experiments"][bad] = config["experiments"].pop("toy_iid")
    elif where == "dataset":
        config["datasets"][bad] = config["datasets"].pop("toy")
        config["experiments"]["toy_iid"]["dataset"] = bad
    else:
        config["experiments"]["toy_iid"]["models"] = ["identity", {"name": bad, "model": "observed"}]
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)
    jsonschema.validate(small_features_config(), schema)  # the same config with plain names passes


def test_preparation_arguments_are_those_prepare_takes_and_feed_the_autoencoder_key():
    """prepare_data and the shared autoencoder's key read one function, so they cannot drift apart."""
    import inspect

    from perturbot.config import autoencoder_key, config_hash, preparation
    from perturbot.preprocessing import prepare

    config = validated(small_features_config())
    args = preparation(config, "toy_iid")
    taken = set(inspect.signature(prepare).parameters) - {"adata", "perturbations", "holdout", "companion"}
    assert set(args) == taken  # every option prepare() has is said by the config, and nothing else
    key = config_hash(autoencoder_key(config, "toy_iid", "all", {"n_iters": 10}))
    for option, value in [("test_fraction", 0.3), ("max_cells", 77), ("n_hvg", 20), ("min_cells", 3)]:
        changed = copy.deepcopy(config)
        changed["experiments"]["toy_iid"][option] = value
        assert config_hash(autoencoder_key(changed, "toy_iid", "all", {"n_iters": 10})) != key, option
    markers_only = copy.deepcopy(config)
    markers_only["experiments"]["toy_iid"]["n_markers"] = 5  # the cells are the same: the autoencoder is shared
    assert config_hash(autoencoder_key(markers_only, "toy_iid", "all", {"n_iters": 10})) == key
    assert config_hash(autoencoder_key(config, "toy_iid", "other", {"n_iters": 10})) != key
    assert config_hash(autoencoder_key(config, "toy_iid", "all", {"n_iters": 11})) != key


def test_a_named_preset_keeps_its_patience_over_the_top_level_default():
    """Precedence: an explicit per-model patience > the named preset's > the top-level default."""
    from perturbot.models.cellot import PRESETS, CellOT

    models = [
        {"name": "paper", "model": "cellot", "params": {"preset": "paper"}},
        {"name": "fast", "model": "cellot", "params": {"preset": "fast"}},
        {"name": "mine", "model": "cellot", "params": {"preset": "paper", "patience": 3}},
        {"name": "unnamed", "model": "cellot"},
        "w1ot",
    ]
    config = small_features_config(models=models)
    config["patience"] = 4
    specs = {s.label: s.params for s in model_specs(validated(config), "toy_iid")}
    patience = {label: CellOT(**params).settings().patience for label, params in specs.items() if label != "w1ot"}
    assert PRESETS["paper"]["patience"] == 0 and PRESETS["fast"]["patience"] == 10
    assert patience == {"paper": 0, "fast": 10, "mine": 3, "unnamed": 4}
    assert "patience" not in specs["paper"] and specs["w1ot"]["patience"] == 4
    # a preset named in model_params counts as named
    config = small_features_config(models=["cellot"], model_params={"cellot": {"preset": "paper"}})
    config["patience"] = 4
    assert "patience" not in model_specs(validated(config), "toy_iid")[0].params


@pytest.mark.parametrize(
    "holdouts, companion, message",
    [
        (["a b", "a_b"], False, "holdout 'a b' and holdout 'a_b' both become the file name 'a_b'"),
        (["CD14+ Mono", "CD14 Mono"], False, "holdout 'CD14\\+ Mono' and holdout 'CD14 Mono' both become the file name 'CD14_Mono'"),
        (["A", "a"], False, "holdout 'A' and holdout 'a' become the file names 'A' and 'a', one file on case-insensitive file systems"),
        (["..", "A"], False, "name '..' has no letter, digit or '-' usable in a file name"),
        (["A", "A"], False, "holdout 'A' is listed twice"),
        # holdout "iid-A" and the i.i.d. companion of "A" would share results/<exp>/data/iid-A.h5ad
        (["A", "iid-A"], True, "holdout 'iid-A' and the i.i.d. companion of holdout 'A' both become the file name 'iid-A'"),
    ],
)
def test_holdouts_that_would_share_a_file_are_config_errors(holdouts, companion, message):
    config = small_features_config()
    config["experiments"]["toy_iid"].update(setting="oos", holdout_key="patient", holdouts=holdouts, iid_companion=companion)
    validate(config, schema=SCHEMA)
    with pytest.raises(ConfigError, match=r"experiments\.toy_iid\.holdouts: " + message):
        check_config(config)


def test_distinct_holdouts_and_their_companions_keep_their_files():
    from perturbot.config import holdout_runs

    config = small_features_config()
    config["experiments"]["toy_iid"].update(setting="oos", holdout_key="patient", holdouts=["CD14+ Mono", "B"],
                                            iid_companion=True)
    runs = holdout_runs(validated(config), "toy_iid")
    assert [(r.slug, r.holdout, r.companion) for r in runs] == [
        ("CD14_Mono", "CD14+ Mono", False), ("B", "B", False), ("iid-CD14_Mono", "CD14+ Mono", True), ("iid-B", "B", True)
    ]


def test_holdouts_from_a_list_file_that_would_share_a_file_are_a_data_error(tmp_path):
    from perturbot.data.catalog import apply_holdouts_files
    from perturbot.data.io import DataError

    listed = tmp_path / "sample_ids.txt"
    listed.write_text("101\n101\n")
    config = {
        "datasets": {"lupus": {"source": "cells.h5ad", "holdouts_file": str(listed)}},
        "experiments": {"oos": {"dataset": "lupus", "setting": "oos", "holdouts": ["101"]}},
    }
    with pytest.raises(DataError, match=r"sample_ids\.txt \(the holdouts of experiments\.oos\): holdout '101' is listed twice"):
        apply_holdouts_files(config)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["experiments"].update(TOY_IID=c["experiments"]["toy_iid"]),
         "experiments: experiment 'toy_iid' and experiment 'TOY_IID' become the file names 'toy_iid' and 'TOY_IID', "
         "one file on case-insensitive file systems"),
        (lambda c: c["datasets"].update(Toy=c["datasets"]["toy"]), "datasets: dataset 'toy' and dataset 'Toy'"),
        (lambda c: c["experiments"]["toy_iid"].update(models=["identity", {"name": "Identity", "model": "identity"}]),
         "experiments.toy_iid.models: label 'identity' and label 'Identity' become the file names"),
    ],
)
def test_names_used_as_directories_must_differ_in_more_than_case(mutate, message):
    config = small_features_config()
    mutate(config)
    validate(config, schema=SCHEMA)
    with pytest.raises(ConfigError, match=message):
        check_config(config)
