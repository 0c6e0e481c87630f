"""W1-OT's GroupSort group count on the Wasserstein-1 benchmark: a metric against the group count."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

#: Metric column -> axis label, in the order of the figure's rows.
METRICS = {
    "cos": "cosine to true gradient (↑)",
    "l2": "squared L2 to true gradient (↓)",
    "w1_relative_error": "W1 estimate, relative error (↓)",
}


def group_size(table: pd.DataFrame) -> plt.Figure:
    """A row per metric, a panel per dimension, a line per funnel count, the group count on a log2 axis."""
    missing = {"dim", "width", "n_groups", *METRICS} - set(table.columns)
    if missing:
        raise ValueError(f"the group-size table lacks the columns {sorted(missing)}")
    dims = sorted(table["dim"].unique())
    widths = sorted(table["width"].unique())
    palette = dict(zip(widths, sns.color_palette("viridis", len(widths))))
    fig, axes = plt.subplots(
        len(METRICS), len(dims), figsize=(2.6 * len(dims) + 1.2, 2.3 * len(METRICS)), squeeze=False, sharex=True,
        sharey="row", constrained_layout=True,
    )
    for col, dim in enumerate(dims):
        cell = table[table["dim"] == dim]
        for row, (metric, label) in enumerate(METRICS.items()):
            ax = axes[row, col]
            for width in widths:
                line = cell[cell["width"] == width].groupby("n_groups")[metric].mean().sort_index()
                if len(line):
                    ax.plot(line.index, line.values, marker="o", color=palette[width], label=f"{width} funnels")
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(table["n_groups"].unique()))
            ax.set_xticklabels([str(g) for g in sorted(table["n_groups"].unique())])
            if row == 0:
                ax.set_title(f"D = {dim}")
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
            if row == len(METRICS) - 1:
                ax.set_xlabel("GroupSort groups")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False, fontsize=8)
    fig.suptitle("W1-OT potential on the Wasserstein-1 benchmark (paper default: 4 groups)", fontsize=10)
    return fig
