"""scGen baseline (``scgen``): shift every cell by the mean perturbation effect.

In whatever space it is given it adds the difference of means, perturbed minus
control, learned on the training cells. The workflow always runs it on an
autoencoder's latent codes (:class:`perturbot.latent.LatentModel`), which is
scGen's latent vector arithmetic; on raw features it is the mean-shift baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbot.models.base import PerturbationModel, fit_inputs

#: Perturbation name used by ``fit(source, target)``.


class ScGen(PerturbationModel):
    """Mean-shift model; closed form, so ``seed``, ``device`` and ``checkpoint`` are unused."""
    name = "scgen"
    role = "baseline"
    default_space = "latent_only"
    cheap_fit = True

    name = "scgen"
    multi_perturbation = True
    single_perturbation = "perturbed"  # what fit() calls its one perturbation

    def __init__(self, seed: int = 0, device: str = "cpu") -> None:
        self.seed = seed
        self.device = device

    def fit_many(
        self, source: Any, targets: dict[str, Any], *, checkpoint: str | Path | None = None
    ) -> "ScGen":
        """Store ``mean(target) - mean(source)`` per perturbation (means in float64)."""
        self._validate_params()
        source, targets = fit_inputs(source, targets)
        control_mean = source.mean(axis=0, dtype=np.float64)
        shifts = [target.mean(axis=0, dtype=np.float64) - control_mean for target in targets.values()]
        self.n_features_in_ = source.shape[1]
        self.perturbations_ = [str(p) for p in targets]
        self.shifts_ = np.stack(shifts).astype(np.float32)
        return self

    def shift(self, perturbation: str | None = None) -> np.ndarray:
        """The learned mean effect (features,) of ``perturbation``."""
        return self.shifts_[self._perturbation_index(perturbation)]

    def transport(self, x: Any, perturbation: str | None = None) -> np.ndarray:
        x = self._check_input(x)
        return x + self.shift(perturbation)

    def _get_state(self) -> dict[str, Any]:
        return {**super()._get_state(), "perturbations_": list(self.perturbations_)}

    def _get_tensors(self) -> dict[str, torch.Tensor]:
        return {"shifts": torch.from_numpy(self.shifts_)}

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.shifts_ = tensors["shifts"].numpy()
