"""How the workflow scales with the number of perturbations: jobs planned, dry-run time, and a real run.

For 10, 100 and 1,000 perturbations (synthetic counts, 200 cells each; an i.i.d.
and a two-patient o.o.s. experiment with seven models, as in docs/cluster.md) it
prints the jobs a dry run plans and the dry run's wall time. The perturbation list
that ``prepare_data`` would write stands in for the data, so the dry run sees the
whole DAG without preparing 200,000 cells. With ``--run`` (not in ``--quick``) it
then runs the 100-perturbation i.i.d. experiment end to end on this machine, the
neural models batched (``joint_training: auto``) at short budgets, and prints the
wall time and each rule's peak memory from ``results/figures/job_resources.csv``.

    python benchmarks/bench_scale.py [--sizes 10 100 1000] [--run] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from perturbot.data.synthetic import _perturbation_names  # noqa: E402
from perturbot.slugs import slug_map  # noqa: E402

MODELS = ["identity", "observed", "gaussian_ot", "popalign", "scgen", "cellot", "w1ot"]
#: Short budgets for the end-to-end run: it measures the workflow's overhead and memory, not accuracy.
RUN_PARAMS = {
    "cellot": {"preset": "fast", "n_iters": 500},
    "w1ot": {"n_iters": 500},
}
RUN_AUTOENCODER = {"n_iters": 1000}


def _load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def screen_config(n: int, experiments: tuple[str, ...] = ("iid", "oos")) -> dict:
    exps = {
        "iid": {"dataset": "screen", "setting": "iid", "models": MODELS},
        "oos": {"dataset": "screen", "setting": "oos", "holdout_key": "patient",
                "holdouts": ["patient1", "patient2"], "models": MODELS},
    }
    return {
        "seed": 0,
        "device": "cpu",
        "datasets": {"screen": {"source": "synthetic", "modality": "counts",
                                "synthetic": {"cells": 200, "perturbations": n, "features": 200, "seed": 0}}},
        "experiments": {f"screen_{k}": exps[k] for k in experiments},
    }


def snakemake(workdir: Path, config: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           *args, "--configfile", str(path)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, seconds


def dry_run(n: int, cores: int) -> tuple[int, int, float]:
    """Jobs planned, of them ``train``, and the dry run's seconds, for ``n`` perturbations."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        names = _perturbation_names(n)
        for exp in ("screen_iid", "screen_oos"):
            data = workdir / "results" / exp / "data"
            data.mkdir(parents=True)
            (data / "perturbations.json").write_text(
                json.dumps({"perturbations": names, "slugs": slug_map(names, "perturbation")})
            )
        proc, seconds = snakemake(workdir, screen_config(n), "-n", "--cores", str(cores))
    total = int(re.search(r"^total\s+(\d+)", proc.stdout, re.M).group(1))
    train = int(re.search(r"^train\s+(\d+)", proc.stdout, re.M).group(1))
    return total, train, seconds


def end_to_end(n: int, cores: int, out=print) -> None:
    """Run the i.i.d. screen of ``n`` perturbations to its metrics and print wall time and peak memory per rule."""
    import pandas as pd

    config = screen_config(n, experiments=("iid",))
    exp = config["experiments"]["screen_iid"]
    exp["model_params"] = RUN_PARAMS
    exp["autoencoder"] = RUN_AUTOENCODER
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        out(f"end-to-end, {n} perturbations x 200 cells, i.i.d., {cores} cores ({_load()})")
        _, seconds = snakemake(workdir, config, "--cores", str(cores), "results/screen_iid/metrics.csv",
                               "results/figures/job_resources.csv")
        jobs = pd.read_csv(workdir / "results/figures/job_resources.csv")
    out(f"wall time {seconds:.0f} s ({_load()})")
    out("| training jobs of | jobs | wall s (sum) | peak memory MB (max) |")
    out("|---|---|---|---|")
    for name, group in jobs.groupby("model"):
        out(f"| {name} | {len(group)} | {group['wall_s'].sum():.0f} | {group['max_rss_mb'].max():.0f} |")


def main(quick: bool = False, sizes: tuple[int, ...] = (10, 100, 1000), run: bool = False, cores: int = 2) -> None:
    print(f"dry runs, synthetic counts of 200 cells per perturbation, i.i.d. + two-patient o.o.s., 7 models ({_load()})")
    print("| perturbations | jobs planned | of them train | dry run s |")
    print("|---|---|---|---|")
    for n in sizes if not quick else sizes[:2]:
        total, train, seconds = dry_run(n, cores)
        print(f"| {n:,} | {total} | {train} | {seconds:.1f} |")
    if run and not quick:
        end_to_end(100, cores)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--run", action="store_true", help="also the 100-perturbation run end to end")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    main(sizes=tuple(args.sizes), run=args.run, cores=args.cores)
