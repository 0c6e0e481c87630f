"""The field-like family of W2 ground truths: potentials *fitted* to push a 3-mixture onto a 10-mixture.

The random potentials of :mod:`perturbot.groundtruth` bend wherever their random
units happen to; the high-dimensional pairs of the field's benchmark (Korotin
et al., NeurIPS 2021) are harder because their potential is *trained*: an ICNN
with quadratic skip layers is fitted by a W2 solver to push a 3-component
Gaussian mixture towards a 10-component one, so it bends wherever the ten
target modes demand. This module builds such pairs from that description:

1. control cells: a 3-component Gaussian mixture (as in :mod:`.groundtruth`);
2. a reference target: a 10-component Gaussian mixture with well separated means;
3. psi(x) = a/2 |x|^2 + ICNN(x), the ICNN of :mod:`.groundtruth` (quadratic
   skip layers, CELU, non-negative ``W`` and output weights: convex), with
   hidden widths ``max(2D, 64), max(2D, 64), max(D, 32)`` (the benchmark's);
4. psi is fitted so that its push-forward matches the reference: each step pairs
   ``grad psi(x)`` of a batch of control cells with a batch of reference cells by
   the exact assignment of least squared distance
   (:func:`perturbot.validation.assignment`, OT-FM's pairing) and moves each
   ``grad psi(x)`` towards its partner; ``W`` and the output weights are clipped
   at zero after every step, so psi stays convex;
5. the perturbed population is then *defined* as the push-forward of the
   control cells by ``grad psi``: by Brenier's theorem ``grad psi`` is the
   W2-optimal map between them, however closely it matches the reference
   mixture, so every cell's true image is exact.

The pair is a :class:`perturbot.groundtruth.ConvexPair` (same scoring, same
standardisation). Fitting takes seconds in 2-8 dimensions and minutes in 64;
:func:`fitted_pair` caches the fitted weights under ``resources/truths/``
(git-ignored), and ``python -m perturbot.fitted_pairs --dims 2 4 8`` regenerates them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from perturbot.groundtruth import ConvexPair, _ICNN, _random_factor, convexity_violation, sample_mixture
from perturbot.validation import assignment

#: Where fitted potentials are cached (git-ignored); one file per (D, seed, settings).
CACHE = Path(__file__).resolve().parents[2] / "resources" / "truths"
#: Quadratic forms per skip layer (the benchmark's DenseICNN uses rank 1).
RANK = 1
#: The strictly convex part a/2 |x|^2 of psi (small: it pulls the map towards an affine one).
QUADRATIC = 0.01


def hidden_widths(d: int) -> tuple[int, int, int]:
    """The benchmark's DenseICNN widths for dimension ``d``."""
    return (max(2 * d, 64), max(2 * d, 64), max(d, 32))


class _Mixture:
    """A Gaussian mixture with equal weights; ``spread`` sets how far apart the means lie."""

    def __init__(self, rng: np.random.Generator, d: int, k: int, spread: float, scale: tuple[float, float]) -> None:
        self.means = rng.normal(size=(k, d)) * spread / np.sqrt(d)
        self.factors = np.stack([_random_factor(rng, d) * rng.uniform(*scale) for _ in range(k)])

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return sample_mixture(self.means, self.factors, n, rng)


def _trainable(net: _ICNN) -> list[torch.Tensor]:
    """The ICNN's tensors as float32 leaves that require gradients (in place)."""
    params = []
    for name in ("A", "b", "U", "W"):
        tensors = [t.float().requires_grad_(True) for t in getattr(net, name)]
        setattr(net, name, tensors)
        params += tensors
    net.w = net.w.float().requires_grad_(True)
    return params + [net.w]


def _as_float64(net: _ICNN) -> _ICNN:
    return _ICNN(*([t.detach().double() for t in getattr(net, name)] for name in ("A", "b", "U", "W")),
                 net.w.detach().double())


