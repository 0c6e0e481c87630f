"""Evaluation metrics: the papers' MMD, its unbiased form, the energy distance, and mean-based scores.

``mmd``: biased squared MMD with an RBF kernel exp(-gamma ||x - y||^2) averaged
over gamma in ``numpy.logspace(1, -3, 50)``, as defined in both papers'
evaluation code (all pairs, diagonals included). Its expectation for two
samples of one distribution is not 0 but about (1/n + 1/m)(1 - E k(x, x')),
so it depends on the number of cells scored (docs/metrics.md).
``mmd_unbiased``: the same kernel without the diagonal terms (the U-statistic
of Gretton et al. 2012): expectation 0 for equal distributions, whatever n and
m, and it can be slightly negative. ``edistance``: the energy distance of
scPerturb and pertpy (``pertpy.tools.Distance("edistance")``),
2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| with Euclidean distances and means
over all pairs (diagonals included, as pertpy): no bandwidth, so it does not
go blind in hundreds of dimensions as fixed-bandwidth kernels do.
``l2_means``, ``r2_means``, ``r_means`` on feature means; ``gt_rmse`` against a
known true response.

Pairwise quantities are summed over blocks of at most :data:`BLOCK` x
:data:`BLOCK` cells, so scoring needs O(BLOCK^2) memory beyond its inputs,
whatever the numbers of cells.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

MMD_GAMMAS = np.logspace(1, -3, 50)
#: Rows and columns of one block of pairwise distances: at 2,048, one float64 block and two float32
#: buffers, 64 MB of working memory (about 0.1 GB peak with the allocator's slack), whatever the cell numbers.
BLOCK = 2048
#: The distances between populations :func:`distribution_distances` returns (computed on the same features).
DISTRIBUTION_METRICS = ("mmd", "mmd_unbiased", "edistance")


def _sq_dists(a: np.ndarray, b: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances through one BLAS matrix product (float64), in place: one matrix."""
    d = a @ b.T
    d *= -2.0
    d += a_sq[:, None]
    d += b_sq[None, :]
    return np.maximum(d, 0.0, out=d)


def _as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be 2-D with equal widths, got {x.shape} and {y.shape}")
    if len(x) == 0 or len(y) == 0:
        raise ValueError(f"x and y must hold at least one cell each, got {len(x)} and {len(y)}")
    return x, y


def _pair_sums(a: np.ndarray, b: np.ndarray | None, gammas: np.ndarray, block: int) -> tuple[float, float]:
    """Sums over all pairs (i, j) of sum_gamma exp(-gamma d_ij^2) and of d_ij, block by block.

    ``b`` None: pairs within ``a``; only blocks on or above the diagonal are
    computed (those above count twice) and the diagonal distances are exactly 0.
    Kernel values are summed in float32, as before blocks (the same numbers, and
    fast: 3,000 against 3,000 cells take about two seconds on one core), distances in float64.
    """
    within = b is None
    b = a if within else b
    a_sq, b_sq = (a * a).sum(1), (b * b).sum(1)
    kernel_sum, distance_sum = 0.0, 0.0
    d32 = out = None
    for i in range(0, len(a), block):
        for j in range(i if within else 0, len(b), block):
            d = _sq_dists(a[i:i + block], b[j:j + block], a_sq[i:i + block], b_sq[j:j + block])
            if within and i == j:
                np.fill_diagonal(d, 0.0)
            weight = 2.0 if within and j > i else 1.0
            if d32 is None or d32.shape != d.shape:
                d32, out = torch.empty(d.shape, dtype=torch.float32), torch.empty(d.shape, dtype=torch.float32)
            d32.copy_(torch.from_numpy(d))
            for g in gammas:
                # clamping avoids denormal exp results, which are 3x slower and add < 1e-30
                torch.mul(d32, -float(g), out=out).clamp_(min=-80.0).exp_()
                kernel_sum += weight * float(out.sum())
            distance_sum += weight * float(np.sqrt(d, out=d).sum())
            del d  # before the next block's is made: one block of distances at a time
    return kernel_sum, distance_sum


