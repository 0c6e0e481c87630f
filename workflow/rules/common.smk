import json
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

# The planning layer: standard library and PyYAML only (tests/test_planning.py blocks the rest),
# so that a Snakemake-only environment plans the workflow; jobs import the heavy modules.
from perturbot.codehash import code_fingerprint
from perturbot.data.catalog import apply_holdouts_files, resolve_catalog_entries
from perturbot.errors import DataError
from perturbot.jobs import RUN_JOBS, auto_joint, auto_joint_note, job_of, training_jobs
from perturbot.models.declarations import declaration
from perturbot.config import (
    ConfigError,
    autoencoder_key,
    check_config,
    config_hash,
    dataset_of,
    early_stopping,
    experiments_to_run,
    holdout_runs,
    model_specs,
    preparation,
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
    run=r"[A-Za-z0-9.\-][A-Za-z0-9._\-]*",
    perturbation=r"[A-Za-z0-9.\-][A-Za-z0-9._\-]*",
    job="|".join(RUN_JOBS) + r"|[A-Za-z0-9.\-][A-Za-z0-9._\-]*",


def spec(wildcards):
    return SPECS[wildcards.experiment][wildcards.run]


def holdout_slugs(experiment):
    return [run.slug for run in holdout_runs(config, experiment)]


def uses_autoencoder(experiment):
    return any(s.needs_autoencoder for s in SPECS[experiment].values())


def run_training_jobs(experiment, run):
    """Training job name (`_joint`, `_each` or a perturbation slug) -> the perturbations it learns."""
    exp = config["experiments"][experiment]
    slugs = data_info(experiment)["slugs"]
    jobs = training_jobs(SPECS[experiment][run], slugs, exp["joint_training"], exp["joint_training_threshold"])
    note = auto_joint_training_note(experiment, run)
    if note and (experiment, run) not in AUTO_JOINT_SAID:  # once per run, in the dry run's output too
        AUTO_JOINT_SAID.add((experiment, run))
        logger.info(f"{experiment}: {note}")
    return jobs


AUTO_JOINT_SAID = set()


def auto_joint_training_note(experiment, run):
    """What the dry run and the run's log (.snakemake/log/) say when `joint_training: auto` chose one job (else None)."""
    exp, s = config["experiments"][experiment], SPECS[experiment][run]
    n = len(data_info(experiment)["slugs"])
    if auto_joint(s.model, n, exp["joint_training"], exp["joint_training_threshold"]):
        return auto_joint_note(s, n, exp["joint_training_threshold"])
    return None


def data_info(experiment):
    """Perturbations of an experiment, known once its data are prepared (a checkpoint).

    Read once per version of the file: the DAG asks for it per job and per perturbation,
    and a screen's list parsed 40,000 times was most of its dry run.
    """
    path = f"{checkpoints.prepare_data.get(experiment=experiment).output[0]}/perturbations.json"
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if DATA_INFO.get(experiment, (None,))[0] != key:
        with open(path) as fh:
            DATA_INFO[experiment] = (key, json.load(fh))
    return DATA_INFO[experiment][1]


DATA_INFO = {}  # experiment -> (the file's path, mtime and size; its contents)


def metric_dirs(wildcards):
    """What aggregate_metrics waits for: each (holdout, run)'s prediction job (metric_files are inside)."""
    return [
        f"results/{wildcards.experiment}/metrics/{h}/{run}"
        for h in holdout_slugs(wildcards.experiment)
        for run in SPECS[wildcards.experiment]
    ]


def dataset_input(wildcards):
    """What prepare_data reads: a verified download, a local file (tracked for changes), or nothing."""
    name = config["experiments"][wildcards.experiment]["dataset"]
    source = config["datasets"][name]["source"]
    if isinstance(source, dict):
        return f"resources/downloads/{name}.verified.json"
    return [] if source == "synthetic" else [source]


def autoencoder_settings(experiment):
    return {**early_stopping(config, declaration("autoencoder")), **config["experiments"][experiment]["autoencoder"]}


def autoencoder_dir(experiment, holdout):
    return f"results/autoencoders/{config_hash(autoencoder_key(config, experiment, holdout, autoencoder_settings(experiment)))}"


# autoencoder key -> the first experiment and holdout that need it (its data are the training data)
AUTOENCODERS = {}
for _exp in EXPERIMENTS:
    if any(s.needs_autoencoder for s in SPECS[_exp].values()):
        for _run in holdout_runs(config, _exp):
            _key = autoencoder_key(config, _exp, _run.slug, autoencoder_settings(_exp))
            AUTOENCODERS.setdefault(config_hash(_key), {"experiment": _exp, "holdout": _run.slug, "key": _key})


def autoencoder_input(wildcards):
    if spec(wildcards).needs_autoencoder:
        return f"{autoencoder_dir(wildcards.experiment, wildcards.holdout)}/model.json"
    return []


def model_dir(experiment, holdout, run, perturbation, jobs=None):
    """Where the model that predicts one perturbation (slug) of a run is saved (``jobs``: the run's training jobs)."""
    job = job_of(jobs or run_training_jobs(experiment, run), perturbation)
    return f"results/{experiment}/models/{holdout}/{run}/{job}"


def run_model_files(wildcards):
    """model.json of every training job a run's predictions need (one, for a jointly trained run)."""
    e, h, run = wildcards.experiment, wildcards.holdout, wildcards.run
    jobs = run_training_jobs(e, run)
    return sorted({f"{model_dir(e, h, run, p, jobs)}/model.json" for p in data_info(e)["slugs"]})


def run_predictions(wildcards):
    """For the predict job: each perturbation's name, model directory, and output files."""
    e, h, run = wildcards.experiment, wildcards.holdout, wildcards.run
    jobs = run_training_jobs(e, run)
    return [
        {
            "perturbation": name,
            "model_dir": model_dir(e, h, run, slug, jobs),
            "cells": f"results/{e}/predictions/{h}/{run}/{slug}.h5ad",
            "metrics": f"results/{e}/metrics/{h}/{run}/{slug}.csv",
        }
        for slug, name in data_info(e)["slugs"].items()
    ]


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


# Rules whose jobs train or apply one model: that model's module is part of a job's code.
MODEL_OF_JOB = {
    "train": lambda wc: spec(wc).model,
    "predict": lambda wc: spec(wc).model,
    "toy_map": lambda wc: wc.toy_model,
}


def script_path(r):
    return os.path.normpath(r.basedir.join(r.script).get_path_or_uri(secret_free=True))


def job_code(script, model_of):
    return lambda wildcards: code_fingerprint(script, (model_of(wildcards),))


def add_code_params(workflow_rules):
    """Give each script rule a param `code`, the fingerprint of the code its jobs run
    (perturbot.codehash). With Snakemake's default rerun triggers, an edit to that code reruns
    the jobs, and a dry run gives "Params have changed" as the reason."""
    for r in workflow_rules:
        if r.script is None:
            continue
        if r.name in MODEL_OF_JOB:
            r.set_params(code=job_code(script_path(r), MODEL_OF_JOB[r.name]))
        else:
            r.set_params(code=code_fingerprint(script_path(r)))


def experiment_code(experiment):
    """provenance.json's record of the code every output of an experiment was made by: each
    script rule's fingerprint, per model run for train and predict."""
    script_rules = {r.name: r for r in workflow.rules if r.script is not None}
    code = {name: code_fingerprint(script_path(r)) for name, r in script_rules.items() if name not in MODEL_OF_JOB}
    for name in ("train", "predict"):
        script = script_path(script_rules[name])
        code[name] = {run: code_fingerprint(script, (s.model,)) for run, s in SPECS[experiment].items()}
    return code
