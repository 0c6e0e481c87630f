"""2-D toy maps (the W1-OT paper's Fig. 2): source, target, mapped points and transport rays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.collections import LineCollection

from perturbot.plotting.style import MODEL_COLORS, display_name, model_color

DATASET_NAMES = {"bookshelf": "Bookshelf", "circles": "Circles", "swiss_roll": "Swiss roll", "moons": "Moons"}


def toy_maps(maps: dict[tuple[str, str], pd.DataFrame], *, n_rays: int = 120, seed: int = 0) -> plt.Figure:
    """Rows: data sets; columns: models. ``maps[(dataset, model)]`` has columns
    ``set`` (source/target), ``x``, ``y`` and, for source points, the mapped ``tx``, ``ty``.
    """
    datasets = list(dict.fromkeys(d for d, _ in maps))
    models = list(dict.fromkeys(m for _, m in maps))
    fig, axes = plt.subplots(len(datasets), len(models), figsize=(2.9 * len(models) + 0.3, 2.6 * len(datasets) + 0.5), squeeze=False)
    rng = np.random.default_rng(seed)
    for i, dataset in enumerate(datasets):
        for j, model in enumerate(models):
            ax = axes[i][j]
            frame = maps.get((dataset, model))
            if frame is None:
                ax.set_visible(False)
                continue
            source = frame[frame["set"] == "source"]
            target = frame[frame["set"] == "target"]
            rays = source.iloc[np.sort(rng.choice(len(source), size=min(n_rays, len(source)), replace=False))]
            segments = np.stack([rays[["x", "y"]].to_numpy(), rays[["tx", "ty"]].to_numpy()], axis=1)
            ax.add_collection(LineCollection(segments, colors="0.55", linewidths=0.4, alpha=0.6, zorder=1))
            ax.scatter(source["x"], source["y"], s=3, c=MODEL_COLORS["control"], label="Source", linewidths=0, zorder=2, rasterized=True)
            ax.scatter(target["x"], target["y"], s=2, c=MODEL_COLORS["perturbed"], alpha=0.7, label="Target", linewidths=0, zorder=2, rasterized=True)
            ax.scatter(source["tx"], source["ty"], s=3, c=model_color(model), label="Mapped", linewidths=0, zorder=3, rasterized=True)
            spans = np.ptp(frame[["x", "y"]].to_numpy(), axis=0)
            if spans.min() > spans.max() / 5:
                # true geometry, except where one direction is noise only (bookshelf)
                ax.set_aspect("equal", adjustable="datalim")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(display_name(model), color=model_color(model))
            if j == 0:
                ax.set_ylabel(DATASET_NAMES.get(dataset, dataset), fontweight="bold")
    handles = [
        plt.Line2D([], [], ls="", marker="o", color=MODEL_COLORS["control"], label="Source"),
        plt.Line2D([], [], ls="", marker="o", color=MODEL_COLORS["perturbed"], alpha=0.7, label="Target"),
        *[plt.Line2D([], [], ls="", marker="o", color=model_color(m), label=f"Mapped ({display_name(m)})") for m in models],
        plt.Line2D([], [], color="0.55", label="Transport ray"),
    ]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), frameon=False)
    sns.despine(fig, left=True, bottom=True)
    fig.tight_layout()
    return fig
