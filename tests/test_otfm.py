"""OT flow matching: integrator, minibatch coupling, maps with known answers, persistence, resume, bad input."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from scipy.linalg import sqrtm

from perturbot import checkpoints, training
from perturbot.data.toy2d import make_2d
from perturbot.models import PerturbationModel, get
from perturbot.models.otfm import OTFlowMatching, _Data, integrate

torch.set_num_threads(1)


# ------------------------------------------------------------ building blocks
class _Linear(torch.nn.Module):
    """v(x, t) = a x: the flow of one unit of time multiplies x by e^a."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, x, t, perturbation):
        return self.a * x


@pytest.mark.parametrize("solver,steps,tol", [("euler", 10, 0.1), ("midpoint", 10, 5e-3), ("rk4", 10, 1e-5)])
def test_integrators_solve_a_linear_ode_to_their_order(solver, steps, tol):
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    out = integrate(_Linear(1.0), x, 0, steps, solver)
    exact = x * np.e
    assert torch.allclose(out, exact, rtol=tol)
    if solver != "rk4":
        assert not torch.allclose(out, exact, rtol=tol / 10)  # the error is that of the method, not zero


def test_exact_coupling_is_the_optimal_assignment_of_the_batch():
    rng = np.random.default_rng(0)
    src, tgt = rng.normal(size=(60, 3)).astype(np.float32), rng.normal(1, 1, size=(50, 3)).astype(np.float32)
    data = _Data.make(src, [tgt], 0, 0, torch.device("cpu"))
    gen = training.make_generator(0)
    x0, x1 = data.sample_pairs(torch.tensor([0]), 32, gen, "exact")
    cost = ((x0[0] - x1[0]) ** 2).sum(1).mean().item()
    a, b = x0[0].double().numpy(), x1[0].double().numpy()
    best = ot.emd2(np.full(32, 1 / 32), np.full(32, 1 / 32), ot.dist(a, b))
    assert cost == pytest.approx(best, rel=1e-5)
    # the same draw paired independently costs more
    gen = training.make_generator(0)
    y0, y1 = data.sample_pairs(torch.tensor([0]), 32, gen, "independent")
    assert torch.equal(y0, x0) and ((y0[0] - y1[0]) ** 2).sum(1).mean().item() > 1.5 * cost


# ----------------------------------------------------------- known answers
def _gaussian_w2_map(cov_s: np.ndarray, cov_t: np.ndarray) -> np.ndarray:
    """A with T(x) = m_t + A (x - m_s), the W2-optimal map between two Gaussians."""
    root = np.real(sqrtm(cov_s))
    inv = np.linalg.inv(root)
    return inv @ np.real(sqrtm(root @ cov_t @ root)) @ inv


FAST = dict(n_iters=300, eval_every=300, batch_size=128, val_size=0, device="cpu")


def test_gaussian_to_gaussian_matches_the_closed_form_w2_map():
    rng = np.random.default_rng(0)
    d = 4
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    cov_s = np.eye(d)
    cov_t = (q * np.array([0.1, 0.5, 2.0, 4.0])) @ q.T
    mean_t = rng.normal(0, 1.5, d)
    src = rng.normal(size=(1000, d)).astype(np.float32)
    tgt = rng.multivariate_normal(mean_t, cov_t, 1000).astype(np.float32)
    test = rng.normal(size=(500, d)).astype(np.float32)
    truth = mean_t + test @ _gaussian_w2_map(cov_s, cov_t).T
    pred = OTFlowMatching(**FAST).fit(src, tgt).transport(test)
    # L2-UVP (Korotin et al. 2021): per-cell squared error in % of the target's variance
    uvp = 100 * ((pred - truth) ** 2).sum(1).mean() / np.trace(cov_t)
    shift_uvp = 100 * ((test + mean_t - truth) ** 2).sum(1).mean() / np.trace(cov_t)
    # measured 1.1-1.8 % over seeds 0-2 at these settings; a mean shift scores 25-28 %
    assert shift_uvp > 20
    assert uvp < 4.0


