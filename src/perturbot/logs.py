"""Send a job's log records, warnings and errors to its Snakemake log file.

The log file is what Snakemake and SLURM point a user to, so a job's error goes
there as well as to stderr: a :class:`perturbot.errors.ClearError` (bad config,
bad data, a failed download) as its one-line message, anything else, a
``ValueError`` from a library included, with its traceback (it is a bug, and
the traceback is what finds it).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import TracebackType

from perturbot.errors import ClearError, describe


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

    def log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log_error(exc, context, tb)

    sys.excepthook = log_uncaught


def log_error(exc: BaseException, context: str | None = None, tb: TracebackType | None = None) -> None:
    """Log a job's fatal error: a clear one as its message, anything else with its traceback."""
    log = logging.getLogger("perturbot")
    if isinstance(exc, ClearError):
        log.error("%s", describe(exc, context))
    else:
        log.error("job failed%s: %s", f" in {context}" if context else "", exc, exc_info=(type(exc), exc, tb or exc.__traceback__))
