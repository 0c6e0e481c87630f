"""Non-linear ground-truth suite: every model against the true W2 map, from 2 to 128 dimensions.

Two families of pairs, each a 3-component Gaussian mixture pushed forward by
the gradient of a convex potential, so every test cell's true image is known:
``random`` (:mod:`perturbot.groundtruth`, random potentials) and ``fitted``
(:mod:`perturbot.fitted_pairs`, potentials fitted to push the mixture onto a
10-component one, as the field's benchmark builds its pairs; ``--family``); 20,000 cells per side for training, 4,000 test cells,
pair seed 0. Every model runs at its defaults (or a named preset) through
``models.get(name)(seed=0, device="cpu").fit(source, target).transport(test)``.

Columns: L2-UVP (%) = 100 E|T_hat(x) - T*(x)|^2 / Var(target), lower is
better; the mean cosine between predicted and true displacement; seconds per
fit (wall, 2 torch threads unless ``--threads``); iterations run; and the
published L2-UVP of CellOT's algorithm (ICNN minimax, Makkuva et al., as
reported on the standard benchmark of this construction) for comparison.

``--criterion`` adds the model-selection table: across the checkpoints of one
CellOT run (every ``eval_every`` iterations), the Spearman rank correlation
between each validation score and the test L2-UVP.

``--ood`` trains on two of the control mixture's three components and scores
three tests side by side (:func:`perturbot.groundtruth.holdout_split`): fresh
cells of those components (i.i.d.), cells of the component held out, and a
copy of the trained population shifted by two standard deviations; L2-UVP
(normalised by each test's own image variance), its ratio to the Gaussian map,
and the per-cell RMSE against the true images. ``--n`` takes several sizes
(500, 2,000 and 20,000 cells a side: real perturbations have 300 to 3,000).

Usage: ``python benchmarks/bench_suite.py [--dims 2 4 8] [--rows cellot otfm] [--n 500 2000 20000] [--ood]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from perturbot import fitted_pairs, groundtruth, models  # noqa: E402

DIMS = (2, 4, 8, 16, 32, 64, 128)
#: Published L2-UVP (%) of the ICNN minimax solver (CellOT's algorithm) on the standard benchmark.
PUBLISHED = {2: 0.1, 4: 0.3, 8: 0.9, 16: 2.2, 32: 4.2, 64: 3.2}
#: Validation scores compared by ``--criterion``: the models' criteria and CellOT's dual W2 estimate.
CRITERIA = {"mmd_fixed": "MMD, fixed bandwidths", "mmd_median": "MMD, median heuristic",
            "w2": "empirical W2", "dual_w2": "dual W2 estimate"}
#: Row name -> (registry name, constructor keywords).
ROWS: dict[str, tuple[str, dict]] = {
    "identity": ("identity", {}),
    "gaussian_ot": ("gaussian_ot", {}),
    "cellot (paper)": ("cellot", {"preset": "paper"}),
    "cellot (fast)": ("cellot", {"preset": "fast"}),
    "cellot (accurate)": ("cellot", {"preset": "accurate"}),
    "cellot (accurate, softplus)": ("cellot", {"preset": "accurate", "activation": "softplus"}),
    "otfm": ("otfm", {}),
    "otfm (before 2026-12-08)": ("otfm", {"n_iters": 8000, "batch_size": 512, "start": "identity", "keep_best": False,
                                          "eval_every": 250, "patience": None, "gaussian_ridge": 1e-4}),
    "otfm (last weights)": ("otfm", {"keep_best": False, "patience": None}),
    "otfm (identity start)": ("otfm", {"start": "identity"}),
    "otfm (gaussian_ridge 1e-4)": ("otfm", {"gaussian_ridge": 1e-4}),
    "w1ot": ("w1ot", {}),
    "w1ot (gaussian start)": ("w1ot", {"step_init": "gaussian"}),
    "w1ot (gaussian lengths)": ("w1ot", {"step_init": "gaussian", "n_iters_step": 0}),
    "w1ot (ot_lengths)": ("w1ot", {"preset": "ot_lengths"}),
    "w1ot (ot_lengths, width 64)": ("w1ot", {"preset": "ot_lengths", "hidden_units": (64, 64, 64, 64)}),
    "w1ot (ot_lengths, width 128)": ("w1ot", {"preset": "ot_lengths", "hidden_units": (128, 128, 128, 128)}),
}
#: What ``make bench`` runs: every model at its named presets (the variants, and CellOT's paper recipe, whose
#: 100,000 iterations take hours a pair on a CPU, on request).
DEFAULT_ROWS = [row for row in ROWS if row not in (
    "cellot (paper)", "cellot (accurate, softplus)", "otfm (before 2026-12-08)", "otfm (last weights)", "otfm (identity start)", "otfm (gaussian_ridge 1e-4)",
    "w1ot (gaussian start)", "w1ot (gaussian lengths)",
    "w1ot (ot_lengths, width 64)", "w1ot (ot_lengths, width 128)")]


def _load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def iterations_run(model) -> str:
    """Training iterations the fit ran (blank for models that do not train)."""
    if hasattr(model, "n_iter_"):
        return str(int(model.n_iter_))
    history = getattr(model, "history_", None)
    if history is not None and len(history) and "iteration" in history:
        return str(int(history["iteration"].max()))
    return ""


def fit_row(name: str, source: np.ndarray, target: np.ndarray, seed: int = 0):
    """The row's model fitted on CPU, with its wall seconds."""
    registry, params = ROWS[name]
    cls = models.get(registry)
    kwargs = {"seed": seed, **params}
    if "device" in cls().get_params():
        kwargs["device"] = "cpu"
    model = cls(**kwargs)
    start = time.perf_counter()
    model.fit(source, target)
    return model, time.perf_counter() - start


