"""Adding a model is one file in models/, one registry line, its docs page and one command, and nothing else.

A copy of the checkout gets a toy transport model (a learned mean shift that
declares its capability tags) and one registry line; an experiment with it then
trains, predicts, scores and draws every figure of the experiment, with the toy
model drawn where its tags say (a transport map: clustergram and vector field).

The run uses an interpreter that sees the dependencies but no installed perturbot
(``bare_python``), as a conda job would: every job, a real CellOT training among them,
finds the package in the workflow's own src/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, small_features_config

pytestmark = pytest.mark.slow

TOY_MODEL = '''"""A toy transport map for the extension test: every cell moves by the mean effect."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from perturbot.models.base import PerturbationModel, fit_inputs


class MeanShift(PerturbationModel):
    """T(x) = x + mean(target) - mean(source), per perturbation."""

    role = "method"
    is_ot = True
    multi_perturbation = True

    def __init__(self, seed: int = 0, device: str = "cpu") -> None:
        self.seed = seed
        self.device = device

    def fit_many(self, source: Any, targets: dict[str, Any], **kwargs: Any) -> "MeanShift":
        source, targets = fit_inputs(source, targets)
        self.n_features_in_ = source.shape[1]
        self.perturbations_ = list(targets)
        self.shifts_ = np.stack([t.mean(0) - source.mean(0) for t in targets.values()]).astype(np.float32)
        return self

    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        return self._check_input(x) + self.shifts_[self._perturbation_index(perturbation)]

    def _get_state(self) -> dict[str, Any]:
        return {**super()._get_state(), "perturbations_": self.perturbations_}

    def _get_tensors(self) -> dict[str, torch.Tensor]:
        return {"shifts": torch.from_numpy(self.shifts_)}

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.shifts_ = tensors["shifts"].numpy()
'''


def checkout_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked, and new files not ignored), without results."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, check=True, capture_output=True
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_a_new_model_needs_one_file_one_registry_line_and_a_docs_page(bare_python, tmp_path):
    repo = checkout_copy(tmp_path / "repo")
    (repo / "src/perturbot/models/mean_shift.py").write_text(TOY_MODEL)
    registry = repo / "src/perturbot/models/__init__.py"
    line = '    "otfm": "perturbot.models.otfm:OTFlowMatching",\n'
    assert line in registry.read_text()
    registry.write_text(registry.read_text().replace(line, line + '    "mean_shift": "perturbot.models.mean_shift:MeanShift",\n'))
    (repo / "docs/models/mean_shift.md").write_text("# Mean shift\n\nA toy transport map.\n")
    # the planning layer reads the model's tags and parameters from the record, which one command rewrites
    declared = subprocess.run([str(bare_python), "-m", "perturbot.models.declare"], cwd=repo / "src",
                              capture_output=True, text=True, timeout=300)
    assert declared.returncode == 0, declared.stderr[-3000:]
    assert '"mean_shift"' in (repo / "src/perturbot/models/declarations.json").read_text()

    work = tmp_path / "run"
    work.mkdir()
    config = small_features_config(
        models=["identity", "observed", "mean_shift", "cellot"], joint_training=True, figures={"umap_max_cells": 60},
        model_params={"cellot": {"n_iters": 20, "eval_every": 10, "hidden_units": [8, 8], "batch_size": 32, "val_size": 20}},
    )
    (work / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(bare_python), "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory", str(work),
         "--cores", "2", "--configfile", "run.yaml"],
        capture_output=True, text=True, timeout=900, env=env, cwd=work,
    )
    assert proc.returncode == 0, proc.stderr[-8000:]

    # bare_python sees the dependencies but no installed perturbot: every job found the copy's src/
    for rule in ("prepare_data", "train", "predict", "aggregate_metrics", "figure_mmd_boxplot", "provenance"):
        assert re.search(rf"^(local)?(rule|checkpoint) {rule}:$", proc.stderr, re.M), f"{rule} did not run"
    metrics = pd.read_csv(work / "results/toy_iid/metrics.csv")
    assert set(metrics["model"]) == {"identity", "observed", "mean_shift", "cellot"}
    assert metrics.query("model == 'cellot'")["value"].notna().all()
    shift = metrics.query("model == 'mean_shift' and metric == 'l2_means'")["value"]
    identity = metrics.query("model == 'identity' and metric == 'l2_means'")["value"]
    assert shift.mean() < identity.mean()  # it moved the cells towards the perturbed ones
    figures = work / "results/toy_iid/figures"
    drawn = {Path(p).name for p in (figures / "index.txt").read_text().split()}
    assert {"mmd_boxplot.pdf", "marginals.pdf", "clustergram_mean_shift.pdf", "vector_field_mean_shift.pdf"} <= drawn
    assert any(name.startswith("umap_") for name in drawn)
    for name in drawn:
        assert (figures / name).stat().st_size > 0, name
    saved = (work / "results/toy_iid/models/all/mean_shift/_joint/model.json").read_text()
    assert '"model": "mean_shift"' in saved
    # a real trained model, saved by the copy's code
    cellot = work / "results/toy_iid/models/all/cellot/_joint"
    assert json.loads((cellot / "model.json").read_text())["model"] == "cellot"
    assert (cellot / "weights.safetensors").stat().st_size > 0
