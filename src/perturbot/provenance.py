"""Record what produced a result: package version, git commit, config hash, library versions."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from perturbot import __version__
from perturbot.config import config_hash

LIBRARIES = ("torch", "numpy", "scipy", "pandas", "anndata", "scanpy", "scikit-learn", "snakemake", "pot", "safetensors")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = None
    return out


def provenance(config: dict, code: dict | None = None) -> dict:
    """What produced an experiment's results. ``code``: the fingerprint of each rule's code
    (perturbot.codehash), per model run for train and predict; the workflow reruns every job
    whose code changed, and this record with them, so after a full run it names the code of
    every output (git_commit is only the checkout's state when this file was written)."""
    return {
        "perturbot": __version__,
        "git_commit": git_commit(),
        "code": code,
        "config_hash": config_hash(config),
        "config": config,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
