"""A training job killed mid-way resumes from its checkpoint and ends as if never killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import REPO, SNAKEMAKE, run_workflow, small_features_config

from perturbot.atomic import is_temporary

pytestmark = pytest.mark.slow

N_ITERS = 300
METRICS = "results/toy_iid/metrics.csv"  # the target: figures are not what this test is about
CELLOT = {
    "n_iters": N_ITERS,
    "checkpoint_every": 50,
    "eval_every": 50,
    "hidden_units": [16, 16],
    "batch_size": 64,
    "val_size": 20,
}


def _config() -> dict:
    config = small_features_config(models=["cellot"], model_params={"cellot": CELLOT})
    config["datasets"]["toy"]["synthetic"]["perturbations"] = 1
    return config


def _start_workflow(workdir: Path, config: dict) -> subprocess.Popen:
    """Snakemake in its own process group, as a user's shell would start it."""
    workdir.mkdir(parents=True)
    path = workdir / "test_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(path), "--cores", "1", METRICS]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    with (workdir / "snakemake.log").open("w") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _tail(workdir: Path) -> str:
    return (workdir / "snakemake.log").read_text()[-4000:]


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 600) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(p for p in root.glob(pattern) if not is_temporary(p))  # glob matches hidden names
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended ({proc.returncode}) before a checkpoint:\n{_tail(root)}")
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} after {timeout}s")


def test_killed_training_resumes_to_the_same_metrics(tmp_path):
    config = _config()
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _start_workflow(straight, config)  # the uninterrupted run, alongside
    proc = _start_workflow(killed, config)
    try:
        checkpoint = _wait_for("results/.checkpoints/toy_iid/*/cellot/*.pt", killed, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job, as a node failure or `kill -9 -PGID`
        proc.wait()

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert 0 < state["iteration"] < N_ITERS
    models = killed / "results/toy_iid/models"
    assert not list(models.rglob("model.json")), "a killed training left an output that looks complete"
    assert not (killed / METRICS).exists()

    # the lock of the killed run is stale; then the rerun picks up the checkpoint
    run_workflow(killed, config, "--unlock")
    run_workflow(killed, config, "--cores", "1", "--rerun-incomplete", METRICS)
    log = next((killed / "results/toy_iid/logs/train").rglob("cellot/*.log")).read_text()
    assert "resuming from checkpoint" in log
    assert not checkpoint.exists()
    leftovers = list(checkpoint.parent.iterdir()) if checkpoint.parent.exists() else []
    assert not leftovers, "the finished training left files beside its checkpoint"

    assert reference.wait(timeout=600) == 0, _tail(straight)
    for table in ("metrics.csv", *(str(p.relative_to(killed / "results/toy_iid")) for p in models.rglob("history.csv"))):
        pd.testing.assert_frame_equal(
            pd.read_csv(killed / "results/toy_iid" / table), pd.read_csv(straight / "results/toy_iid" / table)
        )
