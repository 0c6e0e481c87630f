"""CellOT with solver="amortized" (Amos 2023): the conjugate solver, the learned map, persistence, resume."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_cellot import Gaussians, _assert_same_weights, killed_after_20

from perturbot.models import PerturbationModel
from perturbot.models.cellot import CellOT, conjugate_argmax
from perturbot.nn.icnn import StackedICNN

torch.set_num_threads(1)


def _small_run(**kw) -> CellOT:
    params = dict(solver="amortized", n_iters=40, lr=1e-3, eval_every=10, conjugate_iters=5, device="cpu")
    params.update(kw)
    return CellOT(**params)


@pytest.fixture(scope="module")
def gauss8() -> tuple[Gaussians, CellOT]:
    problem = Gaussians(8)
    model = CellOT(preset="fast", solver="amortized", n_iters=200, device="cpu").fit(problem.source, problem.target)
    return problem, model


def test_conjugate_argmax_inverts_the_gradient():
    """Quadratic potentials have the closed-form argmax M^-1 (y - c); a general ICNN's argmax solves grad g(x) = y."""
    d = 5
    net = StackedICNN(2, d, hidden_units=(8, 8), generator=torch.Generator().manual_seed(0), quadratic=True)
    matrix = torch.stack([2 * torch.eye(d), torch.diag(torch.arange(1.0, d + 1))])
    shift = torch.randn(2, d, generator=torch.Generator().manual_seed(1))
    net.init_affine_(matrix, shift)
    y = torch.randn(2, 100, d, generator=torch.Generator().manual_seed(2))
    x_hat = conjugate_argmax(net, y, torch.zeros_like(y), 20)
    exact = torch.linalg.solve(matrix.unsqueeze(1), (y - shift.unsqueeze(1)).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(x_hat, exact, atol=1e-3, rtol=1e-3)

    icnn = StackedICNN(2, d, hidden_units=(16, 16), generator=torch.Generator().manual_seed(0), quadratic=True)
    with torch.no_grad():
        icnn.L.copy_(0.7 * torch.eye(d).expand(2, d, d))
        x_hat = conjugate_argmax(icnn, y, torch.zeros_like(y), 20)
        assert float((icnn.gradient(x_hat) - y).norm(dim=-1).max()) < 0.02


def test_amortized_learns_the_gaussian_map(gauss8):
    """8-d Gaussians: L2-UVP far below the mean-shift baseline, W2 estimate and inverse map consistent."""
    problem, model = gauss8
    shifted = problem.test + (problem.m2 - problem.m1).astype(np.float32)
    baseline = problem.l2_uvp(shifted, problem.test)
    uvp = problem.l2_uvp(model.transport(problem.test), problem.test)
    assert uvp < 1.0 and uvp < baseline / 5
    assert model.w2_estimate(problem.test, problem.target) == pytest.approx(problem.w2, rel=0.05)
    assert model.negative_weight_share() == 0.0  # the exact potential is clamped convex
    # potential_f is g's conjugate: its gradient (central differences) maps targets back to the source
    y = problem.target[:5].astype(np.float64)
    h = 1e-2
    grads = np.stack(
        [
            (model.potential_f((y + h * e).astype(np.float32)) - model.potential_f((y - h * e).astype(np.float32)))
            / (2 * h)
            for e in np.eye(8)
        ],
        axis=1,
    )
    np.testing.assert_allclose(model.transport(grads.astype(np.float32)), y, atol=0.05)


def test_amortized_learns_from_the_identity_start():
    """Without the Gaussian start the dual still has to move the map: well below the mean-shift baseline."""
    problem = Gaussians(4, n=2000)
    model = CellOT(preset="fast", init="identity", solver="amortized", n_iters=200, patience=0, device="cpu")
    model.fit(problem.source, problem.target)
    shifted = problem.test + (problem.m2 - problem.m1).astype(np.float32)
    baseline = problem.l2_uvp(shifted, problem.test)
    uvp = problem.l2_uvp(model.transport(problem.test), problem.test)
    assert uvp < baseline / 3, (uvp, baseline)


def test_save_load_identical_outputs(gauss8, tmp_path):
    problem, model = gauss8
    model.save(tmp_path / "m")
    loaded = PerturbationModel.load(tmp_path / "m")
    assert isinstance(loaded, CellOT) and loaded.solver == "amortized"
    x = problem.test[:300]
    np.testing.assert_array_equal(loaded.transport(x), model.transport(x))
    np.testing.assert_array_equal(loaded.potential_g(x), model.potential_g(x))
    np.testing.assert_array_equal(loaded.potential_f(x), model.potential_f(x))
    assert loaded.w2_estimate(x, problem.target[:300]) == model.w2_estimate(x, problem.target[:300])


def test_bad_solver_values_are_refused():
    problem = Gaussians(2, n=100)
    with pytest.raises(ValueError, match="solver must be one of"):
        CellOT(solver="lbfgs").fit(problem.source, problem.target)
    with pytest.raises(ValueError, match="conjugate_iters"):
        CellOT(solver="amortized", conjugate_iters=0).fit(problem.source, problem.target)


def test_fit_many_learns_each_perturbation():
    """Two perturbations in one stacked model; b's W2 map x -> x/2 + 2 is the gradient of a convex quadratic."""
    problem = Gaussians(4, seed=1, n=2000)
    rng = np.random.default_rng(3)
    b_cells = rng.multivariate_normal(problem.m1, problem.S1, 2000)
    targets = {"a": problem.target, "b": (0.5 * b_cells + 2.0).astype(np.float32)}
    model = CellOT(preset="fast", solver="amortized", n_iters=100, device="cpu").fit_many(problem.source, targets)
    assert model.perturbations_ == ["a", "b"]
    test = problem.test
    assert problem.l2_uvp(model.transport(test, "a"), test) < 1.0
    err = ((model.transport(test, "b") - (0.5 * test + 2.0)) ** 2).sum(1).mean()
    assert 100 * err / np.trace(0.25 * problem.S1) < 1.0, err  # L2-UVP (%)


def test_resume_equals_straight_through(tmp_path, monkeypatch, caplog):
    problem = Gaussians(4, n=500)
    straight = _small_run().fit(problem.source, problem.target)
    ckpt = tmp_path / "cellot.pt"
    killed_after_20(monkeypatch, _small_run(checkpoint_every=10), problem, ckpt)
    assert torch.load(ckpt, weights_only=True)["fingerprint"]["params"]["solver"] == "amortized"
    resumed = _small_run(checkpoint_every=10).fit(problem.source, problem.target, checkpoint=ckpt)
    _assert_same_weights(straight, resumed)
    assert resumed.history_.equals(straight.history_)
    # a min-max run does not resume an amortised checkpoint: it warns and starts afresh
    killed_after_20(monkeypatch, _small_run(checkpoint_every=10), problem, ckpt)
    with caplog.at_level(logging.WARNING, logger="perturbot"):
        _small_run(checkpoint_every=10, solver="minmax").fit(problem.source, problem.target, checkpoint=ckpt)
    assert "solver: 'amortized' -> 'minmax'" in caplog.text