def distribution_distances(x, y, gammas=None, block: int = BLOCK) -> dict[str, float]:
    """``mmd``, ``mmd_unbiased`` and ``edistance`` of two populations, from one pass over their pairs.

    Memory beyond the inputs is a few ``block`` x ``block`` matrices, whatever
    the numbers of cells; the result does not depend on ``block`` beyond float
    rounding. ``mmd_unbiased`` is NaN when a population has a single cell.
    """
    x, y = _as_pair(x, y)
    if int(block) < 1:
        raise ValueError(f"block must be a positive number of cells, got {block!r}")
    gammas = MMD_GAMMAS if gammas is None else np.asarray(gammas, dtype=np.float64)
    n, m, n_gammas = len(x), len(y), len(gammas)
    kxx, dxx = _pair_sums(x, None, gammas, int(block))
    kyy, dyy = _pair_sums(y, None, gammas, int(block))
    kxy, dxy = _pair_sums(x, y, gammas, int(block))
    cross = 2.0 * kxy / (n * m)
    biased = unbiased = float("nan")
    if n_gammas:
        biased = (kxx / n**2 + kyy / m**2 - cross) / n_gammas
        if n > 1 and m > 1:  # the diagonal holds exactly one kernel value of 1 per cell and bandwidth
            unbiased = ((kxx - n * n_gammas) / (n * (n - 1)) + (kyy - m * n_gammas) / (m * (m - 1)) - cross) / n_gammas
    energy = 2.0 * dxy / (n * m) - dxx / n**2 - dyy / m**2
    return {"mmd": float(biased), "mmd_unbiased": float(unbiased), "edistance": float(energy)}


def mmd(x, y, gammas=None, block: int = BLOCK) -> float:
    """Squared MMD, biased estimator (all pairs, diagonals included), averaged over bandwidths (the papers')."""
    return distribution_distances(x, y, gammas, block)["mmd"]


def mmd_unbiased(x, y, gammas=None, block: int = BLOCK) -> float:
    """Squared MMD without the diagonal terms: 0 in expectation for equal distributions; NaN below 2 cells."""
    return distribution_distances(x, y, gammas, block)["mmd_unbiased"]


def energy_distance(x, y, block: int = BLOCK) -> float:
    """Energy distance 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| (pertpy's ``edistance``), means over all pairs."""
    return distribution_distances(x, y, (), block)["edistance"]


def l2_means(x: np.ndarray, y: np.ndarray) -> float:
    """Euclidean distance between the mean vectors of two populations."""
    return float(np.linalg.norm(np.asarray(x).mean(0) - np.asarray(y).mean(0)))


def r_means(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the two populations' mean vectors (CellOT reports r)."""
    mx, my = np.asarray(x, float).mean(0), np.asarray(y, float).mean(0)
    if mx.std() == 0 or my.std() == 0:
        return float("nan")
    return float(np.corrcoef(mx, my)[0, 1])


def r2_means(x: np.ndarray, y: np.ndarray) -> float:
    """Squared Pearson correlation of mean vectors."""
    return r_means(x, y) ** 2


def gt_rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """sqrt(mean over cells of ||prediction - truth||^2)."""
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    return float(np.sqrt(((pred - truth) ** 2).sum(1).mean()))


def all_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    truth: np.ndarray | None = None,
    mmd_features: np.ndarray | None = None,
) -> dict[str, float]:
    """Every metric for one (prediction, target) pair; ``gt_rmse`` only when truth is given.

    ``mmd_features`` restricts the distances between populations
    (:data:`DISTRIBUTION_METRICS`) to these columns (the papers' marker genes
    for scRNA-seq); the mean-based metrics always use every feature.
    """
    cols = slice(None) if mmd_features is None else np.asarray(mmd_features)
    out = {
        **distribution_distances(pred[:, cols], target[:, cols]),
        "l2_means": l2_means(pred, target),
        "r2_means": r2_means(pred, target),
        "r_means": r_means(pred, target),
    }
    if truth is not None:
        out["gt_rmse"] = gt_rmse(pred, truth)
    return out


