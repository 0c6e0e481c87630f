"""Resumable training: checkpoints of weights, optimiser and random-number states.

A checkpoint records the fingerprint of the run that wrote it, so a run with other
data or settings starts afresh instead of resuming someone else's weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from perturbot.atomic import atomic_path, remove_stale_temporaries
from perturbot.fingerprint import differences, run_fingerprint

log = logging.getLogger(__name__)


class Checkpoint:
    """Resumable training state in one file, written atomically, resumed only by the run that wrote it.

    Holds tensors and plain Python values only, so ``torch.load(weights_only=True)``
    can read it. Lives outside a rule's declared outputs (Snakemake deletes
    incomplete outputs), e.g. under ``results/.checkpoints/``. Given the ``model``
    and its training arrays (``data``), it stores their fingerprint
    (:mod:`perturbot.fingerprint`) and :meth:`load` returns a saved state only
    when that fingerprint is the current one; otherwise it logs a warning naming
    what differs and the run starts afresh.
    """

    def __init__(
        self, path: str | Path | None, every: int = 1000, *, model: Any = None, data: Mapping[str, Any] | None = None
    ) -> None:
        self.path = Path(path) if path else None
        self.every = int(every)
        self.fingerprint: dict[str, Any] | None = None
        if self.path is not None and model is not None:  # hashing the data costs time only where it is used
            self.fingerprint = run_fingerprint(model, data or {})

    def due(self, iteration: int) -> bool:
        return self.path is not None and self.every > 0 and iteration % self.every == 0

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self.fingerprint is not None:
            state = {**state, "fingerprint": self.fingerprint}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (no checkpoint, an unreadable one, or one of another run: start afresh)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 (torch raises pickle, zip and runtime errors alike)
            reason = (str(err).strip().splitlines() or [""])[0]
            log.warning("checkpoint %s cannot be read (%s: %s); starting afresh", self.path, type(err).__name__, reason)
            return None
        if self.fingerprint is not None:
            changed = differences(state.get("fingerprint") if isinstance(state, dict) else None, self.fingerprint)
            if changed:
                log.warning("checkpoint %s belongs to another run (%s); starting afresh", self.path, "; ".join(changed))
                return None
        log.info("resuming from checkpoint %s", self.path)
        return state

    def clear(self) -> None:
        """Remove the checkpoint, and any temporaries a killed run left beside it."""
        if self.path is None:
            return
        if self.path.exists():
            self.path.unlink()
        remove_stale_temporaries(self.path)


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
