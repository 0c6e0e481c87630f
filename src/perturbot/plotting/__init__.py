"""Figures drawn from results files only (metrics table, predictions, cost tables), never from training.

One module per figure family; the palette and model names live in :mod:`.style`
alone, so a model keeps its colour in every figure.
"""

from perturbot.plotting.costs import clustergram, cost_summary
from perturbot.plotting.distributions import changing_features, marginal_features, marginals
from perturbot.plotting.embedding import joint_umap, response_field, vector_field
from perturbot.plotting.scores import figure_tests, iid_vs_holdout, iid_vs_holdout_pairs, mmd_boxplot, stars
from perturbot.plotting.style import (
    DISPLAY_NAMES,
    MODEL_COLORS,
    display_name,
    is_ot,
    model_color,
    model_order,
    save_figure,
)
from perturbot.plotting.timing import job_resources, training_runs, training_time
from perturbot.plotting.toy import toy_maps
from perturbot.plotting.w1bench import group_size as w1ot_group_size

__all__ = [
    "DISPLAY_NAMES",
    "MODEL_COLORS",
    "changing_features",
    "clustergram",
    "cost_summary",
    "display_name",
    "figure_tests",
    "iid_vs_holdout",
    "iid_vs_holdout_pairs",
    "is_ot",
    "job_resources",
    "joint_umap",
    "marginal_features",
    "marginals",
    "mmd_boxplot",
    "model_color",
    "model_order",
    "response_field",
    "save_figure",
    "stars",
    "toy_maps",
    "w1ot_group_size",
    "training_runs",
    "training_time",
    "vector_field",
]
