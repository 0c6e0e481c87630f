"""Figures of the metrics table: box plots with rank-sum stars, i.i.d. against held-out MMD."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator
from scipy.stats import ranksums

from perturbot.plotting.style import base_model, display_name, is_bound, is_ot, model_color, model_order

METRIC_LABELS = {
    "mmd": "MMD² (RBF)",
    "l2_means": "L2 distance of means",
    "r2_means": "R² of means",
    "r_means": "Pearson r of means",
    "gt_rmse": "RMSE to true response",
}
#: Metrics where higher is better (the rest are errors).
HIGHER_IS_BETTER = {"r2_means", "r_means"}
LOG_METRICS = {"mmd", "l2_means", "gt_rmse"}


def stars(p: float) -> str:
    """The usual significance marks: *** p < 0.001, ** p < 0.01, * p < 0.05, n.s. otherwise."""
    if not np.isfinite(p):
        return "n.s."
    for level, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*")):
        if p < level:
            return mark
    return "n.s."


def held_out_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The experiment's own rows, without the i.i.d. companion runs of held-out experiments."""
    companion = (metrics["setting"] == "iid") & (metrics["holdout"].astype(str) != "all")
    return metrics[~companion]


def rank_sum_tests(data: pd.DataFrame, kinds: dict[str, str] | None = None, higher_is_better: bool = False) -> pd.DataFrame:
    """Wilcoxon rank-sum test of every OT model against every baseline (observed excluded) on one metric.

    ``data``: rows of one metric with ``model`` and ``value``. Returns one row
    per (ot, baseline) pair with the two-sided p-value, its stars and the
    model with the better median (``better``), since the test has no direction.
    """
    labels = model_order(data["model"], kinds)
    ot = [m for m in labels if is_ot(m, kinds)]
    baselines = [m for m in labels if not is_ot(m, kinds) and base_model(m, kinds) != "observed"]
    rows = []
    for a in ot:
        x = data.loc[data["model"] == a, "value"].dropna().to_numpy()
        for b in baselines:
            y = data.loc[data["model"] == b, "value"].dropna().to_numpy()
            p = float(ranksums(x, y).pvalue) if len(x) and len(y) else float("nan")
            ot_wins = (np.median(x) > np.median(y)) == higher_is_better if len(x) and len(y) else False
            rows.append({"ot": a, "baseline": b, "p": p, "stars": stars(p), "better": a if ot_wins else b})
    return pd.DataFrame(rows, columns=["ot", "baseline", "p", "stars", "better"])


def _make_headroom(ax: plt.Axes, share: float) -> float:
    """Extend the y-axis upwards so the data fill the lowest ``1 - share``; return that fraction."""
    lo, hi = ax.get_ylim()
    log = ax.get_yscale() == "log"
    a, b = (np.log10(lo), np.log10(hi)) if log else (lo, hi)
    top = a + (b - a) / (1 - share)
    ax.set_ylim(lo, 10**top if log else top)
    return 1 - share


def _brackets(
    ax: plt.Axes, tests: pd.DataFrame, order: list[str], kinds: dict[str, str] | None = None, step: float = 0.07
) -> None:
    """Brackets above the data, one level per test (narrowest first), x in data and y in axes coordinates.

    Significant stars take the colour of the model with the better median.
    """
    pos = {m: i for i, m in enumerate(order)}
    trans = ax.get_xaxis_transform()
    tests = tests.assign(width=[abs(pos[a] - pos[b]) for a, b in zip(tests["ot"], tests["baseline"])])
    base = _make_headroom(ax, step * len(tests) + 0.02)
    for level, row in enumerate(tests.sort_values(["width", "ot"]).itertuples()):
        x0, x1 = sorted((pos[row.ot], pos[row.baseline]))
        y = base + 0.015 + step * level
        ax.plot([x0, x0, x1, x1], [y, y + 0.012, y + 0.012, y], transform=trans, color="0.3", lw=0.7)
        significant = row.stars != "n.s."
        ax.text(
            (x0 + x1) / 2, y + (0.008 if significant else 0.018), row.stars, transform=trans, ha="center", va="bottom",
            fontsize=9 if significant else 6.5, color=model_color(row.better, kinds) if significant else "0.45",
            fontweight="bold" if significant else "normal",
        )


