"""CellOT with solver="cycle" (W2GN): learns past its Gaussian start on non-linear truth; resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cellot import Gaussians, _assert_same_weights, killed_after_20

from perturbot import groundtruth
from perturbot.models.cellot import CellOT
from perturbot.models.gaussian_ot import GaussianOT

torch.set_num_threads(1)


def _small_run(**kw) -> CellOT:
    params = dict(preset="fast", solver="cycle", n_iters=40, eval_every=10, patience=0, device="cpu")
    params.update(kw)
    return CellOT(**params)


def test_cycle_learns_what_the_gaussian_map_misses():
    pair = groundtruth.make_pair(8, n=4000, n_test=1000, seed=0)
    gaussian = pair.l2_uvp(GaussianOT().fit(pair.source, pair.target).transport(pair.test))
    model = _small_run(n_iters=800, eval_every=100, lr=3e-3, lr_min=1e-5, batch_size=512)
    model.fit(pair.source, pair.target)
    learned = pair.l2_uvp(model.transport(pair.test))
    assert learned < 0.6 * gaussian, (learned, gaussian)
    assert model.negative_weight_share() == 0.0  # g, the exact potential, is clamped convex
    # the dual estimate with f's guess of the conjugate is close to the primal cost of the learned map
    primal = float(np.square(model.transport(pair.source[:2000]) - pair.source[:2000]).sum(1).mean())
    assert model.w2_estimate(pair.source[:2000], pair.target[:2000]) == pytest.approx(primal, rel=0.05)


def test_cycle_resumes_to_the_same_weights(tmp_path, monkeypatch):
    problem = Gaussians(4, n=500)
    straight = _small_run().fit(problem.source, problem.target)
    ckpt = tmp_path / "cellot.pt"
    killed_after_20(monkeypatch, _small_run(checkpoint_every=10), problem, ckpt)
    assert torch.load(ckpt, weights_only=True)["fingerprint"]["params"]["solver"] == "cycle"
    resumed = _small_run(checkpoint_every=10).fit(problem.source, problem.target, checkpoint=ckpt)
    _assert_same_weights(straight, resumed)
    assert resumed.history_.equals(straight.history_)


def test_cycle_weight_must_be_positive():
    with pytest.raises(ValueError, match="cycle_weight"):
        CellOT(solver="cycle", cycle_weight=0).fit(np.ones((20, 2)), np.ones((20, 2)))


def test_the_accurate_preset_beats_its_gaussian_start_in_32_dimensions():
    """The users' preset, at a small budget on a small 32-d pair: below the closed-form map it starts from."""
    pair = groundtruth.make_pair(32, n=4000, n_test=1000, seed=1)
    gaussian = pair.l2_uvp(GaussianOT().fit(pair.source, pair.target).transport(pair.test))
    model = CellOT(preset="accurate", n_iters=600, eval_every=100, batch_size=512, device="cpu")
    model.fit(pair.source, pair.target)
    assert model.settings_.solver == "cycle" and model.settings_.criterion == "w2"
    assert pair.l2_uvp(model.transport(pair.test)) < 0.85 * gaussian


def test_keep_best_false_keeps_the_last_weights():
    """keep_best=False ends on the last iterate (still validated and logged); True on the criterion's pick."""
    problem = Gaussians(4, n=500)
    last = _small_run(keep_best=False).fit(problem.source, problem.target)
    assert last.best_iteration_ == [40] and last.history_["val_w2_empirical"].notna().any()
    best = _small_run(keep_best=True).fit(problem.source, problem.target)
    scores = best.history_.dropna(subset=["val_w2_empirical"])
    assert best.best_iteration_ == [int(scores.loc[scores["val_w2_empirical"].idxmin(), "iteration"])]
    # the same run until the end: the last weights are those of the keep_best=True run's final iterate
    np.testing.assert_allclose(last.transport(problem.source[:50]),
                               _small_run(keep_best=True, n_iters=40, eval_every=40).fit(
                                   problem.source, problem.target).transport(problem.source[:50]), atol=1e-6)
