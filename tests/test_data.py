"""Synthetic ground truth, dataset checks, splits and training-only preprocessing."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from perturbot.data.io import DataError, DuplicateNamesWarning, derive_columns, load_dataset
from perturbot.data.synthetic import ConvexGradientMap, make_counts, make_features
from perturbot.markers import markers_of
from perturbot.preprocessing import prepare, training_hvgs
from perturbot.slugs import SlugError, slug_map, slugify
from perturbot.splits import assign_splits


def test_synthetic_map_is_gradient_of_convex_potential():
    adata = make_features(cells=200, perturbations=1, features=6, seed=3)
    rng = np.random.default_rng(0)
    d = 6
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    A = (q * rng.uniform(0.5, 1.5, d)) @ q.T
    A = (A + A.T) / 2
    w = rng.normal(size=(2, d))
    tmap = ConvexGradientMap(A, rng.normal(size=d), np.array([1.0, 2.0]), w, np.zeros(2))
    x = rng.normal(size=(5, d))
    eps = 1e-5
    numeric = np.stack(
        [(tmap.potential(x + eps * e) - tmap.potential(x - eps * e)) / (2 * eps) for e in np.eye(d)], axis=1
    )
    np.testing.assert_allclose(tmap(x), numeric, atol=1e-5)
    # convexity: the potential lies above its tangent planes
    y = rng.normal(size=(5, d))
    assert np.all(tmap.potential(y) >= tmap.potential(x) + ((y - x) * tmap(x)).sum(1) - 1e-9)
    assert "X_true_trametinib" in adata.obsm


def test_convex_map_rejects_non_spd():
    with pytest.raises(ValueError, match="positive definite"):
        ConvexGradientMap(-np.eye(2), np.zeros(2), np.ones(1), np.ones((1, 2)), np.zeros(1))


def test_synthetic_truth_is_closer_to_perturbed_than_control():
    from perturbot.metrics import mmd

    adata = make_features(cells=400, perturbations=1, features=10, seed=0)
    control = adata.X[:400]
    perturbed = adata.X[adata.obs["drug"] == "trametinib"]
    truth = adata.obsm["X_true_trametinib"][:400]
    assert mmd(truth, perturbed) < 0.3 * mmd(control, perturbed)
    assert np.isnan(adata.obsm["X_true_trametinib"][400:]).all()


def test_counts_generator_shape_and_columns():
    adata = make_counts(cells=100, perturbations=2, features=50, seed=0)
    assert adata.shape == (300, 50)
    assert {"condition", "patient", "cell_type"} <= set(adata.obs)
    assert adata.X.min() >= 0 and np.allclose(adata.X.data, np.round(adata.X.data))


def spec(**kw):
    base = {"source": "synthetic", "modality": "features", "condition_key": "drug", "control": "control",
            "synthetic": {"cells": 60, "perturbations": 2, "features": 5, "seed": 0}}
    return {**base, **kw}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"condition_key": "treatment"}, "condition_key 'treatment' is not an obs column"),
        ({"control": "DMSO"}, "control value 'DMSO' does not occur"),
        ({"perturbations": ["trametinib", "aspirin"]}, "unknown perturbation.*aspirin"),
        ({"layer": "counts"}, "layer 'counts' not found"),
    ],
)
def test_bad_dataset_specs_get_clear_errors(overrides, message):
    with pytest.raises(DataError, match=message):
        load_dataset(spec(**overrides), name="toy")


def test_nan_values_are_rejected(tmp_path):
    adata = make_features(cells=60, perturbations=1, features=4)
    adata.X[3, 2] = np.nan
    path = tmp_path / "nan.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(DataError, match="NaN"):
        load_dataset(spec(source=str(path)), name="nan")


def test_cells_without_a_condition_are_an_error_not_a_perturbation_named_nan(tmp_path):
    adata = make_features(cells=60, perturbations=1, features=4)
    drug = adata.obs["drug"].astype(object)
    drug.iloc[[2, 70, 71]] = np.nan
    adata.obs["drug"] = drug
    path = tmp_path / "unlabelled.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(DataError, match=r"3 cell\(s\) have no value in obs\['drug'\].*'nan'"):
        load_dataset(spec(source=str(path)), name="unlabelled")
    # perturbations listed by name: those cells are simply not among them, and 'nan' names none of them
    kept, perturbations = load_dataset(spec(source=str(path), perturbations=["trametinib"]), name="unlabelled")
    assert perturbations == ["trametinib"] and kept.n_obs == 117
    assert list(kept.obs["drug"].cat.categories) == ["control", "trametinib"] and kept.obs["drug"].notna().all()
    with pytest.raises(DataError, match="unknown perturbation.*'nan'"):
        load_dataset(spec(source=str(path), perturbations=["nan"]), name="unlabelled")


def test_derive_column_by_regex():
    adata = ad.AnnData(np.zeros((3, 1)), obs=pd.DataFrame({"sample_id": ["ctrl101", "stim107", "ctrl107"]}))
    derive_columns(adata, {"patient": {"from": "sample_id", "regex": r"(\d+)$"}})
    assert list(adata.obs["patient"]) == ["101", "107", "107"]
    with pytest.raises(DataError, match="does not match"):
        derive_columns(adata, {"bad": {"from": "sample_id", "regex": r"^x(\d)"}})


def obs_frame(n_per=50, groups=("A", "B")):
    conditions = ["control"] * (2 * n_per) + ["p1"] * (2 * n_per)
    patients = [groups[i % 2] for i in range(4 * n_per)]
    return pd.DataFrame({"condition": conditions, "patient": patients}, index=[f"c{i}" for i in range(4 * n_per)])


def test_iid_split_is_per_condition_and_disjoint():
    obs = obs_frame()
    s = assign_splits(obs, condition_key="condition", control="control", perturbations=["p1"], test_fraction=0.2, seed=0)
    for condition in ("control", "p1"):
        part = s[obs["condition"] == condition]
        assert (part["split"] == "test").sum() == 20
    # observed's reference cells are training cells of the perturbation, as many as its test cells
    ref = s["reference"]
    assert (s.loc[ref, "split"] == "train").all() and ref.sum() == 20
    assert (obs.loc[ref, "condition"] == "p1").all()
    again = assign_splits(obs, condition_key="condition", control="control", perturbations=["p1"], seed=0)
    pd.testing.assert_frame_equal(s, again)


def test_holdout_split_never_trains_on_holdout():
    obs = obs_frame()
    s = assign_splits(obs, condition_key="condition", control="control", perturbations=["p1"], setting="oos",
                      holdout_key="patient", holdout="A", seed=0)
    assert (s.loc[obs["patient"] == "A", "split"] == "test").all()
    assert (s.loc[obs["patient"] == "B", "split"] == "train").all()
    held_pert = (obs["patient"] == "A") & (obs["condition"] == "p1")
    assert s.loc[held_pert, "reference"].sum() == held_pert.sum() // 2
    assert not s.loc[~held_pert, "reference"].any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_fraction": 0.05}, r"control \(100 cells, test_fraction=0.05\): its test split has 5 cell"),
        ({"setting": "oos", "holdout_key": "donor", "holdout": "A"}, "holdout_key 'donor' is not an obs column"),
        ({"setting": "oos", "holdout_key": "patient", "holdout": "Z"}, "holdout 'Z' does not occur"),
    ],
)
def test_split_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        assign_splits(obs_frame(), condition_key="condition", control="control", perturbations=["p1"], min_cells=10, **kwargs)


def test_hvgs_come_from_training_cells_only():
    rng = np.random.default_rng(0)
    n, genes = 200, 30
    x = rng.poisson(5.0, size=(n, genes)).astype(np.float32)
    split = np.array(["train"] * 150 + ["test"] * 50)
    # gene 0 is constant in the training cells and varies wildly in the test cells
    x[:, 0] = 5.0
    x[150:, 0] = rng.choice([0, 500], size=50)
    adata = ad.AnnData(np.log1p(x), obs=pd.DataFrame({"split": split}, index=[f"c{i}" for i in range(n)]),
                       var=pd.DataFrame(index=[f"g{j}" for j in range(genes)]))
    assert "g0" not in training_hvgs(adata, 10)
    # the same matrix with the roles swapped: now the varying cells are training cells
    adata.obs["split"] = np.where(np.arange(n) >= 150, "train", "test")
    assert "g0" in training_hvgs(adata, 10)


def test_prepare_counts_records_recipe_and_markers():
    adata = make_counts(cells=120, perturbations=2, features=80, seed=0)
    prepared = prepare(adata, perturbations=["trametinib", "dasatinib"], condition_key="condition", control="control",
                       modality="counts", n_hvg=40, n_markers=5, seed=0)
    info = prepared.uns["perturbot"]
    assert prepared.n_vars == 40 and list(info["recipe"]["genes"]) == list(prepared.var_names)
    assert info["recipe"]["log1p"] and info["recipe"]["normalize_total"] == 1e4
    assert set(info["markers"]["perturbation"]) == {"trametinib", "dasatinib"}
    markers = {p: markers_of(info, p) for p in ("trametinib", "dasatinib")}
    assert all(len(v) == 5 and set(v) <= set(prepared.var_names) for v in markers.values())


def test_slugs():
    assert slugify("Dasatinib + Trametinib") == "Dasatinib_Trametinib"
    assert slugify("a/b c") == "a_b_c"
    assert slug_map(["b c", "a", "..x"]) == {"b_c": "b c", "a": "a", "..x": "..x"}  # order kept
    with pytest.raises(SlugError, match="'a b' and name 'a\\+b' both become the file name 'a_b'"):
        slug_map(["a b", "a+b"])


@pytest.mark.parametrize(
    "names, message",
    [
        (["a b", "a_b"], "holdout 'a b' and holdout 'a_b' both become the file name 'a_b'"),
        (["CD14+ Mono", "CD14 Mono"], "holdout 'CD14\\+ Mono' and holdout 'CD14 Mono' both become the file name 'CD14_Mono'"),
        (["B cells", "b_cells"], "file names 'B_cells' and 'b_cells', one file on case-insensitive file systems"),
        (["A", "B", "A"], "holdout 'A' is listed twice"),
        (["A", ".."], "name '..' has no letter, digit or '-' usable in a file name \\(it would become '..'\\)"),
        (["."], "name '.' has no letter"),
        (["+/"], "name '\\+/' has no letter"),
    ],
)
def test_names_that_would_share_a_file_or_name_none_are_refused(names, message):
    with pytest.raises(SlugError, match=message):
        slug_map(names, "holdout")


def test_perturbations_that_share_a_file_name_are_a_data_error(tmp_path):
    adata = make_features(cells=30, perturbations=2, features=4)
    adata.obs["drug"] = adata.obs["drug"].astype(str).replace({"trametinib": "CD14+ Mono", "dasatinib": "CD14 Mono"})
    path = tmp_path / "clash.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(DataError, match=r"dataset 'clash', perturbations in obs\['drug'\]: perturbation 'CD14 Mono' "
                                        r"and perturbation 'CD14\+ Mono' both become the file name 'CD14_Mono'"):
        load_dataset(spec(source=str(path)), name="clash")
    with pytest.raises(DataError, match="perturbation 'CD14 Mono' is listed twice"):
        load_dataset(spec(source=str(path), perturbations=["CD14 Mono", "CD14 Mono"]), name="clash")
    # one of them alone is fine
    kept, perturbations = load_dataset(spec(source=str(path), perturbations=["CD14 Mono"]), name="clash")
    assert perturbations == ["CD14 Mono"] and kept.n_obs == 60


def test_repeated_cell_and_gene_names_are_made_unique_with_a_warning(tmp_path):
    adata = make_counts(cells=40, perturbations=1, features=30, seed=0)
    obs_names, var_names = list(adata.obs_names), list(adata.var_names)
    obs_names[5] = obs_names[4]
    var_names[1] = var_names[2] = var_names[0]
    adata.obs_names, adata.var_names = obs_names, var_names
    path = tmp_path / "repeats.h5ad"
    adata.write_h5ad(path)
    counts = spec(source=str(path), modality="counts", condition_key="condition")
    with pytest.warns(DuplicateNamesWarning) as caught:
        loaded, _ = load_dataset(counts, name="repeats")
    messages = [str(w.message) for w in caught]
    assert any(f"1 cell name(s) occur more than once, e.g. {obs_names[4]!r}" in m for m in messages)
    assert any(f"1 gene/feature name(s) occur more than once, e.g. {var_names[0]!r}" in m for m in messages)
    assert loaded.obs_names.is_unique and loaded.var_names.is_unique
    # the first keeps its name, the repeats get -1, -2 in order; the values stay with their columns
    assert list(loaded.var_names[:3]) == [var_names[0], f"{var_names[0]}-1", f"{var_names[0]}-2"]
    assert list(loaded.obs_names[4:6]) == [obs_names[4], f"{obs_names[4]}-1"]
    np.testing.assert_array_equal(loaded.X[:, :3].toarray(), adata.X[:, :3].toarray())
    # and the genes can be selected by name: preparation (HVGs, markers) runs through
    prepared = prepare(loaded, perturbations=["trametinib"], condition_key="condition", control="control",
                       modality="counts", n_hvg=20, n_markers=5, min_cells=5)
    assert prepared.var_names.is_unique and prepared.n_vars == 20


def test_iid_companion_trains_on_half_the_holdout_and_keeps_the_target():
    obs = obs_frame(n_per=40)
    kwargs = dict(condition_key="condition", control="control", perturbations=["p1"], setting="oos",
                  holdout_key="patient", holdout="A", seed=0)
    held_out = assign_splits(obs, **kwargs)
    companion = assign_splits(obs, companion=True, **kwargs)
    in_a = obs["patient"] == "A"
    target = lambda s: s.index[(s["split"] == "test") & ~s["reference"] & (obs["condition"] == "p1")]  # noqa: E731
    # same evaluation target in both runs
    assert list(target(held_out)) == list(target(companion))
    # the companion trains on half of the holdout's control cells and the reference half of its perturbed cells
    control_a = in_a & (obs["condition"] == "control")
    assert (companion.loc[control_a, "split"] == "train").sum() == control_a.sum() // 2
    assert (companion.loc[companion["reference"], "split"] == "train").all()
    assert (companion.loc[~in_a, "split"] == "train").all()
