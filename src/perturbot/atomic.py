"""Atomic writes: a path holds either its old content or the complete new one, never half of it.

A job killed mid-write (out of time on a cluster, Ctrl-C) must not leave a file
that the next run takes for a finished output. Every output of the package is
written through :func:`atomic_path`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write (a file or a directory); it becomes ``path`` on success.

    The temporary name keeps the suffix (``.data.<pid>.tmp.h5ad``), so writers that
    check it (``AnnData.write_h5ad``) accept it. On any error the temporary is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
