"""Jobs find perturbot in the workflow's src/, with nothing of it installed.

A throwaway venv sees this test's third-party packages (a .pth line naming their
site-packages; .pth files inside that directory, such as the editable install's
finder, are not run) but no perturbot. The workflow then runs prepare_data, one
training, prediction and one figure with that interpreter, as a conda job would:
its environment holds only the dependencies.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, small_features_config

pytestmark = pytest.mark.slow


def _snakemake(python: Path, workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(python), "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("PYTHONPATH", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=workdir)


def test_workflow_runs_without_perturbot_installed(bare_python, tmp_path):
    config = small_features_config(
        models=["identity", "cellot"],
        model_params={"cellot": {"n_iters": 20, "eval_every": 10, "hidden_units": [8, 8], "batch_size": 32, "val_size": 20}},
    )
    config["datasets"]["toy"]["synthetic"]["perturbations"] = 1
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    figure = "results/toy_iid/figures/mmd_boxplot.pdf"
    proc = _snakemake(bare_python, tmp_path, "--cores", "1", figure, "results/toy_iid/provenance.json", "--configfile", "run.yaml")
    assert proc.returncode == 0, proc.stderr[-8000:]

    # every kind of job ran: data, training, prediction, aggregation, a figure
    for rule in ("prepare_data", "train", "predict", "aggregate_metrics", "figure_mmd_boxplot", "provenance"):
        assert re.search(rf"^(local)?(rule|checkpoint) {rule}:$", proc.stderr, re.M), f"{rule} did not run"
    metrics = pd.read_csv(tmp_path / "results/toy_iid/metrics.csv")
    assert set(metrics.model) == {"identity", "cellot"}
    assert metrics.value.notna().all()
    assert (tmp_path / figure).stat().st_size > 0
    # the trained model is a real one, saved by the checkout's code
    saved = next((tmp_path / "results/toy_iid/models/all/cellot").glob("*/model.json"))
    assert json.loads(saved.read_text())["model"] == "cellot"
    assert (saved.parent / "weights.safetensors").stat().st_size > 0


def test_an_installed_copy_that_would_shadow_src_is_refused(bare_python, tmp_path):
    stale = tmp_path / "site" / "perturbot"
    stale.mkdir(parents=True)
    (stale / "__init__.py").write_text("raise ImportError('stale copy imported')\n")
    proc = _snakemake(bare_python, tmp_path, "-n", "--configfile", str(REPO / "config.yaml"), env={"PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the same interpreter with the stale copy on its path: the workflow stops and names it
    site = subprocess.run(
        [str(bare_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(site, "stale.pth").write_text(str(stale.parent) + "\n")
    try:
        proc = _snakemake(bare_python, tmp_path, "-n", "--configfile", str(REPO / "config.yaml"))
    finally:
        Path(site, "stale.pth").unlink()
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert str(stale) in output and "pip uninstall perturbot" in output, output[-3000:]
