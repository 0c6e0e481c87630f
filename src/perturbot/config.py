"""Semantic checks and normalisation of the workflow configuration.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks structure and
fills defaults; this module checks what a schema cannot: names that refer to
each other, model names, hyper-parameter names, types and ranges (numeric
strings converted to numbers in place), and builds the per-model
specification the rules use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perturbot import models as model_registry
from perturbot.errors import ClearError
from perturbot.models.declarations import Declaration, declaration
from perturbot.params import ParameterError, validate_params

SETTINGS = ("iid", "oos", "ood")
IID_HOLDOUT = "all"
#: Hyper-parameters the workflow sets itself; users set them through top-level keys.
WORKFLOW_PARAMS = {"seed", "device"}


class ConfigError(ClearError, ValueError):
    """A configuration problem, reported before any job runs."""

    kind = "Configuration error"


@dataclass(frozen=True)
class ModelSpec:
    """One model of one experiment, as the rules see it."""

    label: str  # name in results and figures
    model: str  # registry name
    space: str  # "data" or "latent"
    params: dict[str, Any] = field(default_factory=dict)
    run: str = ""  # name in paths: the label, or <label>.seed<k> when an experiment lists seeds

    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    @property
    def needs_autoencoder(self) -> bool:
        return self.space == "latent"


def dataset_of(config: dict, experiment: str) -> dict:
    return config["datasets"][config["experiments"][experiment]["dataset"]]


def holdouts(config: dict, experiment: str) -> list[str]:
    """Holdout values of an experiment; ``["all"]`` for i.i.d."""
    exp = config["experiments"][experiment]
    return [IID_HOLDOUT] if exp.get("setting", "iid") == "iid" else list(exp["holdouts"])


#: Experiment keys passed as they are to :func:`perturbot.preprocessing.prepare`.
PREPARATION_KEYS = ("setting", "holdout_key", "test_fraction", "min_cells", "n_hvg", "n_markers", "max_cells")
#: Preparation arguments that change only what is stored beside the cells, not the cells an autoencoder trains on.
NOT_IN_CELLS = ("n_markers",)


def preparation(config: dict, experiment: str) -> dict[str, Any]:
    """Keyword arguments of ``prepare()`` for an experiment, all but the holdout: the one place that says them."""
    exp, dataset = config["experiments"][experiment], dataset_of(config, experiment)
    return {
        "condition_key": dataset["condition_key"],
        "control": dataset["control"],
        "modality": dataset["modality"],
        **{key: exp[key] for key in PREPARATION_KEYS},
        "seed": config["seed"],
    }


def autoencoder_key(config: dict, experiment: str, holdout: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What determines a shared autoencoder: its training cells (dataset, preparation, holdout) and its settings.

    Derived from :func:`preparation`, so a new preparation option can never be
    forgotten here (which would share an autoencoder between different data).
    """
    prepared = {k: v for k, v in preparation(config, experiment).items() if k not in NOT_IN_CELLS}
    return {"dataset": dataset_of(config, experiment), "preparation": prepared, "holdout": holdout, "autoencoder": settings}


@dataclass(frozen=True)
class HoldoutRun:
    """One prepared dataset of an experiment: a holdout, or the i.i.d. companion of one."""

    slug: str  # file name: results/<experiment>/data/<slug>.h5ad
    holdout: str  # real holdout value ("all" for i.i.d.)
    companion: bool = False  # trained with half of the holdout's cells, evaluated on the same cells


COMPANION_PREFIX = "iid-"


def holdout_runs(config: dict, experiment: str) -> list[HoldoutRun]:
    """Every holdout of an experiment, followed by their i.i.d. companions when asked for.

    Raises :class:`perturbot.slugs.SlugError` where two of them would share a file
    (``"a b"`` and ``"a_b"``; holdout ``"iid-A"`` and the companion of ``"A"``).
    """
    from perturbot.slugs import check_distinct, slug_map

    exp = config["experiments"][experiment]
    runs = [HoldoutRun(slug, h) for slug, h in slug_map(holdouts(config, experiment), "holdout").items()]
    if exp.get("iid_companion") and exp.get("setting", "iid") != "iid":
        runs += [HoldoutRun(COMPANION_PREFIX + r.slug, r.holdout, companion=True) for r in list(runs)]
        check_distinct(
            (r.slug, f"{'the i.i.d. companion of ' if r.companion else ''}holdout {r.holdout!r}") for r in runs
        )
    return runs


def experiments_to_run(config: dict) -> list[str]:
    return list(config.get("run") or config["experiments"])


