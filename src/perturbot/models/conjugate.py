"""The convex conjugate's maximiser ``argmax_x <x, y> - g(x)`` of a stacked ICNN, by batched L-BFGS.

CellOT's ``amortized`` solver needs it in every step (Amos, ICLR 2023, as OTT-JAX's
``W2NeuralDual`` does), and ``CellOT.potential_f`` reports g's conjugate with it.
OTT-JAX's defaults: at most ``max_iter`` iterations, gradient tolerance 1e-5, 10
curvature pairs, up to 20 backtracking halvings (see perturbot.models.cellot).
"""

from __future__ import annotations

import torch

from perturbot.nn.icnn import StackedICNN

#: Conjugate solver (OTT-JAX's DEFAULT_CONJUGATE_SOLVER): gradient tolerance, curvature pairs kept,
#: backtracking halvings, Armijo constant.
CONJUGATE_TOL = 1e-5
CONJUGATE_HISTORY = 10
CONJUGATE_LINESEARCH = 20
ARMIJO = 1e-4
#: A predicted decrease below this share of the objective's terms is rounding noise in float32.
RESOLUTION = 1e-6


def _conjugate_objective(
    net: StackedICNN, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``net(x) - <x, y>`` (P, n), its gradient in x (P, n, d), and ``|net(x)| + |<x, y>|`` (P, n).

    The objective is minimised by the conjugate's argmax; the last term bounds
    the rounding error of the difference (what float32 can resolve).
    """
    value, grad = net.value_and_gradient(x)
    dot = (x * y).sum(-1)
    return value - dot, grad - y, value.abs() + dot.abs()


def _lbfgs_direction(grad: torch.Tensor, pairs: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """L-BFGS two-loop recursion, each cell with its own curvature pairs ``(s, r, 1/<s, r>)``."""
    q, alphas = grad, []
    for s, r, rho in reversed(pairs):
        alpha = rho * (s * q).sum(-1, keepdim=True)
        q = q - alpha * r
        alphas.append(alpha)
    if pairs:  # initial Hessian <s, r> / <r, r> from the newest pair (1 where it was skipped)
        s, r, _ = pairs[-1]
        rr = (r * r).sum(-1, keepdim=True)
        q = q * torch.where(rr > 0, (s * r).sum(-1, keepdim=True) / rr.clamp_min(1e-30), 1.0)
    for (s, r, rho), alpha in zip(pairs, reversed(alphas)):
        q = q + s * (alpha - rho * (r * q).sum(-1, keepdim=True))
    return -q


@torch.no_grad()
def conjugate_argmax(net: StackedICNN, y: torch.Tensor, x0: torch.Tensor, max_iter: int) -> torch.Tensor:
    """Per cell, ``argmax_x <x, y> - net(x)`` (= grad of net's convex conjugate at y), shape (P, n, d).

    Batched L-BFGS started at ``x0`` (the amortisation model's prediction):
    every cell is its own problem with its own curvature pairs and its own
    backtracking (Armijo) step; where the decrease a step predicts is below
    what float32 resolves (``RESOLUTION``) the unit step is taken if it shrinks
    the gradient. A cell stops once its gradient norm is below
    ``CONJUGATE_TOL`` or when no step is accepted; all stop after ``max_iter``
    iterations.
    """
    x = x0.detach().clone()
    value, grad, size = _conjugate_objective(net, x, y)
    active = grad.norm(dim=-1, keepdim=True) > CONJUGATE_TOL
    pairs: list[tuple[torch.Tensor, ...]] = []
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        direction = _lbfgs_direction(grad, pairs)
        slope = (direction * grad).sum(-1, keepdim=True)
        uphill = slope >= 0  # not a descent direction: fall back to steepest descent
        direction = torch.where(uphill, -grad, direction)
        slope = torch.where(uphill, -(grad * grad).sum(-1, keepdim=True), slope)
        # near the optimum float32 cannot resolve the decrease: judge the unit step by the gradient
        floor = RESOLUTION * size.unsqueeze(-1)
        fine = -slope <= floor
        grad_norm = grad.norm(dim=-1, keepdim=True)
        step = torch.ones_like(slope)
        for _ in range(CONJUGATE_LINESEARCH):
            x_new = x + step * direction
            value_new, grad_new, size_new = _conjugate_objective(net, x_new, y)
            armijo = (value_new <= value + ARMIJO * (step * slope).squeeze(-1)).unsqueeze(-1)
            ok = torch.where(fine, grad_new.norm(dim=-1, keepdim=True) < grad_norm, armijo)
            lost = -step * slope <= floor  # halved below what float32 resolves: give up
            if bool((ok | fine | lost | ~active).all()):
                break
            step = torch.where(ok | fine, step, step / 2)
        moved = ok & active
        x_new = torch.where(moved, x_new, x)
        value_new = torch.where(moved.squeeze(-1), value_new, value)
        size_new = torch.where(moved.squeeze(-1), size_new, size)
        grad_new = torch.where(moved, grad_new, grad)
        s, r = x_new - x, grad_new - grad
        sr = (s * r).sum(-1, keepdim=True)
        curved = sr > 1e-10  # keep only pairs of positive curvature
        pairs.append((torch.where(curved, s, 0.0), torch.where(curved, r, 0.0),
                      torch.where(curved, 1.0 / sr.clamp_min(1e-10), 0.0)))
        pairs = pairs[-CONJUGATE_HISTORY:]
        x, value, grad, size = x_new, value_new, grad_new, size_new
        active = moved & (grad.norm(dim=-1, keepdim=True) > CONJUGATE_TOL)
    return x
