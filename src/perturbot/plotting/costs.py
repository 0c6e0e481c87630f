"""The transport-cost clustergram: perturbation × control cell state (the CellOT paper's Fig. 3e)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt

from perturbot.plotting.style import Kinds, display_name, model_color


def cost_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per perturbation: the sum of its mean costs over states and their coefficient of variation.

    A high sum means the perturbation moves cells far; a high CV means it moves
    some states much more than others (a state-specific response).
    """
    mean = table.mean(axis=1)
    return pd.DataFrame({"sum": table.sum(axis=1), "cv": table.std(axis=1, ddof=0) / mean.where(mean > 0)})


def clustergram(
    table: pd.DataFrame,
    sizes: pd.Series | None = None,
    *,
    model: str,
    kinds: Kinds | None = None,
    title: str | None = None,
) -> plt.Figure:
    """Clustered heat map of the mean transport cost per perturbation (rows) and cell state (columns).

    Bars on the right: each row's sum over states and coefficient of
    variation. ``sizes``: cells per state, shown in the column labels.
    """
    table = table.copy()
    if sizes is not None:
        table.columns = [f"{s} (n={int(sizes.get(s, 0))})" for s in table.columns]
    summary = cost_summary(table)
    n_rows, n_cols = table.shape
    width = 0.42 * n_cols + 4.6
    height = 0.32 * n_rows + 2.6
    grid = sns.clustermap(
        table,
        row_cluster=n_rows > 2,
        col_cluster=n_cols > 2,
        cmap="mako_r",
        figsize=(width, height),
        dendrogram_ratio=(0.1, 0.12),
        cbar_pos=(0.01, 0.87, 0.025, 0.1),
        linewidths=0.3,
        yticklabels=True,
        xticklabels=True,
    )
    fig = grid.figure
    grid.ax_cbar.set_title("mean\n‖T(x) − x‖²", fontsize=7, loc="left")
    grid.ax_cbar.tick_params(labelsize=6)
    order = grid.dendrogram_row.reordered_ind if grid.dendrogram_row is not None else list(range(n_rows))
    heat = grid.ax_heatmap
    heat.set_xlabel("control cell state (Leiden)")
    heat.set_ylabel("")
    heat.set_yticks([])
    plt.setp(heat.get_xticklabels(), rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
    box = heat.get_position()
    bar_width = 0.55 / width
    gap = 0.12 / width
    color = model_color(model, kinds)
    bar_axes = []
    for i, (column, label) in enumerate((("sum", "sum over\nstates"), ("cv", "CV over\nstates"))):
        ax = fig.add_axes([box.x1 + gap + i * (bar_width + gap), box.y0, bar_width, box.height])
        values = summary[column].to_numpy()[order]
        ax.barh(np.arange(n_rows) + 0.5, values, height=0.7, color=color, alpha=0.85 if i == 0 else 0.5)
        ax.set_ylim(n_rows, 0)
        ax.set_yticks([])
        ax.set_xlabel(label, fontsize=7)
        ax.tick_params(axis="x", labelsize=6, rotation=90)
        sns.despine(ax=ax)
        bar_axes.append(ax)
    last = bar_axes[-1]
    last.yaxis.tick_right()
    last.set_yticks(np.arange(n_rows) + 0.5, [str(table.index[i]) for i in order], fontsize=8)
    last.tick_params(axis="y", length=0)
    fig.suptitle(title or f"Transport cost of {display_name(model)}", x=0.5, y=1 + 0.3 / height)
    return fig
