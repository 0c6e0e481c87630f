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
    monkeypatch.setattr(registry, "_REGISTERED_AT_RUN_TIME", {"reference_copy"})  # as register() records it
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


def held_out(n_control: int, n_perturbed: int, companion: bool = False) -> ad.AnnData:
    """Patient p1 held out (o.o.s.) with ``n_control`` control and ``n_perturbed`` stim cells; p2 trains."""
    rng = np.random.default_rng(1)
    conditions = ["ctrl"] * n_control + ["stim"] * n_perturbed + ["ctrl"] * 30 + ["stim"] * 30
    patients = ["p1"] * (n_control + n_perturbed) + ["p2"] * 60
    x = rng.gamma(2.0, 0.5, size=(len(conditions), 6)).astype(np.float32)
    x[np.array(conditions) == "stim"] += 1.0
    obs = pd.DataFrame({"condition": conditions, "patient": patients}, index=[f"c{i}" for i in range(len(conditions))])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"f{i}" for i in range(6)]))
    return prepare(adata, perturbations=["stim"], condition_key="condition", control="ctrl", modality="features",
                   setting="oos", holdout_key="patient", holdout="p1", min_cells=3, seed=0, companion=companion)


def test_the_observed_bound_is_scored_on_its_real_cells_without_repeats_and_every_model_on_as_many():
    """80 control cells in the holdout, 20 reference cells: observed used to resample 80 of its 20 cells
    with replacement, and duplicates inflate the biased MMD's within-sample term."""
    from perturbot import metrics
    from perturbot.cells import evaluation_target, observed_reference

    adata = held_out(80, 40)
    inputs = model_input(adata)
    x, reference, target = np.asarray(inputs.X), observed_reference(adata, "stim"), evaluation_target(adata, "stim")
    assert (len(x), len(reference), len(target)) == (80, 20, 20)
    bound = Observed().fit(x, reference)
    predicted = bound.transport(x)
    assert len(predicted) == 20 and len(np.unique(predicted, axis=0)) == 20  # each reference cell once
    assert len(np.unique(bound.transport(x[:15]), axis=0)) == 15  # fewer inputs: a subsample, still no repeats
    spec = {m: ModelSpec(label=m, model=m, space="data") for m in ("observed", "identity")}
    scored = {m: score_prediction(adata, inputs, p, spec[m], "stim", experiment="e").set_index("metric")
              for m, p in (("observed", predicted), ("identity", x))}
    assert scored["observed"].loc["mmd", "value"] == pytest.approx(metrics.mmd(reference, target), rel=1e-6)
    # identity on 20 of its 80 input cells (the companion's 40, capped by observed's 20), the same for every model
    rows = metrics.scored_rows(80, 20, seed=0)
    assert len(rows) == 20 and len(set(rows)) == 20
    assert scored["identity"].loc["mmd", "value"] == pytest.approx(metrics.mmd(x[rows], target), rel=1e-6)
    assert set(scored["observed"]["n_cells"]) == set(scored["identity"]["n_cells"]) == {20}
    cells = predicted_cells(adata, inputs, predicted, spec["observed"], "stim")
    assert cells.n_obs == 20 and cells.obs_names[0] == "reference_0" and "transport_cost" not in cells.obs


def test_a_held_out_run_and_its_iid_companion_score_as_many_predicted_cells(monkeypatch):
    """30 control cells in the holdout: the companion trains on 15 and predicts 15; the held-out run
    predicts all 30 and used to be scored on twice as many cells as its companion."""
    lengths = {}
    real_score = experiment.score

    def recording(predicted, observed, **kwargs):
        lengths[name] = len(predicted)
        return real_score(predicted, observed, **kwargs)

    monkeypatch.setattr(experiment, "score", recording)
    spec = ModelSpec(label="identity", model="identity", space="data")
    for name, companion in (("held out", False), ("companion", True)):
        adata = held_out(30, 80, companion=companion)
        inputs = model_input(adata)
        score_prediction(adata, inputs, np.asarray(inputs.X), spec, "stim", experiment="e")
    assert lengths == {"held out": 15, "companion": 15}


def test_predicting_new_cells_with_the_observed_bound_is_a_clear_error(tmp_path):
    """It used to hand back its reference cells resampled with repeats, under the new cells' names."""
    adata = prepared()
    fitted(Observed).save(tmp_path / "model")
    (tmp_path / "model" / predict.RECIPE_FILE).write_text('{"genes": ["f0", "f1", "f2", "f3", "f4", "f5"]}')
    with pytest.raises(ValueError, match=r"holds Observed, a benchmark bound made of real perturbed cells"):
        predict.predict(adata, tmp_path / "model")
