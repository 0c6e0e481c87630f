"""Marginal densities of selected features: control, observed perturbed and each model's prediction."""

from __future__ import annotations

import numpy as np
import seaborn as sns
from matplotlib import pyplot as plt

from perturbot.plotting.style import display_name, model_color

REFERENCE_NAMES = {"control": "Control", "perturbed": "Observed perturbed"}


def changing_features(control: np.ndarray, perturbed: np.ndarray, names, n: int) -> list[str]:
    """The ``n`` features whose means change most between control and perturbed (in SD units)."""
    scale = np.concatenate([control, perturbed]).std(0) + 1e-8
    shift = np.abs(perturbed.mean(0) - control.mean(0)) / scale
    return [names[i] for i in np.argsort(-shift)[:n]]


def marginal_features(
    info: dict, perturbation: str, control: np.ndarray, perturbed: np.ndarray, names, n: int, chosen=None
) -> list[str]:
    """Features drawn for one perturbation.

    The configured list if given; for scRNA-seq the perturbation's top marker
    genes (ranked on the training split, ``uns['perturbot']['markers']``);
    otherwise the features whose means change most.
    """
    if chosen:
        missing = sorted(set(chosen) - set(names))
        if missing:
            raise ValueError(f"figures.marginal_features: not in the data: {', '.join(missing)}")
        return list(chosen)
    from perturbot.markers import markers_of

    markers = markers_of(info, perturbation)
    if markers:
        return markers[:n]
    return changing_features(control, perturbed, list(names), n)


def marginals(rows: list[dict], title: str | None = None, value_label: str = "value") -> plt.Figure:
    """Kernel densities of selected features, one row per perturbation.

    ``rows``: one dict per perturbation with ``name``, ``control``, ``observed``
    (AnnData), ``predictions`` ({model label: AnnData}) and ``features``.
    """
    n_cols = max(len(r["features"]) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.6 * n_cols + 1.2, 2.3 * len(rows)), squeeze=False)
    handles: dict[str, object] = {}
    for axes_row, row in zip(axes, rows):
        series = [("control", row["control"]), ("perturbed", row["observed"])] + list(row["predictions"].items())
        for ax, feature in zip(axes_row, row["features"]):
            for label, cells in series:
                values = np.asarray(cells[:, feature].X).ravel()
                if len(values) < 2 or np.ptp(values) == 0:
                    continue
                style = {"linestyle": "--", "linewidth": 1.6} if label in REFERENCE_NAMES else {"linewidth": 1.1}
                sns.kdeplot(values, ax=ax, color=model_color(label), label=label, warn_singular=False, **style)
            for line in ax.get_lines():
                handles.setdefault(line.get_label(), line)
            ax.set_title(feature, fontsize=9)
            ax.set_xlabel(value_label)
            ax.set_ylabel("")
        axes_row[0].set_ylabel(f"{row['name']}\ndensity", fontweight="bold")
        for ax in axes_row[len(row["features"]):]:
            ax.set_visible(False)
    labels = list(handles)
    fig.legend(
        [handles[k] for k in labels], [REFERENCE_NAMES.get(k, display_name(k)) for k in labels],
        frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5),
    )
    if title:
        fig.suptitle(title)
    sns.despine(fig)
    fig.tight_layout()
    return fig