def test_circles_land_on_their_matching_circle():
    # the W2 map between circles and the same circles scaled by 2 is x -> 2x: inner to inner, outer to outer
    src, tgt = make_2d("circles", n=1000, seed=0)
    model = OTFlowMatching(**FAST).fit(src, tgt)
    test, _ = make_2d("circles", n=400, seed=10)
    pred = model.transport(test)
    inner = np.linalg.norm(test, axis=1) < 0.75
    radius = np.linalg.norm(pred, axis=1)
    assert (radius[inner] < 1.5).mean() > 0.95 and (radius[~inner] > 1.5).mean() > 0.95
    # and each cell keeps its angle: the mean error against 2x (measured 0.10-0.21 over seeds 0-2)
    # is small next to the gap of 1 between the target circles
    assert np.linalg.norm(pred - 2 * test, axis=1).mean() < 0.35


def test_one_network_learns_opposite_shifts_by_its_perturbation_embedding():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(800, 3)).astype(np.float32)
    shift = np.array([3.0, 0.0, -1.0], np.float32)
    targets = {"up": rng.normal(size=(800, 3)).astype(np.float32) + shift,
               "down": rng.normal(size=(800, 3)).astype(np.float32) - shift}
    model = OTFlowMatching(**{**FAST, "val_size": 100, "eval_every": 150}).fit_many(src, targets)
    assert model.perturbations_ == ["up", "down"]
    test = rng.normal(size=(500, 3)).astype(np.float32)
    for name, sign in (("up", 1), ("down", -1)):
        # the W2 map between two equal Gaussians is the shift itself, cell by cell
        err = np.linalg.norm(model.transport(test, name) - (test + sign * shift), axis=1).mean()
        assert err < 0.4
    with pytest.raises(ValueError, match="pass perturbation="):
        model.transport(test)
    with pytest.raises(KeyError, match="unknown perturbation"):
        model.transport(test, "sideways")
    assert set(model.history_["perturbation"]) == {"up", "down"}
    assert set(model.val_score_) == {"up", "down"}


