"""Embedded datasets that need no network, written by a seeded generator.

``features``: a 4i-like imaging dataset. Control cells come from two "cell
lines" (obs ``cell_line``); each perturbation is the gradient of a convex
potential,

    T(x) = A x + b + sum_k c_k sigmoid(w_k . x - beta_k) w_k,

with A symmetric positive definite and c_k >= 0, so T is the W2-optimal map
(Brenier) and the true perturbed state of every control cell is known; it is
stored in ``obsm['X_true_<perturbation>']`` (NaN on perturbed cells). The gates
switch on in only part of the population, so the response differs by cell line.

``counts``: a scRNA-seq-like dataset of negative-binomial counts with patients
(obs ``patient``) and cell types (obs ``cell_type``), whose perturbation effects
differ by cell type. No exact truth.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

DRUG_NAMES = (
    "trametinib",
    "dasatinib",
    "ixazomib",
    "cisplatin",
    "staurosporine",
    "vindesine",
    "melphalan",
    "regorafenib",
)


def _perturbation_names(n: int) -> list[str]:
    return [DRUG_NAMES[i] if i < len(DRUG_NAMES) else f"drug_{i}" for i in range(n)]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class ConvexGradientMap:
    """T(x) = A x + b + sum_k c_k sigmoid(w_k . x - beta_k) w_k: the gradient of a convex potential."""

    def __init__(self, A: np.ndarray, b: np.ndarray, c: np.ndarray, w: np.ndarray, beta: np.ndarray):
        if not np.allclose(A, A.T) or np.linalg.eigvalsh(A).min() <= 0:
            raise ValueError("A must be symmetric positive definite")
        if (c < 0).any():
            raise ValueError("gate weights c must be non-negative")
        self.A, self.b, self.c, self.w, self.beta = A, b, c, w, beta

    def __call__(self, x: np.ndarray) -> np.ndarray:
        gates = _sigmoid(x @ self.w.T - self.beta)  # (n, K)
        return x @ self.A + self.b + (gates * self.c) @ self.w

    def potential(self, x: np.ndarray) -> np.ndarray:
        """psi with grad psi = T: 1/2 x'Ax + b'x + sum_k c_k softplus(w_k . x - beta_k)."""
        z = x @ self.w.T - self.beta
        return 0.5 * np.einsum("ij,jk,ik->i", x, self.A, x) + x @ self.b + (np.logaddexp(0, z) * self.c).sum(1)


def _random_map(rng: np.random.Generator, control: np.ndarray, n_gates: int = 3) -> ConvexGradientMap:
    d = control.shape[1]
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    eig = rng.uniform(0.6, 1.4, size=d)
    A = (q * eig) @ q.T
    A = (A + A.T) / 2
    b = rng.normal(scale=0.3, size=d)
    w = rng.normal(size=(n_gates, d))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    proj = control @ w.T
    # thresholds at upper quantiles: each gate is on in only part of the population
    beta = np.array([np.quantile(proj[:, k], rng.uniform(0.4, 0.7)) for k in range(n_gates)])
    c = rng.uniform(1.0, 2.5, size=n_gates)
    return ConvexGradientMap(A, b, c, w, beta)


def _control_features(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Two cell lines, each a Gaussian with low-rank correlated structure."""
    line = rng.integers(0, 2, size=n)
    means = rng.normal(scale=1.0, size=(2, d))
    loadings = rng.normal(scale=0.5, size=(2, d, 4))
    z = rng.normal(size=(n, 4))
    x = means[line] + np.einsum("ndk,nk->nd", loadings[line], z) + rng.normal(scale=0.3, size=(n, d))
    return x, line


