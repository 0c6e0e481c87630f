"""OT flow matching on a known W2 map: per-cell error and MMD against wall time, batch size, perturbations.

Data: ``make_features`` (48 features, two cell lines, each perturbation the
gradient of a convex potential, so every control cell's true response is
known). 3,000 control and 2,000 perturbed cells train; 1,000 held-out control
cells are transported and scored against their true responses (``gt_rmse``)
and against 1,000 held-out perturbed cells (``mmd``, the papers' 50-bandwidth
squared MMD). References on the same cells: the identity, a mean shift
(x + mean(target) - mean(source)) and the true map (its MMD is the sampling
floor). Three tables:

1. ``gt_rmse`` and ``mmd`` along training (default settings, and 3,000
   iterations at a constant learning rate, the setting that drifts);
2. the minibatch size of the OT coupling (the W2 map is approached only in
   the large-batch limit), plus the independent coupling;
3. one network for 1 and for 8 perturbations (mean over perturbations).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from perturbot.data.synthetic import make_features
from perturbot.metrics import gt_rmse, mmd
from perturbot.models.otfm import OTFlowMatching, integrate
from perturbot.training import set_threads

N_SOURCE, N_TARGET, N_TEST = 3000, 2000, 1000


def data(n_perturbations: int, seed: int = 0) -> dict:
    """Training and test cells, with the true response of every test control cell."""
    adata = make_features(cells=4000, perturbations=n_perturbations, features=48, seed=seed)
    names = adata.uns["synthetic"]["perturbations"]
    x = np.asarray(adata.X)
    drug = adata.obs["drug"].astype(str).to_numpy()
    control = x[drug == "control"]
    out = {"source": control[:N_SOURCE], "test": control[N_SOURCE : N_SOURCE + N_TEST],
           "targets": {}, "target_test": {}, "truth": {}}
    for name in names:
        cells = x[drug == name]
        out["targets"][name] = cells[:N_TARGET]
        out["target_test"][name] = cells[N_TARGET : N_TARGET + N_TEST]
        out["truth"][name] = adata.obsm[f"X_true_{name}"][drug == "control"][N_SOURCE : N_SOURCE + N_TEST]
    return out


def references(d: dict) -> dict[str, tuple[float, float]]:
    """(gt_rmse, mmd) of the identity, a mean shift and the true map, mean over perturbations."""
    rows = {"identity": [], "mean shift": [], "true map": []}
    for name, target in d["targets"].items():
        shifted = d["test"] + target.mean(0) - d["source"].mean(0)
        for key, pred in (("identity", d["test"]), ("mean shift", shifted), ("true map", d["truth"][name])):
            rows[key].append((gt_rmse(pred, d["truth"][name]), mmd(pred, d["target_test"][name])))
    return {k: tuple(np.mean(v, axis=0)) for k, v in rows.items()}


class _Traced(OTFlowMatching):
    """Scores the held-out cells at every validation step (time spent scoring is not counted)."""

    def _validation_mmd(self, net, data_):
        out = super()._validation_mmd(net, data_)
        paused = time.perf_counter()
        d = self._bench
        center = torch.tensor(self.center_, dtype=torch.float32, device=self.device_)
        x = (torch.from_numpy(d["test"]).to(self.device_) - center) / self.scale_
        scores = []
        for p, name in enumerate(d["targets"]):
            pred = (integrate(net, x, p, int(self.n_steps), self.solver) * self.scale_ + center).cpu().numpy()
            scores.append((gt_rmse(pred, d["truth"][name]), mmd(pred, d["target_test"][name])))
        g, m = np.mean(scores, axis=0)
        self._trace.append((self._iteration(), paused - self._start - self._scoring, g, m))
        self._scoring += time.perf_counter() - paused
        return out

    def _iteration(self) -> int:
        return min((len(self._trace) + 1) * int(self.eval_every), int(self.n_iters))


def run(d: dict, **params) -> tuple[list[tuple], float]:
    """Fit on ``d`` and return the trace (iteration, seconds, gt_rmse, mmd) and the fit's seconds."""
    model = _Traced(device="cpu", **params)
    model._bench, model._trace, model._scoring = d, [], 0.0
    model._start = time.perf_counter()
    model.fit_many(d["source"], d["targets"])
    return model._trace, model.fit_seconds_["train"] - model._scoring


def _print_references(refs: dict) -> None:
    for key, (g, m) in refs.items():
        print(f"{key:>28} {'':>6} {'':>8} {g:>8.3f} {m:>9.5f}")


def main(quick: bool = False, threads: int = 2) -> None:
    set_threads(threads)
    print(f"load average before: {os.getloadavg()}, torch threads: {torch.get_num_threads()}, "
          f"{N_SOURCE} control / {N_TARGET} perturbed training cells, 48 features, {N_TEST} test cells")
    d1 = data(1)
    refs = references(d1)
    defaults = OTFlowMatching.default_params()

    print("\n1. along training (seconds: training and validation, not the scoring of test cells)")
    print(f"{'setting':>28} {'iter':>6} {'seconds':>8} {'gt_rmse':>8} {'mmd':>9}")
    _print_references(refs)
    long_iters = 1000 if quick else 3000
    settings = [
        ("defaults", dict(eval_every=max(defaults["n_iters"] // 5, 1))),
        (f"{long_iters} iters, constant lr", dict(n_iters=long_iters, lr_min=defaults["lr"], eval_every=long_iters // 5)),
    ]
    for label, params in settings:
        trace, _ = run(d1, **params)
        for it, sec, g, m in trace:
            print(f"{label:>28} {it:>6} {sec:>8.1f} {g:>8.3f} {m:>9.5f}")

    print("\n2. minibatch size of the OT coupling (default schedule; final model)")
    print(f"{'batch / coupling':>28} {'iter':>6} {'seconds':>8} {'gt_rmse':>8} {'mmd':>9}")
    batches = [128, 512] if quick else [64, 128, 256, 512, 1024]
    variants = [(f"{b} exact", dict(batch_size=b)) for b in batches]
    variants.append((f"{defaults['batch_size']} independent", dict(coupling="independent")))
    for label, params in variants:
        trace, seconds = run(d1, eval_every=defaults["n_iters"], **params)
        it, _, g, m = trace[-1]
        print(f"{label:>28} {it:>6} {seconds:>8.1f} {g:>8.3f} {m:>9.5f}")

    print("\n3. one network for several perturbations (default settings; mean over perturbations)")
    print(f"{'perturbations':>28} {'iter':>6} {'seconds':>8} {'gt_rmse':>8} {'mmd':>9}")
    for p in ([1, 4] if quick else [1, 8]):
        dp = d1 if p == 1 else data(p)
        trace, seconds = run(dp, eval_every=defaults["n_iters"])
        it, _, g, m = trace[-1]
        print(f"{p:>28} {it:>6} {seconds:>8.1f} {g:>8.3f} {m:>9.5f}")
        if p > 1:
            _print_references(references(dp))
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer settings and iterations")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    main(quick=args.quick, threads=args.threads)
