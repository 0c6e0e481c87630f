"""Tests between models: exact p-values by hand, pairing by perturbation, BH correction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perturbot.statistics import (
    RANK_SUM,
    SIGNED_RANK,
    adjust,
    compare,
    min_p_rank_sum,
    min_p_signed_rank,
    model_tests,
    unit_means,
)


def table(values: dict[str, list[float]], metric: str = "mmd", seeds: int = 1, noise: float = 0.0) -> pd.DataFrame:
    """A metrics table: model -> one value per perturbation (drug0, drug1, ...), repeated per seed."""
    rows = []
    for model, vals in values.items():
        for p, v in enumerate(vals):
            for seed in range(seeds):
                offset = noise * (seed - (seeds - 1) / 2)
                rows.append({"experiment": "e", "setting": "iid", "holdout": "all", "model": model,
                             "perturbation": f"drug{p}", "seed": seed, "n_cells": 100, "draw": 0,
                             "metric": metric, "value": v + offset})
    return pd.DataFrame(rows)


def test_exact_rank_sum_three_against_three_is_one_tenth():
    # 20 equally likely rank splits; the two extreme ones are as or more extreme: 2/20
    result = compare(pd.Series([1.0, 2.0, 3.0]), pd.Series([4.0, 5.0, 6.0], index=[3, 4, 5]), RANK_SUM)
    assert result["p_value"] == pytest.approx(0.1)
    assert result["min_p"] == pytest.approx(0.1)
    assert not result["testable"]


def test_exact_signed_rank_six_positive_differences():
    # 2^6 sign patterns, all-positive and all-negative are the extremes: 2/64
    a = pd.Series([1.5, 2.0, 3.5, 4.0, 5.0, 9.0])
    b = pd.Series([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    result = compare(a, b, SIGNED_RANK, higher_is_better=True)
    assert result["p_value"] == pytest.approx(0.03125)
    assert result["n"] == 6 and result["testable"]
    assert result["share_a_better"] == 1.0
    assert result["median_difference"] == pytest.approx(np.median([0.5, 1.0, 2.5, 3.0, 4.0, 8.0]))


def test_smallest_reachable_p_values():
    assert min_p_signed_rank(5) == pytest.approx(0.0625)
    assert min_p_signed_rank(6) == pytest.approx(0.03125)
    assert min_p_rank_sum(3, 3) == pytest.approx(0.1)
    assert min_p_rank_sum(4, 4) == pytest.approx(2 / 70)


def test_pairing_sees_a_consistent_shift_that_pooling_misses():
    # B = A + 0.01 on every perturbation, but perturbations differ by orders of magnitude:
    # the rank-sum test sees overlapping samples, the paired test sees six wins of six.
    base = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    metrics = table({"a": base, "b": [v + 0.01 for v in base]})
    paired = model_tests(metrics, ("mmd",), SIGNED_RANK).iloc[0]
    unpaired = model_tests(metrics, ("mmd",), RANK_SUM).iloc[0]
    assert paired["p_value"] == pytest.approx(0.03125)
    assert paired["share_a_better"] == 1.0  # mmd: lower is better, a is lower everywhere
    assert paired["median_difference"] == pytest.approx(-0.01)
    assert unpaired["p_value"] > 0.5


def test_seeds_are_averaged_not_pooled():
    metrics = table({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}, seeds=3, noise=0.1)
    means = unit_means(metrics)
    assert len(means) == 6 and (means["n_reps"] == 3).all()
    assert means.set_index(["model", "perturbation"]).loc[("a", "drug1"), "value"] == pytest.approx(2.0)
    assert means["sd"].to_numpy() == pytest.approx(np.full(6, 0.1))
    row = model_tests(metrics, ("mmd",), RANK_SUM).iloc[0]
    assert (row["n_a"], row["n_b"]) == (3, 3)
    assert row["p_value"] == pytest.approx(0.1)  # 3 vs 3, not 9 vs 9


def test_benjamini_hochberg_by_hand():
    # sorted p (0.01, 0.02, 0.03, 0.5) * m / rank = (0.04, 0.04, 0.04, 0.5), then cumulative minimum from the top
    p = pd.Series([0.03, 0.5, 0.01, 0.02, np.nan])
    adjusted = adjust(p)
    assert adjusted.iloc[:4].to_numpy() == pytest.approx([0.04, 0.5, 0.04, 0.04])
    assert np.isnan(adjusted.iloc[4])


def test_table_adjusts_within_experiment_and_metric():
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    metrics = pd.concat([
        table({"a": list(base), "b": list(base + 1), "c": list(base + [0.5, -0.5, 0.5, -0.5, 0.5, -0.5])}, "mmd"),
        table({"a": list(base), "b": list(base - 1)}, "r2_means"),
    ])
    tests = model_tests(metrics, ("mmd", "r2_means"))
    mmd = tests[tests["metric"] == "mmd"].set_index(["model_a", "model_b"])
    assert len(mmd) == 3
    expected = adjust(mmd["p_value"].reset_index(drop=True)).to_numpy()
    assert mmd["p_adjusted"].to_numpy() == pytest.approx(expected)
    assert mmd.loc[("a", "b"), "p_value"] == pytest.approx(0.03125)
    assert mmd.loc[("a", "b"), "p_adjusted"] > mmd.loc[("a", "b"), "p_value"]
    r2 = tests[tests["metric"] == "r2_means"].iloc[0]
    assert r2["p_adjusted"] == pytest.approx(r2["p_value"])  # one pair: nothing to correct
    assert r2["share_a_better"] == 1.0  # higher R² is better


def test_identical_models_and_unknown_test():
    metrics = table({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})
    row = model_tests(metrics, ("mmd",)).iloc[0]
    assert row["p_value"] == 1.0 and row["median_difference"] == 0.0
    with pytest.raises(ValueError, match="test must be one of"):
        model_tests(metrics, ("mmd",), "t_test")


def test_one_model_gives_an_empty_table_with_every_column_and_its_box_plot(tmp_path):
    from perturbot.statistics import TEST_COLUMNS

    metrics = pd.concat([table({"cellot": [0.1, 0.2, 0.3]}, m) for m in ("mmd", "l2_means", "r2_means")])
    tests = model_tests(metrics)
    assert tests.empty and list(tests.columns) == TEST_COLUMNS
    from perturbot.plotting import mmd_boxplot
    from perturbot.tables import read_statistics

    tests.to_csv(tmp_path / "statistics.csv", index=False)
    back = read_statistics(tmp_path / "statistics.csv")
    assert back.empty and list(back.columns) == TEST_COLUMNS
    figure = mmd_boxplot(metrics, back, kinds={"cellot": {"model": "cellot", "is_ot": True}})
    assert len(figure.axes) == 3


def test_a_nan_metric_is_refused_naming_its_row_not_dropped():
    metrics = table({"a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "b": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]})
    metrics.loc[(metrics["model"] == "b") & (metrics["perturbation"] == "drug4"), "value"] = np.nan
    with pytest.raises(ValueError, match=r"1 of 12 .*model 'b'.*perturbation 'drug4'.*metric 'mmd'"):
        model_tests(metrics, ("mmd",))
    metrics.loc[metrics["value"].isna(), "value"] = np.inf
    with pytest.raises(ValueError, match="model 'b'"):
        unit_means(metrics)
    unnamed = table({"a": [1.0, 2.0], "b": [2.0, 3.0]})
    unnamed.loc[0, "perturbation"] = np.nan  # a perturbation "NA" read with pandas' defaults
    with pytest.raises(ValueError, match="1 metric rows have no perturbation"):
        model_tests(unnamed, ("mmd",))
    # a NaN in a metric that is not tested does not stop the others
    other = pd.concat([table({"a": [1.0, 2.0], "b": [2.0, 3.0]}), table({"a": [np.nan, 1.0], "b": [1.0, 1.0]}, "r_means")])
    assert len(model_tests(other, ("mmd",))) == 1


@pytest.mark.parametrize("label", ["NA", "None", "null", "nan", "NaN", "n/a", "#N/A"])
def test_labels_that_pandas_reads_as_missing_survive_the_metrics_and_statistics_files(tmp_path, label):
    from perturbot.tables import aggregate_metrics, read_metrics, read_statistics

    base = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    metrics = table({"a": base, "b": [v + 0.5 for v in base]})
    metrics["perturbation"] = metrics["perturbation"].replace({"drug0": label})
    metrics["holdout"] = label
    metrics.loc[(metrics["model"] == "a") & (metrics["perturbation"] == "drug5"), "value"] = np.nan  # stays missing
    paths = []
    for i, (_, part) in enumerate(metrics.groupby("model")):
        paths.append(tmp_path / f"{i}.csv")
        part.to_csv(paths[-1], index=False)
    aggregate_metrics(paths, tmp_path / "metrics.csv")
    back = read_metrics(tmp_path / "metrics.csv")
    assert sorted(set(back["perturbation"])) == sorted({label, "drug1", "drug2", "drug3", "drug4", "drug5"})
    assert (back["holdout"] == label).all() and back["value"].isna().sum() == 1
    assert back["value"].dtype == float and back["seed"].dtype == np.int64
    back = back.dropna(subset=["value"])  # here only to reach the statistics
    tests = model_tests(back, ("mmd",))
    assert tests.iloc[0]["n"] == 5  # the label's pair and four others: drug5 lacks a's value
    tests.assign(model_a=label).to_csv(tmp_path / "statistics.csv", index=False)
    stats = read_statistics(tmp_path / "statistics.csv")
    assert stats.iloc[0]["model_a"] == label and stats.iloc[0]["n"] == 5
    assert stats["testable"].dtype == bool and stats["p_value"].dtype == float
