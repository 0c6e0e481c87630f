"""Patience against the full budget: iterations, time, validation loss and downstream scores.

On the Kang et al. lupus PBMCs (``../shared/data/kang_muscat.h5ad``; 100 highly
variable genes, as in a first run on one's own data), trains the autoencoder
(scRNA-seq defaults, 512-512 hidden units, latent 50) once to the cap and once
with patience, then scGen and W1-OT in each autoencoder's latent space, and
scores predictions of held-out stimulated cells. Prints one table row per run.

    nice .venv/bin/python benchmarks/bench_patience.py --cap 6000 --eval-every 250 --patience 5
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc

from perturbot.latent import LatentModel
from perturbot.metrics import l2_means, mmd
from perturbot.models.autoencoder import AutoEncoder
from perturbot.models.scgen import ScGen
from perturbot.models.w1ot import W1OT
from perturbot.training import set_threads

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kang_muscat.h5ad"


def load(n_genes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Log-normalised expression of the top variable genes of the training split; 80/20 split per condition."""
    adata = ad.read_h5ad(DATA)
    rng = np.random.default_rng(seed)
    test = np.zeros(adata.n_obs, dtype=bool)
    for group in ("ctrl", "stim"):
        idx = np.flatnonzero(adata.obs["group_id"].astype(str).to_numpy() == group)
        test[rng.choice(idx, len(idx) // 5, replace=False)] = True
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    train = adata[~test].copy()
    sc.pp.highly_variable_genes(train, n_top_genes=n_genes)
    genes = train.var_names[train.var["highly_variable"]]
    x = np.asarray(adata[:, genes].X.todense() if hasattr(adata.X, "todense") else adata[:, genes].X, dtype=np.float32)
    stim = adata.obs["group_id"].astype(str).to_numpy() == "stim"
    return x[~test], stim[~test], x[test & ~stim], x[test & stim], np.asarray(genes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap", type=int, default=6000, help="n_iters of the autoencoder (the full budget)")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--patience", type=int, default=5, help="evaluations without a lower validation loss")
    parser.add_argument("--ot-cap", type=int, default=1500, help="W1-OT iterations per stage (the full budget)")
    parser.add_argument("--ot-eval-every", type=int, default=100)
    parser.add_argument("--genes", type=int, default=100)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512], help="autoencoder hidden units")
    parser.add_argument("--latent", type=int, default=50, help="autoencoder latent dimension")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the training progress lines
    set_threads(args.threads)
    x_train, stim_train, ctrl_test, stim_test, _ = load(args.genes, args.seed)
    print(f"Kang PBMCs: {len(x_train)} training cells, {args.genes} genes; test {len(ctrl_test)} ctrl, {len(stim_test)} stim")
    header = f"{'run':<34} {'iters':>6} {'s':>6} {'best val':>9} {'scGen MMD':>10} {'scGen L2':>9} {'W1-OT MMD':>10} {'W1-OT L2':>9} {'W1-OT iters':>11} {'W1-OT s':>8}"
    print(header)
    identity = (mmd(ctrl_test, stim_test), l2_means(ctrl_test, stim_test))
    print(f"{'identity (no change)':<34} {'':>6} {'':>6} {'':>9} {identity[0]:>10.4f} {identity[1]:>9.3f}")
    for label, patience in (("full budget", None), (f"patience {args.patience}", args.patience)):
        ae_params = dict(hidden_units=tuple(args.hidden), latent_dim=args.latent, n_iters=args.cap, eval_every=args.eval_every, patience=patience, seed=args.seed, device="cpu")
        start = time.perf_counter()
        ae = AutoEncoder(**ae_params).fit(x_train, labels=stim_train)
        ae_s = time.perf_counter() - start
        iters = int(ae.history_["iteration"].max())
        best = float(ae.history_["val_loss"].min())
        scgen = LatentModel(ScGen(), ae).fit(x_train[~stim_train], x_train[stim_train])
        pred = scgen.transport(ctrl_test)
        scgen_scores = (mmd(pred, stim_test), l2_means(pred, stim_test))
        ot_params = dict(n_iters=args.ot_cap, eval_every=args.ot_eval_every, patience=patience, seed=args.seed, device="cpu")
        start = time.perf_counter()
        w1 = LatentModel(W1OT(**ot_params), ae).fit(x_train[~stim_train], x_train[stim_train])
        ot_s = time.perf_counter() - start
        pred = w1.transport(ctrl_test)
        ot_iters = int(w1.inner.history_.groupby("stage")["iteration"].max().sum() - args.ot_cap)
        print(
            f"{'autoencoder ' + label:<34} {iters:>6} {ae_s:>6.0f} {best:>9.4f} {scgen_scores[0]:>10.4f} "
            f"{scgen_scores[1]:>9.3f} {mmd(pred, stim_test):>10.4f} {l2_means(pred, stim_test):>9.3f} {ot_iters:>11} {ot_s:>8.0f}"
        )


if __name__ == "__main__":
    main()
