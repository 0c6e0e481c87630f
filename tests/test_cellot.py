"""CellOT: the learned W2 map against closed-form Gaussian maps, convexity, persistence, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from perturbot import checkpoints, training
from perturbot.models import NotFittedError, PerturbationModel, get
from perturbot.models.cellot import CellOT, _Trainer
from perturbot.models.gaussian_ot import gaussian_map
from perturbot.nn.icnn import StackedICNN

torch.set_num_threads(1)

# The solver check uses its own schedule (larger lr, fewer inner steps), not the paper's.
FAST = dict(lr=1e-3, n_inner_iters=5, eval_every=100, device="cpu")


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q @ np.diag(rng.uniform(0.5, 2.0, d)) @ q.T


def _sqrtm(a: np.ndarray) -> np.ndarray:
    return np.real(sqrtm(a))


class Gaussians:
    """N(m1, S1) -> N(m2, S2) with the closed-form W2 map and distance."""

    def __init__(self, d: int, seed: int = 0, n: int = 4000) -> None:
        rng = np.random.default_rng(seed)
        self.S1, self.S2 = _spd(rng, d), _spd(rng, d)
        self.m1, self.m2 = rng.normal(size=d), rng.normal(size=d)
        r1 = _sqrtm(self.S1)
        r1_inv = np.linalg.inv(r1)
        cross = _sqrtm(r1 @ self.S2 @ r1)
        self.A = r1_inv @ cross @ r1_inv
        self.w2 = float(((self.m1 - self.m2) ** 2).sum() + np.trace(self.S1 + self.S2 - 2 * cross))
        self.source = rng.multivariate_normal(self.m1, self.S1, n).astype(np.float32)
        self.target = rng.multivariate_normal(self.m2, self.S2, n).astype(np.float32)
        self.test = rng.multivariate_normal(self.m1, self.S1, n).astype(np.float32)

    def true_map(self, x: np.ndarray) -> np.ndarray:
        return (x - self.m1) @ self.A.T + self.m2

    def l2_uvp(self, predicted: np.ndarray, x: np.ndarray) -> float:
        return float(100 * ((predicted - self.true_map(x)) ** 2).sum(1).mean() / np.trace(self.S2))


@pytest.fixture(scope="module")
def gauss8() -> tuple[Gaussians, CellOT]:
    problem = Gaussians(8)
    model = CellOT(n_iters=600, seed=0, **FAST).fit(problem.source, problem.target)
    return problem, model


def _all_tensors(model: CellOT) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model._get_tensors().items()}


def _assert_same_weights(a: CellOT, b: CellOT) -> None:
    ta, tb = _all_tensors(a), _all_tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


# ------------------------------------------------------------------ network
@pytest.mark.parametrize("activation", ["leaky_relu", "softplus"])
def test_icnn_gradient_matches_autograd_and_models_are_independent(activation):
    net = StackedICNN(
        3, 5, hidden_units=(7, 6, 4), generator=torch.Generator().manual_seed(0), activation=activation
    ).double()
    with torch.no_grad():  # negative weights and biases exercise every branch of the gradient
        for w in net.W:
            w.sub_(0.05)
        net.b.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 50, 5, dtype=torch.float64, requires_grad=True)
    (reference,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    value, grad = net.value_and_gradient(x)
    torch.testing.assert_close(grad, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(value, net(x))
    # second order (what the g step differentiates) agrees with double backward
    params = list(net.parameters())
    ours = torch.autograd.grad((grad**2).sum(), params, retain_graph=True)
    theirs = torch.autograd.grad((reference**2).sum(), params)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # a stacked model is P independent models
    one = net.select([1])
    torch.testing.assert_close(one.gradient(x[1:2].detach()), grad[1:2].detach(), rtol=1e-12, atol=1e-12)


def test_icnn_init_and_penalty():
    net = StackedICNN(2, 4, generator=torch.Generator().manual_seed(0))
    for w in [net.A.detach(), *(w.detach() for w in net.W)]:
        assert float(w.min()) >= 0 and float(w.max()) <= 0.1
    assert not net.b.detach().any()
    assert [tuple(w.shape) for w in net.W] == [(2, 64, 64)] * 3 + [(2, 1, 64)]
    assert tuple(net.A.shape) == (2, 64 * 4 + 1, 4)
    assert torch.equal(net.negative_weight_penalty(), torch.zeros(2))
    with torch.no_grad():
        net.W[0][0, 0, 0] = -3.0
        net.W[1][0, 0, 0] = -4.0
    torch.testing.assert_close(net.negative_weight_penalty(), torch.tensor([7.0, 0.0]))
    assert float(net.negative_weight_share()[0]) == pytest.approx(2 / (3 * 64 * 64 + 64))
    with pytest.raises(ValueError, match="hidden_units"):
        StackedICNN(1, 4, hidden_units=())
    with pytest.raises(ValueError, match="activation"):
        StackedICNN(1, 4, activation="relu6")


def test_softplus_icnn_is_convex_and_smooth():
    """Non-negative W keep the softplus ICNN convex: its Hessian is positive semi-definite everywhere."""
    net = StackedICNN(1, 3, hidden_units=(8, 8), generator=torch.Generator().manual_seed(0), activation="softplus")
    net = net.double()
    with torch.no_grad():
        net.b.normal_(generator=torch.Generator().manual_seed(1))
    for x in torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)):
        hessian = torch.autograd.functional.hessian(lambda z: net(z.view(1, 1, 3)).sum(), x)
        assert float(torch.linalg.eigvalsh(hessian).min()) > -1e-10


# ------------------------------------------------------- closed-form ground truth
def test_gaussian_map_matches_closed_form(gauss8):
    problem, model = gauss8
    predicted = model.transport(problem.test)
    assert predicted.dtype == np.float32 and predicted.shape == problem.test.shape
    assert problem.l2_uvp(predicted, problem.test) < 5.0
    # the dual W2 estimate and the learned map's primal cost both match the closed form
    assert model.w2_estimate(problem.test, problem.target) == pytest.approx(problem.w2, rel=0.05)
    assert model.transport_cost(problem.test).mean() == pytest.approx(problem.w2, rel=0.05)
    identity_uvp = problem.l2_uvp(problem.test, problem.test)
    assert identity_uvp > 100  # the task is far from trivial


def test_history_and_best_weights(gauss8):
    _, model = gauss8
    hist = model.history_
    assert list(hist.columns) == ["iteration", "perturbation", "loss_g", "loss_f", "val_mmd", "val_w2"]
    assert hist["iteration"].tolist() == list(range(100, 601, 100))
    assert np.isfinite(hist["val_mmd"]).all()
    best_row = hist.loc[hist["val_mmd"].idxmin()]
    assert model.best_iteration_ == [int(best_row["iteration"])]
    assert model.n_iter_ == 600


def test_f_is_convex_and_g_reports_negative_share(gauss8):
    problem, model = gauss8
    for w in model.f_.W:
        assert float(w.min()) >= 0
    rng = np.random.default_rng(1)
    ts = np.linspace(-3, 3, 61)
    for _ in range(20):
        x0, v = problem.test[rng.integers(len(problem.test))], rng.normal(size=8)
        line = (x0 + ts[:, None] * v).astype(np.float32)
        values = model.potential_f(line).astype(np.float64)
        second = values[:-2] - 2 * values[1:-1] + values[2:]
        assert second.min() >= -1e-4 * max(1.0, np.abs(values).max())
    share = model.negative_weight_share()
    assert 0.0 <= share < 0.5
    assert model.potential_g(problem.test[:10]).shape == (10,)


def test_f_weights_nonnegative_after_every_step(monkeypatch):
    problem = Gaussians(4, n=300)
    original = _Trainer._f_step
    seen = []

    def checked(self, y):
        loss = original(self, y)
        seen.append(min(float(w.detach().min()) for w in self.f.W))
        return loss

    monkeypatch.setattr(_Trainer, "_f_step", checked)
    CellOT(n_iters=15, n_inner_iters=2, lr=0.05, eval_every=5, device="cpu").fit(problem.source, problem.target)
    assert len(seen) == 15 and min(seen) >= 0


@pytest.mark.slow
def test_fit_many_learns_each_perturbation():
    rng = np.random.default_rng(3)
    d = 4
    source = rng.normal(size=(3000, d)).astype(np.float32)
    test = rng.normal(size=(2000, d)).astype(np.float32)
    scale = np.diag([0.5, 1.5, 1.0, 2.0])
    truths = {
        "shift": lambda x: x + np.array([2.0, -1.0, 0.0, 1.0]),
        "scale": lambda x: x @ scale + np.array([-1.0, 0.0, 1.0, 0.0]),
    }
    targets = {
        name: truth(rng.normal(size=(n, d))).astype(np.float32)
        for (name, truth), n in zip(truths.items(), (2500, 2000))
    }
    model = CellOT(n_iters=300, seed=0, **FAST).fit_many(source, targets)  # 2.4 and 0.9 % (600: 0.9, 1.0)
    assert model.perturbations_ == ["shift", "scale"]
    target_var = {name: float(np.trace(np.cov(t.T))) for name, t in targets.items()}
    for name, truth in truths.items():
        predicted = model.transport(test, perturbation=name)
        uvp = 100 * ((predicted - truth(test)) ** 2).sum(1).mean() / target_var[name]
        assert uvp < 5.0, (name, uvp)
    # the two maps differ: each perturbation got its own potentials
    other = model.transport(test, perturbation="scale")
    assert 100 * ((other - truths["shift"](test)) ** 2).sum(1).mean() / target_var["shift"] > 50
    assert set(model.history_["perturbation"]) == {"shift", "scale"}
    with pytest.raises(ValueError, match="pass perturbation="):
        model.transport(test)
    with pytest.raises(ValueError, match="unknown perturbation"):
        model.transport(test, perturbation="nope")


# ------------------------------------------------------------- persistence
def test_save_load_identical_outputs(gauss8, tmp_path):
    problem, model = gauss8
    model.save(tmp_path / "m")
    loaded = PerturbationModel.load(tmp_path / "m")
    assert isinstance(loaded, CellOT) and loaded.get_params() == model.get_params()
    assert loaded.settings_ == model.settings_
    x = problem.test[:500]
    np.testing.assert_array_equal(loaded.transport(x), model.transport(x))
    np.testing.assert_array_equal(loaded.potential_f(x), model.potential_f(x))
    np.testing.assert_array_equal(loaded.potential_g(x), model.potential_g(x))
    assert loaded.w2_estimate(x, problem.target) == model.w2_estimate(x, problem.target)
    assert loaded.best_iteration_ == model.best_iteration_
    assert loaded.history_.equals(model.history_)


def _small_run(**kw) -> CellOT:
    params = dict(n_iters=40, n_inner_iters=2, lr=1e-3, eval_every=10, device="cpu")
    params.update(kw)
    return CellOT(**params)


def test_same_seed_same_weights():
    problem = Gaussians(4, n=500)
    a = _small_run(seed=5).fit(problem.source, problem.target)
    b = _small_run(seed=5).fit(problem.source, problem.target)
    _assert_same_weights(a, b)
    c = _small_run(seed=6).fit(problem.source, problem.target)
    assert not torch.equal(a.g_.A, c.g_.A)


class _Killed(Exception):
    pass


def killed_after_20(monkeypatch, model: CellOT, problem, ckpt) -> None:
    """Fit ``model`` with a checkpoint every 10 iterations; the job dies between the checkpoints at 20 and 30."""
    original_save = checkpoints.Checkpoint.save

    def dies_after_20(self, state):
        if state["iteration"] > 20:
            raise _Killed
        original_save(self, state)

    monkeypatch.setattr(checkpoints.Checkpoint, "save", dies_after_20)
    with pytest.raises(_Killed):
        model.fit(problem.source, problem.target, checkpoint=ckpt)
    monkeypatch.undo()


def test_resume_equals_straight_through(tmp_path, monkeypatch):
    problem = Gaussians(4, n=500)
    straight = _small_run().fit(problem.source, problem.target)
    ckpt = tmp_path / "state" / "cellot.pt"
    killed_after_20(monkeypatch, _small_run(checkpoint_every=10), problem, ckpt)
    assert ckpt.exists()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["iteration"] == 20

    resumed = _small_run(checkpoint_every=10).fit(problem.source, problem.target, checkpoint=ckpt)
    _assert_same_weights(straight, resumed)
    assert resumed.history_.equals(straight.history_)
    assert resumed.best_iteration_ == straight.best_iteration_
    assert not ckpt.exists()  # deleted after successful training


def test_checkpoint_of_another_run_is_not_resumed(tmp_path, monkeypatch, caplog):
    """A checkpoint of another seed is left alone: a warning names the seed, and the run starts afresh."""
    import logging

    problem = Gaussians(4, n=500)
    ckpt = tmp_path / "cellot.pt"

    original_save = checkpoints.Checkpoint.save

    def save_then_die(self, state):
        original_save(self, state)
        raise _Killed

    monkeypatch.setattr(checkpoints.Checkpoint, "save", save_then_die)
    with pytest.raises(_Killed):
        _small_run(checkpoint_every=10).fit(problem.source, problem.target, checkpoint=ckpt)
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="perturbot"):
        other = _small_run(checkpoint_every=10, seed=1).fit(problem.source, problem.target, checkpoint=ckpt)
    assert "belongs to another run (seed: 0 -> 1)" in caplog.text
    _assert_same_weights(other, _small_run(seed=1).fit(problem.source, problem.target))


def test_patience_stops_early_and_keeps_best():
    problem = Gaussians(4, n=600)
    model = _small_run(n_iters=5000, eval_every=5, patience=2).fit(problem.source, problem.target)
    assert model.n_iter_ < 5000
    hist = model.history_
    assert hist["iteration"].iloc[-1] == model.n_iter_
    assert model.best_iteration_[0] == model.n_iter_ - 2 * 5


# ------------------------------------------------------------- validation
def test_input_checks():
    problem = Gaussians(4, n=300)
    model = get("cellot")(n_iters=2, n_inner_iters=1, device="cpu")
    with pytest.raises(NotFittedError):
        model.transport(problem.test)
    with pytest.raises(ValueError, match="features"):
        model.fit(problem.source, problem.target[:, :3])
    bad = problem.source.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, problem.target)
    with pytest.raises(ValueError, match="empty"):
        model.fit_many(problem.source, {})
    with pytest.raises(ValueError, match="n_iters"):
        CellOT(n_iters=0).fit(problem.source, problem.target)
    model.fit(problem.source, problem.target)
    with pytest.raises(ValueError, match="4 features"):
        model.transport(problem.test[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        model.transport(bad)


def test_small_populations_shrink_the_batch_and_skip_validation():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(8, 3)), rng.normal(size=(6, 3)) + 1
    model = CellOT(n_iters=3, n_inner_iters=1, eval_every=1, device="cpu").fit(source, target)
    assert model.history_["val_mmd"].isna().all()
    assert model.best_iteration_ == [3]
    assert model.transport(source).shape == (8, 3)


def _common_and_rare(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Control cells, a common drug's cells and a rare drug's 8 (too few to carve validation cells from)."""
    source = rng.normal(size=(200, 3)).astype(np.float32)
    common = (rng.normal(size=(150, 3)) + 1).astype(np.float32)
    rare = (rng.normal(size=(8, 3)) - 1).astype(np.float32)
    return source, common, rare


