"""Atomic writes: a path holds either its old content or the complete new one, never half of it.

A job killed mid-write (out of time on a cluster, Ctrl-C) must not leave a file
that the next run takes for a finished output. Every output of the package is
written through :func:`atomic_path`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write (a file or a directory); it becomes ``path`` on success.

    The temporary name keeps the suffix (``.data.<pid>.tmp.h5ad``), so writers that
    check it (``AnnData.write_h5ad``) accept it. On any error the temporary is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, str(os.getpid()))
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir():
        _remove(path)  # os.replace cannot replace a non-empty directory
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any, **dumps: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (``dumps``: ``json.dumps``'s keywords, e.g. ``indent``)."""
    write_text(path, json.dumps(obj, **dumps))


def write_csv(frame: Any, path: str | Path, **to_csv: Any) -> None:
    """Write a pandas table to ``path`` atomically (``to_csv``: ``DataFrame.to_csv``'s keywords)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv)


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is one of :func:`atomic_path`'s temporaries: a hidden, maybe half-written file.

    Code that lists a folder (``Path.glob`` matches hidden names too) must skip these.
    """
    return _target_name(Path(path).name) is not None


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` that killed writers left (``kill -9``, a node failure).

    Call it only where no other process writes ``path`` at the same time (a
    Snakemake job owns its outputs and checkpoint). Returns what was removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(p for p in path.parent.iterdir() if _target_name(p.name) == path.name)
    for p in stale:
        _remove(p)
    return stale


def remove_stale_outputs(*paths: str | Path, within: str | Path | None = None) -> list[Path]:
    """What killed runs of a job left: the temporaries of each of its outputs ``paths``, and with
    ``within`` every temporary in that directory and below (a directory the job alone writes, such as a
    model's, which holds files besides the declared outputs). Called first by the job that owns them.
    """
    stale = [p for path in paths for p in remove_stale_temporaries(path)]
    if within is not None and Path(within).is_dir():
        for p in sorted(Path(within).rglob(".*")):
            if is_temporary(p) and (p.exists() or p.is_symlink()):  # not inside one removed already
                _remove(p)
                stale.append(p)
    return stale


def _temporary(path: Path, pid: str) -> Path:
    return path.with_name(f".{path.stem}.{pid}.tmp{path.suffix}")


#: What :func:`_temporary` builds, read back: ``.<stem>.<pid>.tmp<suffix>``.
_TEMPORARY = re.compile(r"\.(?P<stem>.+)\.\d+\.tmp(?P<suffix>\.[^.]+)?")


def _target_name(name: str) -> str | None:
    """The name of the path a temporary stands for, or None where ``name`` is no temporary."""
    match = _TEMPORARY.fullmatch(name)
    return match["stem"] + (match["suffix"] or "") if match else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def json_default(obj: Any) -> Any:
    """What ``json.dumps`` cannot write itself: tuples as lists, numpy scalars and arrays as Python values
    (recognised by their type's module, so that this module needs no numpy)."""
    if isinstance(obj, tuple):
        return list(obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
