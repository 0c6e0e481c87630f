"""Maps at real cell counts, in and out of distribution, against the Gaussian map: per-cell RMSE on known truth.

A perturbation has 300 to 3,000 cells, and the papers' headline results are about
cells never seen. Two truths, 2,000 cells a side by default:

- **suite pairs** (:func:`perturbot.groundtruth.make_pair`, D = 8 and 32): control
  cells from two of the mixture's three components train (with the true images of
  fresh draws from them as the perturbed cells); the test is 1,000 fresh cells of
  those two components (i.i.d.) and 1,000 of the third, never seen (o.o.d.);
- **features** (``bench_otfm.data``: ``make_features``, 48 features, 3,000 control
  and 2,000 perturbed cells), i.i.d. only;
- ``--demo``: the demo's data instead (``config.yaml``'s dataset), the cell line
  ``line_B`` held out, each score the mean over its three drugs (:func:`demo_splits`).

Each row fits one model and prints its per-cell RMSE against the true images and
its fit's wall seconds. ``--rows`` picks rows by label; the table in
``docs/models/otfm.md`` (2026-12-07) comes from this script.

    python benchmarks/bench_ood.py                     # every row (about 15 minutes on 2 cores)
    python benchmarks/bench_ood.py --rows gaussian "otfm start=gaussian keep_best"
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from perturbot.groundtruth import holdout_split, make_pair, rmse
from perturbot.models.cellot import CellOT
from perturbot.models.gaussian_ot import GaussianOT
from perturbot.models.otfm import OTFlowMatching
from perturbot.models.w1ot import W1OT
from perturbot.training import set_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_otfm import data as features_data  # noqa: E402

#: OT-FM's defaults before 2026-12-08 (the rows of the docs' first table were measured with these).
OTFM_BEFORE = {"n_iters": 8000, "batch_size": 512, "start": "identity", "keep_best": False, "eval_every": 250,
               "patience": None, "gaussian_ridge": 1e-4}

#: label -> (model class or None for identity, keyword arguments)
ROWS: dict[str, tuple[type | None, dict]] = {
    "identity": (None, {}),
    "gaussian": (GaussianOT, {}),
    "gaussian ridge=0.1": (GaussianOT, {"ridge": 0.1}),
    "otfm 500": (OTFlowMatching, {**OTFM_BEFORE, "n_iters": 500}),
    "otfm 1000": (OTFlowMatching, {**OTFM_BEFORE, "n_iters": 1000}),
    "otfm 2000": (OTFlowMatching, {**OTFM_BEFORE, "n_iters": 2000}),
    "otfm 8000 (the defaults before)": (OTFlowMatching, OTFM_BEFORE),
    "otfm 1000 coupling=global": (OTFlowMatching, {**OTFM_BEFORE, "n_iters": 1000, "coupling": "global"}),
    "otfm 2000 coupling=global": (OTFlowMatching, {**OTFM_BEFORE, "n_iters": 2000, "coupling": "global"}),
    "otfm 1000 start=gaussian": (OTFlowMatching, {**OTFM_BEFORE, "n_iters": 1000, "start": "gaussian"}),
    "otfm 1000 start=gaussian keep_best": (OTFlowMatching, {**OTFM_BEFORE, "n_iters": 1000, "start": "gaussian",
                                                            "keep_best": True}),
    "otfm start=gaussian keep_best batch=256 patience=10": (OTFlowMatching, {**OTFM_BEFORE, "start": "gaussian",
        "keep_best": True, "batch_size": 256, "eval_every": 100, "patience": 10}),
    "otfm default (patience 30)": (OTFlowMatching, {}),
    "otfm demo budget before (600, batch 256)": (OTFlowMatching, {**OTFM_BEFORE, "n_iters": 600, "batch_size": 256}),
    "otfm default, patience=10 (the workflow's)": (OTFlowMatching, {"patience": 10}),
    "cellot fast": (CellOT, {"preset": "fast"}),
    "cellot fast gaussian_ridge=0.1": (CellOT, {"preset": "fast", "gaussian_ridge": 0.1}),
    "cellot accurate": (CellOT, {"preset": "accurate"}),
    "w1ot ot_lengths": (W1OT, {"preset": "ot_lengths"}),
}


def suite_split(d: int, n: int, n_test: int, seed: int = 0) -> dict:
    """Training cells from components 0 and 1 of the pair's control mixture; i.i.d. and o.o.d. (component 2) tests."""
    split = holdout_split(make_pair(d, n=200, n_test=200, seed=seed), n, n_test, seed)
    return {"source": split.source, "target": split.target,
            "tests": {"iid": split.tests["iid"], "ood": split.tests["component"]}}


