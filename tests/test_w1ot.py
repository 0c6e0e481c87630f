"""W1-OT: 1-Lipschitz building blocks, the W1 estimate against exact OT, maps with known answers, contract."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from scipy.stats import spearmanr

from perturbot import checkpoints, training
from perturbot.data.toy2d import make_2d
from perturbot.models import PerturbationModel, get
from perturbot.models.w1ot import W1OT
from perturbot.nn.lipschitz import GroupSort, LipschitzPotential, OrthoLinear, bjorck, cayley
from perturbot.nn.mlp import mlp

torch.set_num_threads(1)

SHAPES = [(64, 64), (10, 64), (300, 64), (64, 1)]  # square, tall (in < out), wide (in > out), to scalar


# ---------------------------------------------------------------- networks
@pytest.mark.parametrize("method", ["cayley", "bjorck"])
@pytest.mark.parametrize("n_in,n_out", SHAPES)
def test_orthonormal_layers_have_unit_singular_values(method, n_in, n_out):
    torch.manual_seed(0)
    layer = OrthoLinear(n_in, n_out, n_models=3, method=method)
    with torch.no_grad():  # move away from the initialisation, as training would
        layer.weight.add_(0.3 * torch.randn_like(layer.weight))
    q = layer.eval().orthonormal()
    assert q.shape == (3, n_out, n_in)
    sv = torch.linalg.svdvals(q.double())
    assert torch.allclose(sv, torch.ones_like(sv), atol=1e-5)


def test_cayley_of_a_skew_matrix_is_the_classical_transform():
    torch.manual_seed(0)
    w = torch.randn(6, 6, dtype=torch.float64)
    a = w - w.T
    eye = torch.eye(6, dtype=torch.float64)
    expected = torch.linalg.solve(eye + a, eye - a)
    # cayley() skew-symmetrises its square block itself: A = U - U^T
    assert torch.allclose(cayley(w), expected, atol=1e-10)


def test_bjorck_keeps_an_orthonormal_matrix_and_needs_its_iterations():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(20, 8, dtype=torch.float64))
    assert torch.allclose(bjorck(q, 30), q, atol=1e-10)  # the polar factor of any scaling of q
    w = torch.randn(20, 8, dtype=torch.float64)
    assert (torch.linalg.svdvals(bjorck(w, 1)) - 1).abs().max() > 1e-2
    assert (torch.linalg.svdvals(bjorck(w, 60)) - 1).abs().max() < 1e-10


def test_eval_mode_caches_the_matrices_until_parameters_change():
    layer = OrthoLinear(5, 8).eval()
    q1 = layer.orthonormal()
    assert layer.orthonormal() is q1 and not q1.requires_grad
    with torch.no_grad():
        layer.weight.mul_(2.0).add_(0.1)
    assert not torch.equal(layer.orthonormal(), q1)
    layer.train()
    assert layer.orthonormal().requires_grad


def test_groupsort_sorts_within_each_of_n_groups():
    x = torch.tensor([[3.0, 1.0, 2.0, 0.0, 9.0, 7.0, 8.0, 6.0]])
    assert GroupSort(2)(x).tolist() == [[0.0, 1.0, 2.0, 3.0, 6.0, 7.0, 8.0, 9.0]]
    assert GroupSort(8)(x).tolist() == x.tolist()
    with pytest.raises(ValueError):
        LipschitzPotential(3, hidden=[10], n_groups=4)


@pytest.mark.parametrize("method", ["cayley", "bjorck"])
def test_potential_gradient_norm_never_exceeds_one(method):
    torch.manual_seed(1)
    phi = LipschitzPotential(7, n_models=2, method=method)
    for p in phi.parameters():  # random, trained-looking weights and biases
        p.data.add_(0.5 * torch.randn_like(p))
    phi.eval()
    x = torch.cat([torch.randn(2, 2000, 7), 20 * torch.randn(2, 2000, 7)], dim=1)
    _, grad = phi.value_and_grad(x)
    assert grad.norm(dim=-1).max() <= 1 + 1e-5
    # and the Lipschitz bound holds between distant points too
    y = x.flip(1)
    ratio = (phi(x) - phi(y)).abs() / (x - y).norm(dim=-1).clamp_min(1e-6)
    assert ratio.max() <= 1 + 1e-5


def test_stacked_mlp_runs_independent_copies():
    torch.manual_seed(0)
    net = mlp(3, [5, 5], 2, "leaky_relu", "softplus", n_models=4)
    x = torch.randn(4, 10, 3)
    out = net(x)
    assert out.shape == (4, 10, 2) and (out > 0).all()
    single = mlp(3, [5, 5], 2, "leaky_relu", "softplus")
    single.load_state_dict({k: v[2] for k, v in net.state_dict().items()})
    assert torch.allclose(single(x[2]), out[2], atol=1e-6)
    assert isinstance(mlp(3, [4], 1, dropout=0.5)[2], torch.nn.Dropout)


# ------------------------------------------------------------ W1 estimate
@pytest.mark.parametrize("dim,n_iters", [(2, 500), (10, 1000)])  # measured: 0.6 % and 7.7 % under
def test_w1_estimate_matches_exact_w1(dim, n_iters):
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((300, dim)).astype(np.float32)
    y = (0.5 * rng.standard_normal((300, dim)) + 1.0).astype(np.float32)
    model = W1OT(n_iters_potential=n_iters, n_iters_step=0, val_size=0, device="cpu").fit(x, y)
    exact = ot.emd2([], [], ot.dist(x, y, metric="euclidean"))
    assert model.w1_estimate(x, y) == pytest.approx(exact, rel=0.10)
    assert np.linalg.norm(model.direction(x), axis=1).max() <= 1 + 1e-5


# ------------------------------------------------------- maps with answers
@pytest.fixture(scope="module")
def bookshelf_model():
    source, target = make_2d("bookshelf", 1000, seed=0)
    return W1OT(n_iters_potential=700, n_iters_step=1000, device="cpu").fit(source, target)


def test_bookshelf_map_preserves_order(bookshelf_model):
    source, _ = make_2d("bookshelf", 1000, seed=1)
    mapped = bookshelf_model.transport(source)
    assert spearmanr(source[:, 0], mapped[:, 0]).statistic > 0.99
    assert 1.9 < mapped[:, 0].min() and mapped[:, 0].max() < 3.1
    # cells move horizontally: -grad phi is (1, 0) and the y-coordinate stays put
    assert np.allclose(bookshelf_model.direction(source), [-1.0, 0.0], atol=0.05)
    assert np.abs(mapped[:, 1] - source[:, 1]).max() < 0.05


def test_history_validation_and_cost(bookshelf_model):
    h = bookshelf_model.history_
    assert {"iteration", "stage", "loss_potential", "val_w1", "val_mmd"} <= set(h.columns)
    assert set(h.stage) == {"potential", "step"} and h.iteration.is_monotonic_increasing
    # W1 between the strips is 2 (every book moves by 2)
    assert bookshelf_model.w1_validation_["target"] == pytest.approx(2.0, abs=0.1)
    assert bookshelf_model.val_score_["target"] == pytest.approx(h.val_mmd.min())
    source, _ = make_2d("bookshelf", 200, seed=2)
    cost = bookshelf_model.transport_cost(source)
    eta = bookshelf_model.step_size(source)
    grad = bookshelf_model.direction(source)
    assert np.allclose(cost, eta**2 * (grad**2).sum(1), rtol=1e-4)
    assert np.median(eta) == pytest.approx(2.0, abs=0.2)


def test_save_load_gives_identical_outputs(bookshelf_model, tmp_path):
    bookshelf_model.save(tmp_path / "m")
    loaded = PerturbationModel.load(tmp_path / "m")
    assert isinstance(loaded, W1OT)
    x, _ = make_2d("bookshelf", 100, seed=3)
    for method in ("transport", "potential", "direction", "step_size"):
        assert np.array_equal(getattr(loaded, method)(x), getattr(bookshelf_model, method)(x))
    assert loaded.history_.equals(bookshelf_model.history_)
    with pytest.raises(ValueError):
        loaded.transport(np.zeros((3, 5), np.float32))


@pytest.mark.slow
def test_circles_inner_goes_to_inner():
    source, target = make_2d("circles", 1000, seed=0)
    model = W1OT(n_iters_potential=800, n_iters_step=1000, device="cpu").fit(source, target)
    x, _ = make_2d("circles", 1000, seed=1)
    mapped = model.transport(x)
    inner = np.linalg.norm(x, axis=1) < 0.75  # radii 0.5 and 1 (source), 1 and 2 (target)
    to_inner = np.linalg.norm(mapped, axis=1) < 1.5
    assert to_inner[inner].mean() > 0.95
    assert (~to_inner[~inner]).mean() > 0.95


@pytest.mark.slow
def test_translation_in_10d_is_recovered_per_cell():
    rng = np.random.default_rng(0)
    m = np.linspace(-2.0, 2.0, 10).astype(np.float32)
    x = rng.standard_normal((1000, 10)).astype(np.float32)
    y = (rng.standard_normal((1000, 10)) + m).astype(np.float32)
    model = W1OT(n_iters_potential=1000, n_iters_step=1000, device="cpu").fit(x, y)
    mapped = model.transport(x)
    err = np.linalg.norm(mapped - (x + m), axis=1)
    assert err.mean() < 0.2 * np.linalg.norm(m)  # measured: 0.17
    # the direction is exact to within a few degrees; the step size carries the error
    grad = model.direction(x)
    cos = -(grad @ m) / np.linalg.norm(grad, axis=1) / np.linalg.norm(m)
    assert cos.min() > 0.99
    assert np.abs(mapped.mean(0) - (x + m).mean(0)).max() < 0.25  # < 6 % of |m|, on every feature


def test_gaussian_step_start_maps_a_translation_before_any_gan_step():
    # with step_init="gaussian" and no GAN iterations, eta holds the Gaussian map's lengths along -grad phi:
    # for a translation (whose W1 and W2 maps agree) that is already the per-cell answer; a random start is not
    rng = np.random.default_rng(0)
    m = np.linspace(-2.0, 2.0, 6).astype(np.float32)
    x = rng.standard_normal((1000, 6)).astype(np.float32)
    y = (rng.standard_normal((1000, 6)) + m).astype(np.float32)
    kw = dict(n_iters_potential=600, n_iters_step=0, step_init_iters=600, device="cpu")
    started = W1OT(step_init="gaussian", **kw).fit(x, y)
    random = W1OT(**kw).fit(x, y)
    err = {name: np.linalg.norm(model.transport(x) - (x + m), axis=1).mean()
           for name, model in (("gaussian", started), ("random", random))}
    assert err["gaussian"] < 0.15 * np.linalg.norm(m) < err["random"]  # measured: 0.04 and 0.79 of |m|
    history = started.history_
    assert (history.loc[history["stage"] == "step", "iteration"] == kw["n_iters_potential"]).all()  # the start was scored


def test_ot_lengths_follow_a_non_linear_monotone_map_that_gaussian_lengths_miss():
    # every cell moves right along e1 by 1.5 + 0.5 tanh(2 x1) (a monotone, non-affine 1-D map; the other
    # coordinate stays): every such map is W1-optimal, and minibatch-OT pairs recover this, the W2 one,
    # cell by cell, where the Gaussian map's affine lengths cannot
    rng = np.random.default_rng(0)

    def truth(x):
        return x + np.stack([1.5 + 0.5 * np.tanh(2 * x[:, 0]), 0 * x[:, 1]], axis=1).astype(np.float32)

    x = rng.standard_normal((1000, 2)).astype(np.float32)
    y = truth(rng.standard_normal((1000, 2)).astype(np.float32))
    test = rng.standard_normal((1000, 2)).astype(np.float32)
    kw = dict(n_iters_potential=500, step_init_iters=150, hidden_units=(64,) * 4, device="cpu")
    err = {init: np.linalg.norm(W1OT(preset="ot_lengths", step_init=init, **kw).fit(x, y).transport(test)
                                - truth(test), axis=1).mean() for init in ("ot", "gaussian")}
    assert err["ot"] < 0.8 * err["gaussian"], err  # measured: 0.109 against 0.151


# ----------------------------------------------------------------- contract
KW = dict(n_iters_potential=60, n_iters_step=60, eval_every=20, checkpoint_every=25, batch_size=64, device="cpu")


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    return x, (rng.standard_normal((200, 5)) + 1).astype(np.float32)


def test_registered_and_default_hyperparameters():
    assert get("w1ot") is W1OT and W1OT.multi_perturbation
    p = W1OT().resolved_params()
    assert p["preset"] == "paper" and p["step_init"] == "none"
    assert (p["n_iters_potential"], p["n_iters_step"], p["batch_size"]) == (10_000, 10_000, 256)
    assert (p["lr_potential"], p["lr_potential_min"], tuple(p["betas_potential"]), p["lr_step"]) == (
        1e-2, 1e-4, (0.5, 0.5), 1e-4)
    assert tuple(p["hidden_units"]) == (64,) * 4 and p["n_groups"] == 4 and p["orthogonalization"] == "cayley"
    assert W1OT(n_iters=7)._iterations() == (7, 7)
    # a preset fills only what is not given; a step stage switched off stays off under n_iters
    assert W1OT(preset="ot_lengths").settings() == {"n_iters_step": 0, "step_init": "ot", "hidden_units": (256,) * 4}
    assert W1OT(preset="ot_lengths", step_init="gaussian").settings()["step_init"] == "gaussian"
    assert W1OT(preset="ot_lengths", n_iters=7)._iterations() == (7, 0)
    with pytest.raises(ValueError, match="preset"):
        W1OT(preset="fastest").fit(*_pair())


def test_same_seed_same_output_and_seed_matters():
    x, y = _pair()
    a = W1OT(**KW).fit(x, y).transport(x)
    assert np.array_equal(a, W1OT(**KW).fit(x, y).transport(x))
    assert not np.array_equal(a, W1OT(**{**KW, "seed": 1}).fit(x, y).transport(x))


@pytest.mark.parametrize("stop_after", [1, 3])  # checkpoints in stage 1, then in stage 2
def test_resume_equals_straight_through(tmp_path, monkeypatch, stop_after):
    x, y = _pair()
    reference = W1OT(**KW).fit(x, y)
    saves = []
    original = checkpoints.Checkpoint.save

    class Interrupted(Exception):
        pass

    def save_then_crash(self, state):
        original(self, state)
        saves.append(state["stage"])
        if len(saves) == stop_after:
            raise Interrupted

    path = tmp_path / "ckpt.pt"
    monkeypatch.setattr(checkpoints.Checkpoint, "save", save_then_crash)
    with pytest.raises(Interrupted):
        W1OT(**KW).fit(x, y, checkpoint=path)
    monkeypatch.setattr(checkpoints.Checkpoint, "save", original)
    assert path.exists() and saves[-1] == ("potential" if stop_after == 1 else "step")
    resumed = W1OT(**KW).fit(x, y, checkpoint=path)
    assert not path.exists()
    assert np.array_equal(resumed.transport(x), reference.transport(x))
    assert resumed.history_.equals(reference.history_)


@pytest.mark.parametrize("stage", ["w1ot potential", "w1ot step"])
def test_sigterm_checkpoints_the_moment_and_resumes(tmp_path, monkeypatch, stage):
    import os
    import signal

    x, y = _pair()
    kw = {**KW, "checkpoint_every": 10**9}  # no periodic checkpoint: only the one written on the signal
    reference = W1OT(**kw).fit(x, y)
    original = training.Progress.record

    def record_then_signal(self, iteration, rows, score, losses=None):
        improved = original(self, iteration, rows, score, losses)
        if self.what == stage and iteration == kw["eval_every"]:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets a flag
        return improved

    path = tmp_path / "ckpt.pt"
    monkeypatch.setattr(training.Progress, "record", record_then_signal)
    with pytest.raises(training.TrainingInterrupted) as stop:
        W1OT(**kw).fit(x, y, checkpoint=path)
    monkeypatch.setattr(training.Progress, "record", original)
    assert stop.value.code == 128 + signal.SIGTERM
    state = torch.load(path, weights_only=True)
    assert state["stage"] == stage.split()[1] and state["iteration"] == kw["eval_every"]
    resumed = W1OT(**kw).fit(x, y, checkpoint=path)
    assert np.array_equal(resumed.transport(x), reference.transport(x))
    assert resumed.history_.equals(reference.history_)


@pytest.mark.slow
def test_fit_many_learns_each_perturbation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 2)).astype(np.float32)
    shifts = {"right": np.array([3.0, 0.0], np.float32), "down": np.array([0.0, -2.0], np.float32)}
    targets = {k: (rng.standard_normal((500 + 100 * i, 2)) + s).astype(np.float32)
               for i, (k, s) in enumerate(shifts.items())}
    model = W1OT(n_iters_potential=400, n_iters_step=800, device="cpu").fit_many(x, targets)
    assert model.perturbations_ == ["right", "down"]
    for name, shift in shifts.items():
        moved = model.transport(x, perturbation=name) - x
        assert np.allclose(moved.mean(0), shift, atol=0.25)
        assert model.w1_estimate(x, targets[name], perturbation=name) == pytest.approx(
            np.linalg.norm(shift), rel=0.1)
    assert set(model.history_.perturbation) == {"right", "down"}
    with pytest.raises(ValueError):
        model.transport(x)
    with pytest.raises(KeyError):
        model.transport(x, perturbation="up")


def test_clip_nonnegative_and_bjorck_option():
    x, y = _pair()
    x, y = np.abs(x), np.abs(y) + 1
    model = W1OT(**{**KW, "clip_nonnegative": True, "orthogonalization": "bjorck"}).fit(x, y)
    assert (model.transport(x) >= 0).all()
    assert np.linalg.norm(model.direction(x), axis=1).max() <= 1 + 1e-5
    with pytest.raises(ValueError):
        W1OT(**{**KW, "orthogonalization": "qr"}).fit(x, y)


def test_a_target_without_validation_cells_leaves_the_others_validated():
    """A rare drug (8 cells: none to validate on) no longer stops a joint fit (issue 23.9): it keeps its last
    step network, the common drug still selects its own on validation."""
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 3)).astype(np.float32)
    targets = {"common": (rng.normal(size=(150, 3)) + 1).astype(np.float32),
               "rare": (rng.normal(size=(8, 3)) - 1).astype(np.float32)}
    model = W1OT(n_iters_potential=20, n_iters_step=30, eval_every=10, batch_size=32, device="cpu")
    model.fit_many(source, targets)
    assert np.isfinite(model.w1_validation_["common"]) and np.isnan(model.w1_validation_["rare"])
    step = model.history_[model.history_["stage"] == "step"].set_index(["perturbation", "iteration"])["val_mmd"]
    assert step["common"].notna().all() and step["rare"].isna().all()
    assert model.val_score_["common"] == pytest.approx(step["common"].min())
    assert np.isnan(model.val_score_["rare"])
    assert np.isfinite(model.transport(source[:5], perturbation="rare")).all()
    alone = W1OT(n_iters_potential=5, n_iters_step=5, batch_size=32, device="cpu").fit(source, targets["rare"])
    assert np.isnan(alone.val_score_[alone.perturbations_[0]])
