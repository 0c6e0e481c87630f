"""Marker genes of each paper's evaluation protocol: the stored ranking, scanpy on test cells, and the metrics on them."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from perturbot.config import ModelSpec
from perturbot.data.io import DataError
from perturbot.experiment import Prediction, predict_and_evaluate
from perturbot.markers import evaluation_features, markers_of, markers_on_test_cells, stored_markers
from perturbot.models.simple import Identity
from perturbot.preprocessing import prepare

GENES = [f"g{i}" for i in range(12)]


def expression(seed: int = 0, ranking: bool = True) -> ad.AnnData:
    """Log-expression of 80 control and 80 'stim' cells; stim raises g3 and g7; a stored ranking puts g5, g1, g9 first."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 0.5, size=(160, len(GENES))).astype(np.float32)
    x[80:, [3, 7]] += 3.0
    obs = pd.DataFrame({"condition": ["ctrl"] * 80 + ["stim"] * 80}, index=[f"c{i}" for i in range(160)])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=GENES))
    if ranking:
        ranks = np.arange(len(GENES), dtype=float) + 10
        ranks[[5, 1, 9]] = [0, 1, 2]
        adata.varm["marker_genes-condition-rank"] = pd.DataFrame({"stim": ranks}, index=GENES)
    return adata


def prepared(ranking: bool = True, n_markers: int = 3) -> ad.AnnData:
    return prepare(
        expression(ranking=ranking), perturbations=["stim"], condition_key="condition", control="ctrl",
        modality="expression", n_hvg=len(GENES), n_markers=n_markers, seed=0,
    )


def test_stored_ranking_gives_the_lowest_ranks_first():
    assert stored_markers(expression(), "condition", ["stim"], 3) == {"stim": ["g5", "g1", "g9"]}
    assert stored_markers(expression(ranking=False), "condition", ["stim"], 3) == {}
    adata = prepared()
    assert markers_of(adata.uns["perturbot"], "stim", "stored_markers") == ["g5", "g1", "g9"]
    assert len(adata.varm) == 0  # the ranking is kept as names, not carried in the prepared file


def test_scanpy_markers_on_test_cells_find_the_raised_genes():
    adata = expression(ranking=False)
    found = markers_on_test_cells(adata.X[:80], adata.X[80:], adata.var_names, 2)
    assert sorted(found) == ["g3", "g7"]


def test_protocols_choose_columns_and_metrics():
    adata = prepared()
    x, target = adata.X[:10], adata.X[-10:]
    columns, every = evaluation_features(adata, "stim", "cellot", x, target)
    assert list(adata.var_names[columns]) == ["g5", "g1", "g9"] and every
    columns, every = evaluation_features(adata, "stim", "w1ot", x, target)
    assert list(adata.var_names[columns]) == ["g5", "g1", "g9"] and every  # stored ranking first
    columns, every = evaluation_features(adata, "stim", "training", x, target)
    assert len(columns) == 3 and not every  # training markers, mmd only
    bare = prepared(ranking=False, n_markers=2)
    with pytest.raises(DataError, match="marker_genes-condition-rank"):
        evaluation_features(bare, "stim", "cellot", x, target)
    columns, every = evaluation_features(bare, "stim", "w1ot", bare.X[bare.obs["condition"] == "ctrl"], bare.X[bare.obs["condition"] == "stim"])
    assert sorted(bare.var_names[columns]) == ["g3", "g7"] and every
    columns, every = evaluation_features(prepared(n_markers=50), "stim", "w1ot", x, target)
    assert columns is None and every  # fewer genes than markers: every gene


def test_cellot_protocol_scores_every_metric_on_the_stored_markers(tmp_path):
    adata = prepared()
    adata.write_h5ad(tmp_path / "all.h5ad")
    train = adata[(adata.obs["split"] == "train").to_numpy()]
    Identity().fit(np.asarray(train.X), np.asarray(train.X)).save(tmp_path / "identity")
    spec = ModelSpec(label="identity", model="identity", space="data", params={})
    frames = {
        protocol: predict_and_evaluate(
            tmp_path / "all.h5ad", spec,
            [Prediction("stim", tmp_path / "identity", tmp_path / f"{protocol}.h5ad", tmp_path / f"{protocol}.csv")],
            experiment="e", evaluation={"markers": protocol},
        ).set_index("metric")["value"]
        for protocol in ("training", "cellot")
    }
    test = adata[(adata.obs["split"] == "test").to_numpy()]
    control = np.asarray(test.X[(test.obs["condition"] == "ctrl").to_numpy()])
    stim = np.asarray(test.X[(test.obs["condition"] == "stim").to_numpy()])
    cols = [GENES.index(g) for g in ("g5", "g1", "g9")]
    expected = np.linalg.norm(control[:, cols].mean(0) - stim[:, cols].mean(0))
    assert frames["cellot"]["l2_means"] == pytest.approx(expected, rel=1e-5)
    assert frames["training"]["l2_means"] == pytest.approx(np.linalg.norm(control.mean(0) - stim.mean(0)), rel=1e-5)


@pytest.mark.parametrize("name", ["stim/high", "a/b/c", "NA"])
def test_markers_of_any_perturbation_name_survive_the_h5ad_round_trip(tmp_path, name):
    adata = expression()
    adata.obs["condition"] = adata.obs["condition"].replace({"stim": name})
    adata.varm["marker_genes-condition-rank"] = adata.varm["marker_genes-condition-rank"].rename(columns={"stim": name})
    prepared = prepare(adata, perturbations=[name], condition_key="condition", control="ctrl",
                       modality="expression", n_hvg=len(GENES), n_markers=3, seed=0)
    prepared.write_h5ad(tmp_path / "all.h5ad")
    back = ad.read_h5ad(tmp_path / "all.h5ad")
    before, after = prepared.uns["perturbot"], back.uns["perturbot"]
    trained = markers_of(before, name)
    assert len(trained) == 3 and markers_of(after, name) == trained
    assert markers_of(after, name, "stored_markers") == ["g5", "g1", "g9"]
    x, target = back.X[:10], back.X[-10:]
    columns, every = evaluation_features(back, name, "training", x, target)
    assert list(back.var_names[columns]) == trained and not every  # the mmd on the markers, not on every gene
    columns, every = evaluation_features(back, name, "cellot", x, target)
    assert list(back.var_names[columns]) == ["g5", "g1", "g9"] and every
    assert markers_of(after, "other") is None


def test_markers_split_by_an_earlier_h5ad_are_an_error_not_every_gene():
    # what an earlier version's file held for 'stim/high': the dict key became nested groups
    info = {"markers": {"stim": {"high": np.array(["g3", "g7"])}, "other": np.array(["g1"])}}
    with pytest.raises(DataError, match="'stim/high' were split.*prepare the data again"):
        markers_of(info, "stim/high")
    assert markers_of(info, "other") == ["g1"] and markers_of(info, "none") is None