def demo_splits() -> list[dict]:
    """The demo's data (``config.yaml``: 1,200 cells, three drugs, piecewise maps), ``line_B`` held out: one split
    per drug, trained on ``line_A``'s cells; "iid" scores ``line_A``'s control cells (the training cells
    themselves: each drug's truth is known for control cells only), "ood" ``line_B``'s."""
    from perturbot.data.synthetic import make_features

    adata = make_features(cells=1200, perturbations=3, features=48, seed=0, map_kind="piecewise")
    x = np.asarray(adata.X)
    drug, line = adata.obs["drug"].astype(str).to_numpy(), adata.obs["cell_line"].astype(str).to_numpy()
    seen, unseen = (drug == "control") & (line == "line_A"), (drug == "control") & (line == "line_B")
    splits = []
    for name in adata.uns["synthetic"]["perturbations"]:
        truth = adata.obsm[f"X_true_{name}"]
        splits.append({"source": x[seen], "target": x[(drug == name) & (line == "line_A")],
                       "tests": {"iid": (x[seen], truth[seen]), "ood": (x[unseen], truth[unseen])}})
    return splits


def features_split() -> dict:
    d = features_data(1)
    name = next(iter(d["targets"]))
    return {"source": d["source"], "target": d["targets"][name], "tests": {"iid": (d["test"], d["truth"][name])}}


def score(row: str, split: dict, seed: int = 0) -> tuple[dict[str, float], float]:
    cls, params = ROWS[row]
    start = time.perf_counter()
    model = None
    if cls is GaussianOT:
        model = GaussianOT(**params).fit(split["source"], split["target"])
    elif cls is not None:
        model = cls(device="cpu", seed=seed, **params).fit(split["source"], split["target"])
    seconds = time.perf_counter() - start
    return {k: rmse(x if model is None else model.transport(x), truth) for k, (x, truth) in split["tests"].items()}, seconds


def main(quick: bool = False, rows: list[str] | None = None, threads: int = 1, demo: bool = False) -> None:
    set_threads(threads)
    rows = rows or list(ROWS)
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {list(ROWS)}")
    n = 500 if quick else 2000
    print(f"load average before: {os.getloadavg()}, torch threads: {torch.get_num_threads()}, {n} cells a side")
    splits = {f"D={d}": suite_split(d, n, 1000) for d in (8, 32)}
    if not quick:
        splits["features"] = features_split()
    if demo:
        splits = {"demo": demo_splits()}  # a list: one split per drug, scores averaged
    first = {name: (s[0] if isinstance(s, list) else s) for name, s in splits.items()}
    print(f"{'row':>36} " + " ".join(f"{name + ' ' + k:>14}" for name, s in first.items() for k in s["tests"])
          + f" {'seconds':>8}")
    for row in rows:
        scores, seconds = [], 0.0
        for split in splits.values():
            parts = split if isinstance(split, list) else [split]
            results = [score(row, part) for part in parts]
            scores += [float(np.mean([values[k] for values, _ in results])) for k in results[0][0]]
            seconds += sum(secs for _, secs in results)
        print(f"{row:>36} " + " ".join(f"{v:>14.3f}" for v in scores) + f" {seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 cells a side, suite pairs only")
    parser.add_argument("--rows", nargs="*", help=f"rows to run (default: all): {', '.join(ROWS)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--demo", action="store_true", help="the demo's data with line_B held out, instead")
    args = parser.parse_args()
    main(args.quick, args.rows, args.threads, args.demo)
