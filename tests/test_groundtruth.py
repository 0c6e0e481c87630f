"""The non-linear ground truths: convex, optimal, standardised, non-affine; and their scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from perturbot import groundtruth, training
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
    assert training.empirical_w2(x, y) == pytest.approx(1.0)


def test_the_w2_criterion_ranks_a_better_map_above_a_worse_one_in_64_dimensions():
    pair = groundtruth.make_pair(64, n=2000, n_test=1000, seed=0)
    target = torch.from_numpy(pair.target[:1000])
    score = training.SelectionScore("w2", target)
    gaussian = GaussianOT().fit(pair.source, pair.target).transport(pair.test)
    halfway = (pair.test_image + gaussian) / 2  # half the Gaussian map's per-cell error, a quarter its L2-UVP
    scores = [score(torch.from_numpy(np.asarray(m, np.float32))) for m in (pair.test_image, halfway, gaussian)]
    assert scores[0] < scores[1] < scores[2]
