"""Training and prediction speed of the autoencoder baselines at the papers' sizes.

Prints iterations per second of the autoencoder (scRNA-seq and 4i settings) and
the conditional autoencoder, the projected time of a full paper-length run, and
the prediction throughput of scGen in the latent space.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from perturbot.latent import LatentModel
from perturbot.models.autoencoder import FEATURES_PRESET, AutoEncoder
from perturbot.models.cae import CAE_FEATURES_PRESET, ConditionalAutoencoder
from perturbot.models.scgen import ScGen
from perturbot.training import set_threads


def _cells(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _rate(fit, n_iters: int) -> float:
    start = time.perf_counter()
    fit()
    return n_iters / (time.perf_counter() - start)


def main(quick: bool = False, threads: int = 1) -> None:
    set_threads(threads)  # more threads than free cores make CPU training 10-100x slower
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
    args = parser.parse_args()
    main(quick=args.quick, threads=args.threads)
