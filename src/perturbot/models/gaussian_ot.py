"""Closed-form Gaussian optimal transport (``gaussian_ot``): the W2 map between Gaussian fits.

Each population is approximated by a Gaussian, N(m_s, S_s) for the control
cells and N(m_t, S_t) for the perturbed ones; the W2-optimal map between them is
affine,

    T(x) = m_t + A (x - m_s),   A = S_s^{-1/2} (S_s^{1/2} S_t S_s^{1/2})^{1/2} S_s^{-1/2},

symmetric positive definite (so T is the gradient of a convex quadratic). It is
the baseline a neural OT model must beat to show it learned non-linear
structure: it captures every mean and covariance change and nothing else.

Two safeguards keep the covariances invertible: a ridge, ``ridge * trace(S) / k``
added to the diagonal of each covariance (k its size), and, when features
outnumber cells (scRNA-seq genes), ``n_components``: the covariance part of the
map is computed in a PCA of the training cells (control and perturbed pooled,
each centred on its own mean) while the mean shift stays in full space,

    T(x) = x + (m_t - m_s) + V (A_k - I) V' (x - m_s),

with V the k principal axes and A_k the map between the projected Gaussians;
along the discarded axes T is a pure mean shift (the scGen baseline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbot.models.base import PerturbationModel, fit_inputs
from perturbot.params import Interval


def _sqrt_psd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square root and inverse square root of a symmetric positive definite matrix (eigh)."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    vals = np.clip(vals, 0.0, None)
    root = (vecs * np.sqrt(vals)) @ vecs.T
    with np.errstate(divide="ignore"):
        inv_root = (vecs * np.where(vals > 0, 1.0 / np.sqrt(vals), 0.0)) @ vecs.T
    return root, inv_root


def gaussian_map_matrix(cov_source: np.ndarray, cov_target: np.ndarray) -> np.ndarray:
    """A = S_s^{-1/2} (S_s^{1/2} S_t S_s^{1/2})^{1/2} S_s^{-1/2}: the linear part of the W2 map.

    ``cov_source`` must be positive definite (float64 recommended).
    """
    root, inv_root = _sqrt_psd(cov_source)
    middle, _ = _sqrt_psd(root @ cov_target @ root)
    a = inv_root @ middle @ inv_root
    return (a + a.T) / 2


def regularised_covariance(x: np.ndarray, ridge: float, name: str, relative: bool = True) -> np.ndarray:
    """Covariance of ``x`` (float64) plus ``ridge * trace / k`` (``relative``) or ``ridge`` on the diagonal;
    clear error if singular."""
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    k = cov.shape[0]
    scale = float(np.trace(cov)) / k
    if scale <= 0:
        raise ValueError(f"{name} has zero variance in every feature: no Gaussian can be fitted")
    cov = cov + ridge * (scale if relative else 1.0) * np.eye(k)
    smallest = float(np.linalg.eigvalsh(cov).min())
    if smallest <= 1e-12 * scale:
        raise ValueError(
            f"the covariance of {name} is singular (smallest eigenvalue {smallest:.3g}); "
            "use ridge > 0 or n_components (a PCA of the training cells)"
        )
    return cov


def gaussian_map(
    source: np.ndarray, target: np.ndarray, ridge: float = 1e-4, relative: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The W2 map between Gaussian fits of ``source`` and ``target`` (float64): ``x -> M x + c``.

    Each covariance gets ``ridge`` times its mean variance on the diagonal (:func:`regularised_covariance`),
    or ``ridge`` itself with ``relative=False`` (CellOT's start, in standardised units).
    A larger ridge pulls ``M`` towards a scaling along the directions the control cells hardly vary in,
    where the fitted ratio of variances is least reliable: the starts of the neural maps use one that
    extrapolates to populations never seen (docs/models/otfm.md, "Defaults for real cell counts").
    """
    src, tgt = np.asarray(source, np.float64), np.asarray(target, np.float64)
    matrix = gaussian_map_matrix(regularised_covariance(src, ridge, "the control cells", relative),
                                 regularised_covariance(tgt, ridge, "the perturbed cells", relative))
    return matrix, tgt.mean(0) - matrix @ src.mean(0)


