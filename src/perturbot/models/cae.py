"""Conditional autoencoder baseline (``cae``), as compared against in the CellOT paper.

One network for all conditions: a one-hot label (control or a perturbation) is
appended to the encoder's and the decoder's inputs. A prediction encodes control
cells with the control label and decodes them with the perturbation's label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from perturbot.models.autoencoder import ReconstructionModel
from perturbot.models.base import fit_inputs

#: Condition name of the source (control) cells; label 0 of the one-hot code.
CONTROL = "control"
#: Perturbation name used by ``fit(source, target)``.

#: The CellOT paper's cAE for 4i features (``ConditionalAutoencoder(**CAE_FEATURES_PRESET)``).
CAE_FEATURES_PRESET: dict[str, Any] = {
    "hidden_units": (32, 32),
    "latent_dim": 8,
    "dropout": 0.0,
    "lr": 1e-4,
    "weight_decay": 0.0,
    "lr_step": 0,
    "n_iters": 250_000,
    "eval_every": 500,
}


class ConditionalAutoencoder(ReconstructionModel):
    """cAE: reconstructs every condition's cells, trained once on all perturbations.

    Batches are class-balanced over control and the perturbations; the kept
    weights are those with the lowest validation reconstruction loss.
    """
    role = "baseline"
    is_neural = True
    joint_only = True

    name = "cae"
    multi_perturbation = True
    single_perturbation = "perturbed"  # what fit() calls its one perturbation

    #: Defaults by data modality (the papers' settings), applied by the workflow below user overrides.
    PRESETS: dict[str, dict[str, Any]] = {"features": CAE_FEATURES_PRESET}

    def fit_many(
        self, source: Any, targets: dict[str, Any], *, checkpoint: str | Path | None = None
    ) -> "ConditionalAutoencoder":
        """Train on control (label 0) and each perturbation (labels 1..P, in dict order)."""
        if CONTROL in targets:
            raise ValueError(f"{CONTROL!r} is reserved for the source cells; rename that perturbation")
        source, targets = fit_inputs(source, targets)
        blocks = [source, *targets.values()]
        labels = np.concatenate([np.full(len(b), i, dtype=np.int64) for i, b in enumerate(blocks)])
        self.perturbations_ = [str(p) for p in targets]
        self._train(np.concatenate(blocks), labels, n_conditions=len(blocks), checkpoint=checkpoint)
        return self

    def _label(self, condition: str) -> int:
        if condition == CONTROL:
            return 0
        if condition not in self.perturbations_:
            raise KeyError(
                f"unknown condition {condition!r}; known: {', '.join([CONTROL, *self.perturbations_])}"
            )
        return 1 + self.perturbations_.index(condition)

    def encode(self, x: Any, condition: str = CONTROL) -> np.ndarray:
        """Latent codes of cells observed under ``condition``."""
        x = self._check_input(x)
        return self._apply(self.net_.encode, x, self._label(condition))

    def decode(self, z: Any, condition: str = CONTROL) -> np.ndarray:
        """Cells under ``condition`` from latent codes."""
        z = self._check_latent(z)
        return self._apply(self.net_.decode, z, self._label(condition))

    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        """Encode as control, decode as ``perturbation``."""
        target = 1 + self._perturbation_index(perturbation)
        z = self._apply(self.net_.encode, self._check_input(x), 0)
        return self._apply(self.net_.decode, z, target)

    def _get_state(self) -> dict[str, Any]:
        return {**super()._get_state(), "perturbations_": list(self.perturbations_)}
