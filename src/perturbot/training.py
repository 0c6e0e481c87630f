"""Conventions shared by every neural model's training loop.

Device choice, seeding, the validation subset carved from the training cells,
resumable checkpoints (weights, optimiser and random-number states) and the
loss/validation history. Solvers (``perturbot.models.*``) call these helpers so
that every model trains, logs and resumes the same way.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

# CellOT's validation bandwidths: short, so that validation stays cheap.
VALIDATION_GAMMAS = (2.0, 1.0, 0.5, 0.1, 0.01, 0.005)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if present else CPU; ``cuda`` falls back to CPU with a warning.

    Respects ``CUDA_VISIBLE_DEVICES`` as set by Snakemake or SLURM (torch reads it).
    """
    device = (device or "auto").lower()
    if device not in {"auto", "cpu", "cuda"} and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if device == "auto" else device)
    if device.startswith("cuda"):
        warnings.warn(
            f"device {device!r} was requested but no CUDA GPU is visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
            "falling back to CPU",
            RuntimeWarning,
            stacklevel=2,
        )
    return torch.device("cpu")


def set_threads(n: int | None) -> None:
    """Pin torch's intra-op threads (two jobs with default threads on 2 cores run 30-100x slower)."""
    if n:
        torch.set_num_threads(int(n))


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG (used by layer initialisation)."""
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (2**32))


def carve_validation(
    n_cells: int, max_cells: int, seed: int, fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Split cell indices into (train, validation), seeded.

    Takes up to ``max_cells`` cells but never more than ``fraction`` of them, so
    small populations keep most cells for training. Returns empty validation
    when ``max_cells`` is 0 or fewer than 10 cells exist.
    """
    rng = np.random.default_rng(seed)
    n_val = min(int(max_cells), int(n_cells * fraction)) if n_cells >= 10 else 0
    perm = rng.permutation(n_cells)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def mmd_rbf_torch(
    x: torch.Tensor, y: torch.Tensor, gammas: tuple[float, ...] = VALIDATION_GAMMAS
) -> torch.Tensor:
    """Biased squared MMD averaged over RBF bandwidths (torch, for validation during training).

    Works on (n, d) tensors or batched (p, n, d) tensors, returning a scalar or (p,).
    """
    xx = torch.cdist(x, x).pow(2)
    yy = torch.cdist(y, y).pow(2)
    xy = torch.cdist(x, y).pow(2)
    total = 0.0
    for g in gammas:
        total = total + (
            torch.exp(-g * xx).mean((-2, -1))
            + torch.exp(-g * yy).mean((-2, -1))
            - 2 * torch.exp(-g * xy).mean((-2, -1))
        )
    return total / len(gammas)


@dataclass
class History:
    """Loss and validation metric per logged step; written to ``history.csv``."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def log(self, **values: Any) -> None:
        self.rows.append({k: (float(v) if torch.is_tensor(v) else v) for k, v in values.items()})

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


class Checkpoint:
    """Resumable training state in one file, written atomically.

    Holds tensors and plain Python values only, so ``torch.load(weights_only=True)``
    can read it. Lives outside a rule's declared outputs (Snakemake deletes
    incomplete outputs), e.g. under ``results/.checkpoints/``.
    """

    def __init__(self, path: str | Path | None, every: int = 1000) -> None:
        self.path = Path(path) if path else None
        self.every = int(every)

    def due(self, iteration: int) -> bool:
        return self.path is not None and self.every > 0 and iteration % self.every == 0

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.exists():
            return None
        log.info("resuming from checkpoint %s", self.path)
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def clear(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()


def generator_state(gen: torch.Generator) -> torch.Tensor:
    return gen.get_state()


def restore_generator(gen: torch.Generator, state: torch.Tensor) -> None:
    gen.set_state(state.to("cpu") if gen.device.type == "cpu" else state)


def optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move an optimiser's state tensors (restored on CPU) to ``device``."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and key != "step":
                state[key] = value.to(device)