def scored_rows(n_predicted: int, size: int, seed: int = 0) -> np.ndarray:
    """The ``size`` predicted cells that are scored: all of them, or a seeded subsample without replacement.

    The same input cells for every model of one seed (their predictions are
    row-aligned with the input), so models are compared on the same cells.
    """
    if not 0 < size <= n_predicted:
        raise ValueError(f"cannot score {size} of {n_predicted} predicted cells without repeating one")
    if size == n_predicted:
        return np.arange(n_predicted)
    return np.sort(np.random.default_rng([seed, size]).choice(n_predicted, size, replace=False))


#: (n_cells, draw, prediction rows, observed rows): one subsample a score is computed on.
Subsample = tuple[int, int, np.ndarray, np.ndarray]


def subsamples(n_pred: int, n_observed: int, *, n_cells: Sequence[int] | None = None, draws: int = 1,
               seed: int = 0) -> Iterator[Subsample]:
    """Every cell once, or ``draws`` seeded subsamples of each size in ``n_cells`` (the papers' evaluation).

    Sizes are capped at the smaller population; cells are drawn without replacement.
    """
    if not n_cells:
        yield min(n_pred, n_observed), 0, np.arange(n_pred), np.arange(n_observed)
        return
    for size in n_cells:
        n = min(int(size), n_pred, n_observed)
        for draw in range(int(draws)):
            rng = np.random.default_rng([seed, n, draw])
            yield n, draw, np.sort(rng.choice(n_pred, n, replace=False)), np.sort(rng.choice(n_observed, n, replace=False))


def score(
    predicted: np.ndarray,
    observed: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    columns: np.ndarray | None = None,
    mmd_columns: np.ndarray | None = None,
    draws: Iterable[Subsample] | None = None,
    logfc: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> list[dict[str, float | int | str]]:
    """Every metric of predicted cells against observed ones: rows ``n_cells, draw, metric, value``.

    Pure: everything it scores is an argument. ``truth`` (row-aligned with
    ``predicted``) adds ``gt_rmse``; ``columns`` restricts every metric to those
    features (a paper's marker-gene protocol), ``mmd_columns`` only the mmd;
    ``draws`` (from :func:`subsamples`) picks the cells, by default all of them;
    ``logfc = (control, features, true log2 fold change)`` adds ``logfc_mae`` of
    a pseudo-perturbation, on every feature.
    """
    predicted, observed = np.asarray(predicted), np.asarray(observed)
    scored, observed_scored, truth_scored = predicted, observed, truth
    if columns is not None:
        scored, observed_scored = predicted[:, columns], observed[:, columns]
        truth_scored = None if truth is None else np.asarray(truth)[:, columns]
    rows: list[dict[str, float | int | str]] = []
    for n_cells, draw, pred_rows, observed_rows in draws if draws is not None else subsamples(len(predicted), len(observed)):
        values = all_metrics(
            scored[pred_rows], observed_scored[observed_rows],
            None if truth_scored is None else truth_scored[pred_rows], mmd_features=mmd_columns,
        )
        if logfc is not None:
            control, features, true_logfc = logfc
            values["logfc_mae"] = logfc_mae(predicted[pred_rows], control, features, true_logfc)
        rows += [{"n_cells": n_cells, "draw": draw, "metric": m, "value": v} for m, v in values.items()]
    return rows


def logfc_mae(pred: np.ndarray, control: np.ndarray, features: np.ndarray, true_logfc: float) -> float:
    """Mean absolute error of the predicted log2 fold change on the features with a known change.

    The sensitivity test's score: log2(mean prediction / mean control) per feature
    against the true log2 fold change (a pseudo-perturbation that scales them).
    """
    eps = 1e-8
    pred_mean = np.asarray(pred, float)[:, features].mean(0)
    control_mean = np.asarray(control, float)[:, features].mean(0)
    predicted = np.log2((np.abs(pred_mean) + eps) / (np.abs(control_mean) + eps))
    return float(np.abs(predicted - true_logfc).mean())
