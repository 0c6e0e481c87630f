"""PopAlign: mixtures, ref2test alignment and per-subpopulation responses on mixtures with known shifts."""

from __future__ import annotations

import numpy as np
import pytest

from perturbot.models import PerturbationModel, get
from perturbot.models.popalign import PopAlign, align_ref2test, jeffreys_divergence

CENTRES = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
SHIFTS = np.array([[1.0, 0.0, 0.5], [0.0, -1.0, 0.0], [-0.5, 0.5, 1.0]])
FAST = {"n_init": 2}


def mixture(rng: np.random.Generator, n: int, scale: float = 0.5, shift: bool = False):
    """Three subpopulations of equal size; optionally each moved by its own known shift."""
    labels = rng.integers(0, 3, size=n)
    x = CENTRES[labels] + scale * rng.normal(size=(n, 3))
    if shift:
        x += SHIFTS[labels]
    return x, labels


@pytest.fixture(scope="module")
def shifted():
    rng = np.random.default_rng(0)
    control, labels = mixture(rng, 900)
    perturbed, _ = mixture(rng, 900, shift=True)
    return control, labels, perturbed


def test_jeffreys_divergence_closed_form():
    """Equal covariances: JD = 0.5 (mu1 - mu2)' S^-1 (mu1 - mu2); equal Gaussians: 0."""
    cov = np.diag([1.0, 4.0])
    assert jeffreys_divergence(np.zeros(2), cov, np.zeros(2), cov) == pytest.approx(0.0)
    assert jeffreys_divergence(np.zeros(2), cov, np.array([2.0, 2.0]), cov) == pytest.approx(0.5 * (4.0 + 1.0))
    # 1-D, equal means, variances 1 and 4: 0.5 (KL + KL) = 0.5 * (0.5 (1/4 - 1 + ln 4) + 0.5 (4 - 1 - ln 4))
    expected = 0.5 * (0.5 * (0.25 - 1 + np.log(4)) + 0.5 * (4 - 1 - np.log(4)))
    assert jeffreys_divergence(np.zeros(1), np.eye(1), np.zeros(1), 4 * np.eye(1)) == pytest.approx(expected)
    aligned, div = align_ref2test([np.zeros(1), np.array([5.0])], [np.eye(1)] * 2, [np.array([5.5]), np.array([0.2])], [np.eye(1)] * 2)
    assert aligned.tolist() == [1, 0] and div.shape == (2, 2)


def test_recovers_subpopulation_shifts_and_assignment(shifted):
    control, labels, perturbed = shifted
    model = PopAlign(**FAST).fit(control, perturbed)
    assigned = model.assign(control)
    # every true subpopulation is one component, and the components are distinct
    component_of = [np.bincount(assigned[labels == c], minlength=3).argmax() for c in range(3)]
    assert sorted(component_of) == [0, 1, 2]
    assert (assigned == np.array(component_of)[labels]).mean() > 0.99
    # each component's response is its subpopulation's shift
    shifts = model.component_shifts()
    for c in range(3):
        np.testing.assert_allclose(shifts[component_of[c]], SHIFTS[c], atol=0.15)
    pred = model.transport(control)
    np.testing.assert_allclose(pred - control, SHIFTS[labels], atol=0.15)


def test_gaussian_response_carries_the_spread(shifted):
    rng = np.random.default_rng(1)
    control, labels, _ = shifted
    wider, wider_labels = mixture(rng, 900, scale=1.0, shift=True)  # twice the spread
    # PopAlign's automatic reg_covar (largest eigenvalue / 100, here about 0.2) would widen the
    # tight components' covariances and shrink the ratio of spreads; a negligible one keeps it exact
    model = PopAlign(response="gaussian", reg_covar=1e-6, **FAST).fit(control, wider)
    pred = model.transport(control)
    for c in range(3):
        cells = pred[labels == c]
        np.testing.assert_allclose(cells.mean(0), CENTRES[c] + SHIFTS[c], atol=0.2)
        np.testing.assert_allclose(cells.std(0), wider[wider_labels == c].std(0), rtol=0.15)
    mean_only = PopAlign(**FAST).fit(control, wider).transport(control)
    assert mean_only[labels == 0].std(0).max() < 0.7  # the mean response keeps the control spread


