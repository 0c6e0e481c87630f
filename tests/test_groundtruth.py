"""The non-linear ground truths: convex, optimal, standardised, non-affine; and their scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from perturbot import groundtruth, validation
from perturbot.models.gaussian_ot import GaussianOT


@pytest.fixture(scope="module")
def pair8() -> groundtruth.ConvexPair:
    return groundtruth.make_pair(8, n=3000, n_test=1000, seed=3)


def test_the_true_map_is_the_optimal_assignment(pair8):
    """Cyclical monotonicity: among all pairings of cells with shuffled true images, the identity is optimal."""
    x = pair8.test[:150].astype(np.float64)
    images = pair8.test_image[:150]
    order = np.random.default_rng(0).permutation(150)
    cost = ((x[:, None, :] - images[order][None, :, :]) ** 2).sum(-1)
    _, cols = linear_sum_assignment(cost)
    np.testing.assert_array_equal(order[cols], np.arange(150))


def test_the_potential_is_convex_and_the_target_standardised(pair8):
    # monotone gradient, at least as strongly as the quadratic term (in the potential's units)
    assert groundtruth.convexity_violation(pair8) >= pair8.quadratic * 0.999
    assert pair8.target.var(0).mean() == pytest.approx(1.0, abs=0.05)
    assert np.abs(pair8.target.mean(0)).max() < 0.1


def test_the_truth_is_not_affine(pair8):
    gaussian = GaussianOT().fit(pair8.source, pair8.target).transport(pair8.test)
    assert pair8.l2_uvp(gaussian) > 5.0  # the closed-form map misses what the potential bends
    assert pair8.l2_uvp(pair8.test_image) == 0.0


def test_pairs_are_seeded():
    a, b = groundtruth.make_pair(4, n=100, n_test=10, seed=1), groundtruth.make_pair(4, n=100, n_test=10, seed=1)
    np.testing.assert_array_equal(a.source, b.source)
    np.testing.assert_array_equal(a.test_image, b.test_image)
    assert not np.array_equal(a.source, groundtruth.make_pair(4, n=100, n_test=10, seed=2).source)


def test_scores_against_hand_computed_values():
    x = np.zeros((2, 2))
    truth = np.array([[1.0, 0.0], [0.0, 2.0]])
    # squared errors 1 and 4 -> mean 2.5; over a variance of 5: 50 %
    assert groundtruth.l2_uvp(truth + np.array([[1.0, 0.0], [0.0, 2.0]]), truth, 5.0) == pytest.approx(50.0)
    assert groundtruth.displacement_cosine(x, truth, truth) == pytest.approx(1.0)
    assert groundtruth.displacement_cosine(x, -truth, truth) == pytest.approx(-1.0)
    assert groundtruth.displacement_cosine(x, truth[:, ::-1], truth) == pytest.approx(0.0)


def test_empirical_w2_is_the_optimal_assignment_cost():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # x shifted up by one: each cell moves 1, squared 1
    assert validation.empirical_w2(x, y) == pytest.approx(1.0)


def test_the_w2_criterion_ranks_a_better_map_above_a_worse_one_in_64_dimensions():
    pair = groundtruth.make_pair(64, n=2000, n_test=1000, seed=0)
    target = torch.from_numpy(pair.target[:1000])
    score = validation.SelectionScore("w2", target)
    gaussian = GaussianOT().fit(pair.source, pair.target).transport(pair.test)
    halfway = (pair.test_image + gaussian) / 2  # half the Gaussian map's per-cell error, a quarter its L2-UVP
    scores = [score(torch.from_numpy(np.asarray(m, np.float32))) for m in (pair.test_image, halfway, gaussian)]
    assert scores[0] < scores[1] < scores[2]


def _affine_pair(d: int = 4, seed: int = 0) -> groundtruth.ConvexPair:
    """A pair whose true map is affine, x -> M x + c (the potential is a quadratic): any W2 map extrapolates it."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, d)) * 4.0 / np.sqrt(d)
    factors = np.stack([groundtruth._random_factor(rng, d) for _ in range(3)])
    matrix = torch.as_tensor(groundtruth._random_factor(rng, d))  # symmetric, eigenvalues in [0.5, 1.5]
    offset = torch.as_tensor(rng.normal(size=d))

    def quadratic(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x @ matrix) * x).sum(-1) + x @ offset

    empty = np.empty((0, d))
    pair = groundtruth.ConvexPair(d, seed, empty, empty, empty, empty, [quadratic], 0.0, np.zeros(d), 1.0,
                                  means, factors)
    pair.draw(2, 2, rng)
    pair.matrix = matrix.numpy() / pair.scale  # the standardised truth: M x + c
    pair.offset = (offset.numpy() - pair.shift) / pair.scale
    return pair


def test_holdout_split_tests_the_held_out_component_and_a_shifted_copy_against_the_exact_truth():
    pair = _affine_pair()
    split = groundtruth.holdout_split(pair, 3000, 2000)
    assert set(split.tests) == {"iid", "component", "shift"}
    iid, component, shifted = (split.tests[k][0].astype(np.float64) for k in ("iid", "component", "shift"))
    # trained and i.i.d. cells come from components 0 and 1, the o.o.d. cells from component 2
    np.testing.assert_allclose(split.source.mean(0), pair.means[:2].mean(0), atol=0.1)
    np.testing.assert_allclose(iid.mean(0), pair.means[:2].mean(0), atol=0.1)
    np.testing.assert_allclose(component.mean(0), pair.means[2], atol=0.1)
    # the shifted copy: the trained population moved by SHIFT_SDS mean feature standard deviations
    moved = np.linalg.norm(shifted.mean(0) - iid.mean(0))
    assert moved == pytest.approx(groundtruth.SHIFT_SDS * np.sqrt(split.source.var(0).mean()), rel=0.05)
    # every test's truth is the affine map, computed by hand
    for cells, truth in split.tests.values():
        np.testing.assert_allclose(truth, cells.astype(np.float64) @ pair.matrix.T + pair.offset, atol=1e-4)
    # a map that is exact where it was trained is exact everywhere when the truth is affine: the closed-form
    # Gaussian map extrapolates to the held-out cells, while no change misses by the whole response
    gaussian = GaussianOT().fit(split.source, split.target)
    for name, (cells, truth) in split.tests.items():
        assert groundtruth.rmse(gaussian.transport(cells), truth) < 0.1 * groundtruth.rmse(cells, truth), name
    assert groundtruth.rmse(iid, iid) == 0.0
    assert groundtruth.rmse(np.zeros((2, 2)), np.array([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(np.sqrt(12.5))


def test_the_suite_prints_an_iid_and_two_ood_columns_per_model():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_suite.py"
    spec = importlib.util.spec_from_file_location("bench_suite", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lines: list[str] = []
    results = bench.ood_suite(["identity", "gaussian_ot"], [2], [300], out=lines.append)
    rows = [line for line in lines if line.startswith("| 2 | 300 |")]
    assert [r.split(" | ")[2] for r in rows] == ["identity", "gaussian_ot"]
    assert rows[1].count("(1.00)") == 3  # the Gaussian map is its own reference in all three tests
    identity, gaussian = results
    for test in ("iid", "component", "shift"):
        assert identity[test] > gaussian[test] > 0  # the random pair's response is mostly affine
