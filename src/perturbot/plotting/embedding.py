"""Cells in two dimensions: joint UMAPs (computed by :mod:`perturbot.embedding`), response vector fields in PCA space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from sklearn.decomposition import PCA

from perturbot.embedding import CONTROL, OBSERVED
from perturbot.plotting.style import Kinds, MODEL_COLORS, display_name, model_color


def _scatter(ax: plt.Axes, frame: pd.DataFrame, mask, color, size: float = 4, **kwargs) -> None:
    ax.scatter(frame.loc[mask, "umap1"], frame.loc[mask, "umap2"], s=size, c=color, linewidths=0, rasterized=True, **kwargs)


def joint_umap(
    frame: pd.DataFrame,
    models: list[str],
    *,
    feature: tuple[str, np.ndarray] | None = None,
    kinds: Kinds | None = None,
    title: str | None = None,
) -> plt.Figure:
    """One panel per model: its predicted cells over the observed perturbed cells, in one joint UMAP.

    ``frame`` comes from :func:`perturbot.embedding.embedding_frame` with blocks ``control``,
    ``observed perturbed`` and one per model label. ``feature`` = (name,
    values row-aligned with ``frame``) adds a second row coloured by that
    feature (the CellOT paper's pERK panel).
    """
    n_rows = 2 if feature is not None else 1
    n_cols = len(models) + 1
    # a narrow last column holds the colour bar, so both rows keep the same panel widths
    fig, grid = plt.subplots(
        n_rows, n_cols + 1, figsize=(2.3 * n_cols + 0.5, 2.4 * n_rows + 0.4), squeeze=False,
        gridspec_kw={"width_ratios": [1] * n_cols + [0.07]},
    )
    for ax in grid[:, -1]:
        ax.set_visible(False)
    axes = grid[:, :-1]
    origin = frame["origin"].to_numpy()
    every = np.ones(len(frame), bool)
    ax = axes[0][0]
    for name in [CONTROL, OBSERVED, *models]:
        color = {CONTROL: MODEL_COLORS["control"], OBSERVED: MODEL_COLORS["perturbed"]}.get(name) or model_color(name, kinds)
        label = {CONTROL: "Control", OBSERVED: "Observed perturbed"}.get(name) or display_name(name)
        _scatter(ax, frame, origin == name, color, size=2.5, label=label, alpha=0.8)
    ax.set_title("All cells")
    for ax, model in zip(axes[0][1:], models):
        _scatter(ax, frame, every, "#e6e6e6", size=2)
        _scatter(ax, frame, origin == OBSERVED, MODEL_COLORS["perturbed"], size=3, alpha=0.6)
        _scatter(ax, frame, origin == model, model_color(model, kinds), size=3, alpha=0.7)
        ax.set_title(display_name(model), color=model_color(model, kinds))
    if feature is not None:
        name, values = feature
        # the observed cells set the colour range; predictions outside it are clipped
        lo, hi = np.nanpercentile(values[origin == OBSERVED], [1, 99])
        for ax, shown in zip(axes[1], [OBSERVED, *models]):
            _scatter(ax, frame, every, "#e6e6e6", size=2)
            mask = origin == shown
            points = ax.scatter(
                frame.loc[mask, "umap1"], frame.loc[mask, "umap2"], c=values[mask], s=3, cmap="viridis",
                vmin=lo, vmax=hi, linewidths=0, rasterized=True,
            )
            ax.set_title("Observed perturbed" if shown == OBSERVED else display_name(shown), fontsize=9)
        grid[1, -1].set_visible(True)
        fig.colorbar(points, cax=grid[1, -1], label=name, extend="both")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1", fontsize=7)
        ax.set_ylabel("UMAP 2", fontsize=7)
        sns.despine(ax=ax)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=len(labels), frameon=False, markerscale=3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def response_field(
    control_pcs: np.ndarray, response_pcs: np.ndarray, bins: int, lims: tuple, min_cells: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean response of the cells in each square of a ``bins`` × ``bins`` grid (squares with too few cells dropped).

    Returns the squares' centres (x, y) and mean responses (u, v).
    """
    (x0, x1), (y0, y1) = lims
    ix = np.clip(((control_pcs[:, 0] - x0) / (x1 - x0) * bins).astype(int), 0, bins - 1)
    iy = np.clip(((control_pcs[:, 1] - y0) / (y1 - y0) * bins).astype(int), 0, bins - 1)
    cell = ix * bins + iy
    counts = np.bincount(cell, minlength=bins * bins)
    u = np.bincount(cell, weights=response_pcs[:, 0], minlength=bins * bins)
    v = np.bincount(cell, weights=response_pcs[:, 1], minlength=bins * bins)
    keep = counts >= min_cells
    centres = np.arange(bins * bins)[keep]
    cx = x0 + (centres // bins + 0.5) * (x1 - x0) / bins
    cy = y0 + (centres % bins + 0.5) * (y1 - y0) / bins
    return cx, cy, u[keep] / counts[keep], v[keep] / counts[keep]


def vector_field(
    control: np.ndarray,
    responses: dict[str, dict[str, np.ndarray]],
    *,
    bins: int = 15,
    kinds: Kinds | None = None,
    title: str | None = None,
) -> plt.Figure:
    """Per-cell response (prediction − control) averaged on a grid of the control cells' first two PCs.

    ``responses``: {perturbation: {label: predicted cells row-aligned with
    ``control``}}; label ``truth`` is the known true response. The grid has at
    most ``bins`` squares per axis and fewer for few cells (about four cells
    per occupied square). Each panel has its own arrow scale, given by its key.
    """
    pca = PCA(n_components=2).fit(control)
    pcs = pca.transform(control)
    bins = int(max(3, min(bins, np.sqrt(len(control) / 4))))
    pad = 0.05 * np.ptp(pcs, axis=0)
    lims = ((pcs[:, 0].min() - pad[0], pcs[:, 0].max() + pad[0]), (pcs[:, 1].min() - pad[1], pcs[:, 1].max() + pad[1]))
    square = (lims[0][1] - lims[0][0]) / bins
    labels = list(next(iter(responses.values())))
    fig, axes = plt.subplots(
        len(responses), len(labels), figsize=(2.8 * len(labels) + 0.4, 2.7 * len(responses) + 0.3), squeeze=False
    )
    ratio = pca.explained_variance_ratio_ * 100
    for axes_row, perturbation in zip(axes, responses):
        for ax, label in zip(axes_row, labels):
            ax.scatter(pcs[:, 0], pcs[:, 1], s=2, c=MODEL_COLORS["control"], linewidths=0, rasterized=True)
            cx, cy, u, v = response_field(pcs, (responses[perturbation][label] - control) @ pca.components_.T, bins, lims)
            color = MODEL_COLORS["truth"] if label == "truth" else model_color(label, kinds)
            longest = float(np.hypot(u, v).max()) if len(u) else 0.0
            if longest > 0:
                # the longest mean arrow spans 1.2 grid squares; the key gives its length in PC units
                arrows = ax.quiver(cx, cy, u, v, color=color, angles="xy", scale_units="xy", scale=longest / (1.2 * square), width=0.007)
                key = float(f"{longest / 2:.1g}")
                ax.quiverkey(arrows, 0.72, 1.04, key, f"{key:g}", labelpos="W", coordinates="axes", fontproperties={"size": 7})
            ax.set_xlim(*lims[0])
            ax.set_ylim(*lims[1])
            ax.set_title("True response" if label == "truth" else display_name(label), color=color, loc="left")
            ax.set_xlabel(f"PC 1 of control ({ratio[0]:.0f}%)")
            ax.set_ylabel("")
        axes_row[0].set_ylabel(f"{perturbation}\nPC 2 of control ({ratio[1]:.0f}%)")
    sns.despine(fig)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