def test_pca_embedding_and_fit_many(shifted, tmp_path):
    """Padding with 5 noise-free features: PCA to 3 axes recovers the same shifts; save/load is exact."""
    control, labels, perturbed = shifted
    pad = lambda x: np.hstack([x, np.zeros((len(x), 5))])  # noqa: E731
    model = PopAlign(embedding="pca", embedding_dim=3, seed=2, **FAST).fit_many(
        pad(control), {"shifted": pad(perturbed), "same": pad(control)}
    )
    pred = model.transport(pad(control), perturbation="shifted")
    np.testing.assert_allclose(pred[:, :3] - control, SHIFTS[labels], atol=0.2)
    np.testing.assert_allclose(pred[:, 3:], 0.0, atol=1e-6)
    np.testing.assert_allclose(model.transport(pad(control), perturbation="same"), pad(control), atol=0.15)
    with pytest.raises(ValueError, match="perturbation="):
        model.transport(pad(control))
    model.save(tmp_path / "m")
    loaded = PerturbationModel.load(tmp_path / "m")
    assert isinstance(loaded, PopAlign) and loaded.get_params() == model.get_params()
    for p in ("shifted", "same"):
        np.testing.assert_array_equal(loaded.transport(pad(control), perturbation=p), model.transport(pad(control), perturbation=p))


def test_seeded(shifted):
    control, _, perturbed = shifted
    a = PopAlign(seed=5, **FAST).fit(control, perturbed).transport(control)
    b = PopAlign(seed=5, **FAST).fit(control, perturbed).transport(control)
    np.testing.assert_array_equal(a, b)


def test_bad_inputs_and_parameters():
    rng = np.random.default_rng(3)
    few = rng.normal(size=(6, 2))
    with pytest.raises(ValueError, match="too few for a mixture of 3"):
        PopAlign(**FAST).fit(few, few)
    many = rng.normal(size=(60, 2))
    for bad in ({"criterion": "aicc"}, {"embedding": "umap"}, {"response": "full"}, {"n_components": 0},
                {"validation_fraction": 1.0}, {"reg_covar": -1.0}):
        with pytest.raises(ValueError):
            PopAlign(**{**FAST, **bad}).fit(many, many)
    with pytest.raises(ValueError, match="features but source has"):
        PopAlign(**FAST).fit(many, rng.normal(size=(60, 3)))
    assert get("popalign") is PopAlign
    # candidate ks: AIC picks among them (here the data has 3 subpopulations)
    control, _ = mixture(rng, 600)
    chosen = PopAlign(n_components=[1, 3], **FAST).fit(control, control)
    assert len(chosen.control_["weights"]) == 3


# ---------------------------------------------------------------- oNMF embedding
def programs_data(rng: np.random.Generator, n: int, shift: bool = False):
    """Expression from 3 disjoint gene programs (10 genes each); a cell's state is its dominant program.

    With ``shift``, state c's dominant program gains a known amount (+2 activity)."""
    labels = rng.integers(0, 3, size=n)
    activity = rng.uniform(0.1, 0.5, size=(n, 3))
    activity[np.arange(n), labels] += 3.0 + (2.0 if shift else 0.0)
    programs = np.kron(np.eye(3), np.ones((1, 10))) / np.sqrt(10)  # 3 x 30, orthonormal rows
    return activity @ programs + rng.uniform(0, 0.05, size=(n, 30)), labels, programs


def test_onmf_recovers_disjoint_programs():
    from perturbot.models.onmf import orthogonal_nmf, project

    rng = np.random.default_rng(4)
    x, _, programs = programs_data(rng, 600)
    w = orthogonal_nmf(x, 3, seed=0)
    assert w.shape == (30, 3) and (w >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0)
    # each learned program is one true program (up to order), so W'W ~ I
    match = np.abs(programs @ w)  # true x learned cosines
    assert sorted(match.argmax(0).tolist()) == [0, 1, 2] and match.max(0).min() > 0.98
    h = project(w, x)
    assert (h >= 0).all() and np.linalg.norm(x - h @ w.T) / np.linalg.norm(x) < 0.05


def test_popalign_in_onmf_space_recovers_program_shifts():
    rng = np.random.default_rng(5)
    control, labels, programs = programs_data(rng, 900)
    perturbed, _, _ = programs_data(rng, 900, shift=True)
    model = PopAlign(embedding="onmf", embedding_dim=3, **FAST).fit(control, perturbed)
    pred = model.transport(control)
    # each state's dominant program rises by 2 (in gene space: 2 x that program's unit vector)
    for c in range(3):
        np.testing.assert_allclose((pred - control)[labels == c].mean(0), 2.0 * programs[c], atol=0.1)
    with pytest.raises(ValueError, match="negative values"):
        PopAlign(embedding="onmf", **FAST).fit(control - 1.0, perturbed)
