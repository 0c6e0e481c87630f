"""CellOT presets on ground truth: speed, time to the paper settings' per-cell error, Gaussians, OOD.

Tables (print ``uptime``'s load average with them: timings taken on a loaded
machine are not results):

1. presets: for ``preset="paper"`` and ``preset="fast"``, 1 and 8
   perturbations trained together, on convex-potential ground truth
   (``benchmarks/cellot_truth.py``; 48 features, 3,000 control and 2,000
   perturbed training cells): seconds per 1,000 iterations, iterations and
   seconds until the current map first reaches the paper preset's best
   per-cell error (gt_rmse) within its budget, the final gt_rmse (kept
   weights), and the L2-UVP (%) of the 8-d Gaussian map;
2. candidates: each of the fast preset's choices alone on top of the paper
   settings, and all together, on several dimensions and seeds (best and final
   gt_rmse, iterations to the paper's best, which weights validation MMD and
   the dual W2 estimate would select);
3. out of distribution: trained on two of three control populations, gt_rmse
   on the third against identity's and the closed-form Gaussian map's (the
   fast preset's starting point);
4. solvers: ``solver="minmax"`` against ``solver="amortized"`` (Amos 2023)
   under the fast preset (patience off, same budget), 1 perturbation: gt_rmse
   of the current map against iterations and against seconds (the wall time
   of the same traced run), and the 8-d Gaussian L2-UVP.

Seconds to target are iterations to target times the rate measured in a
separate timed run with validation off, so they do not depend on the
per-evaluation scoring the benchmark adds. 2 torch threads unless
``--threads``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cellot_truth import ConvexProblem, trace_fit  # noqa: E402
from perturbot.models.cellot import CellOT  # noqa: E402
from perturbot.models.gaussian_ot import GaussianOT  # noqa: E402

#: The fast preset's choices, each alone on top of the paper settings.
CANDIDATES: dict[str, dict] = {
    "paper": {},
    "+ standardize": dict(standardize=True),
    "+ identity init": dict(init="identity"),
    "+ Gaussian init": dict(init="gaussian"),
    "+ lr 1e-3, 2 g steps": dict(lr=1e-3, n_inner_iters=2),
    "+ eval 100, patience 10": dict(eval_every=100, patience=10),
    "fast (all)": dict(preset="fast"),
    "+ amortized solver": dict(solver="amortized"),
    "fast + amortized solver": dict(preset="fast", solver="amortized"),
}
SOLVERS = ("minmax", "amortized")


def _load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def _model(budget: int, **params) -> CellOT:
    params = {"n_iters": budget, **params}
    return CellOT(device="cpu", **params)


def seconds_per_1000(problem: ConvexProblem, iters: int, repeats: int = 2, **params) -> float:
    """Best of ``repeats`` timed runs (validation off), seconds per 1,000 iterations."""
    params = {**params, "eval_every": 10**9, "patience": 0}
    _model(2, **params).fit_many(problem.source, problem.targets)  # warm-up
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        _model(iters, **params).fit_many(problem.source, problem.targets)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / iters


def run(problem: ConvexProblem, budget: int, **params) -> dict:
    """Train once, tracing the current map's gt_rmse at every validation."""
    model, wall, curve = trace_fit(_model(budget, **params), problem)
    score = [problem.gt_rmse(lambda x, n=n: model.transport(x, n), n, problem.test_train) for n in problem.maps]
    hist = model.history_.groupby("iteration")[["val_mmd", "val_w2"]].mean()
    at = dict(curve)
    return {
        "curve": curve,
        "final": float(np.mean(score)),
        "best": min(e for _, e in curve),
        "iters": model.n_iter_,
        "wall": wall,
        "sel_mmd": at[int(hist["val_mmd"].idxmin())],
        "sel_w2": at[int(hist["val_w2"].idxmax())],
        "last": curve[-1][1],
        "model": model,
    }


def first_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((i for i, e in curve if e <= target + 1e-9), None)


