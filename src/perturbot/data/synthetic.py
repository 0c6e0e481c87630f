"""Embedded datasets that need no network, written by a seeded generator.

``features``: a 4i-like imaging dataset. Control cells come from two "cell
lines" (obs ``cell_line``); each perturbation is the gradient of a convex
potential,

    T(x) = A x + b + sum_k c_k sigmoid(w_k . x - beta_k) w_k,

with A symmetric positive definite and c_k >= 0, so T is the W2-optimal map
(Brenier) and the true perturbed state of every control cell is known; it is
stored in ``obsm['X_true_<perturbation>']`` (NaN on perturbed cells). The gates
switch on in only part of the population, so the response differs by cell line.
With ``map_kind="piecewise"`` the potential is instead a smoothed maximum of
two convex quadratics with differently oriented stretches, plus strong sharp
gates that switch on in part of one cell line (:class:`PiecewiseConvexMap`):
still a Brenier map, so the truth is W2-optimal, but one no affine map fits, so
benchmarks can tell a model that learns non-linear structure from a linear one
(the closed-form Gaussian OT map).

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


class PiecewiseConvexMap:
    """T = grad psi for psi(x) = tau logsumexp_j(q_j(x) / tau) + sum_k (c_k / s) softplus(s (w_k . x - beta_k)).

    Each piece q_j(x) = 1/2 (x - o)' A_j (x - o) + b_j' (x - o) + a_j is a convex
    quadratic (A_j symmetric positive definite, eigenvectors differing between
    pieces); the log-sum-exp of convex functions is convex and so is every
    softplus term (c_k >= 0), so T is the gradient of a convex potential. Where
    one piece dominates, T is that piece's affine map; the gates add a jump of
    about c_k along w_k, of width about 1 / s, where w_k . x crosses beta_k.
    """

    def __init__(
        self,
        A: np.ndarray,
        b: np.ndarray,
        a: np.ndarray,
        origin: np.ndarray,
        tau: float,
        c: np.ndarray,
        w: np.ndarray,
        beta: np.ndarray,
        sharpness: float,
    ):
        for piece in A:
            if not np.allclose(piece, piece.T) or np.linalg.eigvalsh(piece).min() <= 0:
                raise ValueError("every piece's A must be symmetric positive definite")
        if tau <= 0 or sharpness <= 0:
            raise ValueError("tau and sharpness must be positive")
        if (c < 0).any():
            raise ValueError("gate weights c must be non-negative")
        self.A, self.b, self.a, self.origin, self.tau = A, b, a, origin, tau
        self.c, self.w, self.beta, self.sharpness = c, w, beta, sharpness

    def _pieces(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values (n, J) and gradients (n, J, d) of the quadratic pieces."""
        y = x - self.origin
        grads = np.einsum("nd,jde->nje", y, self.A) + self.b[None]
        values = 0.5 * np.einsum("ne,nje->nj", y, grads - self.b[None]) + y @ self.b.T + self.a
        return values, grads

    def responsibilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax weight of each piece per cell (n, J): which affine map applies where."""
        values, _ = self._pieces(x)
        z = values / self.tau
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _, grads = self._pieces(x)
        smooth_max = np.einsum("nj,njd->nd", self.responsibilities(x), grads)
        gates = _sigmoid(self.sharpness * (x @ self.w.T - self.beta))
        return smooth_max + (gates * self.c) @ self.w

    def potential(self, x: np.ndarray) -> np.ndarray:
        values, _ = self._pieces(x)
        z = values / self.tau
        top = z.max(axis=1)
        lse = self.tau * (top + np.log(np.exp(z - top[:, None]).sum(1)))
        s = self.sharpness
        return lse + (np.logaddexp(0, s * (x @ self.w.T - self.beta)) * self.c / s).sum(1)


def _random_piecewise_map(
    rng: np.random.Generator, control: np.ndarray, control_line: np.ndarray, n_gates: int = 3
) -> PiecewiseConvexMap:
    """Two pieces with independent eigenbases, balanced on the control cells; sharp gates in one line each."""
    d = control.shape[1]
    origin = control.mean(axis=0)
    A, b = [], []
    for _ in range(2):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        eig = rng.uniform(0.5, 1.5, size=d)
        A.append((q * eig) @ q.T)
        b.append(rng.normal(scale=0.3, size=d))
    A = np.stack([(a + a.T) / 2 for a in A])
    b = np.stack(b)
    # shift the second piece's constant so that each piece dominates about half of the control cells
    y = control - origin
    values = 0.5 * np.einsum("nd,jde,ne->nj", y, A, y) + y @ b.T
    gap = values[:, 0] - values[:, 1]
    offset = float(np.median(gap))
    tau = float(np.std(gap)) / 10  # smooth, yet one piece dominates for most cells
    w = rng.normal(size=(n_gates, d))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    proj = control @ w.T
    lines = rng.integers(0, 2, size=n_gates)
    beta = np.array([np.quantile(proj[control_line == lines[k], k], rng.uniform(0.3, 0.7)) for k in range(n_gates)])
    c = rng.uniform(2.0, 3.5, size=n_gates)
    spread = proj.std(axis=0).mean()
    return PiecewiseConvexMap(A, b, np.array([0.0, offset]), origin, tau, c, w, beta, sharpness=8.0 / spread)


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


#: Kinds of ground-truth maps: gated convex gradients (the default), or piecewise ones no affine map fits.
MAP_KINDS = ("convex", "piecewise")


def make_features(
    cells: int = 1500, perturbations: int = 3, features: int = 48, seed: int = 0, map_kind: str = "convex"
) -> ad.AnnData:
    """4i-like feature data with a known W2-optimal response per perturbation."""
    if map_kind not in MAP_KINDS:
        raise ValueError(f"unknown map_kind {map_kind!r}; use one of {', '.join(MAP_KINDS)}")
    rng = np.random.default_rng(seed)
    names = _perturbation_names(perturbations)
    control, control_line = _control_features(rng, cells, features)
    blocks, conditions, lines = [control], ["control"] * cells, list(control_line)
    truths = {}
    for name in names:
        # the map is fitted to the control population; perturbed cells are an independent draw
        if map_kind == "convex":
            tmap = _random_map(rng, control)
        else:
            tmap = _random_piecewise_map(rng, control, control_line)
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
    adata.uns["synthetic"] = {"modality": "features", "seed": seed, "perturbations": names, "map_kind": map_kind}
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
        if "map_kind" in options:
            raise ValueError("map_kind chooses the features generator's true responses; the counts generator has none")
        return make_counts(**options)
    raise ValueError(f"the synthetic generator writes features or counts data, not {modality!r}")
