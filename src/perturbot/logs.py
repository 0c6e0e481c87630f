"""Send a job's log records, warnings and errors to its Snakemake log file.

The log file is what Snakemake and SLURM point a user to, so a job's error goes
there as well as to stderr: a :class:`perturbot.errors.ClearError` (bad config,
bad data, a failed download) as its one-line message, anything else, a
``ValueError`` from a library included, with its traceback (it is a bug, and
the traceback is what finds it).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from perturbot.errors import ClearError, describe


#: Libraries whose INFO lines say nothing a user needs (fontTools lists every glyph subset of a PDF figure).
QUIET = ("fontTools", "matplotlib", "numba", "PIL", "h5py", "urllib3")
#: How many input or output paths a job's log names before it says "and N more".
SHOWN_PATHS = 5
_FAILED: list[BaseException] = []


def log_to_file(path: str | Path | None, context: str | None = None) -> None:
    """Log INFO and above (and warnings) to ``path`` and to stderr; an uncaught error too.

    ``context`` says where a clear error happened ("experiment 'demo'"), as in
    ``Data error in experiment 'demo': ...``.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True)
    logging.captureWarnings(True)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)

    def log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _FAILED.append(exc)
        log_error(exc, context, tb)

    sys.excepthook = log_uncaught


def log_error(exc: BaseException, context: str | None = None, tb: TracebackType | None = None) -> None:
    """Log a job's fatal error: a clear one as its message, anything else with its traceback."""
    log = logging.getLogger("perturbot")
    if isinstance(exc, ClearError):
        log.error("%s", describe(exc, context))
    else:
        log.error("job failed%s: %s", f" in {context}" if context else "", exc, exc_info=(type(exc), exc, tb or exc.__traceback__))


def log_job(job: Any, context: str | None = None) -> None:
    """Open a workflow job's log (:func:`log_to_file`) with what it reads and how it is set, and end it,
    once the script has finished, with what it wrote and how long it took: a log read after a
    failure, or a week later, says what the job was."""
    log_to_file(job.log[0] if job.log else None, context)
    log = logging.getLogger("perturbot.job")
    wildcards = ", ".join(f"{k}={v}" for k, v in job.wildcards.items())
    log.info("rule %s%s", job.rule, f" ({wildcards})" if wildcards else "")
    log.info("reads %s", _paths(job.input))
    settings = {k: v for k, v in job.params.items() if k != "code"}  # code: the fingerprint of the job's code
    if settings:
        log.info("settings %s", ", ".join(f"{k}={_short(v)}" for k, v in settings.items()))
    start = time.perf_counter()

    def finished() -> None:
        missing = [str(p) for p in job.output if not os.path.exists(p)]
        if _FAILED:
            return  # the error is the log's last line
        if missing:  # stopped early (a signal, an exit) without an error of its own
            log.warning("stopped after %.1f s without writing %s", time.perf_counter() - start, _paths(missing))
        else:
            log.info("wrote %s in %.1f s", _paths(job.output, sizes=True), time.perf_counter() - start)

    atexit.register(finished)


def _paths(paths: Iterable[str], sizes: bool = False) -> str:
    """``a.h5ad (1.2 MB), b.csv (3 kB) and 4 more``: the first few paths a job reads or writes."""
    paths = [str(p) for p in paths]
    if not paths:
        return "nothing"
    shown = [f"{p} ({_size(p)})" if sizes else p for p in paths[:SHOWN_PATHS]]
    return ", ".join(shown) + (f" and {len(paths) - SHOWN_PATHS} more" if len(paths) > SHOWN_PATHS else "")


def _size(path: str) -> str:
    if os.path.isdir(path):
        return f"folder of {sum(len(files) for _, _, files in os.walk(path))} files"
    if not os.path.exists(path):
        return "missing"
    size = float(os.path.getsize(path))
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