def fit_potential(
    d: int,
    seed: int = 0,
    n_iters: int = 3000,
    batch_size: int = 512,
    lr: float = 0.03,
    spread: float = 8.0,
) -> tuple[_ICNN, np.ndarray, np.ndarray]:
    """Fit psi's ICNN so that ``grad psi`` pushes the 3-mixture towards a 10-mixture; float64 result.

    Returns the ICNN and the source mixture's means and covariance factors, seeded by ``seed``.
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    source = _Mixture(rng, d, 3, spread=4.0, scale=(1.0, 1.0))
    reference = _Mixture(rng, d, 10, spread=spread, scale=(0.3, 0.6))
    cells = torch.as_tensor(source.sample(5_000, rng))
    net = _ICNN.random(d, gen, 1.0, cells, hidden=hidden_widths(d), rank=RANK)
    params = _trainable(net)
    optimiser = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, n_iters, eta_min=lr / 10)
    for _ in range(n_iters):
        x = torch.as_tensor(source.sample(batch_size, rng), dtype=torch.float32).requires_grad_(True)
        y = torch.as_tensor(reference.sample(batch_size, rng), dtype=torch.float32)
        psi = 0.5 * QUADRATIC * x.square().sum(-1) + net(x)
        (grad,) = torch.autograd.grad(psi.sum(), x, create_graph=True)
        paired = y[torch.from_numpy(assignment(grad.detach(), y))]
        loss = (grad - paired).square().sum(-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        with torch.no_grad():  # convexity: non-negative weights on the hidden path
            for W in net.W:
                W.clamp_(min=0.0)
            net.w.clamp_(min=0.0)
    return _as_float64(net), source.means, source.factors


def fit_settings(d: int) -> dict:
    """The fitting settings of the family's pair in ``d`` dimensions (part of the cache key)."""
    return {"n_iters": 3000, "batch_size": 512, "lr": 0.03, "spread": 8.0}


def _cache_file(cache_dir: Path, d: int, seed: int, n_iters: int, batch_size: int, lr: float, spread: float) -> Path:
    name = f"fitted_d{d}_seed{seed}_iters{n_iters}_batch{batch_size}_lr{lr:g}_spread{spread:g}_q{QUADRATIC:g}.pt"
    return Path(cache_dir) / name


def fitted_pair(
    d: int,
    n: int = 20_000,
    n_test: int = 4_000,
    seed: int = 0,
    cache_dir: Path | None = CACHE,
    **settings: float,
) -> ConvexPair:
    """A pair of the fitted family in ``d`` dimensions, ``n`` cells a side, ``n_test`` test cells.

    ``settings`` override :func:`fit_settings` (``n_iters``, ``batch_size``, ``lr``, ``spread``).
    The fitted potential is read from ``cache_dir`` when there, else fitted (and cached there;
    ``None``: no cache). The cells are drawn afresh from ``seed``: same arguments, same pair.
    """
    if d < 1 or n < 2 or n_test < 2:
        raise ValueError(f"need d >= 1, n >= 2 and n_test >= 2, got {d}, {n}, {n_test}")
    unknown = set(settings) - set(fit_settings(d))
    if unknown:
        raise TypeError(f"unknown fit settings {sorted(unknown)}; known: {sorted(fit_settings(d))}")
    settings = {**fit_settings(d), **settings}
    path = None if cache_dir is None else _cache_file(cache_dir, d, seed, **settings)
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=True)
        net = _ICNN(saved["A"], saved["b"], saved["U"], saved["W"], saved["w"])
        means, factors = saved["means"].numpy(), saved["factors"].numpy()
    else:
        net, means, factors = fit_potential(d, seed, **settings)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"A": net.A, "b": net.b, "U": net.U, "W": net.W, "w": net.w,
                        "means": torch.from_numpy(means), "factors": torch.from_numpy(factors)}, tmp)
            tmp.replace(path)
    rng = np.random.default_rng([seed, 1])
    pair = ConvexPair(d, seed, *(np.empty((0, d)) for _ in range(4)), [net], QUADRATIC, np.zeros(d), 1.0,
                      means, factors)
    return pair.draw(n, n_test, rng)


def main(argv: list[str] | None = None) -> None:
    """Fit every requested potential afresh (replacing the cached one) and print how hard each pair is."""
    parser = argparse.ArgumentParser(description="Fit (and cache) the potentials of the fitted family.")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from perturbot.models.gaussian_ot import GaussianOT

    print("| D | fit s | Gaussian map L2-UVP % | identity L2-UVP % | min monotonicity |")
    print("|---|---|---|---|---|")
    for d in args.dims:
        settings = fit_settings(d)
        _cache_file(CACHE, d, args.seed, **settings).unlink(missing_ok=True)
        start = time.perf_counter()
        pair = fitted_pair(d, seed=args.seed)
        seconds = time.perf_counter() - start
        gaussian = GaussianOT().fit(pair.source, pair.target).transport(pair.test)
        print(f"| {d} | {seconds:.0f} | {pair.l2_uvp(gaussian):.1f} | {pair.l2_uvp(pair.test):.1f} | "
              f"{convexity_violation(pair):.3f} |", flush=True)


if __name__ == "__main__":
    main()