def _trainer(model: CellOT, source: np.ndarray, targets: dict[str, np.ndarray]) -> _Trainer:
    """The training run fit_many would start (its batches, validation cells and initial weights)."""
    model.settings_ = model._check_params()
    return _Trainer(model, model.settings_, source, list(targets.values()), list(targets), torch.device("cpu"))


@pytest.mark.parametrize("solver", ["minmax", "amortized", "cycle"])
def test_a_rare_perturbation_does_not_shrink_the_others_batch(solver):
    """Joint training gives every perturbation the batch it gets alone (issue 23.9): not the rarest one's."""
    source, common, rare = _common_and_rare(np.random.default_rng(0))
    model = CellOT(solver=solver, batch_size=64, n_iters=2, n_inner_iters=1, eval_every=1, conjugate_iters=2,
                   device="cpu")
    alone = [_trainer(model, source, {"common": common}).batch, _trainer(model, source, {"rare": rare}).batch]
    joint = _trainer(model, source, {"common": common, "rare": rare})
    assert alone == [64, 8]
    assert joint.batches == alone
    assert joint._source_batch().shape == joint._target_batch().shape == (2, 64, 3)
    # each row is averaged over its own batch: the rare drug's first 8 cells, the common drug's 64
    values = torch.randn(2, 64, requires_grad=True)
    joint._mean(values).sum().backward()
    torch.testing.assert_close(values.grad[0], torch.full((64,), 1 / 64))
    torch.testing.assert_close(values.grad[1, :8], torch.full((8,), 1 / 8))
    assert (values.grad[1, 8:] == 0).all()
    fitted = model.fit_many(source, {"common": common, "rare": rare})  # every solver's losses take that mean
    assert np.isfinite(fitted.transport(source[:5], "rare")).all()


