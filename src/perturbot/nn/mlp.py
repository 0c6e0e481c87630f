"""Plain multilayer perceptrons, optionally stacked so that P independent copies train at once.

A stacked MLP (``n_models=P``) holds its weights as (P, out, in) tensors and maps
(P, n, in) inputs with one batched matrix product per layer: training P small
networks this way costs about as much as training one, which is what makes
fitting many perturbations jointly cheap.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # negative slope 0.01
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


def make_activation(name: str | None) -> nn.Module:
    """Activation module by name; ``None`` or ``"identity"`` give the identity."""
    if name is None or name == "identity":
        return nn.Identity()
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}") from None


class BatchedLinear(nn.Module):
    """``n_models`` independent affine maps applied to (n_models, n, in) inputs.

    Initialised like :class:`torch.nn.Linear` (uniform in ±1/sqrt(in)), each copy
    drawn independently.
    """

    def __init__(self, in_features: int, out_features: int, n_models: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(n_models, out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_models, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"n_models={self.weight.shape[0]}, in_features={self.in_features}, out_features={self.out_features}"


def mlp(
    in_dim: int,
    hidden: list[int] | tuple[int, ...],
    out_dim: int,
    activation: str | None = "relu",
    out_activation: str | None = None,
    dropout: float = 0.0,
    n_models: int | None = None,
) -> nn.Sequential:
    """Fully connected network ``in_dim -> hidden... -> out_dim``.

    ``activation`` follows every hidden layer (then dropout, if any);
    ``out_activation`` follows the last one. With ``n_models=None`` the layers are
    ordinary :class:`torch.nn.Linear` on (n, in) inputs; with ``n_models=P`` they
    are :class:`BatchedLinear` on (P, n, in) inputs.
    """
    layers: list[nn.Module] = []
    widths = [in_dim, *hidden]
    for a, b in zip(widths[:-1], widths[1:]):
        layers.append(nn.Linear(a, b) if n_models is None else BatchedLinear(a, b, n_models))
        layers.append(make_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    last = widths[-1]
    layers.append(nn.Linear(last, out_dim) if n_models is None else BatchedLinear(last, out_dim, n_models))
    if out_activation is not None and out_activation != "identity":
        layers.append(make_activation(out_activation))
    return nn.Sequential(*layers)
