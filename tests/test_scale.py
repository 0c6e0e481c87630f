"""A screen's job count does not grow with its perturbations (issue 25.2): joint_training: auto."""

import json
import re
import time
from collections import Counter

import pandas as pd
import pytest
import yaml
from helpers import REPO, run_workflow

from perturbot import models as registry
from perturbot.config import ModelSpec
from perturbot.data.synthetic import _perturbation_names
from perturbot.experiment import EACH_JOB, JOINT_JOB, JOINT_TRAINING_THRESHOLD, auto_joint, training_jobs
from perturbot.slugs import slug_map

SEVEN = ["identity", "observed", "gaussian_ot", "popalign", "scgen", "cellot", "w1ot"]


def perturbations(n: int) -> dict[str, str]:
    return {f"drug_{i}": f"drug {i}" for i in range(n)}


def test_auto_trains_the_neural_models_jointly_above_the_threshold_only():
    neural = {name for name in registry.available()
              if registry.get(name).multi_perturbation and not registry.get(name).cheap_fit
              and not registry.get(name).joint_only}
    assert neural == {"cellot", "w1ot", "otfm"}
    for name in registry.available():
        spec = ModelSpec(label=name, model=name, space="data")
        at, above = perturbations(JOINT_TRAINING_THRESHOLD), perturbations(JOINT_TRAINING_THRESHOLD + 1)
        assert training_jobs(spec, at, "auto") == training_jobs(spec, at, False), name  # as before, up to it
        if name in neural:
            assert training_jobs(spec, above, "auto") == {JOINT_JOB: list(above.values())}, name
            assert len(training_jobs(spec, above, False)) == JOINT_TRAINING_THRESHOLD + 1, name  # false stays false
        else:  # the bounds and baselines keep their one _each job (each on its own), cae its joint one
            assert training_jobs(spec, above, "auto") == training_jobs(spec, above, False), name
    # true keeps its meaning: fit_many for the models that have one, at any size
    assert training_jobs(ModelSpec("c", "cellot", "data"), perturbations(2), True) == {JOINT_JOB: ["drug 0", "drug 1"]}
    assert training_jobs(ModelSpec("g", "gaussian_ot", "data"), perturbations(80), "auto") == {
        EACH_JOB: list(perturbations(80).values())}
    # the threshold is the experiment's
    assert len(training_jobs(ModelSpec("w", "w1ot", "data"), perturbations(80), "auto", threshold=100)) == 80
    assert training_jobs(ModelSpec("w", "w1ot", "data"), perturbations(3), "auto", threshold=2) == {
        JOINT_JOB: ["drug 0", "drug 1", "drug 2"]}
    assert not auto_joint("w1ot", 3, True, 2)  # asked for, not switched by auto
    with pytest.raises(ValueError, match="true, false or auto"):
        training_jobs(ModelSpec("w", "w1ot", "data"), perturbations(3), "yes")


def test_the_schema_documents_the_default_threshold():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    exp = schema["$defs"]["experiment"]["properties"]
    assert exp["joint_training"]["default"] == "auto" and exp["joint_training"]["enum"] == [True, False, "auto"]
    assert exp["joint_training_threshold"]["default"] == JOINT_TRAINING_THRESHOLD
    # the papers' experiments stay below it, so configs/paper.yaml keeps one job per perturbation
    catalog = yaml.safe_load((REPO / "resources/datasets.yaml").read_text())
    listed = [len(d["perturbations"]) for d in catalog["datasets"].values() if isinstance(d.get("perturbations"), list)]
    assert listed and max(listed) < JOINT_TRAINING_THRESHOLD and 34 < JOINT_TRAINING_THRESHOLD  # 4i: 34 drugs


def screen_config(n: int) -> dict:
    """The issue's screen: synthetic counts, n perturbations x 200 cells, i.i.d. and two-patient o.o.s., seven models."""
    return {
        "seed": 0,
        "device": "cpu",
        "datasets": {"screen": {"source": "synthetic", "modality": "counts",
                                "synthetic": {"cells": 200, "perturbations": n, "features": 200, "seed": 0}}},
        "experiments": {
            "screen_iid": {"dataset": "screen", "setting": "iid", "models": SEVEN},
            "screen_oos": {"dataset": "screen", "setting": "oos", "holdout_key": "patient",
                           "holdouts": ["patient1", "patient2"], "models": SEVEN},
        },
    }


