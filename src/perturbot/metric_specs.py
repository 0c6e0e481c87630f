"""What the project knows about each metric, in one place: its label, its direction, its axis, and
whether models are compared on it by default.

Standard library only: :mod:`perturbot.statistics` and :mod:`perturbot.plotting` read it without the
numerical code of :mod:`perturbot.metrics`, which computes the values. Adding a metric: its function in
``metrics.py``, its line here (``docs/development.md``, "Add a metric").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric's facts (every field but ``label`` says what the default is for most metrics)."""

    label: str  #: the name figures give it
    higher_is_better: bool = False  #: a distance is lower-is-better; a correlation higher
    tested: bool = False  #: compared between models in ``statistics.csv`` by default
    log_scale: bool = False  #: drawn on a log axis


METRICS: dict[str, Metric] = {
    "mmd": Metric("MMD² (RBF)", tested=True, log_scale=True),
    "mmd_unbiased": Metric("MMD² (RBF, unbiased)", tested=True),
    "edistance": Metric("Energy distance", tested=True, log_scale=True),
    "l2_means": Metric("L2 distance of means", tested=True, log_scale=True),
    "r2_means": Metric("R² of means", higher_is_better=True, tested=True),
    "r_means": Metric("Pearson r of means", higher_is_better=True),
    "gt_rmse": Metric("RMSE to true response", log_scale=True),
    "logfc_mae": Metric("MAE of pseudo-perturbed log fold changes"),
}

#: Metrics where higher is better (correlations), and those tested by default, in table order.
HIGHER_IS_BETTER = frozenset(name for name, metric in METRICS.items() if metric.higher_is_better)
TESTED_METRICS = tuple(name for name, metric in METRICS.items() if metric.tested)


def label(name: str) -> str:
    """The figure label of a metric (its own name if it is not declared)."""
    metric = METRICS.get(name)
    return metric.label if metric else name
