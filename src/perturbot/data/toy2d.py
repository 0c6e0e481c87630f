"""The four 2-D source/target pairs of the W1-OT paper, generated with a seed.

Each function returns ``(source, target)``, float32 arrays of shape (n, 2) with
independent draws on both sides (the populations are unpaired, as in single-cell
data). They test what a W1 map should do where the answer is known by eye:
order along the transport direction (bookshelf), matching of nested structures
(circles), spreading a blob onto a manifold (swiss roll) and moving a curved
shape (moons).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.datasets import make_circles, make_moons, make_swiss_roll


def bookshelf(n: int = 1000, seed: int = 0, noise: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """Two thin horizontal strips: x ~ U[0, 1] (source) and x ~ U[2, 3] (target), y ~ N(0, noise^2).

    W1 has many optimal maps here; the one that moves every book by the same
    distance keeps the order of the x-coordinates.
    """
    rng = np.random.default_rng(seed)

    def strip(lo: float) -> np.ndarray:
        return np.column_stack([rng.uniform(lo, lo + 1.0, n), rng.normal(0.0, noise, n)])

    return strip(0.0).astype(np.float32), strip(2.0).astype(np.float32)


def circles(n: int = 1000, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Concentric circles (radii 1 and 0.5, half the cells on each) to the same circles scaled by 2.

    Source: ``make_circles(factor=0.5, noise=noise)``; target: an independent
    draw of it times 2, so the inner circle (radius 0.5) should land on the
    target's inner circle (radius 1).
    """
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**31 - 1, size=2)
    src, _ = make_circles(n_samples=n, factor=0.5, noise=noise, random_state=int(seeds[0]))
    tgt, _ = make_circles(n_samples=n, factor=0.5, noise=noise, random_state=int(seeds[1]))
    return src.astype(np.float32), (2.0 * tgt).astype(np.float32)


def swiss_roll(
    n: int = 1000, seed: int = 0, noise: float = 0.5, scale: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Standard Gaussian to a 2-D swiss roll (``make_swiss_roll`` coordinates x and z, times ``scale``)."""
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, 2))
    roll, _ = make_swiss_roll(n_samples=n, noise=noise, random_state=int(rng.integers(0, 2**31 - 1)))
    return src.astype(np.float32), (scale * roll[:, [0, 2]]).astype(np.float32)


def moons(n: int = 1000, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The upper moon of ``make_moons`` (source) to the lower one (target), ``n`` cells each."""
    x, y = make_moons(n_samples=(n, n), noise=noise, random_state=seed)
    return x[y == 0].astype(np.float32), x[y == 1].astype(np.float32)


DATASETS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "bookshelf": bookshelf,
    "circles": circles,
    "swiss_roll": swiss_roll,
    "moons": moons,
}


def make_2d(name: str, n: int = 1000, seed: int = 0, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Generate one of :data:`DATASETS` by name."""
    if name not in DATASETS:
        raise KeyError(f"unknown 2-D data set {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name](n=n, seed=seed, **kwargs)