def score_row(name: str, pair: groundtruth.ConvexPair, seed: int = 0) -> dict:
    model, seconds = fit_row(name, pair.source, pair.target, seed)
    predicted = model.transport(pair.test)
    return {"row": name, "d": pair.d, "l2_uvp": pair.l2_uvp(predicted), "cosine": pair.cosine(predicted),
            "seconds": seconds, "iterations": iterations_run(model)}


def score_split(name: str, split: groundtruth.HoldoutSplit, seed: int = 0) -> dict:
    """L2-UVP (% of each test's own image variance) and per-cell RMSE of one fit on every test of ``split``."""
    model, seconds = fit_row(name, split.source, split.target, seed)
    scores: dict = {"row": name, "seconds": seconds, "iterations": iterations_run(model)}
    for test, (cells, truth) in split.tests.items():
        predicted = model.transport(cells)
        scores[test] = groundtruth.l2_uvp(predicted, truth, float(truth.var(0).sum()))
        scores[f"{test}_rmse"] = groundtruth.rmse(predicted, truth)
    return scores


#: The two families of pairs: random convex potentials, and potentials fitted to a 10-mixture (field-like).
FAMILIES = {"random": groundtruth.make_pair, "fitted": fitted_pairs.fitted_pair}


def suite(rows: list[str], dims: list[int], sizes: list[int], out=print, family: str = "random") -> list[dict]:
    out(f"# suite, {family} family: {', '.join(map(str, sizes))} cells per side, 4,000 test cells, pair seed 0, "
        f"model seed 0, {torch.get_num_threads()} torch threads, {_load()}\n")
    header = ("| D | n | model | L2-UVP % | / Gaussian map | / published | cosine | s / fit | iterations "
              "| published (ICNN minimax) |")
    out(header)
    out("|---" * 10 + "|")
    results = []
    for d in dims:
        for n in sizes:
            pair = FAMILIES[family](d, n=n)
            gaussian = score_row("gaussian_ot", pair)["l2_uvp"]
            for name in rows:
                r = score_row(name, pair)
                results.append({**r, "family": family, "n": n})
                published = PUBLISHED.get(d)
                ratio = "" if published is None else f"{r['l2_uvp'] / published:.1f}"
                out(f"| {d} | {n} | {name} | {r['l2_uvp']:.2f} | {r['l2_uvp'] / gaussian:.2f} | {ratio} | "
                    f"{r['cosine']:.3f} | {r['seconds']:.1f} | {r['iterations']} | {'' if published is None else published} |")
    out(f"\n# {_load()}")
    return results


