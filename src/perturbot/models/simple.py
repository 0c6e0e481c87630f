"""The two bounds every benchmark needs: identity (no effect) and observed (real cells)."""

from __future__ import annotations

import numpy as np

from perturbot.models.base import PerturbationModel, as_float_array


class Identity(PerturbationModel):
    """Predicts no effect: the control cells are returned unchanged (upper bound on error)."""
    name = "identity"
    role = "bound"
    copies_input = True
    cheap_fit = True  # learns nothing (Observed: stores its cells)

    def __init__(self, seed: int = 0, device: str = "cpu") -> None:
        self.seed = seed
        self.device = device

    def fit(self, source, target, **kwargs) -> "Identity":
        self._validate_params()
        self.n_features_in_ = as_float_array(source, "source").shape[1]
        return self

    def transport(self, x, perturbation: str | None = None) -> np.ndarray:
        return self._check_input(x).copy()


class Observed(Identity):
    """Lower bound: real perturbed cells, not the evaluation target, stand in as the prediction.

    It has no per-cell correspondence with the input; ``transport`` returns the
    stored reference cells (``target`` of ``fit``), each at most once: a seeded
    subsample when the input has fewer cells, all of them (fewer rows than the
    input) when it has more. Repeated cells would inflate the within-sample term
    of the biased MMD and put the "lower bound" above a perfect model.
    """
    name = "observed"
    copies_input = False
    needs_reference_cells = True

    def fit(self, source, target, **kwargs) -> "Observed":
        self._validate_params()
        as_float_array(source, "source")
        target = as_float_array(target, "target")
        self.n_features_in_ = target.shape[1]
        self.reference_ = target
        return self

    def transport(self, x, perturbation: str | None = None) -> np.ndarray:
        x = self._check_input(x)
        n = len(x)
        if n >= len(self.reference_):
            return self.reference_.copy()
        rng = np.random.default_rng(self.seed)
        return self.reference_[rng.choice(len(self.reference_), size=n, replace=False)]

    def _get_tensors(self):
        import torch

        return {"reference": torch.from_numpy(self.reference_)}

    def _set_tensors(self, tensors):
        self.reference_ = tensors["reference"].numpy()
