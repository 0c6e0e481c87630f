"""Tests between models on the metrics table, paired by perturbation, corrected for multiplicity.

Two models are scored on the same perturbations (and holdouts), so the honest
comparison is paired: one value per perturbation and holdout for each model
(the mean over seeds, draws and subsample sizes, which are repeated
measurements of the same unit, not independent samples), and a Wilcoxon
signed-rank test on the differences, exact for small n. The unpaired
Mann–Whitney rank-sum test on the same per-unit means is kept as an option (the
W1-OT paper's comparison). p-values are adjusted by Benjamini–Hochberg across
the pairs of one experiment, setting and metric. The box plot's stars read the
adjusted p-values from this table.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu, wilcoxon
from statsmodels.stats.multitest import multipletests

from perturbot.metric_specs import HIGHER_IS_BETTER, TESTED_METRICS  # noqa: F401 (re-exported)

#: Paired Wilcoxon signed-rank test on per-unit means (the default).
SIGNED_RANK = "signed_rank"
#: Unpaired Mann–Whitney rank-sum test on per-unit means (exact for small samples).
RANK_SUM = "rank_sum"
TESTS = (SIGNED_RANK, RANK_SUM)
#: Significance level at which a test counts as able to detect a difference.
ALPHA = 0.05
# Metrics where higher is better, and those tested by default (the papers' MMD and its unbiased form, the
# energy distance, which keeps its sight in hundreds of features where the MMD's fixed bandwidths do not,
# and the means'): declared with every other fact about a metric in perturbot.metric_specs.
#: The rows that identify one unit of comparison (a perturbation of a holdout).
UNIT = ["holdout", "perturbation"]
GROUP = ["experiment", "setting", "metric"]

TEST_COLUMNS = [
    "experiment", "setting", "metric", "test", "model_a", "model_b", "n", "n_a", "n_b",
    "median_a", "median_b", "median_difference", "share_a_better", "statistic",
    "p_value", "p_adjusted", "min_p", "testable",
]


def check_values(metrics: pd.DataFrame) -> None:
    """Refuse metric values that are NaN or infinite, naming them.

    Dropping them would compare a model on the perturbations it did not fail
    on, so a failure would make it look better; a value a metric cannot give
    (a degenerate prediction) has to be looked at, not averaged away.
    """
    values = pd.to_numeric(metrics["value"], errors="coerce").to_numpy(float)
    bad = metrics[~np.isfinite(values)]
    if bad.empty:
        return
    shown = "; ".join(
        f"model {r.model!r}, perturbation {r.perturbation!r}, holdout {r.holdout!r}, seed {r.seed}, "
        f"metric {r.metric!r}: {r.value}"
        for r in bad.head(5).itertuples()
    )
    raise ValueError(
        f"{len(bad)} of {len(metrics)} metric values are NaN or infinite ({shown}"
        f"{'; ...' if len(bad) > 5 else ''}): a metric undefined for a prediction would drop out of the "
        f"comparison and flatter its model; look at that run's predictions instead of testing without them"
    )


def unit_means(metrics: pd.DataFrame) -> pd.DataFrame:
    """One value per (experiment, setting, metric, model, holdout, perturbation): the mean over
    seeds, draws and subsample sizes, with their standard deviation and count (``sd``, ``n_reps``).

    A NaN or infinite value is an error (:func:`check_values`), never left out.
    """
    check_values(metrics)
    keys = GROUP + ["model"] + UNIT
    unnamed = metrics[keys].isna().any(axis=1)
    if unnamed.any():  # groupby would leave them out without a word
        columns = [k for k in keys if metrics[k].isna().any()]
        raise ValueError(
            f"{int(unnamed.sum())} metric rows have no {', '.join(columns)}: a name such as NA, None or nan "
            f"read as missing? Read the table with perturbot.tables.read_metrics"
        )
    frame = metrics.assign(holdout=lambda d: d["holdout"].astype(str))
    grouped = frame.groupby(keys, sort=True)["value"]
    out = grouped.agg(["mean", "std", "size"]).reset_index()
    return out.rename(columns={"mean": "value", "std": "sd", "size": "n_reps"})


def min_p_signed_rank(n: int) -> float:
    """Smallest two-sided exact signed-rank p-value with ``n`` non-zero differences: 2 / 2^n."""
    return 1.0 if n < 1 else min(1.0, 2.0 ** (1 - n))


def min_p_rank_sum(n_a: int, n_b: int) -> float:
    """Smallest two-sided exact rank-sum p-value of two samples: 2 / C(n_a + n_b, n_a)."""
    return 1.0 if n_a < 1 or n_b < 1 else min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def signed_rank(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired samples (exact for small n without ties)."""
    d = a - b
    if len(d) == 0:
        return float("nan"), float("nan")
    if np.all(d == 0):
        return 0.0, 1.0
    # the differences themselves, as scipy advises: x and y separately can rank round-off apart
    result = wilcoxon(d, alternative="two-sided", method="auto", zero_method="wilcox")
    return float(result.statistic), float(result.pvalue)