def test_a_perturbation_without_validation_cells_leaves_the_others_validated():
    """The common drug still selects its weights on validation; the rare one keeps its last (issue 23.9)."""
    source, common, rare = _common_and_rare(np.random.default_rng(1))
    model = CellOT(batch_size=64, n_iters=30, n_inner_iters=1, lr=1e-3, eval_every=5, patience=1, device="cpu")
    start = _trainer(model, source, {"common": common, "rare": rare})
    model.fit_many(source, {"common": common, "rare": rare})
    scores = model.history_.set_index(["perturbation", "iteration"])["val_mmd"]
    assert scores["common"].notna().all() and len(scores["common"]) == 6
    assert scores["rare"].isna().all()
    assert model.best_iteration_[0] == scores["common"].idxmin()
    # without validation cells the rare drug never stalls, as alone: no early stop, its last weights kept
    assert model.n_iter_ == 30 and model.best_iteration_[1] == 30
    assert not torch.equal(model.g_.state_dict()["A"][1], start.g.state_dict()["A"][1])


# ----------------------------------------------------------------- presets
def test_paper_preset_is_unchanged():
    """Predictions of a tiny paper-preset run, recorded before presets existed."""
    rng = np.random.default_rng(0)
    src = (rng.normal(size=(300, 5)) + 2).astype(np.float32)
    tgt = (rng.normal(size=(250, 5)) * 1.5 - 1).astype(np.float32)
    model = CellOT(n_iters=30, eval_every=10, device="cpu", seed=3).fit(src, tgt)
    assert model.best_iteration_ == [10]
    recorded = [
        [3.42576, 3.40707, 3.38858, 3.64837, 3.83076],
        [3.47939, 3.55856, 3.43532, 3.56796, 3.75011],
        [2.52667, 2.59291, 2.3209, 2.61863, 2.72515],
    ]
    np.testing.assert_allclose(model.transport(src[:3]), recorded, rtol=1e-5, atol=1e-5)
    explicit = CellOT(preset="paper", n_iters=30, eval_every=10, device="cpu", seed=3).fit(src, tgt)
    _assert_same_weights(model, explicit)
    assert "L" not in dict(model.g_.named_parameters())  # no quadratic term in the paper's network


