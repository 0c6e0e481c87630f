"""GPU check: per-iteration time of every neural model on CUDA and CPU, and CPU/CUDA agreement.

Runs on a bare machine that has only torch, numpy, scipy, pandas,
scikit-learn and safetensors: perturbot is imported from this checkout's
``src/`` (nothing installed, no anndata or scanpy). Prints one table:

* per model (CellOT's presets and solvers, OT-FM, W1-OT, the cAE) and device,
  seconds per training iteration at D = 50 features with batch 256 and 1,024,
  from the difference of two fits of different lengths (start-up and the
  final copies cancel out; CUDA is synchronised before the clock is read);
* agreement: one short fit on the CPU, its saved weights loaded on CUDA, and
  the largest absolute difference of the two devices' predictions on the same
  cells (float32 kernels differ, so this is small, not zero); and one short
  fit on each device from the same seed, whose predictions differ more: the
  training batches are drawn by each device's own random generator, so the
  two fits see different cells (reproducible per device, not across devices).

On a machine without CUDA the CUDA rows say ``no GPU``. Run:
``python benchmarks/gpu_check.py`` (about 3 minutes on 2 CPU cores; the
``--quick`` flag shortens it for the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from perturbot import models  # noqa: E402

D = 50
BATCHES = (256, 1024)


def _params(name: str, batch: int, iters: int) -> dict:
    """Constructor arguments for ``iters`` training iterations at ``batch`` with validation off."""
    if name.startswith("cellot"):
        preset, _, solver = name.removeprefix("cellot_").partition("_")
        return dict(preset=preset, solver=solver or "minmax", n_iters=iters, batch_size=batch,
                    eval_every=10**9, patience=0, val_size=0)
    if name in ("otfm", "w1ot"):
        return dict(n_iters=iters, batch_size=batch, eval_every=10**9, val_size=0)
    if name == "cae":
        return dict(n_iters=iters, batch_size=batch, eval_every=10**9, val_cells=0)
    raise KeyError(name)


MODELS = ("cellot_paper", "cellot_fast", "cellot_fast_amortized", "otfm", "w1ot", "cae")


def _cls(name: str) -> type:
    return models.get("cellot" if name.startswith("cellot") else name)


def _data(seed: int = 0, n: int = 4000) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(n, D)).astype(np.float32)
    mix = np.eye(D) + 0.1 * rng.normal(size=(D, D))
    target = (np.tanh(source) @ mix + 0.5).astype(np.float32)
    return source, {"pert": target}, rng.normal(size=(500, D)).astype(np.float32)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _fit(name: str, device: str, batch: int, iters: int, data) -> tuple[object, float]:
    source, targets, _ = data
    model = _cls(name)(seed=0, device=device, **_params(name, batch, iters))
    _sync(device)
    start = time.perf_counter()
    model.fit_many(source, targets)
    _sync(device)
    return model, time.perf_counter() - start


def seconds_per_iteration(name: str, device: str, batch: int, short: int, long: int, data) -> float:
    """(time of a ``long`` fit - time of a ``short`` fit) / (long - short), after a warm-up fit."""
    _fit(name, device, batch, 2, data)
    return (_fit(name, device, batch, long, data)[1] - _fit(name, device, batch, short, data)[1]) / (long - short)


def same_weights_difference(model, test: np.ndarray) -> float:
    """Largest |CPU - CUDA| of the predictions of one CPU-trained model, its weights loaded on CUDA."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        meta_path = Path(tmp) / "model.json"
        meta = json.loads(meta_path.read_text())
        meta["params"]["device"] = "cuda"
        meta_path.write_text(json.dumps(meta))
        on_cuda = type(model).load(tmp)
    return float(np.abs(model.transport(test, "pert") - on_cuda.transport(test, "pert")).max())


def agreement(name: str, iters: int, data) -> tuple[float, float]:
    """(same weights on both devices, same seed trained on each device): max |CPU - CUDA| of predictions."""
    test = data[2]
    cpu_model = _fit(name, "cpu", 256, iters, data)[0]
    cuda_model = _fit(name, "cuda", 256, iters, data)[0]
    refit = float(np.abs(cpu_model.transport(test, "pert") - cuda_model.transport(test, "pert")).max())
    return same_weights_difference(cpu_model, test), refit


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main(quick: bool = False, threads: int | None = None, out: Callable[[str], None] = print) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    short, long = (2, 6) if quick else (20, 60)
    agree_iters = 5 if quick else 50
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else "no GPU"
    out(f"# gpu_check: torch {torch.__version__}, {gpu}, CPU {platform.processor() or platform.machine()} "
        f"with {torch.get_num_threads()} torch threads, load average {'%.2f %.2f %.2f' % os.getloadavg()}")
    out(f"# D = {D}; ms per training iteration from fits of {short} and {long} iterations; "
        f"max |CPU - CUDA| of predictions on 500 cells (features of unit scale) after {agree_iters} iterations\n")
    header = ["model", *(f"CPU ms/it b={b}" for b in BATCHES), *(f"CUDA ms/it b={b}" for b in BATCHES),
              "speed-up b=1024", "max diff, same weights", "max diff, same seed"]
    out(_row(header))
    out(_row(["---"] * len(header)))
    data = _data()
    results = []
    for name in MODELS:
        cpu = [1e3 * seconds_per_iteration(name, "cpu", b, short, long, data) for b in BATCHES]
        if cuda:
            gpu_times = [1e3 * seconds_per_iteration(name, "cuda", b, short, long, data) for b in BATCHES]
            diff = agreement(name, agree_iters, data)
            cells = [f"{t:.2f}" for t in gpu_times] + [f"{cpu[-1] / gpu_times[-1]:.1f}x", *(f"{v:.1e}" for v in diff)]
        else:
            gpu_times, diff = [float("nan")] * len(BATCHES), (float("nan"),) * 2
            cells = ["no GPU"] * (len(BATCHES) + 3)
        out(_row([name, *(f"{t:.2f}" for t in cpu), *cells]))
        results.append({"model": name, "cpu_ms": cpu, "cuda_ms": gpu_times, "max_abs_diff": diff})
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke test, not a measurement)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    start = time.perf_counter()
    main(quick=args.quick, threads=args.threads)
    print(f"\n({time.perf_counter() - start:.0f} s)")
