"""A run's predictions are checked before they are scored; what a model is, not its name, decides how."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from perturbot import experiment, predict
from perturbot.cells import model_input
from perturbot.config import ModelSpec
from perturbot.experiment import Prediction, PredictionError, predict_and_evaluate, predicted_cells, score_prediction
from perturbot.models.simple import Identity, Observed
from perturbot.preprocessing import prepare


def prepared() -> ad.AnnData:
    """60 control cells and 30 of each of two perturbations, six features, i.i.d. split."""
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 0.5, size=(120, 6)).astype(np.float32)
    obs = pd.DataFrame({"condition": ["ctrl"] * 60 + ["stim"] * 30 + ["other"] * 30}, index=[f"c{i}" for i in range(120)])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"f{i}" for i in range(6)]))
    return prepare(adata, perturbations=["stim", "other"], condition_key="condition", control="ctrl",
                   modality="features", min_cells=3, seed=0)


class Failing(Identity):
    """Identity, but one cell comes out with a NaN and an infinite value."""

    def transport(self, x, perturbation=None):
        out = super().transport(x)
        out[1, 0], out[1, 3] = np.nan, np.inf
        return out


def fitted(cls):
    return cls().fit(np.zeros((3, 6), np.float32), np.zeros((3, 6), np.float32))


def test_a_non_finite_prediction_is_an_error_naming_the_run_and_perturbation(tmp_path, monkeypatch):
    adata = prepared()
    adata.write_h5ad(tmp_path / "all.h5ad")
    monkeypatch.setattr(experiment, "load_model", lambda d: fitted(Failing if d.name == "other" else Identity))
    spec = ModelSpec(label="flaky", model="identity", space="data", params={"seed": 0}, run="flaky.seed0")
    jobs = [Prediction(p, tmp_path / p, tmp_path / f"{p}.h5ad", tmp_path / f"{p}.csv") for p in ("stim", "other")]
    n = int(((adata.obs["condition"] == "ctrl") & (adata.obs["split"] == "test")).sum())
    message = (rf"experiment 'e', holdout 'all', run 'flaky.seed0' .*: the prediction for perturbation 'other' "
               rf"has 2 NaN or infinite value\(s\), in 1 of {n} cells")
    with pytest.raises(PredictionError, match=message):
        predict_and_evaluate(tmp_path / "all.h5ad", spec, jobs, experiment="e")
    assert (tmp_path / "stim.csv").exists() and not (tmp_path / "other.csv").exists()
    assert not (tmp_path / "other.h5ad").exists()
    inputs = model_input(adata)
    bad = Failing().fit(inputs.X, inputs.X).transport(np.asarray(inputs.X))
    with pytest.raises(PredictionError, match="run 'flaky.seed0'.*'stim'"):  # scoring refuses it too
        score_prediction(adata, inputs, bad, spec, "stim", experiment="e")


def test_predict_refuses_a_non_finite_prediction(tmp_path, monkeypatch):
    adata = prepared()
    fitted(Identity).save(tmp_path / "model")
    (tmp_path / "model" / predict.RECIPE_FILE).write_text('{"genes": ["f0", "f1", "f2", "f3", "f4", "f5"]}')
    assert predict.predict(adata, tmp_path / "model").shape == adata.shape
    monkeypatch.setattr(predict, "load_model", lambda d: fitted(Failing))
    with pytest.raises(PredictionError, match=r"model '.*model'.*2 NaN or infinite value\(s\), in 1 of 120 cells"):
        predict.predict(adata, tmp_path / "model")


class ReferenceCells(Observed):
    """A lower bound under another name: real perturbed cells stand in for the prediction."""


def test_reference_cell_models_are_known_by_their_tag_not_their_name(monkeypatch):
    from perturbot import models as registry

    monkeypatch.setitem(registry._REGISTRY, "reference_copy", f"{__name__}:ReferenceCells")
    assert registry.tags("reference_copy")["needs_reference_cells"]
    adata = prepared()
    adata.obsm["X_true_stim"] = np.asarray(adata.X) + 1.0  # a known per-cell response
    inputs = model_input(adata)
    x = np.asarray(inputs.X)
    by_tag = ModelSpec(label="bound", model="reference_copy", space="data")
    identity = ModelSpec(label="identity", model="identity", space="data")
    assert "transport_cost" not in predicted_cells(adata, inputs, x, by_tag, "stim").obs
    assert predicted_cells(adata, inputs, x + 1.0, identity, "stim").obs["transport_cost"].to_numpy() == pytest.approx(6.0)
    scored = {s.label: score_prediction(adata, inputs, x, s, "stim", experiment="e") for s in (by_tag, identity)}
    assert "gt_rmse" not in set(scored["bound"]["metric"])  # no per-cell correspondence: no truth to compare with
    gt = scored["identity"].set_index("metric")["value"]["gt_rmse"]
    assert gt == pytest.approx(np.sqrt(6.0))
