"""Wilcoxon rank-sum tests between models, as in the W1-OT paper's comparisons."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import ranksums

TEST_COLUMNS = ["experiment", "setting", "metric", "model_a", "model_b", "n_a", "n_b", "median_a", "median_b", "statistic", "p_value"]


def rank_sum_table(metrics: pd.DataFrame, metrics_to_test: tuple[str, ...] = ("mmd", "l2_means", "r2_means")) -> pd.DataFrame:
    """Two-sided rank-sum test for every pair of models, per experiment, setting and metric.

    The samples are a model's values over perturbations, holdouts, seeds and draws.
    """
    rows = []
    for (experiment, setting, metric), group in metrics.groupby(["experiment", "setting", "metric"], sort=True):
        if metric not in metrics_to_test:
            continue
        values = {m: g["value"].dropna().to_numpy() for m, g in group.groupby("model", sort=True)}
        for a, b in itertools.combinations(sorted(values), 2):
            x, y = values[a], values[b]
            if len(x) and len(y):
                result = ranksums(x, y)
                statistic, p = float(result.statistic), float(result.pvalue)
            else:
                statistic, p = float("nan"), float("nan")
            rows.append({
                "experiment": experiment, "setting": setting, "metric": metric, "model_a": a, "model_b": b,
                "n_a": len(x), "n_b": len(y), "median_a": float(np.median(x)) if len(x) else float("nan"),
                "median_b": float(np.median(y)) if len(y) else float("nan"), "statistic": statistic, "p_value": p,
            })
    return pd.DataFrame(rows, columns=TEST_COLUMNS)