def planned_jobs(stdout: str) -> Counter:
    """Jobs of a dry run per experiment (``results/<experiment>/...`` outputs; else ``shared``)."""
    counts = Counter()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout)[1:]:
        out = re.search(r"output: (\S+)", block)
        where = re.match(r"results/([^/]+)/", out.group(1)) if out else None
        shared = where is None or where.group(1) in ("autoencoders", "figures")
        counts["shared" if shared else where.group(1)] += 1
    return counts


@pytest.mark.slow
def test_a_1000_perturbation_screen_plans_few_jobs_and_says_why(tmp_path):
    """The prepared data's perturbation list stands in for prepare_data (200,000 cells), as after it ran."""
    n = 1000
    names = _perturbation_names(n)
    for exp in ("screen_iid", "screen_oos"):
        data = tmp_path / "results" / exp / "data"
        data.mkdir(parents=True)
        (data / "perturbations.json").write_text(json.dumps({"perturbations": names,
                                                             "slugs": slug_map(names, "perturbation")}))
    start = time.perf_counter()
    proc = run_workflow(tmp_path, screen_config(n), "-n", "--cores", "2")
    seconds = time.perf_counter() - start
    jobs = planned_jobs(proc.stdout)
    total = int(re.search(r"^total\s+(\d+)", proc.stdout, re.M).group(1))
    print(f"dry run of {n} perturbations: {total} jobs {dict(jobs)} in {seconds:.1f} s")
    assert sum(jobs.values()) == total
    assert jobs["screen_iid"] <= 100 and jobs["screen_oos"] <= 100 and jobs["shared"] <= 10
    train = Counter(re.findall(r"output: results/(\w+)/models/([^/]+)/([^/]+)/([^/]+)/model.json", proc.stdout))
    assert len(train) == 7 + 2 * 7  # one training job per run: _each for the five cheap ones, _joint for the two neural
    assert {job for (_, _, _, job) in train} == {EACH_JOB, JOINT_JOB}
    for exp in ("screen_iid", "screen_oos"):
        for model in ("cellot", "w1ot"):
            assert (f"{exp}: joint_training: auto trains the {n} perturbations of {model!r} in one batched job "
                    f"(more than joint_training_threshold: {JOINT_TRAINING_THRESHOLD})") in proc.stdout + proc.stderr
    assert "of 'scgen'" not in proc.stdout + proc.stderr  # _each already: nothing switched


@pytest.mark.slow
def test_the_threshold_switches_a_real_run_and_its_log_says_so(tmp_path):
    from helpers import small_features_config

    tiny = {"n_iters": 40, "eval_every": 20, "batch_size": 32, "hidden_units": [8], "step_hidden_units": [8]}
    config = small_features_config(models=["identity", "w1ot"], joint_training_threshold=1, model_params={"w1ot": tiny})
    proc = run_workflow(tmp_path, config, "--cores", "2", "results/toy_iid/metrics.csv")
    models = tmp_path / "results/toy_iid/models/all"
    assert sorted(p.relative_to(models).as_posix() for p in models.glob("*/*/model.json")) == [
        "identity/_each/model.json", "w1ot/_joint/model.json"]  # 2 perturbations > 1: one w1ot job
    note = ("toy_iid: joint_training: auto trains the 2 perturbations of 'w1ot' in one batched job "
            "(more than joint_training_threshold: 1)")
    assert proc.stderr.count(note) == 1
    assert note in next((tmp_path / ".snakemake/log").glob("*.snakemake.log")).read_text()
    metrics = pd.read_csv(tmp_path / "results/toy_iid/metrics.csv")
    assert metrics.groupby("model")["perturbation"].nunique().to_dict() == {"identity": 2, "w1ot": 2}
