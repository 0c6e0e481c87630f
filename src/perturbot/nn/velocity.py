"""A time- and perturbation-conditioned velocity field v(x, t, p) for flow matching.

One network serves every perturbation: a learned embedding of the perturbation
index is concatenated to the cell and to sinusoidal features of the time, so
that many perturbations share what they have in common (the CellFlow design).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class VelocityField(nn.Module):
    """MLP on [x, time features, perturbation embedding] -> velocity in R^d (SiLU activations)."""

    def __init__(
        self,
        n_features: int,
        hidden_units: list[int] | tuple[int, ...],
        n_perturbations: int,
        embedding_dim: int = 64,
        time_frequencies: int = 8,
    ) -> None:
        super().__init__()
        if not hidden_units:
            raise ValueError("hidden_units must name at least one hidden layer")
        self.embedding = nn.Embedding(n_perturbations, embedding_dim)
        # frequencies 1, 2, 4, ... (times pi): smooth in t, yet able to bend near t = 0 and 1
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(time_frequencies, dtype=torch.float32), persistent=False
        )
        widths = [n_features + 1 + 2 * time_frequencies + embedding_dim, *hidden_units]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], n_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, perturbation: torch.Tensor) -> torch.Tensor:
        """x: (n, d); t: (n,) or (n, 1) in [0, 1]; perturbation: (n,) integer indices."""
        t = t.reshape(-1, 1).to(x.dtype)
        angles = t * self.frequencies
        features = [x, t, torch.sin(angles), torch.cos(angles), self.embedding(perturbation)]
        return self.net(torch.cat(features, dim=1))
