"""The Wasserstein-1 benchmark's high-dimensional pairs and metrics (Korotin, Kolesov, Burnaev, NeurIPS 2022).

A pair is a *min-funnel* potential f(x) = min_k ||x - c_k|| + b_k, 1-Lipschitz with
||grad f|| = 1, and the two distributions it makes: the target Q is uniform on the
cube [-2.5, 2.5]^D, and the source P is Q with every point y moved towards the centre
c of its active funnel along its ray, x = c + t^8 (up - c), where t = ||y - c|| /
||up - c|| and ``up`` is where the ray leaves the cube or another funnel takes over.
(x, y) is then an optimal W1 pair, W1(P, Q) = E ||y - x||, and the Kantorovich critic
phi maximising E_P phi - E_Q phi is -f: its gradient at x ~ P is known,
-(x - c_k) / ||x - c_k||. That is the transport direction of W1-OT's first stage.

The benchmark publishes its pairs as the funnels' centres and offsets
(``benchmarks/nd/dim_<D>/width_<N>/deg_8_seed_987.pt``, a plain state dict with
``net.centers`` (N, D) and ``net.bias`` (N,)); :func:`load_pair` reads them and
:func:`make_pair` draws new ones with the benchmark's recipe. The metrics follow its
``src/methods.py``: each draws fresh points of P.

- ``cos``: mean cosine between the critic's gradient and the true one;
- ``l2``: mean *squared* distance between them (no root, no normalisation);
- ``w1_estimate``: E_P phi - E_Q phi on independent draws; ``w1_true``: E ||y - x|| on
  plan pairs; ``w1_relative_error``: |w1_true - w1_estimate| / w1_true (W1-OT's).

The true gradient is taken, as in the benchmark, by differentiating
``torch.cdist`` in its matrix-product form: within about 1e-4 of a centre that form
rounds the distance to 0 and gives a zero gradient, which happens to 11-16 % of the
points of P at D = 2, 1-2 % at D = 4 and almost never from D = 8 on. ``cos_exact`` and
``l2_exact`` use the analytic (x - c_k) / ||x - c_k|| instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

#: Half the side of the target's cube and the exponent of the motion (all published pairs).
HALF_SIDE = 2.5
DEGREE = 8
#: Points per metric in the benchmark's own tests (METRIC_SIZE = 2**12).
METRIC_SAMPLES = 4096

Critic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FunnelPair:
    """One benchmark pair: funnel centres (N, D) and offsets (N,), float32."""

    centers: torch.Tensor
    bias: torch.Tensor
    half_side: float = HALF_SIDE
    degree: int = DEGREE

    def __post_init__(self) -> None:
        c, b = self.centers, self.bias
        if c.ndim != 2 or b.shape != (c.shape[0],):
            raise ValueError(f"a funnel pair needs centers (N, D) and bias (N,), got {tuple(c.shape)} and {tuple(b.shape)}")
        if not (torch.isfinite(c).all() and torch.isfinite(b).all()):
            raise ValueError("the funnel pair has non-finite centres or offsets")

    @property
    def dim(self) -> int:
        return int(self.centers.shape[1])

    @property
    def width(self) -> int:
        """Number of funnels."""
        return int(self.centers.shape[0])

    # ------------------------------------------------------------ potential
    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = min_k ||x - c_k|| + b_k, the distance as the benchmark computes it (matrix-product cdist)."""
        dist = torch.cdist(x, self.centers, compute_mode="use_mm_for_euclid_dist")
        return (dist + self.bias).min(dim=1).values

    def critic_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """The true critic's gradient -grad f(x), by autograd through the benchmark's cdist (0 where it rounds to 0)."""
        x = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.potential(x).sum(), x)
        return -grad

    def critic_gradient_exact(self, x: torch.Tensor) -> torch.Tensor:
        """-(x - c_k) / ||x - c_k|| for the active funnel k, computed directly (0 only at a centre)."""
        diff = x[:, None, :] - self.centers[None]
        k = (diff.norm(dim=-1) + self.bias).argmin(dim=1)
        d = x - self.centers[k]
        return -d / d.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)

    # ------------------------------------------------------------- sampling
    def sample_target(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n points of Q, uniform on [-half_side, half_side]^D."""
        return self.half_side * (2 * torch.rand(n, self.dim, generator=gen) - 1)

    def sample_plan(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n optimal pairs (x ~ P, y ~ Q): each y of Q moved towards its funnel's centre."""
        y = self.sample_target(n, gen)
        return self.move(y), y

    def sample_source(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n points of P."""
        return self.sample_plan(n, gen)[0]

    def move(self, y: torch.Tensor) -> torch.Tensor:
        """x = c + t^degree (up - c) for each y (the benchmark's motion_samples).

        The ray from the active centre c through y ends at the cube's boundary or
        where another funnel j becomes active, ||y + r v - c_j|| + b_j = f(y) + r,
        i.e. r = (||y - c_j||^2 - (f(y) - b_j)^2) / (2 (f(y) - b_j - <y - c_j, v>)).
        The active funnel's own term is 0/0 and is left out (the benchmark's rounding
        can otherwise cut a ray short).
        """
        centers, bias = self.centers, self.bias
        n = y.shape[0]
        values = torch.cdist(y, centers) + bias
        fmin, k = values.min(dim=1)
        c = centers[k]
        v = y - c
        base = v.norm(dim=1)
        v = v / base.clamp_min(torch.finfo(y.dtype).tiny)[:, None]
        r_box = ((torch.sign(v) * self.half_side - y) / v).abs().nan_to_num(nan=float("inf")).min(dim=1).values
        da = y[:, None, :] - centers[None]
        db = fmin[:, None] - bias[None]
        r = 0.5 * (da.square().sum(-1) - db.square()) / (db - (da * v[:, None, :]).sum(-1))
        r[(r <= 0) | (r <= -db)] = float("nan")
        r[torch.arange(n), k] = float("nan")
        r = r.nan_to_num(nan=float("inf")).min(dim=1).values
        up = y + v * torch.minimum(r_box, r)[:, None]
        full = (up - c).norm(dim=1)
        degenerate = (full == 0) | (base == 0)
        t = torch.where(degenerate, torch.zeros_like(base), base / torch.where(degenerate, torch.ones_like(full), full))
        return c + (t**self.degree)[:, None] * (up - c)


# ------------------------------------------------------------------ files
def make_pair(dim: int, width: int, seed: int) -> FunnelPair:
    """A new pair by the benchmark's recipe: centres uniform in the cube, offsets 0.1 N(0, 1), both from ``seed``.

    (The published seed-987 files predate this recipe and are not reproduced by it:
    read them with :func:`load_pair`.)
    """
    torch.manual_seed(seed)
    centers = HALF_SIDE * (torch.rand(width, dim) * 2 - 1)
    torch.manual_seed(seed)
    bias = 0.1 * torch.randn(width)
    return FunnelPair(centers, bias)


def save_pair(pair: FunnelPair, path: str | Path) -> None:
    """Write a pair as the benchmark does: a state dict with ``net.centers`` and ``net.bias``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"net.centers": pair.centers.contiguous(), "net.bias": pair.bias.contiguous()}, path)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_pair(path: str | Path, sha256: str | None = None) -> FunnelPair:
    """Read a benchmark pair file (tensors only: no code is unpickled), checking its sha256 when given."""
    path = Path(path)
    if sha256 is not None and (actual := sha256_of(path)) != sha256:
        raise ValueError(f"{path}: sha256 {actual}, expected {sha256}; the file is damaged or another version")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle or torch errors alike
        raise ValueError(f"{path} is not a benchmark pair file (a torch state dict): {err}") from err
    missing = {"net.centers", "net.bias"} - set(state)
    if missing:
        raise ValueError(f"{path}: a benchmark pair needs the tensors net.centers and net.bias; missing {sorted(missing)}")
    return FunnelPair(state["net.centers"].float(), state["net.bias"].float())


