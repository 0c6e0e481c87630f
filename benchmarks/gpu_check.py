"""GPU check: per-iteration time of every neural model on CUDA and CPU, and CPU/CUDA agreement.

Runs on a bare machine that has only torch, numpy, scipy, pandas,
scikit-learn and safetensors: perturbot is imported from this checkout's
``src/`` (nothing installed, no anndata or scanpy). Prints two tables, first:

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

Then a second table, joint training: each model that can learn several
perturbations in one model (its class is ``multi_perturbation`` and not
``joint_only``: CellOT, here its ``fast`` preset, OT-FM and W1-OT) is fitted on
1, 8 and 34 perturbations at once (``--perturbations``) on synthetic data
(D = 64 features, 400 control cells, 300 cells per perturbation, seeded; batch
256 cells per perturbation), on the CPU and on CUDA. Each row gives ms per
training iteration (one iteration steps every perturbation of the model),
from the same difference of two fits (2 and 10 iterations, after a warm-up fit
of 2), and that divided by the number of perturbations: the per-perturbation
cost falls with the number trained together where the batched step is bound by
latency, not arithmetic (OT-FM's exact minibatch assignment is solved on the
CPU for each perturbation, whatever the device). The fits are this short on
purpose: they time the training step, not accuracy.

On a machine without CUDA the CUDA rows say ``no GPU``. Run:
``python benchmarks/gpu_check.py`` (about 3 minutes on 2 CPU cores, and about
half a minute more for the joint table on one CPU thread; the ``--quick`` flag
shortens it for the test suite, ``--joint-only`` prints only the joint table).
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


#: Models timed on several perturbations at once: CellOT (its ``fast`` preset; the other presets' step is
#: the same networks with more inner iterations), OT-FM and W1-OT. The cAE is left out: it is ``joint_only``
#: (always one model) and its batch is shared by all conditions, so its iteration does not grow with them.
JOINT_MODELS = ("cellot_fast", "otfm", "w1ot")
JOINT_COUNTS = (1, 8, 34)
JOINT_D, JOINT_CONTROL, JOINT_CELLS, JOINT_BATCH = 64, 400, 300, 256


def _joint_data(n_perturbations: int, n_features: int = JOINT_D, n_control: int = JOINT_CONTROL,
                n_cells: int = JOINT_CELLS, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray], None]:
    """Control cells and ``n_perturbations`` targets, each its own non-linear map of other cells (seeded)."""
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(n_control, n_features)).astype(np.float32)
    targets = {}
    for p in range(n_perturbations):
        mix = np.eye(n_features) + 0.1 * rng.normal(size=(n_features, n_features))
        shift = 0.5 * rng.normal(size=n_features)
        cells = rng.normal(size=(n_cells, n_features))
        targets[f"pert_{p:02d}"] = (np.tanh(cells) @ mix + shift).astype(np.float32)
    return source, targets, None


def joint_training(
    counts: tuple[int, ...] = JOINT_COUNTS,
    quick: bool = False,
    threads: int | None = None,
    out: Callable[[str], None] = print,
    n_features: int = JOINT_D,
    n_control: int = JOINT_CONTROL,
    n_cells: int = JOINT_CELLS,
    batch: int = JOINT_BATCH,
) -> list[dict]:
    """ms per iteration of each of :data:`JOINT_MODELS` trained on ``counts`` perturbations at once, per device."""
    if threads:
        torch.set_num_threads(threads)
    short, long = (2, 6) if quick else (2, 10)
    cuda = torch.cuda.is_available()
    out(f"\n# joint training: torch {torch.__version__}, {torch.cuda.get_device_name(0) if cuda else 'no GPU'}, "
        f"{torch.get_num_threads()} torch threads, load average {'%.2f %.2f %.2f' % os.getloadavg()}")
    out(f"# D = {n_features}; {n_control} control cells and {n_cells} cells per perturbation; batch {batch} "
        f"per perturbation; ms per iteration (every perturbation stepped) from fits of {short} and {long} "
        f"iterations after a warm-up fit\n")
    header = ["model", "device", "perturbations", "ms / iteration", "ms / iteration / perturbation"]
    out(_row(header))
    out(_row(["---"] * len(header)))
    results = []
    for name in JOINT_MODELS:
        for device in ("cpu", "cuda"):
            for count in counts:
                if device == "cuda" and not cuda:
                    ms, cells = float("nan"), ["no GPU", "no GPU"]
                else:
                    data = _joint_data(count, n_features, n_control, n_cells)
                    ms = 1e3 * seconds_per_iteration(name, device, batch, short, long, data)
                    cells = [f"{ms:.2f}", f"{ms / count:.2f}"]
                out(_row([name, {"cpu": "CPU", "cuda": "CUDA"}[device], str(count), *cells]))
                results.append({"model": name, "device": device, "perturbations": count,
                                "ms_per_iteration": ms, "ms_per_perturbation": ms / count})
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke test, not a measurement)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--perturbations", type=int, nargs="+", default=list(JOINT_COUNTS), metavar="N",
                        help="perturbations trained together in the joint-training table (default: 1 8 34)")
    parser.add_argument("--joint-only", action="store_true", help="print only the joint-training table")
    args = parser.parse_args()
    if min(args.perturbations) < 1:
        parser.error("--perturbations: every count must be at least 1")
    start = time.perf_counter()
    if not args.joint_only:
        main(quick=args.quick, threads=args.threads)
    joint_training(tuple(args.perturbations), quick=args.quick, threads=args.threads)
    print(f"\n({time.perf_counter() - start:.0f} s)")