def metric_boxplot(
    ax: plt.Axes, data: pd.DataFrame, metric: str, kinds: dict[str, str] | None = None, with_tests: bool = True
) -> pd.DataFrame:
    """One panel: a box per model, points per perturbation/holdout, bounds as dashed lines, tests on top."""
    order = model_order(data["model"], kinds)
    palette = {m: model_color(m, kinds) for m in order}
    sns.boxplot(
        data=data, x="model", y="value", hue="model", order=order, palette=palette, ax=ax,
        showfliers=False, legend=False, width=0.6, linewidth=0.8,
    )
    sns.stripplot(data=data, x="model", y="value", order=order, color="black", size=2.5, alpha=0.7, ax=ax, jitter=0.15)
    log = metric in LOG_METRICS and (data["value"] > 0).all()
    if log:
        ax.set_yscale("log")
    for bound in order:
        if is_bound(bound, kinds):
            ax.axhline(data.loc[data["model"] == bound, "value"].median(), color=model_color(bound, kinds), ls="--", lw=0.8, zorder=0)
    ax.set_xticks(range(len(order)), [display_name(m) for m in order], rotation=35, ha="right")
    ax.set_xlabel("")
    arrow = "↑" if metric in HIGHER_IS_BETTER else "↓"
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} {arrow}" + (" (log)" if log else ""))
    tests = rank_sum_tests(data, kinds, metric in HIGHER_IS_BETTER) if with_tests else pd.DataFrame()
    if not tests.empty:
        _brackets(ax, tests, order, kinds)
    return tests


def mmd_boxplot(
    metrics: pd.DataFrame,
    metrics_shown: tuple[str, ...] = ("mmd", "l2_means", "r2_means"),
    kinds: dict[str, str] | None = None,
    title: str | None = None,
) -> plt.Figure:
    """MMD, L2 and R² of means per model (the W1-OT paper's Fig. 3), one panel each.

    Points are perturbations (i.i.d.) or holdout × perturbation (o.o.s./o.o.d.).
    """
    metrics = held_out_rows(metrics)
    shown = [m for m in metrics_shown if (metrics["metric"] == m).any()]
    if "mmd" not in shown:
        raise ValueError("the metrics table has no 'mmd' rows")
    n_models = metrics["model"].nunique()
    n_tests = sum(is_ot(m, kinds) for m in set(metrics["model"])) * n_models
    fig, axes = plt.subplots(1, len(shown), figsize=(len(shown) * (0.5 * n_models + 1.4), 3.2 + 0.15 * n_tests), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        metric_boxplot(ax, metrics[metrics["metric"] == metric], metric, kinds)
    sns.despine(fig)
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return fig


def iid_vs_holdout_pairs(metrics: pd.DataFrame, metric: str = "mmd") -> pd.DataFrame:
    """Pair each held-out score with the i.i.d. companion's score of the same holdout, model, perturbation."""
    rows = metrics[metrics["metric"] == metric]
    companion = rows[(rows["setting"] == "iid") & (rows["holdout"].astype(str) != "all")]
    held = rows[rows["setting"] != "iid"]
    keys = ["holdout", "model", "perturbation"]
    pairs = held[keys + ["setting", "value"]].merge(
        companion[keys + ["value"]], on=keys, suffixes=("_holdout", "_iid")
    )
    if pairs.empty:
        raise ValueError(f"no {metric!r} rows pair an i.i.d. companion run (setting iid, holdout != 'all') with a held-out run")
    return pairs


def iid_vs_holdout(
    metrics: pd.DataFrame, metric: str = "mmd", kinds: dict[str, str] | None = None, title: str | None = None
) -> plt.Figure:
    """Per model, each holdout's score under the i.i.d. model and the held-out model, joined (CellOT Fig. 4c)."""
    pairs = iid_vs_holdout_pairs(metrics, metric)
    order = [m for m in model_order(pairs["model"], kinds) if base_model(m, kinds) != "observed"]
    setting = pairs["setting"].iloc[0]
    fig, axes = plt.subplots(1, len(order), figsize=(1.6 * len(order) + 0.8, 3.2), sharey=True, squeeze=False)
    log = metric in LOG_METRICS and (pairs[["value_iid", "value_holdout"]] > 0).all().all()
    for ax, model in zip(axes[0], order):
        sub = pairs[pairs["model"] == model]
        color = model_color(model, kinds)
        for row in sub.itertuples():
            ax.plot([0, 1], [row.value_iid, row.value_holdout], color=color, alpha=0.6, lw=0.9, marker="o", ms=3.5)
        ax.set_xticks([0, 1], ["i.i.d.", f"held out\n({setting})"])
        ax.set_xlim(-0.35, 1.35)
        ax.set_title(display_name(model), color=color)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_locator(NullLocator())
    axes[0][0].set_ylabel(f"{METRIC_LABELS.get(metric, metric)}" + (" (log)" if log else ""))
    sns.despine(fig)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
