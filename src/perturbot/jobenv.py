"""A job imports what its own environment (envs/*.yaml) provides, never the packages of the Snakemake that started it.

Snakemake appends its own process's ``sys.path`` to every ``script:`` job's, so that the
job can unpickle its ``snakemake`` object. Under ``--use-conda`` the job runs the conda
env's interpreter, and a package missing from that env would then be imported, silently,
from the environment Snakemake runs in (the project's ``.venv``, a ``snakemake`` conda
env): ``--use-conda`` would prove nothing about ``envs/``, and the versions a job records
would not be the ones it ran. :func:`own_packages_only`, called first by every workflow
script, drops those foreign site-packages. The checkout's ``src/`` (also handed over,
see the Snakefile) stays; without a conda env (plain ``snakemake --cores N``) nothing changes.

Standard library only: it runs before the script imports anything else.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path


def _inside(path: Path, prefix: Path) -> bool:
    return path == prefix or prefix in path.parents


def foreign_site_packages(path: list[str], prefix: str, conda_prefix: str | None) -> list[str]:
    """Entries of ``path`` that are another interpreter's site-packages, when this interpreter is a conda env's.

    None unless ``conda_prefix`` (the activated env, ``$CONDA_PREFIX``) is this
    interpreter's ``prefix``: a job that runs Snakemake's own interpreter keeps its path.
    """
    if not conda_prefix or Path(conda_prefix).resolve() != Path(prefix).resolve():
        return []
    own = Path(prefix).resolve()
    return [entry for entry in path if Path(entry).name in ("site-packages", "dist-packages")
            and not _inside(Path(entry).resolve(), own)]


def own_packages_only() -> list[str]:
    """Drop other interpreters' site-packages from ``sys.path`` in a conda-env job; returns what was dropped.

    Snakemake's own modules, already imported by the job's preamble, keep working.
    """
    dropped = foreign_site_packages(sys.path, sys.prefix, os.environ.get("CONDA_PREFIX"))
    if dropped:
        sys.path[:] = [entry for entry in sys.path if entry not in dropped]
        importlib.invalidate_caches()
    return dropped
