"""The README's own-data recipe and its fast path (issue 25.1): valid, and run end to end at a tiny size."""

import re

import pandas as pd
import pytest
import yaml
from helpers import REPO, run_workflow

from perturbot.models.declarations import declaration
from snakemake.utils import validate

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def readme_recipe() -> tuple[dict, dict]:
    """The README's my.yaml, and the experiment keys its fast path puts in place of model_params."""
    text = (REPO / "README.md").read_text()
    own = text[text.index("## Your own data"):]
    blocks = re.findall(r"```yaml\n(.*?)```", own, re.S)
    recipe = yaml.safe_load(next(b for b in blocks if b.startswith("# my.yaml")))
    fast = yaml.safe_load(next(b for b in blocks if b.lstrip().startswith("model_params:") and "autoencoder:" in b))
    return recipe, fast


def test_the_fast_path_replaces_model_params_and_is_a_valid_config():
    recipe, fast = readme_recipe()
    (name, experiment), = recipe["experiments"].items()
    assert set(fast) == {"model_params", "autoencoder"} and fast["model_params"] == {"w1ot": {"n_iters": 2000}}
    assert fast["autoencoder"] == {"n_iters": 2500}
    assert set(fast["model_params"]) <= set(experiment["models"])
    validate({**recipe, "experiments": {name: {**experiment, **fast}}}, schema=SCHEMA)


@pytest.mark.slow
def test_the_fast_path_runs_on_the_readme_data_at_a_tiny_size(shared_data, tmp_path):
    recipe, fast = readme_recipe()
    (name, experiment), = recipe["experiments"].items()
    experiment.update(fast, holdouts=experiment["holdouts"][:1], n_hvg=100, n_markers=10)
    # the recipe's models and presets as written; every trained model's budget cut to seconds (the fast
    # path itself is minutes; CellOT at its default took most of this test's 7 minutes)
    tiny = {"n_iters": 40, "eval_every": 20}
    trained = [m for m in experiment["models"] if {"n_iters", "eval_every"} <= set(declaration(m).default_params())]
    assert {"cellot", "w1ot"} <= set(trained)  # scGen learns through the shared autoencoder (cut below)
    experiment["model_params"] = {m: {**experiment["model_params"].get(m, {}), **tiny} for m in trained}
    experiment["autoencoder"] = {**experiment["autoencoder"], "n_iters": 100, "hidden_units": [64], "latent_dim": 8}
    recipe["datasets"]["kang"]["source"] = str(shared_data / "kang_muscat.h5ad")
    run_workflow(tmp_path, recipe, f"results/{name}/metrics.csv", "--cores", "2")
    metrics = pd.read_csv(tmp_path / f"results/{name}/metrics.csv")
    assert sorted(metrics["model"].unique()) == sorted(experiment["models"])
    mmd = metrics[metrics.metric == "mmd"].groupby("model")["value"].mean()
    assert mmd.notna().all() and mmd["observed"] < mmd["identity"]
    history = pd.read_csv(next((tmp_path / "results/autoencoders").glob("*/history.csv")))
    assert history["iteration"].tolist() == [100]  # a budget below 2,500: validated once, at its end
