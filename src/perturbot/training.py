"""Conventions shared by every neural model's training loop.

Device choice, seeding, the loss/validation history, and :class:`Progress`: one
log line per evaluation, the live ``history.csv``, patience, and a clean stop on
SIGTERM/SIGINT. Solvers (``perturbot.models.*``) call these helpers, with
:mod:`perturbot.validation` (held-out cells and selection scores) and
:mod:`perturbot.checkpoints` (resumable state), so that every model trains,
logs and resumes the same way.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbot.atomic import write_text
from perturbot.errors import ClearError

log = logging.getLogger(__name__)


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


@dataclass
class History:
    """Loss and validation metric per logged step; written to ``history.csv``."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def log(self, **values: Any) -> None:
        self.rows.append({k: (float(v) if torch.is_tensor(v) else v) for k, v in values.items()})

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


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