# ----------------------------------------------- persistence and resumption
def _pair(n: int = 200, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.normal(1.0, 0.5, size=(n, d)).astype(np.float32)


def test_save_and_load_give_identical_predictions(tmp_path):
    src, tgt = _pair()
    model = OTFlowMatching(n_iters=20, eval_every=10, batch_size=32, solver="rk4", n_steps=4, device="cpu")
    model.fit_many(src, {"a": tgt, "b": tgt + 1})
    model.save(tmp_path)
    loaded = PerturbationModel.load(tmp_path)
    assert isinstance(loaded, OTFlowMatching) and loaded.solver == "rk4"
    for name in ("a", "b"):
        np.testing.assert_array_equal(loaded.transport(src, name), model.transport(src, name))
    assert loaded.scale_ == model.scale_ and loaded.val_score_ == model.val_score_


class _Killed(RuntimeError):
    pass


def test_resume_from_a_checkpoint_is_bit_identical(tmp_path, monkeypatch):
    src, tgt = _pair()
    params = dict(n_iters=30, eval_every=5, checkpoint_every=10, batch_size=32, sigma=0.1,
                  keep_best=True, device="cpu")
    straight = OTFlowMatching(**params).fit(src, tgt)

    ckpt = tmp_path / "otfm.pt"
    save = checkpoints.Checkpoint.save

    def save_then_die(self, state):
        save(self, state)
        if state["iteration"] == 20:
            raise _Killed

    monkeypatch.setattr(checkpoints.Checkpoint, "save", save_then_die)
    with pytest.raises(_Killed):
        OTFlowMatching(**params).fit(src, tgt, checkpoint=str(ckpt))
    assert ckpt.exists()
    monkeypatch.setattr(checkpoints.Checkpoint, "save", save)
    resumed = OTFlowMatching(**params).fit(src, tgt, checkpoint=str(ckpt))
    assert not ckpt.exists()
    np.testing.assert_array_equal(resumed.transport(src), straight.transport(src))
    assert resumed.history_.equals(straight.history_)


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("params,match", [
    ({"coupling": "sinkhorn"}, "coupling must be one of"),
    ({"solver": "dopri5"}, "solver must be one of"),
    ({"n_steps": 0}, "n_steps: 0 is not >= 1; n_steps must be an integer >= 1"),
    ({"sigma": -0.1}, "sigma: -0.1 is not >= 0; sigma must be a number >= 0"),
    ({"perturbations_per_step": 0}, "perturbations_per_step"),
])
def test_bad_hyper_parameters_are_named(params, match):
    src, tgt = _pair(40)
    with pytest.raises(ValueError, match=match):
        OTFlowMatching(n_iters=2, device="cpu", **params).fit(src, tgt)


def test_bad_data_is_named():
    src, tgt = _pair(40)
    model = get("otfm")(n_iters=2, device="cpu")
    with pytest.raises(ValueError, match="at least one perturbation"):
        model.fit_many(src, {})
    with pytest.raises(ValueError, match="has 4 features but source has 5"):
        model.fit_many(src, {"x": tgt[:, :4]})
    bad = tgt.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        model.fit(src, bad)


def test_perturbations_per_step_samples_a_subset_and_still_learns_each():
    src, tgt = _pair(100, 3)
    targets = {f"p{i}": tgt + i for i in range(3)}
    model = OTFlowMatching(n_iters=6, eval_every=3, batch_size=16, perturbations_per_step=1, device="cpu")
    model.fit_many(src, targets)
    # each step's loss is logged only for the perturbation it drew
    last = model.history_[model.history_.iteration == 6]
    assert last["loss"].notna().sum() == 1


# ------------------------------------------------------------ in the workflow
@pytest.mark.slow
def test_workflow_trains_otfm_jointly_in_the_latent_space_and_draws_its_figures(tmp_path):
    import json

    import pandas as pd
    from helpers import run_workflow, small_counts_config

    tiny = {"n_iters": 40, "eval_every": 20, "batch_size": 32, "val_size": 10}
    config = small_counts_config(["identity", "otfm"], joint_training=True, model_params={"otfm": tiny})
    figures = [f"results/counts_iid/figures/{name}_otfm.pdf" for name in ("vector_field", "clustergram")]
    run_workflow(tmp_path, config, "--cores", "1", "results/counts_iid/metrics.csv", *figures)
    metrics = pd.read_csv(tmp_path / "results/counts_iid/metrics.csv")
    scores = metrics[(metrics.model == "otfm") & (metrics.metric == "mmd")]
    assert len(scores) == 2 and np.isfinite(scores.value).all()  # both perturbations, from one joint model
    saved = json.loads(next((tmp_path / "results/counts_iid/models").rglob("otfm/**/model.json")).read_text())
    assert saved["model"] == "latent"  # wrapped around the shared autoencoder, like the other OT models
    for figure in figures:
        assert (tmp_path / figure).stat().st_size > 0


def test_a_target_without_validation_cells_leaves_the_others_validated():
    """A rare drug (8 cells: none to validate on) no longer stops a joint fit (issue 23.9); the shared
    network's kept weights are chosen on the perturbations that have validation cells."""
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 3)).astype(np.float32)
    targets = {"common": (rng.normal(size=(150, 3)) + 1).astype(np.float32),
               "rare": (rng.normal(size=(8, 3)) - 1).astype(np.float32)}
    model = OTFlowMatching(n_iters=20, eval_every=10, batch_size=32, hidden_units=(16,), embedding_dim=4,
                           start="identity", keep_best=True, device="cpu")
    model.fit_many(source, targets)
    scores = model.history_.set_index(["perturbation", "iteration"])["val_w2_empirical"]
    assert scores["common"].notna().all() and scores["rare"].isna().all()
    assert model.val_score_["common"] == pytest.approx(scores["common"].min())
    assert np.isnan(model.val_score_["rare"])
    assert np.isfinite(model.transport(source[:5], perturbation="rare")).all()
    # at the defaults (a Gaussian start below 10,000 cells) a perturbation of one cell starts at the mean shift
    targets["single"] = np.full((1, 3), 2.0, np.float32)
    model = OTFlowMatching(n_iters=2, eval_every=1, batch_size=8, hidden_units=(8,), device="cpu").fit_many(source, targets)
    assert model.start_ == "gaussian"
    np.testing.assert_allclose(model.start_matrix_[2].numpy(), np.eye(3), atol=1e-6)
    assert np.isfinite(model.transport(source[:5], perturbation="single")).all()