# --------------------------------------------------------------- training
def fit_critic(
    pair: FunnelPair,
    n_groups: int,
    *,
    n_iters: int = 10_000,
    batch_size: int = 1024,
    n_samples: int = 100_000,
    seed: int = 0,
    device: str = "auto",
    **params,
):
    """W1-OT's first stage alone (its potential phi, no step sizes), as the W1-OT authors test it.

    Their ``Experiments/w1bench.py`` draws 100,000 points of P and of Q once, trains
    phi (4 x 64 Cayley layers with GroupSort, Adam 1e-2 cosine to 1e-4, betas 0.5)
    for 10,000 iterations of 1,024 points a side, and scores the last weights.
    """
    from perturbot.models.w1ot import W1OT

    gen = torch.Generator().manual_seed(seed)
    source, target = pair.sample_source(n_samples, gen).numpy(), pair.sample_target(n_samples, gen).numpy()
    model = W1OT(
        n_iters_potential=n_iters, n_iters_step=0, batch_size=batch_size, n_groups=n_groups,
        seed=seed, device=device, **params,
    )
    return model.fit(source, target)


# ---------------------------------------------------------------- metrics
def score_critic(
    potential: Critic, gradient: Critic, pair: FunnelPair, n: int = METRIC_SAMPLES, seed: int = 0
) -> dict[str, float]:
    """The benchmark's metrics of a critic phi (high on P), each on its own fresh draw of ``n`` points.

    ``potential`` maps (n, D) arrays to phi (n,), ``gradient`` to grad phi (n, D).
    """
    gen = torch.Generator().manual_seed(seed)
    x, y = pair.sample_plan(n, gen)
    w1_true = float((y - x).norm(dim=1).mean())
    xp, yq = pair.sample_source(n, gen), pair.sample_target(n, gen)
    w1_estimate = float(np.mean(potential(xp.numpy())) - np.mean(potential(yq.numpy())))

    out = {"w1_true": w1_true, "w1_estimate": w1_estimate,
           "w1_relative_error": abs(w1_true - w1_estimate) / abs(w1_true)}
    for metric in ("l2", "cos"):  # the benchmark's order of draws
        points = pair.sample_source(n, gen)
        learned = torch.as_tensor(np.asarray(gradient(points.numpy()), dtype=np.float32))
        for suffix, true in (("", pair.critic_gradient(points)), ("_exact", pair.critic_gradient_exact(points))):
            out[metric + suffix] = gradient_l2(learned, true) if metric == "l2" else gradient_cosine(learned, true)
    return out


