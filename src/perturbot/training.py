"""Conventions shared by every neural model's training loop.

Device choice, seeding, the validation subset carved from the training cells,
resumable checkpoints (weights, optimiser and random-number states), the
loss/validation history, and :class:`Progress`: one log line per evaluation,
the live ``history.csv``, patience, and a clean stop on SIGTERM/SIGINT. Solvers (``perturbot.models.*``) call these helpers so
that every model trains, logs and resumes the same way.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbot.atomic import atomic_path, remove_stale_temporaries, write_text
from perturbot.errors import ClearError
from perturbot.fingerprint import differences, run_fingerprint

log = logging.getLogger(__name__)

# CellOT's validation bandwidths: short, so that validation stays cheap.
VALIDATION_GAMMAS = (2.0, 1.0, 0.5, 0.1, 0.01, 0.005)
#: Kernel widths of the adaptive criterion, as multiples of the validation cells' median squared distance.
MEDIAN_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
#: Model-selection criteria (what patience and the kept weights look at), with their history column:
#: the papers' fixed-bandwidth MMD; the MMD with bandwidths from the validation cells; the empirical
#: squared W2 distance between the mapped and the perturbed validation cells (exact assignment).
CRITERIA = {"mmd_fixed": "val_mmd", "mmd_median": "val_mmd_median", "w2": "val_w2_empirical"}
#: Cells per side the empirical W2 criterion matches (an exact assignment costs O(n^3)).
W2_CELLS = 1000


class DeviceError(ClearError, RuntimeError):
    """``device: cuda`` where this job's PyTorch sees no GPU: training on the CPU instead would take hours unnoticed."""

    kind = "Device error"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if present else CPU; ``cuda`` without a visible GPU stops with what to do.

    Respects ``CUDA_VISIBLE_DEVICES`` as set by Snakemake or SLURM (torch reads it).
    """
    device = (device or "auto").lower()
    if device not in {"auto", "cpu", "cuda"} and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if device == "auto" else device)
    if device.startswith("cuda"):
        raise DeviceError(no_cuda_advice(device))
    return torch.device("cpu")


def no_cuda_advice(device: str) -> str:
    """Why ``device`` is unusable here, and the fix for the two usual causes (docs/cluster.md)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    if torch.version.cuda is None:
        cause = (f"this job's PyTorch {torch.__version__} is a CPU-only build. On a cluster, conda envs built on a "
                 "login node without a GPU driver get one: rebuild them with the CUDA build, e.g. "
                 "`CONDA_OVERRIDE_CUDA=12.6 snakemake --use-conda --conda-create-envs-only --configfile <your config>` "
                 "after removing the env under .snakemake/conda/ (docs/cluster.md)")
    else:
        cause = (f"PyTorch (CUDA {torch.version.cuda}) sees no GPU (CUDA_VISIBLE_DEVICES={visible}): run the job on a "
                 "GPU node (the SLURM profile asks for one when device is cuda; docs/cluster.md) or check the driver")
    return f"device {device!r} was requested but {cause}; or set device: auto (GPU when present) or cpu"


def set_threads(n: int | None) -> None:
    """Pin torch's intra-op threads (two jobs with default threads on 2 cores run 30-100x slower)."""
    if n:
        torch.set_num_threads(int(n))


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG (used by layer initialisation)."""
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (2**32))


def carve_validation(
    n_cells: int, max_cells: int, seed: int, fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Split cell indices into (train, validation), seeded.

    Takes up to ``max_cells`` cells but never more than ``fraction`` of them, so
    small populations keep most cells for training. Returns empty validation
    when ``max_cells`` is 0 or fewer than 10 cells exist.
    """
    rng = np.random.default_rng(seed)
    n_val = min(int(max_cells), int(n_cells * fraction)) if n_cells >= 10 else 0
    perm = rng.permutation(n_cells)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def mmd_rbf_torch(
    x: torch.Tensor, y: torch.Tensor, gammas: tuple[float, ...] = VALIDATION_GAMMAS
) -> torch.Tensor:
    """Biased squared MMD averaged over RBF bandwidths (torch, for validation during training).

    Works on (n, d) tensors or batched (p, n, d) tensors, returning a scalar or (p,).
    """
    xx = torch.cdist(x, x).pow(2)
    yy = torch.cdist(y, y).pow(2)
    xy = torch.cdist(x, y).pow(2)
    total = 0.0
    for g in gammas:
        total = total + (
            torch.exp(-g * xx).mean((-2, -1))
            + torch.exp(-g * yy).mean((-2, -1))
            - 2 * torch.exp(-g * xy).mean((-2, -1))
        )
    return total / len(gammas)