def test_progress_lines_and_a_clean_stop_on_sigterm(tmp_path, caplog, monkeypatch):
    """OT-FM logs one progress line per evaluation (iterations, time left, validation score), and SIGTERM
    saves the checkpoint that the same run then resumes from, to the same predictions as straight through."""
    import logging
    import os
    import signal

    caplog.set_level(logging.INFO, logger="perturbot")
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 4)).astype(np.float32)
    target = (source + 1.0).astype(np.float32)
    params = dict(hidden_units=(16,), batch_size=32, eval_every=20, val_size=20, checkpoint_every=10**6, seed=0,
                  device="cpu")
    straight = OTFlowMatching(n_iters=60, **params).fit(source, target)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("otfm ")]
    assert [line.split()[1] for line in lines] == ["20/60", "40/60", "60/60"]
    assert "left" in lines[0] and "val_w2_empirical" in lines[-1] and "best" in lines[-1]

    path = tmp_path / "ckpt.pt"
    record = training.Progress.record

    def sigterm_at_40(self, iteration, *args, **kwargs):
        improved = record(self, iteration, *args, **kwargs)
        if iteration == 40:
            os.kill(os.getpid(), signal.SIGTERM)
        return improved

    monkeypatch.setattr(training.Progress, "record", sigterm_at_40)
    with pytest.raises(training.TrainingInterrupted):
        OTFlowMatching(n_iters=60, **params).fit(source, target, checkpoint=str(path))
    monkeypatch.undo()
    assert checkpoints.Checkpoint(path).load()["iteration"] == 40
    resumed = OTFlowMatching(n_iters=60, **params).fit(source, target, checkpoint=str(path))
    assert list(resumed.history_["iteration"]) == [20, 40, 60]
    np.testing.assert_array_equal(resumed.transport(source[:50]), straight.transport(source[:50]))


