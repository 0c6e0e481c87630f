"""MLP autoencoder, optionally conditioned on a one-hot label (the cAE baseline).

Encoder: Linear -> ReLU (-> dropout) per hidden layer, then a linear map to the
latent code; the decoder mirrors the hidden layers in reverse order. With
``n_conditions > 0`` a one-hot condition is appended to the inputs of both the
encoder and the decoder, which is the conditional autoencoder of the CellOT paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SeededDropout(nn.Module):
    """Dropout that draws its mask from an explicit generator.

    ``nn.Dropout`` uses torch's global RNG, which a resumed training run cannot
    restore without touching global state; drawing from the trainer's generator
    makes a resumed run identical to one trained straight through.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.p
        return x * keep / (1.0 - self.p)


def _stack(sizes: Sequence[int], dropout: float) -> list[nn.Module]:
    """Linear -> ReLU (-> dropout) for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        if dropout > 0:
            layers.append(SeededDropout(dropout))
    return layers


class MLPAutoencoder(nn.Module):
    """Encoder/decoder pair; ``condition`` is a one-hot (n, n_conditions) tensor or None."""

    def __init__(
        self,
        n_features: int,
        hidden_units: Sequence[int],
        latent_dim: int,
        dropout: float = 0.0,
        n_conditions: int = 0,
    ) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden_units]
        self.n_conditions = int(n_conditions)
        enc_sizes = [n_features + self.n_conditions, *hidden]
        dec_sizes = [latent_dim + self.n_conditions, *reversed(hidden)]
        self.encoder = nn.Sequential(*_stack(enc_sizes, dropout), nn.Linear(enc_sizes[-1], latent_dim))
        self.decoder = nn.Sequential(*_stack(dec_sizes, dropout), nn.Linear(dec_sizes[-1], n_features))

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Route every dropout layer's randomness through ``generator``."""
        for module in self.modules():
            if isinstance(module, SeededDropout):
                module.generator = generator

    def _with(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        if self.n_conditions == 0:
            if condition is not None:
                raise ValueError("this autoencoder is not conditional")
            return x
        if condition is None or condition.shape != (x.shape[0], self.n_conditions):
            raise ValueError(f"a one-hot condition of shape ({x.shape[0]}, {self.n_conditions}) is required")
        return torch.cat([x, condition], dim=1)

    def encode(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self._with(x, condition))

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self._with(z, condition))

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, condition), condition)
