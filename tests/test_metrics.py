"""Metrics against hand-computed values and closed forms."""

import numpy as np
import pytest

from perturbot import metrics


def brute_force_mmd(x, y, gammas):
    def k(a, b, g):
        return np.mean([[np.exp(-g * np.sum((ai - bj) ** 2)) for bj in b] for ai in a])

    return np.mean([k(x, x, g) + k(y, y, g) - 2 * k(x, y, g) for g in gammas])


def test_mmd_hand_computed_one_point_each():
    # one point each, distance^2 = 1: MMD^2 = 2 - 2 exp(-gamma), averaged over gammas
    x, y = np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]])
    expected = np.mean(2 - 2 * np.exp(-metrics.MMD_GAMMAS))
    assert metrics.mmd(x, y) == pytest.approx(expected, rel=1e-6)


def test_mmd_matches_brute_force_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(loc=0.5, size=(5, 3))
    assert metrics.mmd(x, y) == pytest.approx(brute_force_mmd(x, y, metrics.MMD_GAMMAS), rel=1e-5)


def test_mmd_gammas_are_the_papers():
    assert len(metrics.MMD_GAMMAS) == 50
    assert metrics.MMD_GAMMAS[0] == pytest.approx(10.0) and metrics.MMD_GAMMAS[-1] == pytest.approx(1e-3)


def test_mmd_zero_for_identical_sets_and_symmetric():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(15, 4))
    assert metrics.mmd(x, x) == pytest.approx(0.0, abs=1e-7)
    assert metrics.mmd(x, y) == pytest.approx(metrics.mmd(y, x), rel=1e-6)


def test_mmd_rejects_width_mismatch():
    with pytest.raises(ValueError, match="widths"):
        metrics.mmd(np.zeros((3, 2)), np.zeros((3, 4)))


def test_mean_metrics_hand_computed():
    x = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])  # mean (1, 1, 1)
    y = np.array([[1.0, 2.0, 3.0], [1.0, 4.0, 5.0]])  # mean (1, 3, 4)
    assert metrics.l2_means(x, y) == pytest.approx(np.sqrt(0 + 4 + 9))
    # constant mean vector has no correlation
    assert np.isnan(metrics.r_means(x, y))
    x2 = np.array([[1.0, 2.0, 3.0]])
    y2 = np.array([[2.0, 4.0, 6.5]])
    r = np.corrcoef([1, 2, 3], [2, 4, 6.5])[0, 1]
    assert metrics.r_means(x2, y2) == pytest.approx(r)
    assert metrics.r2_means(x2, y2) == pytest.approx(r**2)


def test_gt_rmse_hand_computed():
    pred = np.array([[0.0, 0.0], [1.0, 1.0]])
    truth = np.array([[3.0, 4.0], [1.0, 1.0]])  # squared errors 25 and 0
    assert metrics.gt_rmse(pred, truth) == pytest.approx(np.sqrt(12.5))


def test_all_metrics_restricts_mmd_to_marker_columns():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    y[:, 4] += 5.0  # only column 4 differs strongly
    on_markers = metrics.all_metrics(x, y, mmd_features=np.array([0, 1]))
    assert on_markers["mmd"] == pytest.approx(metrics.mmd(x[:, :2], y[:, :2]))
    assert on_markers["l2_means"] == pytest.approx(metrics.l2_means(x, y))
    assert "gt_rmse" not in on_markers


def test_logfc_mae_hand_computed():
    control = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    pred = np.array([[2.0, 2.0, 4.0], [2.0, 2.0, 16.0]])  # feature 0 doubled, feature 2 x2.5
    # true change: x2 on features 0 and 2 -> errors |1 - 1| and |log2(2.5) - 1|
    expected = (0 + abs(np.log2(2.5) - 1)) / 2
    assert metrics.logfc_mae(pred, control, np.array([0, 2]), 1.0) == pytest.approx(expected)


def test_score_is_pure_and_restricts_draws_columns_and_truth():
    """metrics.score: everything it scores is an argument; subsamples, marker columns and truth behave as said."""
    predicted = np.array([[0.0, 0.0, 5.0], [2.0, 0.0, 5.0], [4.0, 0.0, 5.0], [6.0, 0.0, 5.0]])
    observed = np.array([[1.0, 1.0, 0.0], [3.0, 1.0, 0.0], [5.0, 1.0, 0.0]])
    truth = predicted + np.array([1.0, 0.0, 0.0])
    rows = metrics.score(predicted, observed, truth=truth, columns=np.array([0, 1]))
    values = {r["metric"]: r["value"] for r in rows}
    assert {r["n_cells"] for r in rows} == {3} and {r["draw"] for r in rows} == {0}
    # means on columns 0 and 1 only: (3, 0) vs (3, 1)
    assert values["l2_means"] == pytest.approx(1.0)
    assert values["gt_rmse"] == pytest.approx(1.0)  # truth restricted to the same columns: off by 1 in column 0
    everything = {r["metric"]: r["value"] for r in metrics.score(predicted, observed)}
    assert everything["l2_means"] == pytest.approx(np.sqrt(1.0 + 25.0)) and "gt_rmse" not in everything
    draws = list(metrics.subsamples(4, 3, n_cells=[2], draws=3, seed=0))
    assert [(n, d) for n, d, _, _ in draws] == [(2, 0), (2, 1), (2, 2)]
    first = list(metrics.subsamples(4, 3, n_cells=[2], draws=3, seed=0))
    np.testing.assert_array_equal(first[1][2], draws[1][2])  # seeded
    scored = metrics.score(predicted, observed, draws=draws)
    assert len(scored) == 3 * 4 and {r["n_cells"] for r in scored} == {2}
    pred_rows, obs_rows = draws[0][2], draws[0][3]
    expected = np.linalg.norm(predicted[pred_rows].mean(0) - observed[obs_rows].mean(0))
    assert [r["value"] for r in scored if r["metric"] == "l2_means"][0] == pytest.approx(expected)
    control = predicted / 2.0  # every prediction is twice its control: log2 fold change 1 on each feature
    logfc = {r["metric"]: r["value"] for r in metrics.score(predicted, observed, logfc=(control, np.array([0, 2]), 1.0))}
    assert logfc["logfc_mae"] == pytest.approx(0.0, abs=1e-6)