class GaussianOT(PerturbationModel):
    """W2-optimal affine map between Gaussian fits of control and perturbed cells; closed form.

    ``device`` is unused (numpy, float64); ``seed`` seeds the randomised PCA solver.
    """
    role = "baseline"
    is_ot = True
    cheap_fit = True
    default_space = "latent"

    name = "gaussian_ot"
    multi_perturbation = True
    single_perturbation = "perturbed"

    parameter_constraints = {"ridge": Interval(0), "n_components": Interval(1)}

    def __init__(
        self, ridge: float = 1e-4, n_components: int | None = None, seed: int = 0, device: str = "cpu"
    ) -> None:
        self.ridge = ridge
        self.n_components = n_components
        self.seed = seed
        self.device = device

    # ---------------------------------------------------------------- fitting
    def _check_params(self) -> None:
        self._validate_params()
        if not (isinstance(self.ridge, (int, float)) and self.ridge >= 0):
            raise ValueError(f"ridge must be a number >= 0, got {self.ridge!r}")
        if self.n_components is not None and not (isinstance(self.n_components, int) and self.n_components >= 1):
            raise ValueError(f"n_components must be a positive integer or None, got {self.n_components!r}")

    def _basis(self, source: np.ndarray, target: np.ndarray) -> np.ndarray | None:
        """Principal axes (features x k) of the training cells, or None for the full space.

        Each population is centred on its own mean before pooling, so the axes
        describe the spread within populations; the mean shift is applied in
        full space and needs no axis of its own.
        """
        if self.n_components is None:
            return None
        from sklearn.decomposition import PCA

        pooled = np.concatenate([source - source.mean(0), target - target.mean(0)])
        # at most one axis fewer than the smaller population's cells, so both covariances are full rank
        k = min(self.n_components, pooled.shape[1], len(source) - 1, len(target) - 1)
        pca = PCA(n_components=k, random_state=self.seed).fit(pooled)
        return pca.components_.T

    def _fit_one(self, source: np.ndarray, target: np.ndarray, name: str) -> dict[str, np.ndarray]:
        basis = self._basis(source, target)
        m_s = source.mean(axis=0, dtype=np.float64)
        m_t = target.mean(axis=0, dtype=np.float64)
        zs, zt = source - m_s, target - m_t
        if basis is not None:
            zs, zt = zs @ basis, zt @ basis
        for cells, what in ((zs, "source"), (zt, f"target {name!r}")):
            if len(cells) <= zs.shape[1]:
                raise ValueError(
                    f"{what} has {len(cells)} cells for {zs.shape[1]} features: its covariance cannot be "
                    f"estimated; set n_components (a PCA of the training cells) below {len(cells)}"
                )
        cov_s = regularised_covariance(zs, self.ridge, "source")
        cov_t = regularised_covariance(zt, self.ridge, f"target {name!r}")
        linear = gaussian_map_matrix(cov_s, cov_t)
        return {"source_mean": m_s, "shift": m_t - m_s, "linear": linear, "basis": basis}

    def fit_many(
        self, source: Any, targets: dict[str, Any], *, checkpoint: str | Path | None = None
    ) -> "GaussianOT":
        """One Gaussian map per perturbation (closed form; ``checkpoint`` is accepted and ignored)."""
        self._check_params()
        source, targets = fit_inputs(source, targets)
        source = source.astype(np.float64)
        maps = []
        for name, target in targets.items():
            if min(len(source), len(target)) < 2:
                raise ValueError("a Gaussian needs at least 2 cells per population")
            maps.append(self._fit_one(source, target.astype(np.float64), name))
        self.n_features_in_ = source.shape[1]
        self.perturbations_ = [str(p) for p in targets]
        self.maps_ = maps
        return self

    # -------------------------------------------------------------- predicting
    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        x = self._check_input(x)
        p = self.maps_[self._perturbation_index(perturbation)]
        centred = x.astype(np.float64) - p["source_mean"]
        basis, linear = p["basis"], p["linear"]
        if basis is None:
            moved = centred @ linear  # linear is symmetric
        else:
            z = centred @ basis
            moved = centred + (z @ linear - z) @ basis.T
        return (p["source_mean"] + p["shift"] + moved).astype(np.float32)

    def map_matrix(self, perturbation: str | None = None) -> np.ndarray:
        """The full linear part of T (features x features), x -> x @ M; for analysis."""
        self._check_fitted()
        p = self.maps_[self._perturbation_index(perturbation)]
        if p["basis"] is None:
            return p["linear"].copy()
        basis = p["basis"]
        return np.eye(len(basis)) + basis @ (p["linear"] - np.eye(basis.shape[1])) @ basis.T

    # ------------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, Any]:
        return {**super()._get_state(), "perturbations_": list(self.perturbations_)}

    def _get_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for i, p in enumerate(self.maps_):
            for key, value in p.items():
                if value is not None:
                    tensors[f"{i}.{key}"] = torch.from_numpy(np.ascontiguousarray(value))
        return tensors

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.maps_ = []
        for i in range(len(self.perturbations_)):
            p = {key: tensors[f"{i}.{key}"].numpy() for key in ("source_mean", "shift", "linear")}
            basis = tensors.get(f"{i}.basis")
            p["basis"] = None if basis is None else basis.numpy()
            self.maps_.append(p)
