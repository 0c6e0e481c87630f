"""Read how far training jobs are: the ``progress.json`` files that :class:`perturbot.training.Progress`
writes beside each live ``history.csv`` (``perturbot progress <results dir>``)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pandas as pd

from perturbot.training import PROGRESS_FILE, format_duration

COLUMNS = ["job", "status", "stage", "percent", "iteration", "total", "elapsed", "left", "best", "best_at", "updated"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _status(record: dict) -> str:
    """``running`` unless the process is known to be gone (same host, no such pid): then ``stopped``."""
    status = str(record.get("status", "?"))
    if status == "running" and record.get("host") == socket.gethostname() and not _alive(int(record.get("pid", -1))):
        return "stopped"
    return status


def training_jobs(results: str | Path, include_done: bool = False) -> pd.DataFrame:
    """One row per training job under ``results`` with its percent done, time left and best score so far."""
    results = Path(results)
    if not results.exists():
        raise FileNotFoundError(f"no such directory: {results}")
    rows = []
    now = time.time()
    for path in sorted(results.rglob(PROGRESS_FILE)):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now, or not ours
        status = _status(record)
        if status == "done" and not include_done:
            continue
        total = int(record.get("total") or 0)
        iteration = int(record.get("iteration") or 0)
        eta = record.get("eta_s")
        rows.append({
            "job": str(path.parent.relative_to(results)) or ".",
            "status": status,
            "stage": record.get("what", ""),
            "percent": 100.0 * iteration / total if total else float("nan"),
            "iteration": iteration,
            "total": total,
            "elapsed": format_duration(float(record.get("elapsed_s") or 0.0)),
            "left": format_duration(float(eta)) if eta is not None and status == "running" else "",
            "best": f"{record.get('score_name', 'score')} {float(record.get('best', float('nan'))):.4g}",
            "best_at": int(record.get("best_iteration") or 0),
            "updated": f"{format_duration(now - float(record.get('updated', now)))} ago",
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def format_jobs(jobs: pd.DataFrame) -> str:
    """A plain-text table, one line per job."""
    if jobs.empty:
        return "no training job is running"
    shown = jobs.assign(percent=jobs["percent"].map(lambda p: f"{p:.1f}%"))
    return shown.to_string(index=False)
