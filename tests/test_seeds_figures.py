"""An experiment with several seeds draws every figure (runs are <label>.seed<k>, predictions carry the label)."""

import pandas as pd
import pytest
from helpers import run_workflow, small_features_config

pytestmark = pytest.mark.slow
EXP = "toy_iid"


def test_every_figure_of_an_experiment_with_seeds(tmp_path):
    config = small_features_config(
        models=["identity", "observed", "w1ot"],
        seeds=[0, 1],
        joint_training=True,
        model_params={"w1ot": {"n_iters_potential": 20, "n_iters_step": 20, "eval_every": 10, "batch_size": 32}},
        figures={"umap_max_cells": 60},
    )
    run_workflow(tmp_path, config, "--cores", "2")
    figures = tmp_path / "results" / EXP / "figures"
    drawn = (figures / "index.txt").read_text().split()
    names = {p.rsplit("/", 1)[-1] for p in drawn}
    # one clustergram and vector field per OT run, box plot, marginals, UMAPs
    assert {"mmd_boxplot.pdf", "marginals.pdf"} <= names
    assert {"clustergram_w1ot.seed0.pdf", "clustergram_w1ot.seed1.pdf", "vector_field_w1ot.seed1.pdf"} <= names
    assert any(n.startswith("umap_") for n in names)
    for name in names:
        assert (figures / name).stat().st_size > 0, name
    metrics = pd.read_csv(tmp_path / "results" / EXP / "metrics.csv")
    assert set(metrics["seed"]) == {0, 1}
    assert set(metrics["model"]) == {"identity", "observed", "w1ot"}