def make_features(
    cells: int = 1500, perturbations: int = 3, features: int = 48, seed: int = 0
) -> ad.AnnData:
    """4i-like feature data with a known W2-optimal response per perturbation."""
    rng = np.random.default_rng(seed)
    names = _perturbation_names(perturbations)
    control, control_line = _control_features(rng, cells, features)
    blocks, conditions, lines = [control], ["control"] * cells, list(control_line)
    truths = {}
    for name in names:
        # the map is fitted to the control population; perturbed cells are an independent draw
        tmap = _random_map(rng, control)
        truths[name] = tmap(control)
        fresh_line = rng.integers(0, 2, size=cells)
        blocks.append(tmap(_redraw_like(rng, control, control_line, fresh_line)))
        conditions += [name] * cells
        lines += list(fresh_line)
    x = np.vstack(blocks).astype(np.float32)
    obs = pd.DataFrame(
        {
            "drug": pd.Categorical(conditions, categories=["control", *names]),
            "cell_line": pd.Categorical(np.where(np.array(lines) == 0, "line_A", "line_B")),
        },
        index=[f"cell{i}" for i in range(len(x))],
    )
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"feature_{j}" for j in range(features)]))
    for name, truth in truths.items():
        full = np.full_like(x, np.nan)
        full[:cells] = truth
        adata.obsm[f"X_true_{name}"] = full
    adata.uns["synthetic"] = {"modality": "features", "seed": seed, "perturbations": names}
    return adata


def _redraw_like(
    rng: np.random.Generator, control: np.ndarray, control_line: np.ndarray, lines: np.ndarray
) -> np.ndarray:
    """Fresh cells from the control distribution: resample control cells with Gaussian jitter.

    Keeps the perturbed population unpaired with the control cells while following
    the same two-line distribution.
    """
    out = np.empty((len(lines), control.shape[1]))
    for line in (0, 1):
        pool = control[control_line == line]
        idx = rng.integers(0, len(pool), size=int((lines == line).sum()))
        out[lines == line] = pool[idx] + rng.normal(scale=0.15, size=(len(idx), control.shape[1]))
    return out


def make_counts(
    cells: int = 1500,
    perturbations: int = 2,
    features: int = 400,
    seed: int = 0,
    patients: int = 4,
    cell_types: int = 3,
) -> ad.AnnData:
    """scRNA-seq-like raw counts: patients, cell types, cell-type-specific perturbation effects."""
    rng = np.random.default_rng(seed)
    names = _perturbation_names(perturbations)
    genes = [f"gene_{j}" for j in range(features)]
    base = rng.normal(loc=-1.0, scale=1.5, size=features)  # log mean expression
    type_effect = rng.normal(scale=0.8, size=(cell_types, features)) * (rng.random((cell_types, features)) < 0.2)
    patient_effect = rng.normal(scale=0.2, size=(patients, features))
    pert_effect = {
        name: rng.normal(scale=1.2, size=(cell_types, features)) * (rng.random((1, features)) < 0.1)
        for name in names
    }
    rows, obs = [], []
    for condition in ["control", *names]:
        ct = rng.integers(0, cell_types, size=cells)
        pt = rng.integers(0, patients, size=cells)
        log_mu = base + type_effect[ct] + patient_effect[pt]
        if condition != "control":
            log_mu = log_mu + pert_effect[condition][ct]
        size_factor = rng.lognormal(mean=0.0, sigma=0.3, size=(cells, 1))
        mu = np.exp(log_mu) * size_factor * 3.0
        dispersion = 5.0
        counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mu))
        rows.append(sparse.csr_matrix(counts.astype(np.float32)))
        obs += [
            {"condition": condition, "patient": f"patient{p + 1}", "cell_type": f"type_{'ABCDEFG'[c]}"}
            for c, p in zip(ct, pt)
        ]
    x = sparse.vstack(rows).tocsr()
    obs = pd.DataFrame(obs, index=[f"cell{i}" for i in range(x.shape[0])])
    obs["condition"] = pd.Categorical(obs["condition"], categories=["control", *names])
    for col in ("patient", "cell_type"):
        obs[col] = obs[col].astype("category")
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=genes))
    adata.uns["synthetic"] = {"modality": "counts", "seed": seed, "perturbations": names}
    return adata


def make_synthetic(modality: str, **options) -> ad.AnnData:
    """Dispatch on modality (``features`` or ``counts``)."""
    if modality == "features":
        return make_features(**options)
    if modality == "counts":
        return make_counts(**options)
    raise ValueError(f"the synthetic generator writes features or counts data, not {modality!r}")