def ood_suite(rows: list[str], dims: list[int], sizes: list[int], out=print, family: str = "random") -> list[dict]:
    """Every row trained on two of three mixture components, scored i.i.d., on the third and on a shifted copy."""
    tests = ("iid", "component", "shift")
    out(f"# suite in and out of distribution, {family} family: trained on 2 of the 3 control components, "
        f"{', '.join(map(str, sizes))} cells per side; tests of 2,000 cells: i.i.d., the held-out component, "
        f"the trained population shifted by {groundtruth.SHIFT_SDS:g} standard deviations; pair seed 0, model seed 0, "
        f"{torch.get_num_threads()} torch threads, {_load()}\n")
    out("| D | n | model | i.i.d. L2-UVP % (/ Gaussian) | held-out component | shifted copy "
        "| i.i.d. RMSE | component RMSE | shift RMSE | s / fit | iterations |")
    out("|---" * 11 + "|")
    results = []
    for d in dims:
        pair = FAMILIES[family](d, n=2, n_test=2)  # the truth only; the split draws the cells
        for n in sizes:
            split = groundtruth.holdout_split(pair, n, 2_000)
            gaussian = score_split("gaussian_ot", split)
            for name in rows:
                r = gaussian if name == "gaussian_ot" else score_split(name, split)
                results.append({**r, "d": d, "n": n, "family": family})
                cells = " | ".join(f"{r[t]:.2f} ({r[t] / gaussian[t]:.2f})" for t in tests)
                rmses = " | ".join(f"{r[t + '_rmse']:.3f}" for t in tests)
                out(f"| {d} | {n} | {name} | {cells} | {rmses} | {r['seconds']:.1f} | {r['iterations']} |")
    out(f"\n# {_load()}")
    return results


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def criterion_trace(d: int, n: int, iters: int = 3000, eval_every: int = 100, seed: int = 0) -> dict[str, list[float]]:
    """One CellOT run (fast preset, patience off); at every validation the test L2-UVP of the current
    map and each candidate validation score, on the run's own validation cells."""
    from perturbot import validation
    from perturbot.models import cellot as cellot_module

    pair = groundtruth.make_pair(d, n=n, n_test=2_000)
    trace: dict[str, list[float]] = {"iteration": [], "l2_uvp": [], **{c: [] for c in CRITERIA}}
    original = cellot_module._Trainer._evaluate
    model = models.get("cellot")(preset="fast", n_iters=iters, eval_every=eval_every, patience=0, seed=seed,
                                 device="cpu")

    def evaluate(trainer):  # type: ignore[no-untyped-def]
        result = original(trainer)
        scale, shift = trainer._units()
        with torch.no_grad():
            to_data = (lambda z: z * scale + shift) if scale is not None else (lambda z: z)
            mapped = to_data(trainer.g.gradient(trainer.src_val.unsqueeze(0))[0])
            target = to_data(trainer.tgt_val[0])
            test = torch.from_numpy(model._standardise(pair.test) if scale is not None else pair.test)
            predicted = to_data(trainer.g.gradient(test.unsqueeze(0))[0]).numpy()
        trace["iteration"].append(trainer.iteration)
        trace["l2_uvp"].append(pair.l2_uvp(predicted))
        for criterion in validation.CRITERIA:
            trace[criterion].append(validation.SelectionScore(criterion, target)(mapped))
        trace["dual_w2"].append(float(trainer.history.rows[-1]["val_w2"]))
        return result

    cellot_module._Trainer._evaluate = evaluate
    try:
        model.fit(pair.source, pair.target)
    finally:
        cellot_module._Trainer._evaluate = original
    return trace


def criterion_table(dims: list[int], n: int, iters: int, out=print) -> None:
    """Spearman correlation, across one run's checkpoints, of each validation score with the test L2-UVP."""
    out(f"# model selection: CellOT fast preset, patience off, {iters} iterations, a checkpoint every 100; "
        f"{n} cells per side; {_load()}\n")
    out("| D | L2-UVP first -> best -> last | " + " | ".join(
        f"{name}: Spearman, L2-UVP of its pick" for name in CRITERIA.values()) + " |")
    out("|---|---|" + "---|" * len(CRITERIA))
    for d in dims:
        t = criterion_trace(d, n, iters)
        cells = [f"{_spearman(t[k], t['l2_uvp']):.2f}, {t['l2_uvp'][int(np.argmin(t[k]))]:.1f}" for k in CRITERIA]
        out(f"| {d} | {t['l2_uvp'][0]:.1f} -> {min(t['l2_uvp']):.1f} -> {t['l2_uvp'][-1]:.1f} | " + " | ".join(cells) + " |")


def main(quick: bool = False) -> None:
    """``make bench`` entry: the suite of both families, then in and out of distribution at real cell counts
    (``--quick``: D = 2, 8, 32 with 5,000 cells, and 500 cells a side out of distribution)."""
    torch.set_num_threads(2)
    for family in FAMILIES:
        if quick:
            suite(DEFAULT_ROWS, [2, 8, 32], [5_000], family=family)
        else:
            suite(DEFAULT_ROWS, list(DIMS), [20_000], family=family)
    if quick:
        ood_suite(DEFAULT_ROWS, [2, 8, 32], [500])
    else:
        ood_suite(DEFAULT_ROWS, [2, 8, 32, 64], [500, 2_000, 20_000])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--n", type=int, nargs="+", default=[20_000], help="training cells per side (several: one table)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--family", choices=list(FAMILIES), default="random",
                        help="random convex potentials, or potentials fitted to a 10-mixture (field-like)")
    parser.add_argument("--ood", action="store_true",
                        help="train on 2 of 3 control components; i.i.d., held-out component and shifted tests")
    parser.add_argument("--criterion", action="store_true", help="the model-selection table instead of the suite")
    parser.add_argument("--iters", type=int, default=3000, help="iterations of the --criterion run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.criterion:
        criterion_table(args.dims, args.n[0], args.iters)
    elif args.ood:
        ood_suite(args.rows, args.dims, args.n, family=args.family)
    else:
        suite(args.rows, args.dims, args.n, family=args.family)
