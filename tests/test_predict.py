"""Predicting new cells with a model trained by the workflow (latent space, counts data)."""

import json

import anndata as ad
import numpy as np
import pytest
from helpers import run_workflow, small_counts_config

from perturbot.cli import main as cli_main
from perturbot.data.synthetic import make_counts
from perturbot.predict import GeneMismatchError, predict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    config = small_counts_config(["identity", "observed", "scgen"])
    run_workflow(workdir, config, f"{MODEL_DIR}/model.json", "--cores", "2")  # the model alone: what these tests read
    return workdir


def new_control_cells(n=50):
    # the same generator, another draw: raw counts over all 120 genes, in a shuffled gene order
    cells = make_counts(cells=n, perturbations=1, features=120, seed=5)
    cells = cells[cells.obs["condition"] == "control"].copy()
    return cells[:, np.random.default_rng(0).permutation(cells.n_vars)].copy()


# scGen fits in seconds (cheap_fit): every perturbation of the run is one model, a bundle in _each
MODEL_DIR = "results/counts_iid/models/all/scgen/_each"
DRUG = "trametinib"


def test_predict_new_file_matches_training_preprocessing(trained, tmp_path):
    model_dir = trained / MODEL_DIR
    recipe = json.loads((model_dir / "preprocessing.json").read_text())
    assert len(recipe["genes"]) == 60 and recipe["log1p"]

    cells = new_control_cells()
    out = predict(cells, model_dir, perturbation=DRUG)
    assert out.shape == (cells.n_obs, 60)
    assert list(out.var_names) == recipe["genes"]
    assert list(out.obs_names) == list(cells.obs_names)

    # the prediction equals the model applied to cells preprocessed by hand the same way
    from perturbot.latent import load_model
    from perturbot.preprocessing import normalize_log1p

    by_hand = cells.copy()
    normalize_log1p(by_hand)
    x = np.asarray(by_hand[:, recipe["genes"]].X.toarray())
    np.testing.assert_allclose(out.X, load_model(model_dir).transport(x, perturbation=DRUG), rtol=1e-5, atol=1e-5)

    # the command line writes the same cells
    path = tmp_path / "cells.h5ad"
    cells.write_h5ad(path)
    assert cli_main(["predict", "--model", str(model_dir), "--input", str(path), "--output", str(tmp_path / "pred.h5ad"),
                     "--perturbation", DRUG]) == 0
    np.testing.assert_allclose(ad.read_h5ad(tmp_path / "pred.h5ad").X, out.X)


def test_predict_reports_missing_genes(trained, tmp_path, capsys):
    model_dir = trained / MODEL_DIR
    cells = new_control_cells()
    recipe = json.loads((model_dir / "preprocessing.json").read_text())
    dropped = recipe["genes"][:3]
    cells = cells[:, [g for g in cells.var_names if g not in dropped]].copy()
    with pytest.raises(GeneMismatchError, match=f"3 of the model's 60 genes.*{dropped[0]}"):
        predict(cells, model_dir, perturbation=DRUG)
    path = tmp_path / "bad.h5ad"
    cells.write_h5ad(path)
    assert cli_main(["predict", "--model", str(model_dir), "--input", str(path), "--output", str(tmp_path / "o.h5ad"),
                     "--perturbation", DRUG]) == 2
    assert "missing from the input" in capsys.readouterr().err
    assert not (tmp_path / "o.h5ad").exists()