def test_preset_values_and_explicit_overrides(tmp_path):
    paper = CellOT().settings()
    assert (paper.n_iters, paper.n_inner_iters, paper.lr, paper.batch_size) == (100_000, 10, 1e-4, 256)
    assert (paper.init, paper.standardize, paper.patience) == ("uniform", False, 0)
    fast = CellOT(preset="fast").settings()
    assert (fast.init, fast.standardize) == ("gaussian", True) and fast.patience > 0
    mixed = CellOT(preset="fast", lr=5e-4, patience=0, init="identity").settings()
    assert (mixed.lr, mixed.patience, mixed.init, mixed.n_inner_iters) == (5e-4, 0, "identity", fast.n_inner_iters)
    with pytest.raises(ValueError, match="unknown preset"):
        CellOT(preset="quick").settings()
    with pytest.raises(ValueError, match="init must be"):
        CellOT(init="zeros", n_iters=1).fit(np.ones((20, 2)), np.ones((20, 2)))
    # the preset and the settings it resolved to travel with the saved model
    problem = Gaussians(3, n=300)
    model = CellOT(preset="fast", n_iters=3, eval_every=1, lr=2e-3, device="cpu").fit(problem.source, problem.target)
    model.save(tmp_path / "m")
    loaded = PerturbationModel.load(tmp_path / "m")
    assert loaded.preset == "fast" and loaded.settings_ == model.settings_ and loaded.settings_.lr == 2e-3
    np.testing.assert_array_equal(loaded.transport(problem.test), model.transport(problem.test))
    np.testing.assert_array_equal(loaded.potential_f(problem.test), model.potential_f(problem.test))


