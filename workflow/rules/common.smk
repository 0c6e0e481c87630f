import json
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from perturbot.data.catalog import apply_holdouts_files, resolve_catalog_entries
from perturbot.data.io import DataError
from perturbot.experiment import JOINT_ONLY
from perturbot.models import get as get_model
from perturbot.models.autoencoder import AutoEncoder
from perturbot.config import (
    ConfigError,
    check_config,
    config_hash,
    dataset_of,
    early_stopping,
    experiments_to_run,
    holdout_runs,
    model_specs,
)

try:
    resolve_catalog_entries(config, os.path.join(workflow.basedir, "resources", "datasets.yaml"))
    validate(config, schema="../schemas/config.schema.yaml")
    check_config(config)
    apply_holdouts_files(config)  # a dataset's list of holdouts, once its archive has given it
except (ConfigError, DataError) as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None

EXPERIMENTS = list(config["experiments"])
# experiment -> model run (path name: the label, or <label>.seed<k>) -> ModelSpec
SPECS = {exp: {s.run: s for s in model_specs(config, exp)} for exp in EXPERIMENTS}
# device: cuda makes every training job ask the scheduler for one GPU
GPU_REQUEST = 1 if config["device"] == "cuda" else 0


wildcard_constraints:
    experiment="|".join(map(re.escape, EXPERIMENTS)) if EXPERIMENTS else "^$",
    holdout=r"[A-Za-z0-9.\-][A-Za-z0-9._\-]*",
    key=r"[0-9a-f]{16}",
    model=r"[A-Za-z0-9.\-][A-Za-z0-9._\-]*",
    perturbation=r"[A-Za-z0-9.\-][A-Za-z0-9._\-]*",


def spec(wildcards):
    return SPECS[wildcards.experiment][wildcards.model]


def holdout_slugs(experiment):
    return [run.slug for run in holdout_runs(config, experiment)]


def uses_autoencoder(experiment):
    return any(s.needs_autoencoder for s in SPECS[experiment].values())


def trains_jointly(experiment, run):
    """One job for every perturbation: always for JOINT_ONLY models, for batched ones if asked."""
    s = SPECS[experiment][run]
    if s.model in JOINT_ONLY:
        return True
    return config["experiments"][experiment]["joint_training"] and get_model(s.model).multi_perturbation


def data_info(experiment):
    """Perturbations of an experiment, known once its data are prepared (a checkpoint)."""
    data_dir = checkpoints.prepare_data.get(experiment=experiment).output[0]
    with open(f"{data_dir}/perturbations.json") as fh:
        return json.load(fh)


def metric_files(wildcards):
    info = data_info(wildcards.experiment)
    return [
        f"results/{wildcards.experiment}/metrics/{h}/{m}/{p}.csv"
        for h in holdout_slugs(wildcards.experiment)
        for m in SPECS[wildcards.experiment]
        for p in info["slugs"]
    ]


def dataset_input(wildcards):
    """What prepare_data reads: a verified download, a local file (tracked for changes), or nothing."""
    name = config["experiments"][wildcards.experiment]["dataset"]
    source = config["datasets"][name]["source"]
    if isinstance(source, dict):
        return f"resources/downloads/{name}.verified.json"
    return [] if source == "synthetic" else [source]


def autoencoder_key(experiment, holdout):
    """What determines a shared autoencoder: its training data (dataset, split, holdout) and settings."""
    exp = config["experiments"][experiment]
    return {
        "dataset": config["datasets"][exp["dataset"]],
        "split": {k: exp[k] for k in ("setting", "holdout_key", "test_fraction", "min_cells", "n_hvg", "max_cells")},
        "holdout": holdout,
        "autoencoder": {**early_stopping(config, AutoEncoder), **exp["autoencoder"]},
        "seed": config["seed"],
    }


def autoencoder_dir(experiment, holdout):
    return f"results/autoencoders/{config_hash(autoencoder_key(experiment, holdout))}"


# autoencoder key -> the first experiment and holdout that need it (its data are the training data)
AUTOENCODERS = {}
for _exp in EXPERIMENTS:
    if any(s.needs_autoencoder for s in SPECS[_exp].values()):
        for _run in holdout_runs(config, _exp):
            _key = autoencoder_key(_exp, _run.slug)
            AUTOENCODERS.setdefault(config_hash(_key), {"experiment": _exp, "holdout": _run.slug, "key": _key})


def autoencoder_input(wildcards):
    if spec(wildcards).needs_autoencoder:
        return f"{autoencoder_dir(wildcards.experiment, wildcards.holdout)}/model.json"
    return []


def model_dir(wildcards):
    sub = "_joint" if trains_jointly(wildcards.experiment, wildcards.model) else wildcards.perturbation
    return f"results/{wildcards.experiment}/models/{wildcards.holdout}/{wildcards.model}/{sub}/model.json"


def all_targets(wildcards):
    """Metrics, statistics, provenance and figures of every experiment to run.

    Static paths only (the figure index stands for the figures, whose names depend on
    the perturbations found in the data), so a dry run shows every experiment.
    """
    targets = []
    for exp in experiments_to_run(config):
        targets.append(f"results/{exp}/metrics.csv")
        targets.append(f"results/{exp}/provenance.json")
        targets.append(f"results/{exp}/statistics.csv")
        targets.append(f"results/{exp}/figures/index.txt")
    return targets + global_figure_targets()