def test_a_gaussian_start_extrapolates_an_affine_map_to_an_unseen_population(tmp_path):
    """On an affine truth the Gaussian start is the map itself, so cells of a population never seen in
    training (a shifted copy of the control cells) land near their true images; the plain start, which
    learned the flow only where the training cells were, does not. Saved and loaded, it predicts the same."""
    rng = np.random.default_rng(0)
    d = 4
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = (q * np.array([0.5, 0.8, 1.2, 1.6])) @ q.T  # symmetric positive definite: x -> a x + b is the W2 map
    b = np.array([1.0, -2.0, 0.5, 0.0])
    source = rng.normal(size=(1500, d)).astype(np.float32)
    target = (rng.normal(size=(1500, d)) @ a.T + b).astype(np.float32)
    unseen = (rng.normal(size=(500, d)) + 3.0).astype(np.float32)
    truth = unseen @ a.T + b
    common = dict(n_iters=200, hidden_units=(32, 32), batch_size=128, val_size=100, eval_every=100, seed=0,
                  device="cpu")
    rmse = lambda model: float(np.sqrt(np.square(model.transport(unseen) - truth).sum(1).mean()))  # noqa: E731
    gaussian = OTFlowMatching(start="gaussian", **common).fit(source, target)
    plain = OTFlowMatching(start="identity", **common).fit(source, target)
    assert rmse(gaussian) < 0.5 and rmse(gaussian) < rmse(plain) / 2, (rmse(gaussian), rmse(plain))
    loaded = PerturbationModel.load(gaussian.save(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.transport(unseen), gaussian.transport(unseen))



def test_global_coupling_pairs_each_cell_with_its_own_image_under_a_translation():
    """coupling: global solves one assignment of the whole populations: for a translated copy, the W2 pairing
    sends every cell to its own translate (each batch then draws pairs from it); too many cells are refused."""
    rng = np.random.default_rng(0)
    source = rng.normal(size=(300, 3)).astype(np.float32)
    data = _Data.make(source, [source[::-1] + 2.0], val_size=0, seed=0, device=torch.device("cpu"))
    data.pair_globally(seed=0)
    rows_src, rows_tgt = data.global_pairs[0]
    np.testing.assert_allclose(data.targets[0][rows_tgt].numpy(), data.source[rows_src].numpy() + 2.0, atol=1e-6)
    x0, x1 = data.sample_pairs(torch.tensor([0]), 64, torch.Generator().manual_seed(0), "global")
    np.testing.assert_allclose(x1.numpy(), x0.numpy() + 2.0, atol=1e-6)
    from perturbot.models import otfm

    with pytest.raises(ValueError, match="coupling: exact"):
        big = np.zeros((otfm.GLOBAL_MAX_CELLS + 1, 2), np.float32)
        _Data.make(big, [big], val_size=0, seed=0, device=torch.device("cpu")).pair_globally(0)


def test_patience_stops_when_no_validation_improves_and_keeps_the_best():
    """With a learning rate too small to move the network, the Gaussian start (the exact map of a translation)
    is the best from the first validation on, so ``patience`` validations later training stops: at
    iteration (1 + patience) * eval_every, with the Gaussian map kept. Without patience it runs the budget."""
    rng = np.random.default_rng(0)
    source = rng.normal(size=(600, 3)).astype(np.float32)
    target = (rng.normal(size=(600, 3)) + 2.0).astype(np.float32)
    common = dict(start="gaussian", keep_best=True, n_iters=400, eval_every=10, lr=1e-12, lr_min=1e-12,
                  hidden_units=(16,), batch_size=64, val_size=100, seed=0, device="cpu")
    stopped = OTFlowMatching(patience=3, **common).fit(source, target)
    assert int(stopped.history_["iteration"].max()) == (1 + 3) * 10
    full = OTFlowMatching(patience=None, **common).fit(source, target)
    assert int(full.history_["iteration"].max()) == 400
    error = np.sqrt(np.square(stopped.transport(source) - (source + 2.0)).sum(1).mean())
    assert error < 0.2  # the Gaussian map of 500 training cells, against the shift of 2 * sqrt(3) = 3.5


def test_below_ten_thousand_cells_the_defaults_start_at_the_gaussian_map_and_keep_the_best(monkeypatch):
    """keep_best=None and start=None decide by the smallest training population: under SMALL_POPULATION cells the
    best weights and flows from the Gaussian map's images (there the flow would fit the training cells'
    pairings), at or above it the last weights and flows from the cells; explicit values win, and the
    choices are saved with the model."""
    from perturbot.models import otfm

    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(300, 2)).astype(np.float32), rng.normal(size=(250, 2)).astype(np.float32)
    common = dict(n_iters=2, eval_every=1, batch_size=16, hidden_units=(8,), val_size=50, device="cpu")
    small = OTFlowMatching(**common).fit(source, target)
    assert (small.keep_best_, small.start_) == (True, "gaussian") and small.start_matrix_ is not None
    monkeypatch.setattr(otfm, "SMALL_POPULATION", 200)  # 200 training cells of the smaller population: not below
    large = OTFlowMatching(**common).fit(source, target)
    assert (large.keep_best_, large.start_) == (False, "identity") and large.start_matrix_ is None
    assert large._get_state()["keep_best_"] is False and large._get_state()["start_"] == "identity"
    explicit = OTFlowMatching(keep_best=True, start="gaussian", **common).fit(source, target)
    assert (explicit.keep_best_, explicit.start_) == (True, "gaussian")
