"""Closed-form Gaussian OT: exact recovery, identity, PCA, persistence, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from perturbot.metrics import gt_rmse
from perturbot.models import PerturbationModel, get
from perturbot.models.gaussian_ot import GaussianOT, gaussian_map_matrix


def spd(rng: np.random.Generator, d: int, low: float = 0.5, high: float = 2.0) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * rng.uniform(low, high, size=d)) @ q.T


def test_map_matrix_closed_form():
    """A pushes S_s onto S_t (A S_s A = S_t) and is symmetric positive definite; in 1-D it is sigma_t / sigma_s."""
    rng = np.random.default_rng(0)
    s, t = spd(rng, 5), spd(rng, 5)
    a = gaussian_map_matrix(s, t)
    np.testing.assert_allclose(a, a.T, atol=1e-12)
    assert np.linalg.eigvalsh(a).min() > 0
    np.testing.assert_allclose(a @ s @ a, t, atol=1e-10)
    np.testing.assert_allclose(gaussian_map_matrix(np.array([[4.0]]), np.array([[9.0]])), [[1.5]])
    # commuting covariances: A = (S_t S_s^-1)^1/2 elementwise on the diagonal
    np.testing.assert_allclose(gaussian_map_matrix(np.diag([1.0, 4.0]), np.diag([9.0, 1.0])), np.diag([3.0, 0.5]))


def test_recovers_the_exact_map_between_two_gaussians():
    """Control ~ N(m, S); perturbed = T(independent control draw) for an SPD affine T: T is the W2 map."""
    rng = np.random.default_rng(1)
    d, n = 6, 20_000
    mean, cov = rng.normal(size=d), spd(rng, d)
    linear, shift = spd(rng, d, 0.6, 1.5), rng.normal(size=d)

    def true_map(x):
        return (x - mean) @ linear + mean + shift

    control = rng.multivariate_normal(mean, cov, size=n)
    perturbed = true_map(rng.multivariate_normal(mean, cov, size=n))
    model = GaussianOT().fit(control, perturbed)
    test = rng.multivariate_normal(mean, cov, size=2000)
    truth = true_map(test)
    response = gt_rmse(test, truth)
    assert gt_rmse(model.transport(test), truth) < 0.05 * response
    np.testing.assert_allclose(model.map_matrix(), linear, atol=0.05)


def test_identity_when_source_and_target_are_the_same_cells():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 4)) @ spd(rng, 4)
    model = GaussianOT().fit(x, x)
    np.testing.assert_allclose(model.transport(x), x, atol=1e-4)
    np.testing.assert_allclose(model.map_matrix(), np.eye(4), atol=1e-6)


def test_pca_keeps_the_map_in_the_subspace_and_shifts_means_everywhere():
    """More features than cells: the covariance map lives in a PCA; the mean shift is in full space."""
    rng = np.random.default_rng(3)
    n, d, k = 60, 200, 3
    basis = np.linalg.qr(rng.normal(size=(d, k)))[0]  # orthonormal columns
    z_control = rng.normal(size=(n, k))
    z_perturbed = 2.0 * rng.normal(size=(n, k))  # the perturbation doubles the spread in the subspace
    shift = rng.normal(size=d)
    control, perturbed = z_control @ basis.T, z_perturbed @ basis.T + shift
    with pytest.raises(ValueError, match="n_components"):
        GaussianOT().fit(control, perturbed)
    model = GaussianOT(n_components=k).fit(control, perturbed)
    pred = model.transport(control)
    np.testing.assert_allclose(pred.mean(0), perturbed.mean(0), atol=1e-4)
    # the predicted spread in the subspace matches the perturbed one (2x), nothing leaks outside it
    centred = (pred - pred.mean(0)).astype(np.float64)
    np.testing.assert_allclose(np.cov(centred @ basis, rowvar=False), np.cov(z_perturbed, rowvar=False), atol=0.05)
    outside = centred - centred @ basis @ basis.T
    assert np.abs(outside).max() < 1e-4
    # n_components above what the cells support is capped (one below the smaller population)
    capped = GaussianOT(n_components=500).fit(control, perturbed)
    assert capped.maps_[0]["basis"].shape == (d, n - 1)


def test_fit_many_is_one_map_per_perturbation():
    rng = np.random.default_rng(4)
    control = rng.normal(size=(300, 3))
    targets = {"a": control * 2.0 + 1.0, "b": control - 3.0}
    model = GaussianOT().fit_many(control, targets)
    for name, target in targets.items():
        alone = GaussianOT().fit(control, target)
        np.testing.assert_allclose(model.transport(control, perturbation=name), alone.transport(control), atol=1e-5)
    np.testing.assert_allclose(model.transport(control, perturbation="a"), control * 2.0 + 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="perturbation="):
        model.transport(control)
    with pytest.raises(KeyError, match="unknown perturbation"):
        model.transport(control, perturbation="c")


@pytest.mark.parametrize("n_components", [None, 2])
def test_save_load_identical_predictions(tmp_path, n_components):
    rng = np.random.default_rng(5)
    control, perturbed = rng.normal(size=(100, 4)), rng.normal(loc=1.0, size=(120, 4)) * 1.5
    model = GaussianOT(n_components=n_components, seed=3).fit(control, perturbed)
    model.save(tmp_path / "m")
    loaded = PerturbationModel.load(tmp_path / "m")
    assert isinstance(loaded, GaussianOT) and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.transport(control), model.transport(control))


def test_singular_covariance_needs_the_ridge():
    """A constant feature: the documented ridge keeps it constant-shifted; without ridge a clear error."""
    rng = np.random.default_rng(6)
    control, perturbed = rng.normal(size=(200, 3)), rng.normal(loc=1.0, size=(200, 3))
    control[:, 2], perturbed[:, 2] = 0.5, 2.0
    pred = GaussianOT().fit(control, perturbed).transport(control)
    np.testing.assert_allclose(pred[:, 2], 2.0, atol=1e-4)
    with pytest.raises(ValueError, match="singular.*ridge"):
        GaussianOT(ridge=0.0).fit(control, perturbed)


def test_bad_inputs_and_parameters():
    rng = np.random.default_rng(7)
    control = rng.normal(size=(10, 20))
    with pytest.raises(ValueError, match="10 cells for 20 features.*n_components"):
        GaussianOT().fit(control, control)
    with pytest.raises(ValueError, match="features but source has"):
        GaussianOT().fit(rng.normal(size=(50, 3)), rng.normal(size=(50, 4)))
    with pytest.raises(ValueError, match="ridge"):
        GaussianOT(ridge=-1.0).fit(control, control)
    with pytest.raises(ValueError, match="n_components"):
        GaussianOT(n_components=0).fit(control, control)
    assert get("gaussian_ot") is GaussianOT


@pytest.mark.parametrize("name", ["gaussian_ot", "popalign"])
def test_runs_in_an_autoencoders_latent_space(tmp_path, name):
    """The workflow's latent wrapper: fit on codes, predict genes; the saved directory predicts the same."""
    from perturbot.latent import LatentModel, load_model
    from perturbot.models.autoencoder import AutoEncoder

    rng = np.random.default_rng(8)
    basis = rng.normal(size=(3, 30))
    control = (rng.normal(size=(300, 3)) @ basis).astype(np.float32)
    perturbed = ((rng.normal(size=(300, 3)) + [2.0, 0.0, -1.0]) @ basis).astype(np.float32)
    ae = AutoEncoder(hidden_units=(16,), latent_dim=4, n_iters=200, eval_every=100, device="cpu")
    ae.fit(np.concatenate([control, perturbed]))
    inner = get(name)(**({"n_init": 1} if name == "popalign" else {}))
    model = LatentModel(inner, ae).fit(control, perturbed)
    pred = model.transport(control)
    assert pred.shape == control.shape and np.isfinite(pred).all()
    # the prediction moves the control mean towards the perturbed one; PopAlign only part of the way, since
    # on one Gaussian each control component aligns to the nearest slice of the perturbed population
    gap = np.linalg.norm(pred.mean(0) - perturbed.mean(0)) / np.linalg.norm(control.mean(0) - perturbed.mean(0))
    assert gap < (0.5 if name == "gaussian_ot" else 0.9)
    model.save(tmp_path / name)
    np.testing.assert_array_equal(load_model(tmp_path / name).transport(control), pred)
