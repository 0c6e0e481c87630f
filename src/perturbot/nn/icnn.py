"""Input-convex neural networks (ICNNs), stacked so that P of them train as one module.

CellOT's potentials (Makkuva et al. 2020; Bunne et al. 2023): for hidden widths
``h_0..h_{L-1}``

    z_0 = leaky(A_0 x + b_0)^2
    z_l = leaky(W_l z_{l-1} + A_l x + b_l)          l = 1..L-1
    out = W_L z_{L-1} + A_L x + b_L                  (a scalar)

with LeakyReLU slope 0.2. The network is convex in ``x`` whenever every ``W_l``
is non-negative (leaky ReLU is convex and non-decreasing, the square of a
leaky ReLU is convex). ``activation="softplus"`` replaces the leaky ReLU of
layers 1..L-1 by ``softplus(s) + slope * s`` (convex, increasing, smooth):
the map ``grad g`` of a leaky-ReLU ICNN is piecewise affine, so a smooth map
needs many pieces, while a softplus ICNN's map is smooth (the activation of
Amos's and Korotin et al.'s W2 solvers; ``docs/models/cellot.md`` measures it). ``W_l`` have no bias, ``A_l`` have one; all weights
start uniform on (0, ``init_scale``) and the biases at zero.

With ``quadratic=True`` the potential gains a convex quadratic term
``1/2 |L x|^2`` (``L`` unconstrained, any ``L`` keeps it convex), the
``PosDefPotentials`` layer of OTT-JAX's ICNN. ``init_affine_`` uses it to
start the potential at ``1/2 x'Mx + c'x`` (gradient: the affine map
``x -> Mx + c``, e.g. the identity or the Gaussian OT map) by setting ``L``
to ``M^(1/2)``, the linear skip to ``c`` and the last ``W`` to zero.

Every weight carries a leading model axis ``P`` (shape ``(P, out, in)``) and
inputs are ``(P, n, d)``, so P independent potentials (one per perturbation)
evaluate with batched matrix products. The ``A_l`` of all layers are stored as
one ``(P, sum(h) + 1, d)`` matrix: one product computes every skip connection,
and one product maps the backpropagated signals of all layers back to ``x``.

``gradient`` writes out the backward pass of the network as ordinary tensor
operations, so the transport map ``T = grad g`` needs no ``autograd.grad`` call,
runs under ``torch.no_grad`` at inference, and stays differentiable with
respect to the weights during training (what ``create_graph=True`` gives).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


ACTIVATIONS = ("leaky_relu", "softplus")


class StackedICNN(nn.Module):
    """``n_models`` independent ICNNs on ``in_features`` inputs, evaluated together."""

    def __init__(
        self,
        n_models: int,
        in_features: int,
        hidden_units: Sequence[int] = (64, 64, 64, 64),
        negative_slope: float = 0.2,
        init_scale: float = 0.1,
        generator: torch.Generator | None = None,
        quadratic: bool = False,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        hidden = [int(h) for h in hidden_units]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden_units must be a non-empty list of positive widths, got {hidden_units!r}")
        if n_models < 1 or in_features < 1:
            raise ValueError(f"need n_models >= 1 and in_features >= 1, got {n_models}, {in_features}")
        self.n_models = int(n_models)
        self.in_features = int(in_features)
        self.hidden_units = hidden
        self.negative_slope = float(negative_slope)
        widths = hidden + [1]

        def uniform(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.rand(n_models, *shape, generator=generator) * init_scale)

        # A_0..A_L stacked along the output axis, bias zero.
        self.A = uniform(sum(widths), in_features)
        self.b = nn.Parameter(torch.zeros(n_models, sum(widths)))
        # W_1..W_L: (P, h_l, h_{l-1}); the last one maps to the scalar output.
        self.W = nn.ParameterList([uniform(o, i) for i, o in zip(widths[:-1], widths[1:])])
        self.quadratic = bool(quadratic)
        if self.quadratic:  # created last: the other weights draw the same numbers either way
            self.L = nn.Parameter(torch.zeros(n_models, in_features, in_features))

    # ------------------------------------------------------------ evaluation
    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Output (P, n) plus what the backward pass needs: pre-activations and leaky(s_0)."""
        if x.dim() != 3 or x.shape[0] != self.n_models or x.shape[2] != self.in_features:
            raise ValueError(
                f"expected input of shape ({self.n_models}, n, {self.in_features}), got {tuple(x.shape)}"
            )
        u = torch.baddbmm(self.b.unsqueeze(1), x, self.A.transpose(1, 2))
        skips = u.split(self.hidden_units + [1], dim=-1)
        s = skips[0]
        a0 = F.leaky_relu(s, self.negative_slope)
        z = a0 * a0
        pre = [s]
        for W, skip in zip(self.W[:-1], skips[1:-1]):
            s = torch.baddbmm(skip, z, W.transpose(1, 2))
            z = self._activate(s)
            pre.append(s)
        out = torch.baddbmm(skips[-1], z, self.W[-1].transpose(1, 2)).squeeze(-1)
        if self.quadratic:
            out = out + 0.5 * torch.bmm(x, self.L.transpose(1, 2)).square().sum(-1)
        return out, pre, a0

    def _activate(self, s: torch.Tensor) -> torch.Tensor:
        if self.activation == "softplus":
            return F.softplus(s) + self.negative_slope * s
        return F.leaky_relu(s, self.negative_slope)

    def _activate_backward(self, grad: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """``grad * activation'(pre)``, differentiable in both (softplus' curvature reaches the weights)."""
        if self.activation == "softplus":
            return grad * (torch.sigmoid(pre) + self.negative_slope)
        return _leaky_relu_backward(grad, pre, self.negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Potential values, shape (P, n)."""
        return self._forward(x)[0]

    def value_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Potential (P, n) and its gradient in ``x`` (P, n, d), differentiable in the weights."""
        out, pre, a0 = self._forward(x)
        n = x.shape[1]
        W = list(self.W)
        # d out / d z_{L-1} is the last W row, the same for every sample.
        dz = W[-1].expand(-1, n, -1)
        deltas = []
        for layer in range(len(pre) - 1, 0, -1):
            ds = self._activate_backward(dz, pre[layer])
            deltas.append(ds)
            dz = torch.bmm(ds, W[layer - 1])
        deltas.append(_leaky_relu_backward(2.0 * dz * a0, pre[0], self.negative_slope))
        deltas.reverse()
        A_hidden, A_out = self.A[:, :-1], self.A[:, -1:]
        grad = torch.baddbmm(A_out, torch.cat(deltas, dim=-1), A_hidden)
        if self.quadratic:
            grad = grad + torch.bmm(torch.bmm(x, self.L.transpose(1, 2)), self.L)
        return out, grad

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """The transport map ``grad potential(x)``, shape (P, n, d)."""
        return self.value_and_gradient(x)[1]

    @torch.no_grad()
    def select(self, indices: Sequence[int]) -> "StackedICNN":
        """A detached copy holding only the models at ``indices`` (cheap inference on a few)."""
        # a private generator for the throw-away initial values keeps torch's global RNG untouched
        sub = StackedICNN(
            len(indices),
            self.in_features,
            self.hidden_units,
            self.negative_slope,
            generator=torch.Generator(),
            quadratic=self.quadratic,
            activation=self.activation,
        ).to(device=self.A.device, dtype=self.A.dtype)
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.A.device)
        sub.load_state_dict({k: v.index_select(0, idx) for k, v in self.state_dict().items()})
        return sub

    @torch.no_grad()
    def init_affine_(self, matrix: torch.Tensor, shift: torch.Tensor) -> None:
        """Start each potential at ``1/2 x'M x + c'x`` (its gradient: ``x -> M x + c``).

        ``matrix`` (P, d, d) symmetric positive semi-definite, ``shift`` (P, d). The
        ICNN part keeps its weights but its last ``W`` is zeroed, so it contributes
        nothing until training grows it (as a zero-initialised residual branch).
        """
        if not self.quadratic:
            raise ValueError("an affine start needs the quadratic term: build with quadratic=True")
        evals, evecs = torch.linalg.eigh(matrix.to(torch.float64))
        root = evecs @ torch.diag_embed(evals.clamp(min=0).sqrt()) @ evecs.transpose(1, 2)
        self.L.copy_(root.to(self.L.dtype))
        self.A[:, -1].copy_(shift.to(self.A.dtype))
        self.b[:, -1].zero_()
        self.W[-1].zero_()

    # ------------------------------------------------------------ convexity
    @torch.no_grad()
    def clamp_weights_(self) -> None:
        """Project every W onto the non-negative orthant (keeps the network convex)."""
        for W in self.W:
            W.clamp_(min=0)

    def negative_weight_penalty(self) -> torch.Tensor:
        """Per model, sum over layers of the Frobenius norm of the negative part of W, shape (P,)."""
        return sum(torch.linalg.vector_norm(torch.relu(-W), dim=(1, 2)) for W in self.W)

    @torch.no_grad()
    def negative_weight_share(self) -> torch.Tensor:
        """Per model, the fraction of W entries below zero, shape (P,)."""
        negative = sum((W < 0).sum((1, 2)) for W in self.W)
        total = sum(W[0].numel() for W in self.W)
        return negative.double() / total


def _leaky_relu_backward(grad: torch.Tensor, pre: torch.Tensor, slope: float) -> torch.Tensor:
    """``grad * leaky_relu'(pre)`` in one kernel; differentiable in ``grad`` (as autograd's own)."""
    return torch.ops.aten.leaky_relu_backward(grad, pre, slope, False)
