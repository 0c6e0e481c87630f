"""Figures drawn from results files only (metrics table, predictions), never from training.

One palette for every figure, so a model keeps its colour everywhere.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight", "figure.dpi": 110})

#: Display names as in the papers.
DISPLAY_NAMES = {
    "identity": "Identity",
    "observed": "Observed",
    "scgen": "scGen",
    "cae": "cAE",
    "cellot": "CellOT",
    "w1ot": "W1-OT",
}
MODEL_COLORS = {
    "identity": "#9e9e9e",
    "observed": "#4d4d4d",
    "scgen": "#e69f00",
    "cae": "#cc79a7",
    "cellot": "#0072b2",
    "w1ot": "#d55e00",
    "control": "#bdbdbd",
    "perturbed": "#000000",
}
_EXTRA = sns.color_palette("tab10").as_hex()


def display_name(label: str) -> str:
    return DISPLAY_NAMES.get(label, label)


def model_color(label: str) -> str:
    """Colour of a model label; unknown labels get a stable colour from their name."""
    if label in MODEL_COLORS:
        return MODEL_COLORS[label]
    base = label.split("_")[0]
    if base in MODEL_COLORS:
        return MODEL_COLORS[base]
    return _EXTRA[sum(map(ord, label)) % len(_EXTRA)]


def model_order(labels) -> list[str]:
    """Bounds first (identity, observed), then baselines, then OT models, then the rest."""
    rank = {name: i for i, name in enumerate(DISPLAY_NAMES)}
    return sorted(set(labels), key=lambda m: (rank.get(m.split("_")[0], len(rank)), m))


def save_figure(fig: plt.Figure, pdf_path: str | Path) -> None:
    """Write the PDF (fonts embedded) and a PNG preview beside it."""
    pdf_path = Path(pdf_path)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(pdf_path)
    fig.savefig(pdf_path.with_suffix(".png"), dpi=150)
    plt.close(fig)


def mmd_boxplot(metrics: pd.DataFrame, metric: str = "mmd", title: str | None = None) -> plt.Figure:
    """Box plot of a metric per model, over perturbations (i.i.d.) or holdouts, log-scaled for mmd."""
    data = metrics[metrics["metric"] == metric].copy()
    if data.empty:
        raise ValueError(f"the metrics table has no {metric!r} rows")
    order = model_order(data["model"])
    fig, ax = plt.subplots(figsize=(1.1 * len(order) + 1.5, 3.6))
    palette = {m: model_color(m) for m in order}
    sns.boxplot(data=data, x="model", y="value", hue="model", order=order, palette=palette, ax=ax, showfliers=False, legend=False)
    sns.stripplot(data=data, x="model", y="value", order=order, color="black", size=3, alpha=0.6, ax=ax)
    if metric == "mmd" and (data["value"] > 0).all():
        ax.set_yscale("log")
    ax.set_xticks(range(len(order)), [display_name(m) for m in order], rotation=30, ha="right")
    ax.set_xlabel("")
    ylabel = {"mmd": "MMD (squared, RBF)", "l2_means": "L2 distance of means", "r2_means": "R² of means"}
    ax.set_ylabel(ylabel.get(metric, metric))
    if title:
        ax.set_title(title)
    sns.despine(fig)
    return fig


def changing_features(control: np.ndarray, perturbed: np.ndarray, names, n: int) -> list[str]:
    """The ``n`` features whose means change most between control and perturbed (in SD units)."""
    scale = np.concatenate([control, perturbed]).std(0) + 1e-8
    shift = np.abs(perturbed.mean(0) - control.mean(0)) / scale
    return [names[i] for i in np.argsort(-shift)[:n]]


def marginals(rows: list[dict], title: str | None = None) -> plt.Figure:
    """Kernel densities of selected features: control, observed perturbed and each model's prediction.

    ``rows``: one dict per perturbation with ``name``, ``control``, ``observed``
    (AnnData), ``predictions`` ({model label: AnnData}) and ``features``.
    """
    n_cols = max(len(r["features"]) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.9 * n_cols + 1.5, 2.5 * len(rows)), squeeze=False)
    for axes_row, row in zip(axes, rows):
        series = [("control", row["control"]), ("perturbed", row["observed"])] + list(row["predictions"].items())
        for ax, feature in zip(axes_row, row["features"]):
            for label, cells in series:
                values = np.asarray(cells[:, feature].X).ravel()
                if len(values) < 2 or np.ptp(values) == 0:
                    continue
                name = {"control": "Control", "perturbed": "Observed perturbed"}.get(label, display_name(label))
                style = {"linestyle": "--"} if label in ("control", "perturbed") else {}
                sns.kdeplot(values, ax=ax, color=model_color(label), label=name, linewidth=1.3, **style)
            ax.set_xlabel(feature)
            ax.set_ylabel("density")
        axes_row[0].set_title(row["name"], loc="left", fontsize=10, fontweight="bold")
        for ax in axes_row[len(row["features"]):]:
            ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title)
    sns.despine(fig)
    fig.tight_layout()
    return fig
