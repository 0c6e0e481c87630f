"""The README's figure (docs/demo.png), drawn from the results of `make demo`: `make readme-figure`.

Left: the first drug on the cell line held out of training (experiment
demo_ood), in the joint UMAP the workflow computed (results/demo_ood/umap/):
the control cells, the observed perturbed cells, and the cells OT-FM and scGen
predicted from those controls. Right: every model's
per-cell error against the true response (gt_rmse, known because the demo's
data are synthetic), mean over the drugs with one dot per drug, for the i.i.d.
split and for the cell line held out of training (results/demo_*/metrics.csv).

It only reads results files; run `make demo` first.

    .venv/bin/python docs/readme_figure.py [--results results] [--output docs/demo.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from perturbot.plotting.style import display_name, model_color  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IID, HELD_OUT = "demo_iid", "demo_ood"
#: The models whose predicted cells the UMAP shows: a neural OT map and an autoencoder baseline.
SHOWN = ("otfm", "scgen")
#: Bounds first, then the baselines, then the neural OT models: the papers' order.
ORDER = ["identity", "scgen", "cae", "popalign", "gaussian_ot", "cellot", "w1ot", "otfm"]


def umap_panel(ax: plt.Axes, embedding: ad.AnnData, models: tuple[str, ...]) -> None:
    origin = embedding.obs["origin"].astype(str).to_numpy()
    xy = np.asarray(embedding.obsm["X_umap"])
    layers = [("control", "control cells", model_color("control"))]
    layers += [(m, f"predicted by {display_name(m)}", model_color(m)) for m in models]
    # the observed cells last, so that predictions that land on them still show them
    layers.append(("observed perturbed", "observed perturbed cells", model_color("perturbed")))
    for name, label, color in layers:
        cells = xy[origin == name]
        ax.scatter(cells[:, 0], cells[:, 1], s=5, c=color, alpha=0.5, linewidths=0, label=label, rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{embedding.uns['perturbation']} on the cell line held out of training", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    order = [0, len(handles) - 1, *range(1, len(handles) - 1)]  # control, observed, then the predictions
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="best", fontsize=8, frameon=False,
              markerscale=2.5, handletextpad=0.2)


def error_panel(ax: plt.Axes, metrics: dict[str, pd.DataFrame]) -> None:
    """Horizontal bars: mean gt_rmse over drugs per model and experiment, one dot per drug."""
    per_drug = {
        name: table[table["metric"] == "gt_rmse"].groupby(["model", "perturbation"])["value"].mean()
        for name, table in metrics.items()
    }
    models = [m for m in ORDER if all(m in values.index.get_level_values(0) for values in per_drug.values())]
    height = 0.38
    shades = {IID: 1.0, HELD_OUT: 0.45}
    labels = {IID: "i.i.d. split", HELD_OUT: "cell line held out"}
    for k, (name, values) in enumerate(per_drug.items()):
        for i, model in enumerate(models):
            y = i + (k - 0.5) * height
            drugs = values.loc[model]
            ax.barh(y, drugs.mean(), height=height * 0.92, color=model_color(model), alpha=shades[name],
                    label=labels[name] if i == 0 else None, edgecolor="none")
            ax.scatter(drugs.to_numpy(), np.full(len(drugs), y), s=7, c="black", zorder=3, linewidths=0)
    ax.set_yticks(range(len(models)), [display_name(m) for m in models], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("per-cell error against the true response (gt_rmse) ↓")
    ax.set_title("Each model's per-cell error (bars: mean over the drugs)", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    # the legend says which bar is which setting, whatever the model's colour
    handles = [plt.Rectangle((0, 0), 1, 1, color="0.35", alpha=shades[name]) for name in per_drug]
    handles.append(plt.Line2D([], [], marker="o", color="black", linestyle="none", markersize=3))
    ax.legend(handles, [labels[name] for name in per_drug] + ["one drug"], fontsize=8, frameon=False, loc="lower right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the demo's results folder")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "demo.png")
    args = parser.parse_args()

    embeddings = sorted((args.results / HELD_OUT / "umap").glob("*.h5ad"))
    if not embeddings:
        raise SystemExit(f"no UMAP under {args.results / HELD_OUT / 'umap'}: run `make demo` first")
    metrics = {name: pd.read_csv(args.results / name / "metrics.csv") for name in (IID, HELD_OUT)}

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.9), gridspec_kw={"width_ratios": [1, 1.25]})
    umap_panel(left, ad.read_h5ad(embeddings[0]), SHOWN)
    error_panel(right, metrics)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=150)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
