"""Training time against data dimension (the W1-OT paper's Fig. 4a) and the table of every job's resources.

Read from what the workflow leaves behind: Snakemake's ``benchmark.tsv`` of
each job (wall time ``s``, peak memory ``max_rss`` in MB), the model's
``model.json`` (dimension it was trained in) and ``history.csv`` (iterations).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator

from perturbot.plotting.style import display_name, model_color

BENCHMARK_COLUMNS = {"s": "wall_s", "max_rss": "max_rss_mb", "cpu_time": "cpu_s"}


def job_of(path: Path) -> dict[str, str]:
    """What a benchmark file belongs to, from its place under ``results/``."""
    parts = Path(path).parent.parts
    if "results" in parts:
        parts = parts[len(parts) - parts[::-1].index("results") :]
    if len(parts) >= 4 and parts[1] == "models":
        # <experiment>/models/<holdout>/<model>[/<perturbation or _joint>]
        return {"experiment": parts[0], "holdout": parts[2], "model": parts[3], "job": "/".join(parts[4:])}
    if len(parts) == 2 and parts[0] == "autoencoders":
        # autoencoders/<key>: shared by every experiment with the same data and settings
        return {"experiment": "", "holdout": "", "model": "autoencoder", "job": parts[1]}
    # e.g. toy_maps/<dataset>/<model>
    return {"experiment": parts[0] if parts else "", "holdout": "", "model": parts[-1] if parts else "", "job": "/".join(parts[1:-1])}


def job_resources(benchmarks: list[str | Path]) -> pd.DataFrame:
    """One row per job: where it belongs, wall time (s), CPU time (s) and peak resident memory (MB)."""
    rows = []
    for path in map(Path, benchmarks):
        bench = pd.read_csv(path, sep="\t")
        last = bench.iloc[-1]  # a benchmark run repeated n times keeps n rows; the last is the latest
        rows.append({**job_of(path), **{new: float(last[old]) for old, new in BENCHMARK_COLUMNS.items() if old in bench}})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["experiment", "holdout", "model", "job"], kind="stable").reset_index(drop=True)


def _model_meta(model_dir: Path) -> dict:
    """Registry name and training dimension; latent-space models report their inner model's."""
    meta = json.loads((model_dir / "model.json").read_text())
    if meta.get("model") == "latent":
        inner = json.loads((model_dir / meta["inner"] / "model.json").read_text())
        return {"kind": inner["model"], "dimension": inner["state"]["n_features_in_"], "space": "latent"}
    return {"kind": meta["model"], "dimension": meta["state"]["n_features_in_"], "space": "data"}


def training_runs(model_dirs: list[str | Path]) -> pd.DataFrame:
    """Per trained model: kind, dimension, iterations run, wall time and seconds per 1,000 iterations."""
    rows = []
    for model_dir in map(Path, model_dirs):
        try:
            history = pd.read_csv(model_dir / "history.csv")
        except pd.errors.EmptyDataError:  # models without training (identity, observed)
            continue
        if history.empty or "iteration" not in history:
            continue
        iterations = int(history["iteration"].max())
        wall = float(pd.read_csv(model_dir / "benchmark.tsv", sep="\t")["s"].iloc[-1])
        rows.append(
            {
                **job_of(model_dir / "benchmark.tsv"),
                **_model_meta(model_dir),
                "iterations": iterations,
                "wall_s": wall,
                "s_per_1k_iters": 1000 * wall / iterations,
            }
        )
    return pd.DataFrame(rows)


def training_time(runs: pd.DataFrame, kinds: list[str] | tuple[str, ...]) -> plt.Figure:
    """Seconds per 1,000 iterations and total training time against the dimension trained in, per model.

    ``kinds``: the registry names drawn (the workflow passes the neural OT models').
    """
    runs = runs[runs["kind"].isin(kinds)]
    if runs.empty:
        raise ValueError(f"no trained {' or '.join(kinds)} model to time")
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.0))
    for ax, column, label in (
        (axes[0], "s_per_1k_iters", "seconds per 1,000 iterations"),
        (axes[1], "wall_s", "total training time (s)"),
    ):
        for kind, sub in runs.groupby("kind"):
            color = model_color(kind)
            jitter = np.random.default_rng(0).uniform(-0.04, 0.04, len(sub))
            ax.scatter(sub["dimension"] * (1 + jitter), sub[column], s=14, color=color, alpha=0.6, linewidths=0)
            medians = sub.groupby("dimension")[column].median()
            ax.plot(medians.index, medians.to_numpy(), color=color, marker="o", ms=5, lw=1.4, label=display_name(kind))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dimension trained in (features or latent units)")
        ax.set_ylabel(label)
        dims = sorted(runs["dimension"].unique())
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.xaxis.set_minor_locator(NullLocator())
        # labels at 1, 2 and 5 times each power of ten: the range is often under one decade
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(NullLocator())
    axes[0].legend(frameon=False)
    sns.despine(fig)
    fig.tight_layout()
    return fig