def _model_entries(exp: dict) -> list[dict]:
    entries = []
    for entry in exp.get("models", ["identity", "observed"]):
        if isinstance(entry, str):
            entry = {"name": entry}
        entries.append(entry)
    return entries


def model_specs(config: dict, experiment: str) -> list[ModelSpec]:
    """Every model of an experiment with its space and merged hyper-parameters.

    Precedence (last wins): model defaults < the model's preset for the data
    modality (``Model.PRESETS``, the papers' 4i settings) < the top-level
    ``patience`` (models that take one, unless the ``preset`` the spec names
    sets its own: :func:`early_stopping`) < top-level ``model_params[model]``
    < experiment ``model_params[model]`` < the entry's own ``params``;
    ``seed`` and ``device`` come from the top-level keys, or one spec per
    seed of the experiment's ``seeds``.
    """
    exp = config["experiments"][experiment]
    modality = dataset_of(config, experiment).get("modality", "features")
    specs = []
    for entry in _model_entries(exp):
        model = entry.get("model", entry["name"])
        cls = declaration(model)
        latent = cls.default_space == "latent_only" or (cls.default_space == "latent" and modality != "features")
        space = entry.get("space", "latent" if latent else "data")
        preset = cls.modality_preset(modality)
        explicit = {
            **config.get("model_params", {}).get(model, {}),
            **exp.get("model_params", {}).get(model, {}),
            **entry.get("params", {}),
        }
        params = {
            **preset,
            **early_stopping(config, cls, explicit),
            **explicit,
            "device": config.get("device", "auto"),
        }
        seeds = exp.get("seeds")
        for seed in seeds or [int(config.get("seed", 0))]:
            run = f"{entry['name']}.seed{seed}" if seeds else entry["name"]
            specs.append(
                ModelSpec(label=entry["name"], model=model, space=space, params={**params, "seed": int(seed)}, run=run)
            )
    return specs


