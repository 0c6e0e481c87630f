"""Orthogonal non-negative matrix factorisation, PopAlign's feature space for gene expression.

PopAlign (Chen et al., PNAS 2020; thomsonlab/popalign ``oNMF``) factorises
normalised expression X (genes x cells) as X ~ W H with W >= 0 and orthogonal
columns (each gene loads mainly on one feature, a gene program), by
multiplicative updates (Ding et al., KDD 2006) initialised from k-means
centres; cells are then projected onto W by non-negative least squares. Only
non-negative data (counts or log-normalised expression) can be factorised.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

#: Cells used to learn the factors (PopAlign's ``onmf(ncells=2000)``); projections use every cell.
MAX_CELLS = 2_000


def check_non_negative(x: np.ndarray, name: str = "x") -> None:
    if (x < 0).any():
        raise ValueError(
            f"{name} has negative values: oNMF factorises non-negative expression "
            "(use embedding 'none' or 'pca' for features or latent codes)"
        )


def orthogonal_nmf(
    x: np.ndarray, k: int, *, seed: int = 0, n_iter: int = 500, tol: float = 1e-4
) -> np.ndarray:
    """Gene programs W (genes x k), non-negative with unit-norm, near-orthogonal columns.

    ``x`` is cells x genes. Updates, with X = x' and H the k x cells coefficients:
    W <- W * (X H') / (W W' X H'),  H <- H * (W' X) / (W' W H), as PopAlign's
    ``oNMF`` with orthogonality on W only; stops when the fit changes by less
    than ``tol`` (Frobenius) between checks every 100 iterations, or after ``n_iter``.
    """
    from sklearn.cluster import MiniBatchKMeans

    x = np.asarray(x, dtype=np.float64)
    check_non_negative(x)
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"oNMF needs 1 <= k <= min(cells, genes) = {min(x.shape)}, got {k}")
    rng = np.random.default_rng(seed)
    if len(x) > MAX_CELLS:
        x = x[np.sort(rng.choice(len(x), MAX_CELLS, replace=False))]
    kmeans = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3).fit(x)
    w = np.maximum(kmeans.cluster_centers_.T, np.spacing(1))  # genes x k
    h = np.eye(k)[kmeans.labels_].T + 0.2  # k x cells: cluster membership, softened as PopAlign does
    data = x.T
    tiny = np.spacing(1)
    previous = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(n_iter):
            xh = data @ h.T
            w = np.maximum(np.nan_to_num(w * xh / (w @ (w.T @ xh))), tiny)
            h = np.maximum(np.nan_to_num(h * (w.T @ data) / (w.T @ w @ h)), tiny)
            if i % 100 == 0 or i == n_iter - 1:
                fit = w @ h
                if previous is not None and np.linalg.norm(previous - fit) <= tol:
                    break
                previous = fit
    return w / np.linalg.norm(w, axis=0, keepdims=True)


def project(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Non-negative coefficients (cells x k) of each cell on the programs ``w`` (PopAlign's ``nnls``)."""
    x = np.asarray(x, dtype=np.float64)
    return np.stack([nnls(w, cell)[0] for cell in x]) if len(x) else np.zeros((0, w.shape[1]))