def gaussian_uvp(d: int, budget: int, seed: int = 0, **params) -> float:
    """L2-UVP (%) of the learned map N(m1,S1) -> N(m2,S2) against the closed form."""
    rng = np.random.default_rng(seed)

    def spd() -> np.ndarray:
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        return q @ np.diag(rng.uniform(0.5, 2.0, d)) @ q.T

    S1, S2 = spd(), spd()
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    w, v = np.linalg.eigh(S1)
    r1, r1_inv = (v * np.sqrt(w)) @ v.T, (v / np.sqrt(w)) @ v.T
    w2, v2 = np.linalg.eigh(r1 @ S2 @ r1)
    A = r1_inv @ ((v2 * np.sqrt(w2)) @ v2.T) @ r1_inv
    x, y, test = (rng.multivariate_normal(m, S, 4000).astype(np.float32) for m, S in ((m1, S1), (m2, S2), (m1, S1)))
    model = _model(budget, **params).fit(x, y)
    truth = (test - m1) @ A.T + m2
    return float(100 * ((model.transport(test) - truth) ** 2).sum(1).mean() / np.trace(S2))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _row(cells: list, widths: list[int]) -> str:
    return " ".join(f"{_fmt(c):>{w}}" for c, w in zip(cells, widths))


def presets_table(
    budgets: dict[str, int], d: int, rate_iters: int, uvp_budgets: dict[str, int], perturbations: tuple[int, ...] = (1, 8)
) -> None:
    cols = ["preset", "P", "s/1000 it", "paper best", "iters to it", "s to it", "iters run", "final gt_rmse",
            "identity", "uvp 8-d %"]
    widths = [7, 3, 10, 11, 11, 9, 10, 14, 9, 10]
    print(f"\n## Presets, {d} features, convex-potential truth, paper budget {budgets['paper']} iterations")
    print(_row(cols, widths))
    uvp = {name: gaussian_uvp(8, uvp_budgets[name], preset=name) for name in ("paper", "fast")}
    for P in perturbations:
        problem = ConvexProblem(d, seed=0, n_perturbations=P)
        identity = np.mean([problem.gt_rmse(lambda x: x, n, problem.test_train) for n in problem.maps])
        results = {name: run(problem, budgets[name] // (1 if P == 1 else 2), preset=name) for name in ("paper", "fast")}
        target = results["paper"]["best"]
        for name, res in results.items():
            rate = seconds_per_1000(problem, rate_iters if name == "paper" else 5 * rate_iters, preset=name)
            reach = first_reach(res["curve"], target)
            seconds = None if reach is None else reach * rate / 1000
            print(_row([name, P, rate, target, reach, seconds, res["iters"], res["final"], float(identity),
                        uvp[name]], widths))
    print(f"({_load()}; 'paper best': lowest gt_rmse of the paper preset's map at any validation)")


def candidates_table(
    dims: tuple[int, ...], seeds: tuple[int, ...], budget: int, fast_budget: int, kind: str,
    names: tuple[str, ...] = tuple(CANDIDATES),
) -> None:
    cols = ["candidate", "d", "seed", "best", "final", "iters to paper best", "iters run", "sel MMD", "sel W2",
            "last"]
    widths = [24, 3, 4, 7, 7, 19, 9, 7, 7, 7]
    print(f"\n## Candidates ({kind} truth; paper budget {budget}, others {fast_budget} iterations; gt_rmse)")
    print(_row(cols, widths))
    for d in dims:
        for seed in seeds:
            problem = ConvexProblem(d, seed=seed, kind=kind)
            identity = problem.gt_rmse(lambda x: x, "pert0", problem.test_train)
            target = None
            for name in ("paper",) + tuple(n for n in names if n != "paper"):  # the paper run sets the target
                params = CANDIDATES[name]
                res = run(problem, budget if name == "paper" else fast_budget, **params)
                if name == "paper":
                    target = res["best"]
                reach = first_reach(res["curve"], target)
                print(_row([name, d, seed, res["best"], res["final"], reach, res["iters"], res["sel_mmd"],
                            res["sel_w2"], res["last"]], widths), flush=True)
            print(f"{'identity':>24} {d:>3} {seed:>4} {identity:>7.3f}")
    print(f"({_load()}; sel MMD / sel W2: gt_rmse of the weights at the lowest validation MMD / "
          "highest validation W2 estimate; last: the final weights)")


def ood_table(
    d: int, budgets: dict[str, int], seeds: tuple[int, ...], variants: tuple[str, ...] = ("paper", "fast (all)")
) -> None:
    """gt_rmse on a population never trained on, against identity and the Gaussian map (the fast preset's start).

    ``variants``: names of :data:`CANDIDATES`, one column each.
    """
    print(f"\n## Out of distribution: trained on populations 0 and 1, gt_rmse on population 2 ({d} features)")
    cols = ["seed", "identity", "Gaussian"] + list(variants) + [f"{v} i.i.d." for v in variants if v != "paper"]
    widths = [4, 9, 9] + [max(9, len(c)) for c in cols[3:]]
    print(_row(cols, widths))
    for seed in seeds:
        problem = ConvexProblem(d, seed=seed, train_populations=(0, 1))
        unseen = problem.test[2]
        gaussian = GaussianOT().fit_many(problem.source, problem.targets)
        scores = [problem.gt_rmse(lambda x: x, "pert0", unseen),
                  problem.gt_rmse(lambda x, g=gaussian: g.transport(x, "pert0"), "pert0", unseen)]
        iid = []
        for name in variants:
            budget = budgets["paper" if name == "paper" else "fast"]
            model = _model(budget, **CANDIDATES[name]).fit_many(problem.source, problem.targets)
            scores.append(problem.gt_rmse(lambda x, m=model: m.transport(x, "pert0"), "pert0", unseen))
            if name != "paper":
                iid.append(problem.gt_rmse(lambda x, m=model: m.transport(x, "pert0"), "pert0", problem.test_train))
        print(_row([seed, *scores, *iid], widths), flush=True)
    print(f"(paper preset {budgets['paper']} iterations, the others at most {budgets['fast']}; 'i.i.d.': gt_rmse on "
          f"fresh cells of the training populations; {_load()})")


def at_seconds(curve: list[tuple[int, float]], rate: float, seconds: float) -> float | None:
    """gt_rmse of the last validation reached within ``seconds`` at ``rate`` seconds per iteration."""
    reached = [e for i, e in curve if i * rate <= seconds + 1e-9]
    return reached[-1] if reached else None


def solvers_table(d: int, seeds: tuple[int, ...], budget: int, marks: tuple[int, ...], uvp_budget: int,
                  kind: str = "gated") -> None:
    """Both solvers under the fast preset: error against iterations and at equal wall time."""
    print(f"\n## Solvers under the fast preset ({kind} truth, {d} features, 1 perturbation, {budget} iterations, "
          "patience off; gt_rmse of the current map)")
    cols = ["solver", "seed", "s/1000 it"] + [f"@{m} it" for m in marks] + ["best", "final", "load"]
    widths = [9, 4, 9] + [8] * len(marks) + [7, 7, 5]
    print(_row(cols, widths))
    for seed in seeds:
        problem = ConvexProblem(d, seed=seed, kind=kind)
        results = {}
        for name in SOLVERS:  # a row as soon as its run ends: the amortised one is slow
            res = results[name] = run(problem, budget, preset="fast", patience=0, solver=name, seed=seed)
            at = dict(res["curve"])
            cells = [name, seed, 1000 * res["wall"] / res["iters"]] + [at.get(m) for m in marks]
            print(_row(cells + [res["best"], res["final"], "%.2f" % os.getloadavg()[0]], widths), flush=True)
        equal = min(r["wall"] for r in results.values())
        at_equal = {n: at_seconds(r["curve"], r["wall"] / r["iters"], equal) for n, r in results.items()}
        identity = problem.gt_rmse(lambda x: x, "pert0", problem.test_train)
        print(f"{'identity':>9} {seed:>4} {identity:.3f}; at equal seconds ({equal:.1f} s): "
              + ", ".join(f"{n} {_fmt(e)}" for n, e in at_equal.items()), flush=True)
    for name in SOLVERS:
        uvp = gaussian_uvp(8, uvp_budget, preset="fast", solver=name)
        print(f"8-d Gaussian L2-UVP, fast preset, solver={name}: {uvp:.3f} % ({_load()})", flush=True)
    print(f"({_load()}; s/1000 it: wall time of the traced run, scoring excluded, validation included; "
          "at equal seconds: gt_rmse at the last validation within the faster run's total seconds)")


def main(
    quick: bool = False,
    only: tuple[str, ...] = ("presets", "candidates", "ood"),
    threads: int = 2,
    perturbations: tuple[int, ...] = (1, 8),
    solver_budget: int | None = None,
    solver_seeds: tuple[int, ...] = (0, 1),
    candidates: Sequence[str] = tuple(CANDIDATES),
    candidate_dims: Sequence[int] | None = None,
    candidate_seeds: Sequence[int] | None = None,
    candidate_budget: int | None = None,
    kinds: Sequence[str] = ("gated", "piecewise"),
    ood_variants: Sequence[str] = ("paper", "fast (all)"),
    ood_seeds: Sequence[int] | None = None,
) -> None:
    """Print the tables named in ``only``; ``None`` or empty options take the full (or ``quick``) defaults."""
    torch.set_num_threads(threads)
    print(f"# CellOT presets ({'quick' if quick else 'full'}), {threads} threads, {_load()}, torch {torch.__version__}")
    if "presets" in only:
        presets_table(
            budgets={"paper": 600 if quick else 10_000, "fast": 600 if quick else 5_000},
            d=48,
            rate_iters=20 if quick else 100,
            uvp_budgets={"paper": 500 if quick else 5_000, "fast": 300 if quick else 5_000},
            perturbations=perturbations,
        )
    if "candidates" in only:
        for kind in kinds:
            candidates_table(
                dims=tuple(candidate_dims or ((8, 48) if quick else (8, 16, 48))),
                seeds=tuple(candidate_seeds or ((0,) if quick else (0, 1))),
                budget=candidate_budget or (400 if quick else 5_000),
                fast_budget=candidate_budget or (400 if quick else 3_000),
                kind=kind,
                names=tuple(candidates),
            )
    if "solvers" in only:
        budget = solver_budget or (300 if quick else 2_000)
        marks = tuple(m for m in (100, 300, 500, 1000, 2000) if m <= budget)
        solvers_table(48, (0,) if quick else solver_seeds, budget, marks, 300 if quick else 1_500)
    if "ood" in only:
        ood_table(48, {"paper": 400 if quick else 5_000, "fast": 400 if quick else 5_000},
                  tuple(ood_seeds or ((0,) if quick else (0, 1, 2))), tuple(ood_variants))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets, one seed")
    parser.add_argument("--only", nargs="*", default=["presets", "candidates", "ood"],
                        choices=["presets", "candidates", "ood", "solvers"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--perturbations", type=int, nargs="*", default=[1, 8],
                        help="rows of the presets table: perturbations trained together")
    parser.add_argument("--solver-budget", type=int, default=None, help="iterations per run of the solvers table")
    parser.add_argument("--solver-seeds", type=int, nargs="*", default=[0, 1], help="seeds of the solvers table")
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES),
                        metavar="NAME",
                        help="rows of the candidates table (the paper row always runs: it sets the target)")
    parser.add_argument("--candidate-dims", type=int, nargs="*", default=None,
                        help="dimensions of the candidates table")
    parser.add_argument("--candidate-seeds", type=int, nargs="*", default=None, help="seeds of the candidates table")
    parser.add_argument("--candidate-budget", type=int, default=None,
                        help="iterations of every candidates-table run (default: 5,000 paper, 3,000 the others)")
    parser.add_argument("--kinds", nargs="*", default=["gated", "piecewise"], choices=["gated", "piecewise"],
                        help="ground truths of the candidates table")
    parser.add_argument("--ood", nargs="*", default=["paper", "fast (all)"], choices=list(CANDIDATES), metavar="NAME",
                        help="columns of the out-of-distribution table: names of the candidates table's rows")
    parser.add_argument("--ood-seeds", type=int, nargs="*", default=None,
                        help="seeds of the out-of-distribution table")
    parser.add_argument("--log", action="store_true", help="training progress lines on stderr")
    args = parser.parse_args()
    if args.log:
        import logging

        logging.basicConfig(level=logging.INFO)
    main(quick=args.quick, only=tuple(args.only), threads=args.threads, perturbations=tuple(args.perturbations),
         solver_budget=args.solver_budget, solver_seeds=tuple(args.solver_seeds), candidates=args.candidates,
         candidate_dims=args.candidate_dims, candidate_seeds=args.candidate_seeds,
         candidate_budget=args.candidate_budget, kinds=args.kinds, ood_variants=args.ood, ood_seeds=args.ood_seeds)
