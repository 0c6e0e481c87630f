"""1-Lipschitz networks: orthonormal linear layers and GroupSort (W1-OT's Kantorovich potential).

A linear map with orthonormal rows or columns has spectral norm 1 and GroupSort
only permutes coordinates, so their composition is 1-Lipschitz by construction
and its gradient norm never exceeds 1. Every module here is *stacked*: it holds
``n_models`` independent copies (weights shaped (P, out, in)) and maps
(P, n, in) inputs with one batched matrix product, so that the potentials of many
perturbations train together.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ORTHOGONALIZATIONS = ("cayley", "bjorck")


def cayley(w: torch.Tensor) -> torch.Tensor:
    """Orthonormal matrix from ``w`` (..., out, in) by the (rectangular) Cayley transform.

    For out >= in, write w = [U; V] with U square (in x in) and A = U - U^T + V^T V;
    then Q = [(I - A)(I + A)^-1; -2 V (I + A)^-1] has orthonormal columns. For
    out < in the transform is applied to w^T and transposed back (orthonormal rows).
    """
    n_out, n_in = w.shape[-2:]
    if n_in > n_out:
        return cayley(w.transpose(-1, -2)).transpose(-1, -2)
    u, v = w[..., :n_in, :], w[..., n_in:, :]
    eye = torch.eye(n_in, dtype=w.dtype, device=w.device)
    a = u - u.transpose(-1, -2) + v.transpose(-1, -2) @ v
    rhs = torch.cat([eye - a, -2.0 * v], dim=-2)
    # (I - A) and (I + A)^-1 commute, so both blocks are rhs @ (I + A)^-1: one solve.
    return torch.linalg.solve(eye + a, rhs, left=False)


def bjorck(w: torch.Tensor, n_iters: int) -> torch.Tensor:
    """Nearest orthonormal matrix to ``w`` (..., out, in) by first-order Björck iterations.

    The input is first scaled by sqrt(||w||_1 ||w||_inf), an upper bound on its
    spectral norm, which the iteration Q <- 1.5 Q - 0.5 Q Q^T Q needs to converge.
    The cheaper Gram matrix (in x in or out x out) is used.
    """
    scale = (w.abs().sum(-2).amax(-1) * w.abs().sum(-1).amax(-1)).sqrt().clamp_min(1e-12)
    q = w / scale[..., None, None]
    tall = w.shape[-2] >= w.shape[-1]
    for _ in range(n_iters):
        if tall:
            q = 1.5 * q - 0.5 * q @ (q.transpose(-1, -2) @ q)
        else:
            q = 1.5 * q - 0.5 * (q @ q.transpose(-1, -2)) @ q
    return q


class OrthoLinear(nn.Module):
    """Stacked affine layer x -> Q x + b whose matrix Q has orthonormal rows or columns.

    ``method="cayley"``: Q = cayley(alpha * W / ||W||_F) with a learnable scale alpha
    per copy, initialised to ||W||_F (so Q starts as cayley(W)). ``method="bjorck"``:
    Q = bjorck(W), ``bjorck_iters`` iterations in training mode and
    ``bjorck_iters_eval`` in evaluation mode. In evaluation mode Q is computed once
    (without autograd) and cached until the parameters change.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_models: int = 1,
        method: str = "cayley",
        bjorck_iters: int = 20,
        bjorck_iters_eval: int = 100,
    ) -> None:
        super().__init__()
        if method not in ORTHOGONALIZATIONS:
            raise ValueError(f"orthogonalization must be one of {ORTHOGONALIZATIONS}, got {method!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.method = method
        self.bjorck_iters = bjorck_iters
        self.bjorck_iters_eval = bjorck_iters_eval
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(n_models, out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_models, out_features).uniform_(-bound, bound))
        if method == "cayley":
            self.alpha = nn.Parameter(self.weight.detach().norm(dim=(1, 2)).clone())
        self._cache: tuple[tuple[int, ...], torch.Tensor] | None = None

    def _compute(self) -> torch.Tensor:
        if self.method == "cayley":
            norm = self.weight.norm(dim=(1, 2), keepdim=True)
            return cayley(self.alpha[:, None, None] * self.weight / norm)
        return bjorck(self.weight, self.bjorck_iters if self.training else self.bjorck_iters_eval)

    def orthonormal(self) -> torch.Tensor:
        """The (P, out, in) orthonormal matrices, cached in evaluation mode."""
        if self.training:
            self._cache = None
            return self._compute()
        key = tuple(k for p in self.parameters() for k in (p.data_ptr(), p._version))
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self._compute())
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.orthonormal().transpose(1, 2))

    def extra_repr(self) -> str:
        return (
            f"n_models={self.weight.shape[0]}, in_features={self.in_features}, "
            f"out_features={self.out_features}, method={self.method}"
        )


class GroupSort(nn.Module):
    """Split the units into ``n_groups`` equal groups and sort each group (ascending).

    The parameter is the *number of groups*, as in the W1-OT authors' code: 4
    groups of 16 units for a 64-unit layer, which the W1-OT paper calls "group
    size 4". ``n_groups`` equal to the width is the identity; a width of 2 per
    group is MaxMin.
    """

    def __init__(self, n_groups: int) -> None:
        super().__init__()
        self.n_groups = n_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.n_groups:
            raise ValueError(f"{x.shape[-1]} units cannot be split into {self.n_groups} equal groups")
        return x.unflatten(-1, (self.n_groups, -1)).sort(dim=-1).values.flatten(-2)

    def extra_repr(self) -> str:
        return f"n_groups={self.n_groups}"


class LipschitzPotential(nn.Module):
    """Stacked 1-Lipschitz scalar network: (OrthoLinear, GroupSort) per hidden width, then OrthoLinear to 1.

    Maps (P, n, in_dim) to (P, n). :meth:`value_and_grad` also returns the
    gradient with respect to the input, whose norm is at most 1.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: list[int] | tuple[int, ...] = (64, 64, 64, 64),
        n_groups: int = 4,
        n_models: int = 1,
        method: str = "cayley",
        bjorck_iters: int = 20,
        bjorck_iters_eval: int = 100,
    ) -> None:
        super().__init__()
        bad = [h for h in hidden if h % n_groups]
        if bad:
            raise ValueError(f"hidden widths {bad} are not divisible by n_groups={n_groups}")
        widths = [in_dim, *hidden]
        ortho = dict(n_models=n_models, method=method, bjorck_iters=bjorck_iters, bjorck_iters_eval=bjorck_iters_eval)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [OrthoLinear(a, b, **ortho), GroupSort(n_groups)]
        layers.append(OrthoLinear(widths[-1], 1, **ortho))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Potential (P, n) and its input gradient (P, n, in_dim), both detached."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            value = self(x)
            (grad,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), grad
