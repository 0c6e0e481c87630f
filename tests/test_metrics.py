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


def test_mmd_gives_the_numbers_it_gave_before_it_was_computed_in_blocks():
    """Values of the papers' MMD computed with the code before blocks: unchanged up to float32 rounding."""
    rng = np.random.default_rng(2026)
    x, y = rng.normal(size=(37, 5)), rng.normal(0.5, 1.2, size=(29, 5))
    assert metrics.mmd(x, y) == pytest.approx(0.04289768955202039, rel=1e-9)
    rng = np.random.default_rng(7)  # more cells than one block: 2,100 x 2,050
    x = rng.normal(size=(2100, 8)).astype(np.float32)
    y = (rng.normal(size=(2050, 8)) * 1.1 + 0.2).astype(np.float32)
    assert metrics.mmd(x, y) == pytest.approx(0.0054304255402361215, abs=1e-7)


def brute_force_unbiased_mmd(x, y, gammas):
    def k(a, b, g, skip_diagonal):
        values = [np.exp(-g * np.sum((ai - bj) ** 2)) for i, ai in enumerate(a) for j, bj in enumerate(b)
                  if not (skip_diagonal and i == j)]
        return np.mean(values)

    return np.mean([k(x, x, g, True) + k(y, y, g, True) - 2 * k(x, y, g, False) for g in gammas])


def brute_force_energy(x, y):
    def mean_distance(a, b):
        return np.mean([[np.sqrt(np.sum((ai - bj) ** 2)) for bj in b] for ai in a])

    return 2 * mean_distance(x, y) - mean_distance(x, x) - mean_distance(y, y)


