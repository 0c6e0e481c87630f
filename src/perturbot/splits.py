"""Train/test splits for the three settings, seeded and checked.

* ``iid``: each condition is split at random (``test_fraction`` to test).
* ``oos`` / ``ood``: cells whose ``holdout_key`` equals the holdout are never
  trained on; the holdout's control cells are the models' input and its
  perturbed cells the evaluation target.

The ``observed`` lower bound needs real perturbed cells other than the target:
``reference`` marks them (i.i.d.: training cells, as many as the target;
held-out settings: one half of the holdout's perturbed cells, the other half
being the target of every model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perturbot.errors import DataError


def _too_few(what: str, n: int, min_cells: int) -> DataError:
    return DataError(f"{what} has {n} cell(s), fewer than min_cells={min_cells}")


def assign_splits(
    obs: pd.DataFrame,
    *,
    condition_key: str,
    control: str,
    perturbations: list[str],
    setting: str = "iid",
    holdout_key: str | None = None,
    holdout: str | None = None,
    test_fraction: float = 0.2,
    min_cells: int = 10,
    seed: int = 0,
    companion: bool = False,
) -> pd.DataFrame:
    """Return a frame indexed like ``obs`` with ``split`` (train/test) and ``reference`` (bool).

    ``companion`` (held-out settings): the i.i.d. companion of the holdout. Half of
    the holdout's control cells and the ``reference`` half of its perturbed cells
    join the training split; the other halves are the input and the target, the
    same target cells as the held-out run's.
    """
    rng = np.random.default_rng(seed)
    conditions = obs[condition_key].astype(str).to_numpy()
    split = np.full(len(obs), "train", dtype=object)
    reference = np.zeros(len(obs), dtype=bool)

    if setting == "iid":
        for condition in [control, *perturbations]:
            idx = rng.permutation(np.flatnonzero(conditions == condition))
            n_test = int(round(len(idx) * test_fraction))
            label = "control" if condition == control else f"perturbation {condition!r}"
            for part, n in (("test", n_test), ("train", len(idx) - n_test)):
                if n < min_cells:
                    raise _too_few(f"{label} ({len(idx)} cells, test_fraction={test_fraction}): its {part} split", n, min_cells)
            split[idx[:n_test]] = "test"
            if condition != control:
                train_idx = idx[n_test:]
                reference[rng.choice(train_idx, size=min(n_test, len(train_idx)), replace=False)] = True
    elif setting in ("oos", "ood"):
        if holdout_key not in obs:
            raise DataError(f"holdout_key {holdout_key!r} is not an obs column; columns: {', '.join(obs.columns)}")
        values = obs[holdout_key].astype(str).to_numpy()
        if holdout not in set(values):
            raise DataError(
                f"holdout {holdout!r} does not occur in obs[{holdout_key!r}]; values: {', '.join(sorted(set(values))[:20])}"
            )
        held = values == holdout
        split[held] = "test"
        for condition in [control, *perturbations]:
            label = "control" if condition == control else f"perturbation {condition!r}"
            train_n = int(((conditions == condition) & ~held).sum())
            if train_n < min_cells:
                raise _too_few(f"{label} outside holdout {holdout!r}", train_n, min_cells)
            idx = rng.permutation(np.flatnonzero((conditions == condition) & held))
            if condition == control:
                if len(idx) < min_cells:
                    raise _too_few(f"control in holdout {holdout!r}", len(idx), min_cells)
                continue
            half = len(idx) // 2
            if half < min_cells:
                raise _too_few(f"each half of {label} in holdout {holdout!r}", half, min_cells)
            reference[idx[:half]] = True
        if companion:
            held_control = rng.permutation(np.flatnonzero((conditions == control) & held))
            split[held_control[: len(held_control) // 2]] = "train"
            split[reference] = "train"
    else:
        raise DataError(f"unknown setting {setting!r}; use iid, oos or ood")
    return pd.DataFrame({"split": pd.Categorical(split, categories=["train", "test"]), "reference": reference}, index=obs.index)


def subsample_per_condition(obs: pd.DataFrame, condition_key: str, max_cells: int | None, seed: int) -> np.ndarray:
    """Boolean mask keeping at most ``max_cells`` cells of each condition (all if None)."""
    keep = np.ones(len(obs), dtype=bool)
    if max_cells is None:
        return keep
    rng = np.random.default_rng(seed)
    conditions = obs[condition_key].astype(str).to_numpy()
    for condition in pd.unique(conditions):
        idx = np.flatnonzero(conditions == condition)
        if len(idx) > max_cells:
            keep[rng.choice(idx, size=len(idx) - max_cells, replace=False)] = False
    return keep