def early_stopping(config: dict, cls: Declaration, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The top-level ``patience`` for a model class that takes one (below every per-model setting).

    None when ``params`` (the model's own settings) name a ``preset`` that sets
    a patience itself: the preset is a recipe (CellOT's ``paper`` trains its
    full budget, patience 0), and a default for every model must not change it.
    """
    patience = config.get("patience")
    if patience is None or "patience" not in cls.default_params():
        return {}
    named = (params or {}).get("preset")
    if named is not None and "patience" in cls.named_preset(named):
        return {}
    return {"patience": int(patience)}


def is_neural_ot(model: str) -> bool:
    """A transport map learned by a network: drawn on the 2-D toy maps and in the training-time figure."""
    cls = declaration(model)
    return cls.is_ot and cls.is_neural


#: Top-level sections that build results of their own, without experiments.
STANDALONE_TARGETS = ("toy_maps", "w1ot_group_size")


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the first problem found."""
    datasets = config.get("datasets", {})
    experiments = config.get("experiments", {})
    if not experiments and not any(key in config for key in STANDALONE_TARGETS):
        raise ConfigError(f"the config declares no experiments (nor any of {', '.join(STANDALONE_TARGETS)})")
    _check_distinct_names(list(experiments), "experiments", "experiment")  # results/<experiment>/
    _check_distinct_names(list(datasets), "datasets", "dataset")  # resources/downloads/<dataset>.verified.json
    for name in config.get("run") or []:
        if name not in experiments:
            raise ConfigError(f"run: unknown experiment {name!r}; declared: {', '.join(experiments)}")
    for model, params in config.get("model_params", {}).items():
        _check_params(model, params, f"model_params.{model}")
    for model in config.get("toy_maps", {}).get("models", []):
        neural_ot = [name for name in model_registry.available() if is_neural_ot(name)]
        if model not in neural_ot:
            raise ConfigError(f"toy_maps.models: {model!r} is not a neural transport model; choose from {', '.join(neural_ot)}")
    for model, params in config.get("toy_maps", {}).get("model_params", {}).items():
        _check_params(model, params, f"toy_maps.model_params.{model}")
    for exp_name, exp in experiments.items():
        where = f"experiments.{exp_name}"
        if exp["dataset"] not in datasets:
            raise ConfigError(
                f"{where}.dataset: unknown dataset {exp['dataset']!r}; declared: {', '.join(datasets) or 'none'}"
            )
        setting = exp.get("setting", "iid")
        if setting not in SETTINGS:
            raise ConfigError(f"{where}.setting: unknown setting {setting!r}; use one of {', '.join(SETTINGS)}")
        if setting == "iid" and exp.get("iid_companion"):
            raise ConfigError(f"{where}: iid_companion only makes sense for oos or ood experiments")
        if setting != "iid":
            if not exp.get("holdout_key"):
                raise ConfigError(f"{where}: setting {setting} needs holdout_key (the obs column to hold out)")
            if not exp.get("holdouts"):
                raise ConfigError(f"{where}: setting {setting} needs at least one value in holdouts")
            _check_holdout_names(config, exp_name)
        for model, params in exp.get("model_params", {}).items():
            _check_params(model, params, f"{where}.model_params.{model}")
        _check_params("autoencoder", exp.get("autoencoder", {}), f"{where}.autoencoder")
        labels = set()
        for entry in _model_entries(exp):
            model = entry.get("model", entry["name"])
            if model not in model_registry.available():  # the autoencoder has parameters, but is no model
                raise ConfigError(f"{where}.models.{entry['name']}: unknown model {model!r}; "
                                  f"available models: {', '.join(model_registry.available())}")
            _check_params(model, entry.get("params", {}), f"{where}.models.{entry['name']}")
            if entry["name"] in labels:
                raise ConfigError(f"{where}.models: label {entry['name']!r} is used twice")
            labels.add(entry["name"])
            if declaration(model).default_space == "latent_only" and entry.get("space") == "data":
                raise ConfigError(f"{where}.models.{entry['name']}: {model} only works in the latent space")
        _check_distinct_names([e["name"] for e in _model_entries(exp)], f"{where}.models", "label")  # .../<run>/


def _check_distinct_names(names: list[str], where: str, what: str) -> None:
    """Names used as directories as they are must differ in more than case (one directory on macOS and Windows)."""
    from perturbot.slugs import SlugError, check_distinct

    try:
        check_distinct((name, f"{what} {name!r}") for name in names)
    except SlugError as err:
        raise ConfigError(f"{where}: {err}") from None


def _check_holdout_names(config: dict, experiment: str) -> None:
    """Holdouts become file names: none may be unusable or share one with another (:func:`holdout_runs`)."""
    from perturbot.slugs import SlugError

    try:
        holdout_runs(config, experiment)
    except SlugError as err:
        raise ConfigError(f"experiments.{experiment}.holdouts: {err}") from None


def _check_params(model: str, params: dict, where: str) -> None:
    """Names, types and ranges of a model's hyper-parameters (:func:`perturbot.params.validate_params`).

    YAML reads ``1e-3`` and ``1e5`` as strings: numeric strings are converted, in
    ``params`` itself, to the number the constructor's hint asks for (``"1e5"``
    to the int 100000), so every later reader of the config sees numbers.
    """
    if not params and model == "autoencoder":
        return
    try:
        cls = declaration(model)
    except KeyError as err:
        raise ConfigError(f"{where}: {err.args[0]}") from None
    known = set(cls.default_params()) - WORKFLOW_PARAMS
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown hyper-parameter(s) {', '.join(unknown)} for model {model!r}; "
            f"known: {', '.join(sorted(known))}"
        )
    try:
        params.update(validate_params(cls, params, where, convert=True))
    except ParameterError as err:
        raise ConfigError(str(err)) from None


def check_w1ot_group_size(settings: dict, catalog: dict) -> None:
    """The ``w1ot_group_size`` section: refuse, before anything runs, pairs that are neither catalogued nor a folder and group counts that cannot split the units."""
    pairs = settings["pairs"]
    known = catalog.get("benchmark_pairs") or {}
    if pairs in known:
        held = known[pairs]["sha256"]
        missing = [f"dim_{d}/width_{w}" for d in settings["dims"] for w in settings["widths"] if f"dim_{d}/width_{w}" not in held]
        if missing:
            raise ConfigError(
                f"w1ot_group_size: {pairs} has no pair {', '.join(missing)}; the published ones are {', '.join(held)}"
            )
    elif not Path(pairs).is_dir():
        raise ConfigError(
            f"w1ot_group_size: pairs {pairs!r} is neither a catalogued set of pairs ({', '.join(known) or 'none'}) "
            "nor a folder of dim_<D>/width_<N>/deg_8_seed_987.pt files"
        )
    hidden = settings.get("model_params", {}).get("hidden_units", (64, 64, 64, 64))
    bad = sorted({g for g in settings["n_groups"] for h in hidden if h % g})
    if bad:
        raise ConfigError(f"w1ot_group_size: group counts {bad} do not divide the potential's hidden widths {list(hidden)}")


def config_hash(config: dict) -> str:
    """Stable short hash of a config, recorded in provenance."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