@pytest.mark.parametrize("block", [1, 4, 7, 22, 23, 10_000])
def test_blocks_give_the_direct_result(block):
    """Sizes that are not multiples of the block (23 x 17): every distance equals the one-block and the
    float64 definitions to 1e-6."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(23, 4)), rng.normal(0.3, 1.5, size=(17, 4))
    chunked = metrics.distribution_distances(x, y, block=block)
    direct = metrics.distribution_distances(x, y, block=10_000)
    for name in metrics.DISTRIBUTION_METRICS:
        assert chunked[name] == pytest.approx(direct[name], abs=1e-6), name
    assert chunked["mmd"] == pytest.approx(brute_force_mmd(x, y, metrics.MMD_GAMMAS), abs=1e-6)
    assert chunked["mmd_unbiased"] == pytest.approx(brute_force_unbiased_mmd(x, y, metrics.MMD_GAMMAS), abs=1e-6)
    assert chunked["edistance"] == pytest.approx(brute_force_energy(x, y), abs=1e-9)


def test_scoring_memory_does_not_grow_with_the_number_of_cells(tmp_path):
    """6,000 x 5,000 cells: the old all-at-once MMD held several n x m matrices (over 700 MB);
    in blocks the peak stays at a few 2,048 x 2,048 ones."""
    import subprocess
    import sys

    script = (
        "import resource, numpy as np\n"
        "from perturbot import metrics\n"
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.normal(size=(6000, 20)), rng.normal(size=(5000, 20))\n"
        "metrics.mmd(x[:10], y[:10])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "metrics.distribution_distances(x, y, gammas=[1.0])\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    grown_mb = float(out.stdout.strip().splitlines()[-1])
    assert grown_mb < 200, f"scoring grew the peak memory by {grown_mb:.0f} MB"


def test_energy_distance_hand_computed_and_zero_for_identical_samples():
    # one cell each, 3-4-5 triangle: 2 * 5 - 0 - 0
    assert metrics.energy_distance(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])) == pytest.approx(10.0)
    # x = {0, 2}, y = {1} on a line: E|X - Y| = 1, E|X - X'| = (0 + 2 + 2 + 0) / 4 = 1 (all pairs, as pertpy)
    assert metrics.energy_distance(np.array([[0.0], [2.0]]), np.array([[1.0]])) == pytest.approx(2 * 1 - 1 - 0)
    x = np.random.default_rng(4).normal(size=(30, 6))
    assert metrics.energy_distance(x, x) == pytest.approx(0.0, abs=1e-8)  # sqrt of round-off on the cross diagonal
    assert metrics.mmd_unbiased(x, x) < 0  # without the diagonal, a sample against itself scores below 0


def test_biased_mmd_floor_is_the_closed_form_and_the_unbiased_one_has_none():
    """Two samples of one distribution: E[biased MMD] = (1/n + 1/m)(1 - K), K the mean kernel between
    two cells; for N(0, s^2 I_d), E exp(-g ||x - x'||^2) = (1 + 4 g s^2)^(-d/2). The unbiased MMD is 0."""
    d, s2, n, m = 500, 4.0, 200, 150
    rng = np.random.default_rng(5)
    x, y = rng.normal(0, np.sqrt(s2), size=(n, d)), rng.normal(0, np.sqrt(s2), size=(m, d))
    k = np.mean((1 + 4 * metrics.MMD_GAMMAS * s2) ** (-d / 2))
    values = metrics.distribution_distances(x, y)
    assert values["mmd"] == pytest.approx((1 / n + 1 / m) * (1 - k), rel=1e-3)
    assert abs(values["mmd_unbiased"]) < 1e-5


def test_energy_distance_separates_identity_from_a_perfect_prediction_where_the_mmd_does_not():
    """500 features: the papers' fixed bandwidths see every pair of distinct cells as unrelated, so the
    control cells (identity) and a fresh sample of the target (a perfect prediction) get about the same
    MMD; the energy distance has no bandwidth and tells them apart by a factor over 10."""
    d, n = 500, 200
    rng = np.random.default_rng(0)
    control, target, perfect = (rng.normal(loc, 2.0, size=(n, d)) for loc in (0.0, 1.0, 1.0))
    identity, best = (metrics.distribution_distances(p, target) for p in (control, perfect))
    assert identity["mmd"] == pytest.approx(best["mmd"], rel=0.1)
    assert identity["edistance"] > 10 * best["edistance"] > 0


def test_mmd_rejects_width_mismatch():
    with pytest.raises(ValueError, match="widths"):
        metrics.mmd(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least one cell each, got 0 and 3"):
        metrics.energy_distance(np.zeros((0, 2)), np.zeros((3, 2)))


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
    assert on_markers["edistance"] == pytest.approx(metrics.energy_distance(x[:, :2], y[:, :2]))
    assert on_markers["mmd_unbiased"] == pytest.approx(metrics.mmd_unbiased(x[:, :2], y[:, :2]))
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
    assert len(scored) == 3 * 6 and {r["n_cells"] for r in scored} == {2}
    pred_rows, obs_rows = draws[0][2], draws[0][3]
    expected = np.linalg.norm(predicted[pred_rows].mean(0) - observed[obs_rows].mean(0))
    assert [r["value"] for r in scored if r["metric"] == "l2_means"][0] == pytest.approx(expected)
    control = predicted / 2.0  # every prediction is twice its control: log2 fold change 1 on each feature
    logfc = {r["metric"]: r["value"] for r in metrics.score(predicted, observed, logfc=(control, np.array([0, 2]), 1.0))}
    assert logfc["logfc_mae"] == pytest.approx(0.0, abs=1e-6)


def test_every_metric_computed_is_declared_once():
    from perturbot import metric_specs, statistics
    from perturbot.plotting import scores

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 1
    computed = set(metrics.all_metrics(x, y, truth=y))
    assert computed | {"logfc_mae"} == set(metric_specs.METRICS)
    # statistics and figures read the declarations, not copies of them
    assert statistics.TESTED_METRICS == ("mmd", "mmd_unbiased", "edistance", "l2_means", "r2_means")
    assert statistics.HIGHER_IS_BETTER == {"r2_means", "r_means"}
    assert scores.METRIC_LABELS["gt_rmse"] == metric_specs.label("gt_rmse") == "RMSE to true response"
    assert metric_specs.label("my_metric") == "my_metric"