def test_gaussian_map_pushes_covariance_forward():
    """M S1 M = S2 (the Bures map's defining identity, with each covariance's ridge) and c sends the mean to
    the mean."""
    rng = np.random.default_rng(2)
    source = rng.normal(size=(3000, 6)) @ _spd(rng, 6) + 3.0
    target = rng.normal(size=(2000, 6)) @ _spd(rng, 6) - 1.0
    matrix, shift = gaussian_map(source, target, ridge=0.1)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-10)
    assert np.linalg.eigvalsh(matrix).min() > 0
    s1, s2 = np.cov(source.T), np.cov(target.T)
    s1, s2 = s1 + 0.1 * np.trace(s1) / 6 * np.eye(6), s2 + 0.1 * np.trace(s2) / 6 * np.eye(6)
    np.testing.assert_allclose(matrix @ s1 @ matrix, s2, atol=1e-8)
    np.testing.assert_allclose(matrix @ source.mean(0) + shift, target.mean(0), atol=1e-8)


@pytest.mark.parametrize("init", ["identity", "gaussian"])
def test_affine_start_of_both_potentials(init):
    """Before any step grad g is the chosen affine map and grad f its inverse (f = g's conjugate)."""
    problem = Gaussians(5, n=800)
    model = CellOT(preset="fast", init=init, device="cpu")
    hp = model._check_params()
    model.settings_ = hp
    model.shift_, model.scale_ = np.zeros(5), 1.0
    trainer = _Trainer(model, hp, problem.source, [problem.target], ["t"], torch.device("cpu"))
    x = torch.from_numpy(problem.test[:200]).unsqueeze(0)
    if init == "identity":
        matrix, shift = np.eye(5), np.zeros(5)
    else:
        n_target = int(trainer.tgt_sizes[0])  # the map between the training cells (validation carved off)
        matrix, shift = gaussian_map(trainer.src.numpy(), trainer.tgt[0, :n_target].numpy(), hp.gaussian_ridge,
                                     relative=False)
    with torch.no_grad():
        tx = trainer.g.gradient(x)[0].double().numpy()
        back = trainer.f.gradient(torch.from_numpy(tx).float().unsqueeze(0))[0].double().numpy()
    np.testing.assert_allclose(tx, problem.test[:200] @ matrix.T + shift, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(back, problem.test[:200], rtol=1e-3, atol=1e-3)


def test_fast_preset_does_not_explode_on_an_unseen_population():
    """Trained on two of three uncentred populations, the map of the third stays finite and beats identity."""
    from perturbot.data.synthetic import ConvexGradientMap

    rng = np.random.default_rng(0)
    d = 8
    means = 4.0 + rng.normal(size=(3, d))
    loadings = rng.normal(scale=0.6, size=(3, d, 3))

    def draw(n: int, pops: tuple[int, ...]) -> np.ndarray:
        pop = np.asarray(pops)[rng.integers(0, len(pops), n)]
        x = means[pop] + np.einsum("ndk,nk->nd", loadings[pop], rng.normal(size=(n, 3)))
        return (x + rng.normal(scale=0.3, size=(n, d))).astype(np.float32)

    A = _spd(rng, d) * 0.5 + 0.5 * np.eye(d)
    w = rng.normal(size=(2, d))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    truth = ConvexGradientMap((A + A.T) / 2, rng.normal(size=d), np.array([2.0, 3.0]), w, draw(500, (0, 1)) @ w.T)
    truth.beta = np.median(truth.beta, axis=0)
    source, target, unseen = draw(2000, (0, 1)), truth(draw(1500, (0, 1))).astype(np.float32), draw(500, (2,))
    model = CellOT(preset="fast", n_iters=300, device="cpu").fit(source, target)
    predicted = model.transport(unseen)
    assert np.isfinite(predicted).all()
    rmse = float(np.sqrt(((predicted - truth(unseen)) ** 2).sum(1).mean()))
    identity = float(np.sqrt(((unseen - truth(unseen)) ** 2).sum(1).mean()))
    assert rmse < 0.5 * identity, (rmse, identity)


def test_fast_preset_gaussian_map_and_w2():
    """8-d Gaussians: L2-UVP under 3.5 % and the dual W2 estimate in the data's units (standardised training)."""
    problem = Gaussians(8)
    model = CellOT(preset="fast", n_iters=200, device="cpu").fit(problem.source, problem.target)
    assert model.settings_.standardize and model.scale_ > 0
    assert problem.l2_uvp(model.transport(problem.test), problem.test) < 3.5
    assert model.w2_estimate(problem.test, problem.target) == pytest.approx(problem.w2, rel=0.05)
    # the reported potential's gradient is the map, in the data's units (central differences)
    x = problem.test[:5].astype(np.float64)
    h = 1e-2
    grads = np.stack(
        [
            (model.potential_g((x + h * e).astype(np.float32)) - model.potential_g((x - h * e).astype(np.float32)))
            / (2 * h)
            for e in np.eye(8)
        ],
        axis=1,
    )
    np.testing.assert_allclose(grads, model.transport(x.astype(np.float32)), rtol=0.05, atol=0.05)


def test_progress_lines_and_a_clean_stop_on_sigterm(tmp_path, caplog, monkeypatch):
    """CellOT logs one progress line per evaluation, and SIGTERM saves the checkpoint it then resumes from."""
    import logging
    import os
    import signal

    from perturbot.checkpoints import Checkpoint
    from perturbot.training import TrainingInterrupted

    caplog.set_level(logging.INFO, logger="perturbot")
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 4)).astype(np.float32)
    target = (source + 1.0).astype(np.float32)
    params = dict(hidden_units=[8], batch_size=16, eval_every=50, val_size=20, checkpoint_every=10**6, seed=0)
    CellOT(n_iters=100, **params).fit(source, target)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cellot ")]
    assert [line.split()[1] for line in lines] == ["50/100", "100/100"]
    assert "val_mmd" in lines[-1] and "best" in lines[-1]

    path = tmp_path / "ckpt.pt"
    record = training.Progress.record

    def sigterm_at_100(self, iteration, *args, **kwargs):  # a deterministic stop, as from the scheduler
        improved = record(self, iteration, *args, **kwargs)
        if iteration == 100:
            os.kill(os.getpid(), signal.SIGTERM)
        return improved

    monkeypatch.setattr(training.Progress, "record", sigterm_at_100)
    with pytest.raises(TrainingInterrupted) as stop:
        CellOT(n_iters=200, **params).fit(source, target, checkpoint=str(path))
    monkeypatch.undo()
    assert stop.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    assert Checkpoint(path).load()["iteration"] == 100
    # the same run resumes from there (another n_iters would be another run, started afresh)
    resumed = CellOT(n_iters=200, **params).fit(source, target, checkpoint=str(path))
    assert "resuming from checkpoint" in caplog.text
    assert list(resumed.history_["iteration"]) == [50, 100, 150, 200]  # history kept, run finished
    assert not path.exists()  # a finished run removes its checkpoint