def gradient_l2(learned: torch.Tensor, true: torch.Tensor) -> float:
    """Mean squared distance between two gradient fields (the benchmark's "L2")."""
    return float((true - learned).norm(dim=1).square().mean())


def gradient_cosine(learned: torch.Tensor, true: torch.Tensor, eps: float = 1e-15) -> float:
    """Mean cosine between two gradient fields (a zero vector contributes 0, as in the benchmark)."""
    dot = (true * learned).sum(-1)
    return float((dot / (torch.sqrt(true.norm(dim=1) ** 2 * learned.norm(dim=1) ** 2) + eps)).mean())


# ------------------------------------------------------------- catalogue
def group_size_run(pair: FunnelPair, n_groups: int, settings: dict, seed: int, device: str = "auto") -> dict:
    """Train W1-OT's potential with ``n_groups`` GroupSort groups on one pair and score it (one row of the table)."""
    import time

    start = time.perf_counter()
    model = fit_critic(
        pair, n_groups, n_iters=settings["n_iters"], batch_size=settings["batch_size"],
        n_samples=settings["n_samples"], seed=seed, device=device, **settings.get("model_params", {}),
    )
    seconds = time.perf_counter() - start
    scores = score_critic(model.potential, model.direction, pair, n=settings["n_test"], seed=seed)
    return {"dim": pair.dim, "width": pair.width, "n_groups": n_groups, **scores,
            "fit_seconds": seconds, "n_iters": settings["n_iters"], "seed": seed}