def rank_sum(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann–Whitney U test (exact p-values for small samples without ties)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan")
    result = mannwhitneyu(a, b, alternative="two-sided", method="auto")
    return float(result.statistic), float(result.pvalue)


def compare(
    a: pd.Series, b: pd.Series, test: str = SIGNED_RANK, higher_is_better: bool = False
) -> dict[str, float | int | bool]:
    """Compare two models' per-unit values (Series indexed by unit).

    The effect is the median of ``a - b`` over the units both have and the
    share of those units on which ``a`` is better.
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    a, b = a.dropna(), b.dropna()
    shared = a.index.intersection(b.index)
    pa, pb = a.loc[shared].to_numpy(float), b.loc[shared].to_numpy(float)
    diff = pa - pb
    better = diff > 0 if higher_is_better else diff < 0
    if test == SIGNED_RANK:
        statistic, p = signed_rank(pa, pb)
        min_p = min_p_signed_rank(int(np.count_nonzero(diff)))
    else:
        statistic, p = rank_sum(a.to_numpy(float), b.to_numpy(float))
        min_p = min_p_rank_sum(len(a), len(b))
    return {
        "n": len(shared), "n_a": len(a), "n_b": len(b),
        "median_a": float(a.median()) if len(a) else float("nan"),
        "median_b": float(b.median()) if len(b) else float("nan"),
        "median_difference": float(np.median(diff)) if len(diff) else float("nan"),
        "share_a_better": float(better.mean()) if len(diff) else float("nan"),
        "statistic": statistic, "p_value": p, "min_p": min_p, "testable": bool(min_p < ALPHA),
    }


def adjust(p_values: pd.Series) -> pd.Series:
    """Benjamini–Hochberg adjusted p-values; NaN (untested pairs) stay NaN and do not count."""
    out = pd.Series(np.nan, index=p_values.index)
    finite = p_values.notna()
    if finite.any():
        out[finite] = multipletests(p_values[finite].to_numpy(float), method="fdr_bh")[1]
    return out


def model_tests(
    metrics: pd.DataFrame,
    metrics_to_test: tuple[str, ...] = TESTED_METRICS,
    test: str = SIGNED_RANK,
) -> pd.DataFrame:
    """Every pair of models per experiment, setting and metric; BH-adjusted within each such group.

    With fewer than two models there is no pair: the table is empty, with its columns.
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    means = unit_means(metrics[metrics["metric"].isin(metrics_to_test)])
    frames = []
    for (experiment, setting, metric), group in means.groupby(GROUP, sort=True):
        values = {m: g.set_index(UNIT)["value"] for m, g in group.groupby("model", sort=True)}
        rows = [
            {"experiment": experiment, "setting": setting, "metric": metric, "test": test, "model_a": a, "model_b": b,
             **compare(values[a], values[b], test, metric in HIGHER_IS_BETTER)}
            for a, b in itertools.combinations(sorted(values), 2)
        ]
        if not rows:  # one model: nothing to compare it with
            continue
        frame = pd.DataFrame(rows)
        frame["p_adjusted"] = adjust(frame["p_value"]).to_numpy()
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=TEST_COLUMNS)
    return pd.concat(frames, ignore_index=True)[TEST_COLUMNS]
