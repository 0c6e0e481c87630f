"""Figures of the metrics table: box plots with the statistics table's stars, i.i.d. against held-out scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator

from perturbot.plotting.style import Kinds, display_name, is_bound, is_ot, model_color, model_order, tag
from perturbot.metric_specs import HIGHER_IS_BETTER, METRICS
from perturbot.statistics import unit_means

METRIC_LABELS = {name: metric.label for name, metric in METRICS.items()}
LOG_METRICS = {name for name, metric in METRICS.items() if metric.log_scale}
#: What a panel says instead of stars when no test of it can reach p < 0.05.
TOO_FEW = "n too small for a test"
FIGURE_TEST_COLUMNS = ["ot", "baseline", "p", "stars", "better", "testable"]


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


def figure_tests(
    statistics: pd.DataFrame, metric: str, models: list[str], kinds: Kinds | None = None,
    setting: str | None = None,
) -> pd.DataFrame:
    """The rows of ``statistics.csv`` (:func:`perturbot.statistics.model_tests`) the box plot draws.

    Every OT model against every baseline among ``models`` (observed excluded),
    with stars from the Benjamini–Hochberg adjusted p-value and the model that
    is better on the median paired difference. Nothing is recomputed here.
    """
    rows = statistics[statistics["metric"] == metric]
    if setting is not None:
        rows = rows[rows["setting"] == setting]
    labels = model_order(models, kinds)
    ot = [m for m in labels if is_ot(m, kinds)]
    baselines = [m for m in labels if not is_ot(m, kinds) and not tag(m, kinds, "needs_reference_cells")]
    higher = metric in HIGHER_IS_BETTER
    out = []
    for a in ot:
        for b in baselines:
            match = rows[((rows["model_a"] == a) & (rows["model_b"] == b)) | ((rows["model_a"] == b) & (rows["model_b"] == a))]
            if match.empty:
                continue
            row = match.iloc[0]
            diff = float(row["median_difference"]) * (1 if row["model_a"] == a else -1)  # ot - baseline
            share = float(row["share_a_better"]) if row["model_a"] == a else 1 - float(row["share_a_better"])
            ot_better = (diff > 0) == higher if diff != 0 else share > 0.5
            p = float(row["p_adjusted"])
            out.append({"ot": a, "baseline": b, "p": p, "stars": stars(p), "better": a if ot_better else b,
                        "testable": bool(row["testable"])})
    return pd.DataFrame(out, columns=FIGURE_TEST_COLUMNS)


def _make_headroom(ax: plt.Axes, share: float) -> float:
    """Extend the y-axis upwards so the data fill the lowest ``1 - share``; return that fraction."""
    lo, hi = ax.get_ylim()
    log = ax.get_yscale() == "log"
    a, b = (np.log10(lo), np.log10(hi)) if log else (lo, hi)
    top = a + (b - a) / (1 - share)
    ax.set_ylim(lo, 10**top if log else top)
    return 1 - share


def _brackets(
    ax: plt.Axes, tests: pd.DataFrame, order: list[str], kinds: Kinds | None = None, step: float = 0.07
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


def _unit_points(ax: plt.Axes, means: pd.DataFrame, order: list[str], jitter: float = 0.15) -> None:
    """One point per perturbation (and holdout): the mean over seeds and draws, with ±1 s.d. bars
    where there are replicates, so the figure shows seed/draw spread, not only spread across perturbations."""
    for i, model in enumerate(order):
        sub = means[means["model"] == model]
        if sub.empty:
            continue
        offsets = np.linspace(-jitter, jitter, len(sub)) if len(sub) > 1 else np.zeros(1)
        sd = sub["sd"].fillna(0.0).to_numpy()
        has_bars = bool((sub["n_reps"] > 1).any())
        ax.errorbar(
            i + offsets, sub["value"].to_numpy(), yerr=sd if has_bars else None, fmt="o", ms=2.5, color="black",
            alpha=0.7, elinewidth=0.7, capsize=1.5 if has_bars else 0, zorder=3,
        )


def metric_boxplot(
    ax: plt.Axes,
    data: pd.DataFrame,
    metric: str,
    kinds: Kinds | None = None,
    statistics: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One panel: a box per model over per-perturbation means (points, ±1 s.d. over seeds/draws),
    bounds as dashed lines, and the statistics table's tests on top."""
    means = unit_means(data)
    order = model_order(means["model"], kinds)
    palette = {m: model_color(m, kinds) for m in order}
    sns.boxplot(
        data=means, x="model", y="value", hue="model", order=order, palette=palette, ax=ax,
        showfliers=False, legend=False, width=0.6, linewidth=0.8,
    )
    _unit_points(ax, means, order)
    log = metric in LOG_METRICS and (means["value"] > 0).all()
    if log:
        ax.set_yscale("log")
    for bound in order:
        if is_bound(bound, kinds):
            ax.axhline(means.loc[means["model"] == bound, "value"].median(), color=model_color(bound, kinds), ls="--", lw=0.8, zorder=0)
    ax.set_xticks(range(len(order)), [display_name(m) for m in order], rotation=35, ha="right")
    ax.set_xlabel("")
    arrow = "↑" if metric in HIGHER_IS_BETTER else "↓"
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} {arrow}" + (" (log)" if log else ""))
    if statistics is None:
        return pd.DataFrame(columns=FIGURE_TEST_COLUMNS)
    settings = data["setting"].unique()
    tests = figure_tests(statistics, metric, order, kinds, settings[0] if len(settings) == 1 else None)
    shown = tests[tests["testable"]]
    if not shown.empty:
        _brackets(ax, shown, order, kinds)
    elif not tests.empty:
        top = _make_headroom(ax, 0.1)  # keep the note clear of the data
        ax.text(0.5, top + 0.05, TOO_FEW, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.35")
    return tests


def mmd_boxplot(
    metrics: pd.DataFrame,
    statistics: pd.DataFrame | None = None,
    metrics_shown: tuple[str, ...] = ("mmd", "edistance", "l2_means", "r2_means"),
    kinds: Kinds | None = None,
    title: str | None = None,
) -> plt.Figure:
    """MMD, energy distance, L2 and R² of means per model (the W1-OT paper's Fig. 3 and the energy
    distance, which the MMD's fixed bandwidths cannot replace in hundreds of features), one panel each.

    Points are perturbations (i.i.d.) or holdout × perturbation (o.o.s./o.o.d.),
    each the mean over seeds and draws. Stars come from ``statistics`` (the
    table of :func:`perturbot.statistics.model_tests`); without it, none are drawn.
    """
    metrics = held_out_rows(metrics)
    shown = [m for m in metrics_shown if (metrics["metric"] == m).any()]
    if "mmd" not in shown:
        raise ValueError("the metrics table has no 'mmd' rows")
    n_models = metrics["model"].nunique()
    n_tests = sum(is_ot(m, kinds) for m in set(metrics["model"])) * n_models if statistics is not None else 0
    fig, axes = plt.subplots(1, len(shown), figsize=(len(shown) * (0.5 * n_models + 1.4), 3.2 + 0.15 * n_tests), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        metric_boxplot(ax, metrics[metrics["metric"] == metric], metric, kinds, statistics)
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
    metrics: pd.DataFrame, metric: str | tuple[str, ...] = ("mmd", "edistance"), kinds: Kinds | None = None,
    title: str | None = None,
) -> plt.Figure:
    """Per model, each holdout's score under the i.i.d. model and the held-out model, joined (CellOT Fig. 4c).

    One row of panels per metric in ``metric`` that the table has (the MMD and the energy distance by default).
    """
    wanted = (metric,) if isinstance(metric, str) else tuple(metric)
    shown = [m for m in wanted if (metrics["metric"] == m).any()] or list(wanted[:1])
    pairs = {m: iid_vs_holdout_pairs(metrics, m) for m in shown}
    models = pd.concat([p["model"] for p in pairs.values()])
    order = [m for m in model_order(models, kinds) if not tag(m, kinds, "needs_reference_cells")]
    setting = pairs[shown[0]]["setting"].iloc[0]
    fig, axes = plt.subplots(len(shown), len(order), figsize=(1.6 * len(order) + 0.8, 3.2 * len(shown)),
                             sharey="row", squeeze=False)
    for i, (axes_row, name) in enumerate(zip(axes, shown)):
        rows = pairs[name]
        log = name in LOG_METRICS and (rows[["value_iid", "value_holdout"]] > 0).all().all()
        for ax, model in zip(axes_row, order):
            sub = rows[rows["model"] == model]
            color = model_color(model, kinds)
            for row in sub.itertuples():
                ax.plot([0, 1], [row.value_iid, row.value_holdout], color=color, alpha=0.6, lw=0.9, marker="o", ms=3.5)
            ax.set_xticks([0, 1], ["i.i.d.", f"held out\n({setting})"])
            ax.set_xlim(-0.35, 1.35)
            if i == 0:
                ax.set_title(display_name(model), color=color)
            if log:
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_locator(NullLocator())
        axes_row[0].set_ylabel(f"{METRIC_LABELS.get(name, name)}" + (" (log)" if log else ""))
    sns.despine(fig)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