def median_gammas(cells: torch.Tensor, scales: tuple[float, ...] = MEDIAN_SCALES, max_cells: int = 1000) -> tuple[float, ...]:
    """RBF ``gamma`` values ``1 / (s * median squared distance)`` of ``cells`` (n, d), one per scale.

    The fixed bandwidths of :data:`VALIDATION_GAMMAS` suit a few standardised
    features; in 64 dimensions squared distances are ~100, every kernel value
    is ~0 and every map scores alike. The median heuristic puts the kernels
    where the cells are, in any dimension and unit.
    """
    x = cells[:max_cells].to(torch.float64)
    d2 = torch.cdist(x, x).pow(2)
    off_diagonal = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
    median = float(off_diagonal.median()) if off_diagonal.numel() else 1.0
    median = median if median > 0 else 1.0
    return tuple(1.0 / (s * median) for s in scales)


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    return criterion


def empirical_w2(x: torch.Tensor, y: torch.Tensor, max_cells: int = W2_CELLS) -> float:
    """Squared W2 distance between the first ``n`` cells of ``x`` and of ``y`` (n = the smaller size,
    at most ``max_cells``): the mean squared distance of their optimal one-to-one assignment."""
    from scipy.optimize import linear_sum_assignment

    n = min(len(x), len(y), int(max_cells))
    cost = torch.cdist(x[:n].double(), y[:n].double()).square().cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def assignment(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The permutation ``perm`` of least total squared distance between row ``i`` of ``x`` and row ``perm[i]``
    of ``y`` (n, d each): the exact discrete W2 assignment (OT-FM's ``coupling: global``)."""
    return _least_cost_permutation(torch.cdist(x, y).pow(2))


def pair_by_assignment(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` (P, b, d) reordered so that row i of each batch is paired with row i of ``x`` (P, b, d) by the
    exact assignment of least squared distance: the minibatch-OT pairing of OT-FM and W1-OT's
    ``step_init="ot"``. Solved on the CPU whatever the device (n^3: about 0.03 s at 512 cells a side)."""
    cost = torch.cdist(x, y).pow(2)
    perms = np.stack([_least_cost_permutation(c) for c in cost])
    return torch.gather(y, 1, torch.from_numpy(perms).to(y.device)[..., None].expand_as(y))


def _least_cost_permutation(cost: torch.Tensor) -> np.ndarray:
    """scipy's Jonker-Volgenant solver on a square cost matrix, on the CPU."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(cost.cpu().double().numpy())[1]


class SelectionScore:
    """The validation score one perturbation's checkpoints are ranked by (lower is better).

    Bandwidths of the median-heuristic MMD are set once, from the validation
    target cells, so that scores along a run are comparable. Measured in
    ``benchmarks/bench_suite.py --criterion``: on non-linear ground truth in
    64 dimensions every MMD variant (fixed or median bandwidths, 500 or 2,000
    cells), the energy distance and the sliced W2 distance rank the starting
    Gaussian map above every later checkpoint (Spearman with the per-cell
    error 0.27-0.32); the empirical W2 ranks them as the per-cell error does (0.98).
    """

    def __init__(self, criterion: str, target: torch.Tensor) -> None:
        self.criterion = check_criterion(criterion)
        self.target = target
        self.gammas = median_gammas(target) if criterion == "mmd_median" else VALIDATION_GAMMAS

    @property
    def column(self) -> str:
        return CRITERIA[self.criterion]

    def __call__(self, mapped: torch.Tensor) -> float:
        if self.criterion == "w2":
            return empirical_w2(mapped, self.target)
        return float(mmd_rbf_torch(mapped, self.target, self.gammas))


@dataclass
class History:
    """Loss and validation metric per logged step; written to ``history.csv``."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def log(self, **values: Any) -> None:
        self.rows.append({k: (float(v) if torch.is_tensor(v) else v) for k, v in values.items()})

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


class Checkpoint:
    """Resumable training state in one file, written atomically, resumed only by the run that wrote it.

    Holds tensors and plain Python values only, so ``torch.load(weights_only=True)``
    can read it. Lives outside a rule's declared outputs (Snakemake deletes
    incomplete outputs), e.g. under ``results/.checkpoints/``. Given the ``model``
    and its training arrays (``data``), it stores their fingerprint
    (:mod:`perturbot.fingerprint`) and :meth:`load` returns a saved state only
    when that fingerprint is the current one; otherwise it logs a warning naming
    what differs and the run starts afresh.
    """

    def __init__(
        self, path: str | Path | None, every: int = 1000, *, model: Any = None, data: Mapping[str, Any] | None = None
    ) -> None:
        self.path = Path(path) if path else None
        self.every = int(every)
        self.fingerprint: dict[str, Any] | None = None
        if self.path is not None and model is not None:  # hashing the data costs time only where it is used
            self.fingerprint = run_fingerprint(model, data or {})

    def due(self, iteration: int) -> bool:
        return self.path is not None and self.every > 0 and iteration % self.every == 0

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self.fingerprint is not None:
            state = {**state, "fingerprint": self.fingerprint}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (no checkpoint, an unreadable one, or one of another run: start afresh)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 (torch raises pickle, zip and runtime errors alike)
            reason = (str(err).strip().splitlines() or [""])[0]
            log.warning("checkpoint %s cannot be read (%s: %s); starting afresh", self.path, type(err).__name__, reason)
            return None
        if self.fingerprint is not None:
            changed = differences(state.get("fingerprint") if isinstance(state, dict) else None, self.fingerprint)
            if changed:
                log.warning("checkpoint %s belongs to another run (%s); starting afresh", self.path, "; ".join(changed))
                return None
        log.info("resuming from checkpoint %s", self.path)
        return state

    def clear(self) -> None:
        """Remove the checkpoint, and any temporaries a killed run left beside it."""
        if self.path is None:
            return
        if self.path.exists():
            self.path.unlink()
        remove_stale_temporaries(self.path)


def generator_state(gen: torch.Generator) -> torch.Tensor:
    return gen.get_state()


def restore_generator(gen: torch.Generator, state: torch.Tensor) -> None:
    gen.set_state(state.to("cpu") if gen.device.type == "cpu" else state)


def optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move an optimiser's state tensors (restored on CPU) to ``device``."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and key != "step":
                state[key] = value.to(device)


# ------------------------------------------------------------------ progress
#: Where the job's live history goes: set by :func:`live_history` around ``fit``.
_LIVE: ContextVar["LiveHistory | None"] = ContextVar("perturbot_live_history", default=None)
#: Name of the status file written beside a live ``history.csv``.
PROGRESS_FILE = "progress.json"


@dataclass
class LiveHistory:
    """A running job's ``history.csv`` and its ``progress.json``, both rewritten atomically."""

    path: Path
    label: str = ""
    started: bool = False  # a training loop has reported (models that do not train write nothing)

    @property
    def status_path(self) -> Path:
        return self.path.with_name(PROGRESS_FILE)

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        import pandas as pd

        write_text(self.path, pd.DataFrame(rows).to_csv(index=False))

    def write_status(self, status: str, **values: Any) -> None:
        if status == "running":
            self.started = True
        elif not self.started:
            return
        previous: dict[str, Any] = {}
        if status != "running" and self.status_path.exists():
            try:
                previous = json.loads(self.status_path.read_text())
            except (OSError, ValueError):
                previous = {}
        record = {**previous, **values, "label": self.label, "status": status, "pid": os.getpid(),
                  "host": socket.gethostname(), "updated": time.time()}
        write_text(self.status_path, json.dumps(record, indent=1, default=float))


@contextmanager
def live_history(path: str | Path | None, label: str = "") -> Iterator[LiveHistory | None]:
    """Within this block, training loops write their history to ``path`` at every evaluation.

    ``progress.json`` beside it says how far the job is (read by ``perturbot
    progress``); on leaving the block it records ``done``, ``interrupted``
    (SIGTERM/SIGINT, checkpoint saved) or ``failed``.
    """
    if path is None:
        yield None
        return
    live = LiveHistory(Path(path), label)
    live.status_path.unlink(missing_ok=True)  # a previous run's
    token = _LIVE.set(live)
    try:
        yield live
    except TrainingInterrupted:
        live.write_status("interrupted")
        raise
    except BaseException:
        live.write_status("failed")
        raise
    else:
        live.write_status("done")
    finally:
        _LIVE.reset(token)


class TrainingInterrupted(SystemExit):
    """SIGTERM or SIGINT arrived; the checkpoint is saved. Exits with status 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)


def format_duration(seconds: float) -> str:
    """1h05m, 3m12s or 42s."""
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Reports and guards one training loop; a model needs a few lines to use it.

    * one log line per evaluation (iteration/total, elapsed, it/s, time left,
      losses, validation score, best so far and when), a tqdm bar on a terminal;
    * the history, appended and rewritten atomically to the live ``history.csv``
      (see :func:`live_history`);
    * patience: :attr:`converged` once every score has gone ``patience``
      evaluations without improving (``None``: run the full budget);
    * SIGTERM/SIGINT: the next iteration calls ``on_stop(last completed
      iteration)`` (save the checkpoint there) and raises :class:`TrainingInterrupted`.

    Use::

        with Progress("cae", n_iters, patience=patience, history=history) as progress:
            progress.load_state_dict(state["progress"])          # when resuming
            for it in progress.iterations(start, n_iters, on_stop=lambda last: ckpt.save(state_at(last))):
                ...
                if it % eval_every == 0 or it == n_iters:
                    improved = progress.record(it, rows, score=[val_loss], losses={"loss": loss})
                    if progress.converged:
                        break

    and ``"progress": progress.state_dict()`` in the checkpoint.
    """

    def __init__(
        self,
        what: str,
        total: int,
        *,
        history: History | None = None,
        patience: int | None = None,
        score_name: str = "val_loss",
        higher_is_better: bool = False,
        offset: int = 0,
        total_shown: int | None = None,
    ) -> None:
        if patience is not None and int(patience) < 1:
            raise ValueError(f"patience must be None or >= 1 evaluations, got {patience!r}")
        self.what = what
        self.total = int(total)
        self.history = history if history is not None else History()
        self.patience = None if patience is None else int(patience)
        self.score_name = score_name
        self.sign = -1.0 if higher_is_better else 1.0
        self.offset = int(offset)  # shown iteration = offset + loop iteration (later stages of a model)
        self.total_shown = int(total_shown) if total_shown is not None else self.total + self.offset
        self.best: list[float] = []
        self.best_iteration: list[int] = []
        self.stalled: list[int] = []
        self.elapsed_before = 0.0
        self.live = _LIVE.get()
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._bar = None
        self._t0 = time.perf_counter()
        self._it0 = 0

    # ------------------------------------------------------------ context
    def __enter__(self) -> "Progress":
        self._t0 = time.perf_counter()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second signal: stop at once, as without this handler
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signal = signum
        log.warning("%s: received %s, saving the checkpoint and stopping", self.what, signal.Signals(signum).name)

    # --------------------------------------------------------------- loop
    def iterations(self, start: int, stop: int, on_stop: Callable[[int], None] | None = None) -> Iterator[int]:
        """Iterations ``start + 1 .. stop``; stops cleanly on SIGTERM/SIGINT (see class docstring)."""
        self._it0, self._t0 = int(start), time.perf_counter()
        if sys.stderr.isatty() and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total_shown, initial=self.offset + start, desc=self.what,
                             mininterval=1.0, leave=False, dynamic_ncols=True)
        for it in range(int(start) + 1, int(stop) + 1):
            if self.signal is not None:
                if on_stop is not None:
                    on_stop(it - 1)
                log.warning("%s: stopped at iteration %d of %d%s", self.what, self.offset + it - 1, self.total_shown,
                            "; the checkpoint resumes from there" if on_stop is not None else "")
                raise TrainingInterrupted(self.signal)
            yield it
            if self._bar is not None:
                self._bar.update(1)

    def record(
        self,
        iteration: int,
        rows: list[dict[str, Any]],
        score: Sequence[float] | np.ndarray | float,
        losses: dict[str, float] | None = None,
    ) -> np.ndarray:
        """Log ``rows`` into the history, update best/patience with ``score`` (one per perturbation),
        write the live files and the log line; returns which scores improved."""
        for row in rows:
            self.history.log(**row)
        values = np.atleast_1d(np.asarray(score, dtype=float))
        if not self.best:
            self.best = [float("inf") * self.sign] * len(values)
            self.best_iteration = [0] * len(values)
            self.stalled = [0] * len(values)
        improved = np.zeros(len(values), dtype=bool)
        for p, v in enumerate(values):
            if not np.isfinite(v):  # no validation cells: nothing to judge, never stops early
                continue
            if self.sign * v < self.sign * self.best[p]:
                self.best[p], self.best_iteration[p], self.stalled[p] = float(v), self.offset + iteration, 0
                improved[p] = True
            else:
                self.stalled[p] += 1
        self._report(iteration, values, losses or {})
        return improved

    @property
    def converged(self) -> bool:
        """Every score has gone ``patience`` evaluations without improving (never without patience)."""
        return self.patience is not None and bool(self.stalled) and min(self.stalled) >= self.patience

    # ------------------------------------------------------------ reporting
    def _report(self, iteration: int, values: np.ndarray, losses: dict[str, float]) -> None:
        now = time.perf_counter()
        done = self.offset + iteration
        rate = (iteration - self._it0) / max(now - self._t0, 1e-9)
        eta = (self.total_shown - done) / rate if rate > 0 else float("inf")
        elapsed = self.elapsed_before + now - self._t0
        finite = values[np.isfinite(values)]
        best = np.asarray([b for b in self.best if np.isfinite(b)])
        current = float(finite.mean()) if len(finite) else float("nan")
        best_mean = float(best.mean()) if len(best) else float("nan")
        many = f" (mean of {len(values)})" if len(values) > 1 else ""
        parts = [
            f"{self.what} {done}/{self.total_shown} ({100 * done / max(self.total_shown, 1):.1f}%)",
            f"{format_duration(elapsed)} elapsed, {rate:.1f} it/s, {format_duration(eta)} left",
            *(f"{k} {v:.4g}" for k, v in losses.items()),
            f"{self.score_name} {current:.4g}{many}, best {best_mean:.4g} at {max(self.best_iteration)}",
        ]
        if self.patience is not None:
            parts.append(f"no gain for {min(self.stalled)}/{self.patience} evaluations")
        message = " | ".join(parts)
        if self._bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm():
                log.info(message)
        else:
            log.info(message)
        if self.live is not None:
            self.live.write_history(self.history.rows)
            self.live.write_status(
                "running", what=self.what, iteration=done, total=self.total_shown, elapsed_s=elapsed,
                it_per_s=rate, eta_s=eta if np.isfinite(eta) else None, score_name=self.score_name,
                score=current, best=best_mean, best_iteration=max(self.best_iteration),
            )

    # ----------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Best scores, stall counts and elapsed time, for the checkpoint (plain values only)."""
        return {"best": list(self.best), "best_iteration": list(self.best_iteration), "stalled": list(self.stalled),
                "elapsed": self.elapsed_before + time.perf_counter() - self._t0}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.best = [float(v) for v in state["best"]]
        self.best_iteration = [int(v) for v in state["best_iteration"]]
        self.stalled = [int(v) for v in state["stalled"]]
        self.elapsed_before = float(state["elapsed"])
