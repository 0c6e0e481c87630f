"""Non-linear W2 ground truths: cells whose true optimal-transport image is known.

The construction of the standard benchmarks for W2 map solvers (Korotin et al.
2021), built here from scratch: control cells come from a 3-component Gaussian
mixture in D dimensions, and the perturbed cells are their push-forward by the
gradient of a random convex potential

    psi(x) = a/2 |x|^2 + ICNN(x) + LSE(x),

an ICNN with quadratic skip layers (``z_1 = celu(sum_k (U_k x)^2 + A_0 x + b_0)``,
``z_{l+1} = celu(W_l z_l + sum_k (U_lk x)^2 + A_l x + b_l)`` with ``W_l >= 0``,
output ``w . z_L`` with ``w >= 0``: CELU is convex and non-decreasing and every
quadratic form is positive semi-definite) and a smoothed maximum of K affine
functions (``LSE``, a one-layer ICNN with a log-sum-exp activation, which
sends each region of the population its own way); ``a > 0`` makes psi
strictly convex. Random ICNNs alone give maps that an affine map fits to a few
per cent (their units' bends average out); the smoothed maximum is what makes
the closed-form Gaussian map miss by 10-50 %, as on the published benchmarks. By Brenier's theorem ``T* = grad psi`` is the W2-optimal map
from the control population to the perturbed one, so every cell's true image
is known. The target is standardised with one shift and one scale
(``T = (grad psi - m) / s`` is the gradient of the convex ``psi / s - <m, x> / s``)
so that its per-feature variance averages 1; a per-feature scale would break
the gradient structure, hence the map's optimality.

:func:`l2_uvp` and :func:`displacement_cosine` score a predicted map against
the truth; :func:`convexity_violation` checks the potential numerically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

#: Quadratic forms per skip layer, and the ICNN's hidden widths.
RANK = 4
HIDDEN = (64, 64)


@dataclass
class _ICNN:
    """A random ICNN with quadratic skip layers, in float64 (no training: random convex potentials)."""

    A: list[torch.Tensor]
    b: list[torch.Tensor]
    U: list[torch.Tensor]
    W: list[torch.Tensor]
    w: torch.Tensor

    @classmethod
    def random(
        cls,
        d: int,
        gen: torch.Generator,
        sharpness: float,
        cells: torch.Tensor,
        hidden: tuple[int, ...] = HIDDEN,
        rank: int = RANK,
    ) -> "_ICNN":
        """Random weights; each unit's bias centres its pre-activation on ``cells``, so that every
        unit bends (CELU's kink) inside the population rather than acting affinely on all of it."""

        def normal(*shape: int, scale: float = 1.0) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

        spread = float(cells.std(0).mean())
        A = [normal(h, d, scale=sharpness / (np.sqrt(d) * spread)) for h in hidden]
        U = [normal(h, rank, d, scale=np.sqrt(sharpness / rank) / (np.sqrt(d) * spread)) for h in hidden]
        W = [normal(o, i).abs() * 2 / i for i, o in zip(hidden[:-1], hidden[1:])]
        w = torch.rand(hidden[-1], generator=gen, dtype=torch.float64) * 2 / hidden[-1]
        net = cls(A, [torch.zeros(h, dtype=torch.float64) for h in hidden], U, W, w)
        z = None
        for layer in range(len(hidden)):  # centre layer by layer: later layers see centred inputs
            pre = net._skip(layer, cells) + (0 if z is None else z @ net.W[layer - 1].T)
            net.b[layer] = -pre.median(0).values
            z = F.celu(pre + net.b[layer])
        return net

    def _skip(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        quad = torch.einsum("hkd,nd->nhk", self.U[layer], x).square().sum(-1)
        return quad + x @ self.A[layer].T + self.b[layer]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = F.celu(self._skip(0, x))
        for layer, W in enumerate(self.W, start=1):
            z = F.celu(z @ W.T + self._skip(layer, x))
        return z @ self.w


@dataclass
class _SmoothMaxAffine:
    """``log sum_k exp(tau (a_k . (x - c) - |a_k|^2 / 2)) / tau``: a smoothed maximum of K affine
    functions (a one-layer ICNN with a log-sum-exp activation; convex). Its gradient, a softmax-weighted
    average of the ``a_k``, sends each region of the population its own way: what no affine map fits."""

    a: torch.Tensor
    center: torch.Tensor
    tau: float

    @classmethod
    def random(cls, d: int, gen: torch.Generator, cells: torch.Tensor, pieces: int, width: float) -> "_SmoothMaxAffine":
        spread = float(cells.var(0).sum().sqrt())
        a = torch.randn(pieces, d, generator=gen, dtype=torch.float64)
        a = a * spread / a.norm(dim=1, keepdim=True)
        # transitions ``width`` of the population's spread wide (along a_k - a_j, |a_k| = spread)
        return cls(a, cells.mean(0), float(np.sqrt(d) / (width * spread**2)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = (x - self.center) @ self.a.T - 0.5 * self.a.square().sum(1)
        return torch.logsumexp(self.tau * s, dim=1) / self.tau


@dataclass
class ConvexPair:
    """Control cells, perturbed cells and test cells with their true images, in ``d`` dimensions.

    ``source``/``target``: ``n`` training cells per side, independent draws
    (unpaired, as an experiment gives them); ``test`` and ``test_image``: cells
    from the control population and their true perturbed states.
    """

    d: int
    seed: int
    source: np.ndarray
    target: np.ndarray
    test: np.ndarray
    test_image: np.ndarray
    potentials: list[_ICNN] = field(repr=False)
    quadratic: float
    shift: np.ndarray = field(repr=False)
    scale: float
    means: np.ndarray = field(repr=False)
    factors: np.ndarray = field(repr=False)

    # ------------------------------------------------------------------ truth
    def potential(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """psi(x) before standardisation, float64 tensor (n,)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        return 0.5 * self.quadratic * x.square().sum(-1) + sum(p(x) for p in self.potentials)

    def true_map(self, x: np.ndarray) -> np.ndarray:
        """T*(x) = (grad psi(x) - shift) / scale, float64 (n, d), in chunks."""
        out = []
        for start in range(0, len(x), 8192):
            xb = torch.as_tensor(x[start : start + 8192], dtype=torch.float64).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.potential(xb).sum(), xb)
            out.append(((grad.numpy() - self.shift) / self.scale))
        return np.concatenate(out) if out else np.zeros((0, self.d))

    def sample_source(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n control cells: a 3-component Gaussian mixture with random covariances."""
        return sample_mixture(self.means, self.factors, n, rng)

    def draw(self, n: int, n_test: int, rng: np.random.Generator) -> "ConvexPair":
        """Set the standardisation and draw the cells, once the potentials are in place (in place).

        One shift and one scale from a calibration draw, so that the target's mean feature
        variance is 1; then ``n`` cells a side and ``n_test`` test cells with their true images.
        """
        calibration = self.true_map(self.sample_source(20_000, rng))
        self.shift = calibration.mean(0)
        self.scale = float(np.sqrt(calibration.var(0).mean()))
        self.source = self.sample_source(n, rng).astype(np.float32)
        self.target = self.true_map(self.sample_source(n, rng)).astype(np.float32)
        self.test = self.sample_source(n_test, rng).astype(np.float32)
        self.test_image = self.true_map(self.test.astype(np.float64))
        return self

    @property
    def target_variance(self) -> float:
        """Total variance of the perturbed population (the L2-UVP's denominator), from the test images."""
        return float(self.test_image.var(0).sum())

    def l2_uvp(self, predicted: np.ndarray) -> float:
        """L2-UVP (%) of predictions for ``test``."""
        return l2_uvp(predicted, self.test_image, self.target_variance)

    def cosine(self, predicted: np.ndarray) -> float:
        return displacement_cosine(self.test, predicted, self.test_image)


def make_pair(
    d: int,
    n: int = 20_000,
    n_test: int = 4_000,
    seed: int = 0,
    pieces: int = 10,
    width: float = 0.1,
    sharpness: float = 4.0,
    quadratic: float = 0.5,
) -> ConvexPair:
    """A pair in ``d`` dimensions with ``n`` cells per side and ``n_test`` test cells, seeded.

    psi = quadratic/2 |x|^2 + ICNN (quadratic skip layers) + smoothed max of ``pieces``
    affine functions whose transitions are ``width`` of the population's spread wide:
    fewer pieces or a larger width make the map closer to affine.
    """
    if d < 1 or n < 2 or n_test < 2:
        raise ValueError(f"need d >= 1, n >= 2 and n_test >= 2, got {d}, {n}, {n_test}")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    means = rng.normal(size=(3, d)) * 4.0 / np.sqrt(d)
    factors = np.stack([_random_factor(rng, d) for _ in range(3)])
    pair = ConvexPair(d, seed, *(np.empty((0, d)) for _ in range(4)), [], quadratic, np.zeros(d), 1.0, means, factors)
    cells = torch.as_tensor(pair.sample_source(5_000, rng))
    pair.potentials = [_ICNN.random(d, gen, sharpness, cells), _SmoothMaxAffine.random(d, gen, cells, pieces, width)]
    return pair.draw(n, n_test, rng)


def sample_mixture(
    means: np.ndarray, factors: np.ndarray, n: int, rng: np.random.Generator, components: list[int] | None = None
) -> np.ndarray:
    """n cells of the equal-weight Gaussian mixture with these means (k, d) and covariance square roots (k, d, d).

    ``components``: only cells of these components (the mixture restricted to them, drawn by
    rejection from the whole mixture's draws, so that one seed gives the same cells either way).
    """
    if components is None:
        component = rng.integers(0, len(means), n)
        z = rng.normal(size=(n, means.shape[1]))
        return means[component] + np.einsum("nij,nj->ni", factors[component], z)
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        component = rng.integers(0, len(means), 4 * n)
        z = rng.normal(size=(len(component), means.shape[1]))
        x = means[component] + np.einsum("nij,nj->ni", factors[component], z)
        out.append(x[np.isin(component, components)])
    return np.concatenate(out)[:n]


#: ``shift``: the held-out copy of the population is moved by this many (mean per-feature) standard deviations.
SHIFT_SDS = 2.0


@dataclass
class HoldoutSplit:
    """Training cells from part of a pair's control population, and test cells with their true images.

    ``tests`` maps a test's name to (cells, true images): ``iid`` (fresh cells of the components
    trained on), ``component`` (cells of the mixture component held out of training) and ``shift``
    (fresh cells of the trained components, all moved by one vector ``SHIFT_SDS`` standard
    deviations long, a population beside the one seen).
    """

    source: np.ndarray
    target: np.ndarray
    tests: dict[str, tuple[np.ndarray, np.ndarray]]


def holdout_split(pair: ConvexPair, n: int, n_test: int, seed: int = 0, held_out: int = -1) -> HoldoutSplit:
    """Train on the control mixture without component ``held_out``; test in and out of distribution.

    The perturbed training cells are the true images of independent draws from the same components
    (unpaired, as an experiment gives them). Every test cell's true image is ``pair.true_map``,
    defined everywhere, so a map's extrapolation is scored exactly.
    """
    k = len(pair.means)
    held = range(k)[held_out]
    seen = [c for c in range(k) if c != held]
    rng = np.random.default_rng(seed + 100)

    def draw(m: int, components: list[int]) -> np.ndarray:
        return sample_mixture(pair.means, pair.factors, m, rng, components)

    source = draw(n, seen).astype(np.float32)
    target = pair.true_map(draw(n, seen)).astype(np.float32)
    iid, component = draw(n_test, seen), draw(n_test, [held])
    direction = rng.normal(size=pair.d)
    shift = SHIFT_SDS * float(np.sqrt(source.var(0).mean())) * direction / np.linalg.norm(direction)
    shifted = draw(n_test, seen) + shift
    tests = {name: (x.astype(np.float32), pair.true_map(x)) for name, x in
             (("iid", iid), ("component", component), ("shift", shifted))}
    return HoldoutSplit(source, target, tests)


def rmse(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Per-cell error: the root mean over cells of the squared Euclidean distance to the true image."""
    return float(np.sqrt(np.square(np.asarray(predicted, np.float64) - np.asarray(truth, np.float64)).sum(1).mean()))


def _random_factor(rng: np.random.Generator, d: int) -> np.ndarray:
    """A covariance square root with spectrum in [0.5, 1.5] in a random basis."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * rng.uniform(0.5, 1.5, size=d)) @ q.T


def l2_uvp(predicted: np.ndarray, truth: np.ndarray, target_variance: float) -> float:
    """100 * E|T_hat(x) - T*(x)|^2 / Var(target), in % (Korotin et al. 2021's unexplained variance)."""
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    return float(100.0 * np.square(predicted - truth).sum(1).mean() / target_variance)


def displacement_cosine(x: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean over cells of cos(T_hat(x) - x, T*(x) - x): does each cell move the right way?"""
    x = np.asarray(x, np.float64)
    a, b = np.asarray(predicted, np.float64) - x, np.asarray(truth, np.float64) - x
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean((a * b).sum(1) / np.maximum(norms, 1e-12)))


def convexity_violation(pair: ConvexPair, n: int = 2_000, seed: int = 1) -> float:
    """Smallest ``<grad psi(x) - grad psi(y), x - y> / |x - y|^2`` over random cell pairs.

    Monotonicity of the gradient: >= 0 for every convex psi (>= ``quadratic``
    for this construction), so a negative value would prove the truth wrong.
    """
    rng = np.random.default_rng(seed)
    x, y = pair.sample_source(n, rng), pair.sample_source(n, rng)
    gx, gy = pair.true_map(x) * pair.scale, pair.true_map(y) * pair.scale
    return float((((gx - gy) * (x - y)).sum(1) / np.square(x - y).sum(1)).min())
