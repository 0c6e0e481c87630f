"""Accuracy of the closed-form baselines on known ground truth, and speed of the autoencoder baselines.

Accuracy: on the synthetic 4i-like data (48 features, two cell lines) with both
kinds of ground-truth maps, ``convex`` (the demo's: gated convex gradients,
mostly linear) and ``piecewise`` (built so that no affine map fits), prints per
model the per-cell error against the true response (``gt_rmse``), its ratio to
the identity's, the ``mmd`` to held-out perturbed cells and the fitting time,
each a mean over perturbations. A neural OT model that does not beat
``gaussian_ot`` on a kind has not learned its non-linear part.

Speed: iterations per second of the autoencoder (scRNA-seq and 4i settings) and
the conditional autoencoder, the projected time of a full paper-length run, and
the prediction throughput of scGen in the latent space.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from perturbot.data.synthetic import MAP_KINDS, make_features
from perturbot.latent import LatentModel
from perturbot.metrics import all_metrics
from perturbot.models.autoencoder import FEATURES_PRESET, AutoEncoder
from perturbot.models.cae import CAE_FEATURES_PRESET, ConditionalAutoencoder
from perturbot.models.gaussian_ot import GaussianOT
from perturbot.models.popalign import PopAlign
from perturbot.models.scgen import ScGen
from perturbot.models.simple import Identity
from perturbot.training import set_threads


def _cells(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _rate(fit, n_iters: int) -> float:
    start = time.perf_counter()
    fit()
    return n_iters / (time.perf_counter() - start)


#: Closed-form baselines, fitted on all perturbations at once (label, constructor).
ACCURACY_MODELS = (
    ("identity", Identity),
    ("scgen (mean shift)", ScGen),
    ("gaussian_ot", GaussianOT),
    ("popalign", PopAlign),
)


def _split(n: int, rng: np.random.Generator, test: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_test = int(n * test)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def accuracy(quick: bool = False, seed: int = 0) -> list[dict]:
    """Rows (kind, model, gt_rmse, ratio to identity, mmd, fit seconds), means over perturbations."""
    cells, perturbations = (1_500, 2) if quick else (3_000, 3)
    rows = []
    for kind in MAP_KINDS:
        adata = make_features(cells=cells, perturbations=perturbations, features=48, seed=seed, map_kind=kind)
        rng = np.random.default_rng(seed)
        drug = adata.obs["drug"].astype(str).to_numpy()
        control = adata.X[drug == "control"]
        train, test = _split(len(control), rng)
        names = list(adata.uns["synthetic"]["perturbations"])
        targets, held_out, truths = {}, {}, {}
        for name in names:
            cells_p = adata.X[drug == name]
            p_train, p_test = _split(len(cells_p), rng)
            targets[name], held_out[name] = cells_p[p_train], cells_p[p_test]
            truths[name] = adata.obsm[f"X_true_{name}"][drug == "control"][test]
        fitted = []
        for label, cls in ACCURACY_MODELS:
            start = time.perf_counter()
            model = cls(seed=seed)
            model.fit(control[train], targets[names[0]]) if cls is Identity else model.fit_many(control[train], targets)
            fitted.append((label, model, time.perf_counter() - start))
            if cls is PopAlign:  # the response only changes transport: same mixtures, Gaussian maps per pair
                gaussian = copy.copy(model)
                gaussian.response = "gaussian"
                fitted.append(("popalign (gaussian response)", gaussian, time.perf_counter() - start))
        # the lower bound on mmd: real perturbed training cells in place of a prediction
        floor = [all_metrics(targets[n][rng.choice(len(targets[n]), len(test), replace=False)], held_out[n])["mmd"] for n in names]
        identity_error = None
        for label, model, seconds in fitted:
            scores = []
            for name in names:
                kwargs = {} if isinstance(model, Identity) else {"perturbation": name}
                pred = model.transport(control[test], **kwargs)
                scores.append(all_metrics(pred, held_out[name], truths[name]))
            gt = float(np.mean([s["gt_rmse"] for s in scores]))
            identity_error = identity_error or gt
            rows.append(
                {"kind": kind, "model": label, "gt_rmse": gt, "ratio": gt / identity_error,
                 "mmd": float(np.mean([s["mmd"] for s in scores])), "fit_s": seconds}
            )
        rows.append({"kind": kind, "model": "observed (mmd floor)", "gt_rmse": np.nan, "ratio": np.nan,
                     "mmd": float(np.mean(floor)), "fit_s": 0.0})
    return rows


def print_accuracy(rows: list[dict]) -> None:
    print(f"{'ground truth':<12} {'model':<30} {'gt_rmse':>8} {'/ identity':>10} {'mmd':>8} {'fit (s)':>8}")
    for r in rows:
        gt, ratio = ("—", "—") if np.isnan(r["gt_rmse"]) else (f"{r['gt_rmse']:.3f}", f"{r['ratio']:.3f}")
        print(f"{r['kind']:<12} {r['model']:<30} {gt:>8} {ratio:>10} {r['mmd']:>8.4f} {r['fit_s']:>8.2f}")


def main(quick: bool = False, threads: int = 1, part: str = "all") -> None:
    set_threads(threads)  # more threads than free cores make CPU training 10-100x slower
    if part in ("all", "accuracy"):
        print_accuracy(accuracy(quick))
        if part == "accuracy":
            return
        print()
    n_iters = 100 if quick else 500
    n_cells = 2_000 if quick else 10_000
    device = "auto"
    rows = []
    for label, n_genes, params in (
        ("autoencoder, scRNA-seq (1000 genes)", 1_000, {}),
        ("autoencoder, 4i preset (48 features)", 48, FEATURES_PRESET),
    ):
        kw = {**params, "n_iters": n_iters, "eval_every": n_iters, "device": device}
        x = _cells(n_cells, n_genes, 0)
        labels = np.repeat([0, 1], [n_cells // 2, n_cells - n_cells // 2])
        rate = _rate(lambda: AutoEncoder(**kw).fit(x, labels=labels), n_iters)
        full = params.get("n_iters", AutoEncoder.default_params()["n_iters"])
        rows.append((label, rate, full / rate / 60))
    for label, n_genes, params in (
        ("cAE, scRNA-seq (1000 genes, 3 perturbations)", 1_000, {}),
        ("cAE, 4i preset (48 features, 3 perturbations)", 48, CAE_FEATURES_PRESET),
    ):
        kw = {**params, "n_iters": n_iters, "eval_every": n_iters, "device": device}
        src = _cells(n_cells, n_genes, 0)
        targets = {f"p{i}": _cells(n_cells // 3, n_genes, i + 1) for i in range(3)}
        rate = _rate(lambda: ConditionalAutoencoder(**kw).fit_many(src, targets), n_iters)
        full = params.get("n_iters", ConditionalAutoencoder.default_params()["n_iters"])
        rows.append((label, rate, full / rate / 60))

    print(f"{'model':<48} {'iter/s':>9} {'paper-length run (min)':>24}")
    for label, rate, minutes in rows:
        print(f"{label:<48} {rate:>9.1f} {minutes:>24.1f}")

    x = _cells(n_cells, 1_000, 0)
    ae = AutoEncoder(n_iters=10, eval_every=10, device=device).fit(x)
    model = LatentModel(ScGen(), ae).fit(x[: n_cells // 2], x[n_cells // 2 :])
    start = time.perf_counter()
    model.transport(x)
    rate = n_cells / (time.perf_counter() - start)
    print(f"\nscGen in latent space, prediction: {rate:,.0f} cells/s (1000 genes, latent 50)")
    print(f"device: {ae.device_}, torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations and cells")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--part", choices=("all", "accuracy", "speed"), default="all", help="which tables to print")
    args = parser.parse_args()
    main(quick=args.quick, threads=args.threads, part=args.part)
