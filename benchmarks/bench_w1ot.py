"""Speed of W1-OT: seconds per 1,000 iterations of each stage, time to a target MMD, batching.

Data: 2,000 cells a side, source N(0, s^2 I) and target N(m, s^2 I) with
s^2 = 10 / d (the total variance stays 10 at every width, so the validation
kernels see comparable distances) and a shift m of norm 3 spread over the
first min(d, 10) features. A fit runs ``n_pot`` potential and ``n_step``
step-size iterations, validating every 100. The target MMD is 90 % of the way
from the identity's validation MMD to that of the true map x + m; the time to
reach it is the stage-1 time plus the stage-2 iterations it took, at the
measured stage-2 rate. Reference (authors' code, 2-core CPU, 48 features):
about 14 s per 1,000 potential and 5 s per 1,000 step-size iterations.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from perturbot.models.w1ot import W1OT
from perturbot.training import set_threads
from perturbot.validation import carve_validation, mmd_rbf_torch

N_CELLS = 2_000
EVAL_EVERY = 100


def _data(d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = np.sqrt(10.0 / d)
    k = min(d, 10)
    shift = np.zeros(d, np.float32)
    shift[:k] = 3.0 / np.sqrt(k)
    x = (scale * rng.standard_normal((N_CELLS, d))).astype(np.float32)
    y = (scale * rng.standard_normal((N_CELLS, d)) + shift).astype(np.float32)
    return x, y, shift


def _stage_seconds(model: W1OT, source, targets) -> tuple[float, float, float, float]:
    """Wall and CPU seconds of stage 1 and stage 2 of one fit (validation included)."""
    t = model.fit_many(source, targets).fit_seconds_
    return t["potential"], t["step"], t["potential_cpu"], t["step_cpu"]


def _validation_mmd(x, y, shift, val_size: int, seed: int) -> tuple[float, float]:
    """Validation MMD of the identity and of the true map, on the cells the model validates on."""
    _, sv = carve_validation(len(x), val_size, seed)
    _, tv = carve_validation(len(y), val_size, seed + 1)
    xs, ys = torch.from_numpy(x[sv]), torch.from_numpy(y[tv])
    return float(mmd_rbf_torch(xs, ys)), float(mmd_rbf_torch(xs + torch.from_numpy(shift), ys))


def scaling(dims: list[int], n_pot: int, n_step: int) -> list[tuple]:
    rows = []
    for d in dims:
        x, y, shift = _data(d, d)
        model = W1OT(n_iters_potential=n_pot, n_iters_step=n_step, eval_every=EVAL_EVERY, criterion="mmd_fixed",
                     device="cpu")
        t_pot, t_step, cpu_pot, cpu_step = _stage_seconds(model, x, {"p": y})
        per_step = t_step / n_step
        identity, oracle = _validation_mmd(x, y, shift, model.val_size, model.seed)
        goal = oracle + 0.1 * (identity - oracle)
        h = model.history_.dropna(subset=["val_mmd"])
        hit = h[h.val_mmd <= goal]
        reach = t_pot + (hit.iteration.iloc[0] - n_pot) * per_step if len(hit) else float("nan")
        rows.append((d, 1000 * t_pot / n_pot, 1000 * per_step, 1000 * cpu_pot / n_pot, 1000 * cpu_step / n_step,
                     identity, oracle, h.val_mmd.min(), reach))
    return rows


def batching(n_perturbations: list[int], n_iters: int, d: int = 48) -> list[tuple]:
    rows = []
    x, y, _ = _data(d, 0)
    for p in n_perturbations:
        rng = np.random.default_rng(p)
        targets = {f"p{i}": y + rng.normal(0, 0.1, d).astype(np.float32) for i in range(p)}
        model = W1OT(n_iters=n_iters, eval_every=EVAL_EVERY, device="cpu")
        rows.append((p, *(1000 * t / n_iters for t in _stage_seconds(model, x, targets))))
    return rows


def main(quick: bool = False, threads: int = 1) -> None:
    set_threads(threads)
    dims = [50, 250, 1250] if quick else [2, 10, 50, 250, 1250]
    n_pot, n_step = (500, 500) if quick else (2000, 2000)
    print(f"load average before: {os.getloadavg()}, torch threads: {torch.get_num_threads()}, "
          f"{N_CELLS} cells a side")
    print(f"\nscaling with the number of features ({n_pot} potential + {n_step} step-size iterations)")
    print("seconds per 1,000 iterations, wall clock and process CPU; seconds to the target MMD, wall clock")
    print(f"{'features':>8} {'wall pot.':>10} {'wall step':>10} {'cpu pot.':>9} {'cpu step':>9} "
          f"{'MMD identity':>13} {'MMD x+m':>9} {'best MMD':>9} {'s to target':>12}")
    for d, sp, ss, cp, cs, ident, oracle, best, reach in scaling(dims, n_pot, n_step):
        reach_s = f"{reach:12.1f}" if np.isfinite(reach) else f"{'not reached':>12}"
        print(f"{d:>8} {sp:>10.2f} {ss:>10.2f} {cp:>9.2f} {cs:>9.2f} {ident:>13.5f} {oracle:>9.5f} "
              f"{best:>9.5f} {reach_s}")
    n_iters = 200 if quick else 500
    print(f"\nbatched perturbations, 48 features ({n_iters} iterations per stage)")
    print(f"{'perturbations':>13} {'wall pot.':>10} {'wall step':>10} {'cpu pot.':>9} {'cpu step':>9} "
          f"{'cpu both, per perturbation':>27}")
    for p, sp, ss, cp, cs in batching([1, 8], n_iters):
        print(f"{p:>13} {sp:>10.2f} {ss:>10.2f} {cp:>9.2f} {cs:>9.2f} {(cp + cs) / p:>27.2f}")
    print("\nreference (authors' code, 48 features): 14 s/1k potential, 5 s/1k step size, 19 per perturbation")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer widths and iterations")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    main(quick=args.quick, threads=args.threads)
