"""Record what produced a result: package version, git commit, config hash, library versions."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

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


def job_environment() -> dict:
    """What a job ran on: its interpreter's Python and library versions (its own env's, under --use-conda:
    perturbot.jobenv), its platform, and the CUDA build of torch where the job imported torch."""
    record = {"python": platform.python_version(), "libraries": library_versions(), "platform": platform.platform()}
    torch = sys.modules.get("torch")
    if torch is not None:
        record["torch_cuda"] = torch.version.cuda  # None: a CPU-only build
        record["cuda_available"] = bool(torch.cuda.is_available())
    return record


#: The file each training and prediction job writes beside its outputs.
ENVIRONMENT_FILE = "environment.json"


def job_environments(records: Mapping[str, Iterable[str | Path]]) -> dict[str, list[dict]]:
    """Per rule, each distinct environment its jobs recorded (``environment.json`` files), with how many jobs ran
    in it and on which platforms; jobs on several nodes of one cluster share an entry when their packages agree."""
    out: dict[str, list[dict]] = {}
    for rule, paths in records.items():
        groups: dict[str, dict] = {}
        for path in paths:
            record = json.loads(Path(path).read_text())
            platform_name = record.pop("platform", None)
            key = json.dumps(record, sort_keys=True)
            group = groups.setdefault(key, {**record, "jobs": 0, "platforms": []})
            group["jobs"] += 1
            if platform_name and platform_name not in group["platforms"]:
                group["platforms"].append(platform_name)
        out[rule] = list(groups.values())
    return out


def provenance(config: dict, code: dict | None = None, jobs: dict[str, list[dict]] | None = None) -> dict:
    """What produced an experiment's results. ``code``: the fingerprint of each rule's code
    (perturbot.codehash), per model run for train and predict; the workflow reruns every job
    whose code changed, and this record with them, so after a full run it names the code of
    every output (git_commit is only the checkout's state when this file was written). ``jobs``:
    what the training and prediction jobs ran on, per rule (:func:`job_environments`); ``libraries``
    are those of the job that writes this record, an analysis env without torch under --use-conda."""
    return {
        "perturbot": __version__,
        "git_commit": git_commit(),
        "code": code,
        "config_hash": config_hash(config),
        "config": config,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
        "jobs": jobs or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
