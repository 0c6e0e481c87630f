"""Ground-truth map kinds of the synthetic features data: the default stays put, the piecewise kind is non-linear."""

from __future__ import annotations

import numpy as np
import pytest

from perturbot.data import synthetic
from perturbot.data.synthetic import PiecewiseConvexMap, make_features
from perturbot.metrics import gt_rmse
from perturbot.models.gaussian_ot import GaussianOT


def test_default_output_is_unchanged():
    """Values recorded before map kinds existed: the demo's data (and numbers) must not move."""
    adata = make_features(cells=200, perturbations=2, features=6, seed=3)
    np.testing.assert_allclose(
        adata.X[[0, 150, 250, 399, 599]][:, :3],
        [[-0.2088, -0.67175, -1.28122], [0.32842, -0.458, 0.52646], [2.68681, -1.46969, -1.87705],
         [3.9377, -0.55194, -1.98916], [1.61394, -2.07268, -0.85227]],
        atol=2e-5,
    )
    np.testing.assert_allclose(
        adata.obsm["X_true_dasatinib"][[0, 7, 199]][:, :3],
        [[0.46221, -1.80743, -0.87868], [-0.07227, -2.83728, -0.13993], [3.03784, -0.05742, 1.8196]],
        atol=2e-5,
    )
    assert (adata.obs["cell_line"] == "line_A").sum() == 282
    explicit = make_features(cells=200, perturbations=2, features=6, seed=3, map_kind="convex")
    np.testing.assert_array_equal(explicit.X, adata.X)
    assert adata.uns["synthetic"]["map_kind"] == "convex"


def test_piecewise_map_is_the_gradient_of_a_convex_potential():
    rng = np.random.default_rng(0)
    control, line = synthetic._control_features(rng, 400, 5)
    tmap = synthetic._random_piecewise_map(rng, control, line)
    x = control[:50]
    # T = grad psi (central differences)
    eps = 1e-5
    grad = np.stack([(tmap.potential(x + eps * e) - tmap.potential(x - eps * e)) / (2 * eps) for e in np.eye(5)], 1)
    np.testing.assert_allclose(grad, tmap(x), rtol=1e-5, atol=1e-5)
    # monotone (cyclically monotone in pairs): <T(x) - T(y), x - y> >= 0
    y = control[50:100]
    assert (((tmap(x) - tmap(y)) * (x - y)).sum(1) >= -1e-9).all()
    # both pieces matter: each dominates part of the cells
    share = (tmap.responsibilities(control)[:, 0] > 0.5).mean()
    assert 0.3 < share < 0.7
    with pytest.raises(ValueError, match="positive definite"):
        PiecewiseConvexMap(-tmap.A, tmap.b, tmap.a, tmap.origin, tmap.tau, tmap.c, tmap.w, tmap.beta, 1.0)


@pytest.fixture(scope="module")
def both_kinds():
    return {kind: make_features(cells=1500, perturbations=1, features=12, seed=0, map_kind=kind) for kind in synthetic.MAP_KINDS}


def _relative_gaussian_error(adata) -> float:
    """gt_rmse of the Gaussian OT map over that of the identity, on held-out control cells."""
    control = adata.obs["drug"] == "control"
    x = adata.X[control.to_numpy()]
    name = adata.uns["synthetic"]["perturbations"][0]
    y = adata.X[(adata.obs["drug"] == name).to_numpy()]
    truth = adata.obsm[f"X_true_{name}"][control.to_numpy()]
    model = GaussianOT().fit(x[:1000], y)
    return gt_rmse(model.transport(x[1000:]), truth[1000:]) / gt_rmse(x[1000:], truth[1000:])


def test_a_linear_map_fits_the_convex_kind_much_better_than_the_piecewise_kind(both_kinds):
    convex, piecewise = (_relative_gaussian_error(both_kinds[k]) for k in ("convex", "piecewise"))
    assert convex < 0.25
    assert piecewise > 1.5 * convex
    truth = both_kinds["piecewise"].obsm["X_true_trametinib"]
    assert np.isfinite(truth[: 1500]).all() and np.isnan(truth[1500:]).all()


def test_unknown_map_kind():
    with pytest.raises(ValueError, match="map_kind.*convex, piecewise"):
        make_features(cells=60, perturbations=1, features=4, map_kind="rotation")
