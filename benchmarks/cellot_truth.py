"""Ground truth for CellOT benchmarks: convex-potential maps known for every cell.

Control cells come from three Gaussian populations with low-rank correlations
and uncentred features (as imaging features are); a perturbation is the
gradient of a convex potential,

    T(x) = A x + b + sum_k c_k sigmoid(w_k . x - beta_k) w_k,

(``perturbot.data.synthetic.ConvexGradientMap``, A symmetric positive definite,
c_k >= 0), so by Brenier's theorem T is the W2-optimal map from any control
population and the true perturbed state of every cell is known. The gates
switch on in only part of the population, so the response is not affine.
With ``kind="piecewise"`` the map is the synthetic generator's smoothed
maximum of two convex quadratics plus sharp gates
(``perturbot.data.synthetic.PiecewiseConvexMap``), which no affine map fits:
there the closed-form Gaussian map that the fast preset starts from is far
from the truth, and what counts is what training learns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from perturbot.data import synthetic
from perturbot.data.synthetic import ConvexGradientMap
from perturbot.models import cellot as cellot_module
from perturbot.models.cellot import CellOT


def _random_map(rng: np.random.Generator, cells: np.ndarray, n_gates: int = 3) -> ConvexGradientMap:
    d = cells.shape[1]
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    A = (q * rng.uniform(0.6, 1.4, size=d)) @ q.T
    w = rng.normal(size=(n_gates, d))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    proj = cells @ w.T
    beta = np.array([np.quantile(proj[:, k], rng.uniform(0.4, 0.7)) for k in range(n_gates)])
    return ConvexGradientMap((A + A.T) / 2, rng.normal(scale=0.3, size=d), rng.uniform(2.0, 4.0, n_gates), w, beta)


class ConvexProblem:
    """Control populations 0..2; ``n_perturbations`` maps; train/test cells; OOD split on demand."""

    def __init__(
        self,
        d: int = 48,
        seed: int = 0,
        n_source: int = 3000,
        n_target: int = 2000,
        n_perturbations: int = 1,
        train_populations: Sequence[int] = (0, 1, 2),
        offset: float = 3.0,
        kind: str = "gated",
    ) -> None:
        rng = np.random.default_rng(seed)
        self.d = d
        self.means = offset + rng.normal(scale=1.0, size=(3, d))
        self.loadings = rng.normal(scale=0.6, size=(3, d, 4))
        pool, labels = self.draw(rng, 3000, (0, 1, 2), labels=True)
        if kind == "gated":
            self.maps = {f"pert{p}": _random_map(rng, pool) for p in range(n_perturbations)}
        elif kind == "piecewise":
            self.maps = {
                f"pert{p}": synthetic._random_piecewise_map(rng, pool, labels) for p in range(n_perturbations)
            }
        else:
            raise ValueError(f"kind must be 'gated' or 'piecewise', got {kind!r}")
        pops = tuple(train_populations)
        self.source = self.draw(rng, n_source, pops)
        self.targets = {name: t(self.draw(rng, n_target, pops)).astype(np.float32) for name, t in self.maps.items()}
        self.test = {k: self.draw(rng, 1000, (k,)) for k in range(3)}
        self.test_train = self.draw(rng, 2000, pops)

    def draw(self, rng: np.random.Generator, n: int, populations: Sequence[int], labels: bool = False):
        """``n`` cells from the given populations (and their population labels if asked)."""
        pop = np.asarray(populations)[rng.integers(0, len(populations), n)]
        z = rng.normal(size=(n, 4))
        x = self.means[pop] + np.einsum("ndk,nk->nd", self.loadings[pop], z) + rng.normal(scale=0.3, size=(n, self.d))
        return (x.astype(np.float32), pop) if labels else x.astype(np.float32)

    def gt_rmse(self, predict: Callable[[np.ndarray], np.ndarray], name: str, x: np.ndarray) -> float:
        """Root mean squared per-cell error (norm over features), the workflow's gt_rmse."""
        return float(np.sqrt(((predict(x) - self.maps[name](x)) ** 2).sum(1).mean()))


def trace_fit(
    model: CellOT, problem: ConvexProblem, cells: np.ndarray | None = None
) -> tuple[CellOT, float, list[tuple[int, float]]]:
    """Fit ``model`` and record, at every validation, the current map's gt_rmse (mean over perturbations).

    The extra scoring is timed and subtracted from the wall time returned.
    """
    cells = problem.test_train if cells is None else cells
    curve: list[tuple[int, float]] = []
    spent = [0.0]
    original = cellot_module._Trainer._evaluate

    def evaluate(trainer):  # type: ignore[no-untyped-def]
        result = original(trainer)
        start = time.perf_counter()
        with torch.no_grad():
            z = torch.from_numpy(_model_units(model, cells)).to(trainer.device)
            tx = trainer.g.gradient(z.unsqueeze(0).expand(trainer.P, -1, -1)).cpu().numpy().astype(np.float64)
        errors = []
        for p, name in enumerate(trainer.names):
            pred = tx[p] * (model.scale_ if trainer.hp.standardize else 1.0)
            pred = pred + (model.shift_ if trainer.hp.standardize else 0.0)
            errors.append(np.sqrt(((pred - problem.maps[name](cells)) ** 2).sum(1).mean()))
        curve.append((trainer.iteration, float(np.mean(errors))))
        spent[0] += time.perf_counter() - start
        return result  # the validation scores the training loop reports

    cellot_module._Trainer._evaluate = evaluate
    try:
        start = time.perf_counter()
        model.fit_many(problem.source, problem.targets)
        wall = time.perf_counter() - start - spent[0]
    finally:
        cellot_module._Trainer._evaluate = original
    return model, wall, curve


def _model_units(model: CellOT, x: np.ndarray) -> np.ndarray:
    return model._standardise(x) if model.settings().standardize else x.astype(np.float32)
