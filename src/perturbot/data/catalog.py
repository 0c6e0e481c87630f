"""The catalog of the papers' published datasets (``resources/datasets.yaml``) and config entries built from it."""

from __future__ import annotations

import copy
import json
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import yaml

from perturbot.errors import DataError, DownloadError

DEFAULT_CATALOG = "resources/datasets.yaml"
#: Where downloaded dataset files are kept (``resources/downloads/<file>``).
DEFAULT_CACHE = "resources/downloads"
ARCHIVE_KEYS = ("url", "file", "sha256")
DATASET_KEYS = ("archive", "member", "modality", "condition_key", "control", "holdout_key", "notes")
# Catalog keys that are also keys of a dataset in a config (the rest describe experiments or people).
SPEC_KEYS = (
    "modality", "condition_key", "control", "perturbations", "layer", "derive_obs",
    "features_file", "holdouts_file", "subset",
)


def read_list(path: str | Path) -> list[str]:
    """Names separated by white space (one a line), as the papers' feature and sample lists are written."""
    return Path(path).read_text().split()


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> dict:
    """Read the catalog and check that every dataset names a known archive and has its columns."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset catalog {path} not found")
    catalog = yaml.safe_load(path.read_text()) or {}
    archives, datasets = catalog.get("archives"), catalog.get("datasets")
    if not isinstance(archives, dict) or not isinstance(datasets, dict):
        raise DataError(f"dataset catalog {path}: needs the sections 'archives' and 'datasets'")
    for key, archive in archives.items():
        missing = [k for k in ARCHIVE_KEYS if k not in (archive or {})]
        if missing:
            raise DataError(f"dataset catalog {path}: archive {key!r} lacks {', '.join(missing)}")
    for name, entry in datasets.items():
        missing = [k for k in DATASET_KEYS if k not in (entry or {})]
        if missing:
            raise DataError(f"dataset catalog {path}: dataset {name!r} lacks {', '.join(missing)}")
        member = entry["member"]
        if not (isinstance(member, str) or (isinstance(member, list) and member and all(isinstance(m, str) for m in member))):
            raise DataError(f"dataset catalog {path}: dataset {name!r}: member must be a path or a list of paths")
        if entry["archive"] not in archives:
            raise DataError(
                f"dataset catalog {path}: dataset {name!r} names archive {entry['archive']!r}, "
                f"which is not under 'archives' ({', '.join(archives)})"
            )
    return catalog


def dataset_spec(name: str, catalog: dict) -> dict:
    """A ``datasets:`` entry for a config: the download source plus the dataset's columns."""
    datasets = catalog["datasets"]
    if name not in datasets:
        raise DataError(f"dataset {name!r} is not in the catalog; known: {', '.join(sorted(datasets))}")
    entry = datasets[name]
    archive = catalog["archives"][entry["archive"]]
    spec = {
        "source": {
            "url": archive["url"],
            "sha256": archive["sha256"],
            "member": copy.deepcopy(entry["member"]),
            "archive": archive["file"],
        }
    }
    if archive.get("mirrors"):
        spec["source"]["mirrors"] = [m["url"] if isinstance(m, dict) else m for m in archive["mirrors"]]
    spec.update({key: copy.deepcopy(entry[key]) for key in SPEC_KEYS if key in entry})
    return spec


def resolve_catalog_entries(config: dict, catalog_path: str | Path = DEFAULT_CATALOG) -> None:
    """Fill config datasets that name a ``catalog`` entry from the catalog (config keys win), in place.

    Runs before schema validation, so that the schema's defaults do not mask the catalog's values.
    """
    catalog = None
    for entry in (config.get("datasets") or {}).values():
        if isinstance(entry, dict) and "catalog" in entry:
            catalog = catalog or load_catalog(catalog_path)
            for key, value in dataset_spec(entry["catalog"], catalog).items():
                entry.setdefault(key, value)


def apply_holdouts_files(config: dict, downloads: str | Path = "resources/downloads") -> None:
    """Use a dataset's list of holdouts (e.g. CellOT's ``sample_ids.txt``) once its archive has given it, in place.

    Until the archive is downloaded the experiment's own ``holdouts`` stand; the rule
    that prepares the data checks that they agree with the file and, if not, asks
    for a second run, which then plans one run per value of the file.
    """
    for exp_name, exp in (config.get("experiments") or {}).items():
        dataset = (config.get("datasets") or {}).get(exp.get("dataset"), {})
        if not dataset.get("holdouts_file") or exp.get("setting", "iid") == "iid":
            continue
        if isinstance(dataset.get("source"), dict):
            record = Path(downloads) / f"{exp['dataset']}.verified.json"
            listed = json.loads(record.read_text()).get("holdouts_file") if record.exists() else None
        else:
            listed = dataset["holdouts_file"]
        if listed and Path(listed).exists():
            exp["holdouts"] = read_list(listed)
            _check_holdout_names(config, exp_name, listed)


def pair_source(catalog: dict, name: str, dim: int, width: int) -> dict:
    """Download source ``{url, sha256, archive}`` of one published W1 benchmark pair, from ``benchmark_pairs``."""
    entries = catalog.get("benchmark_pairs") or {}
    if name not in entries:
        raise ValueError(f"benchmark pairs {name!r} are not in the catalogue (known: {', '.join(entries) or 'none'})")
    entry = entries[name]
    key = f"dim_{dim}/width_{width}"
    if key not in entry["sha256"]:
        held = ", ".join(entry["sha256"])
        raise ValueError(f"{name} has no pair {key}; the published ones are {held}")
    return {
        "url": entry["url"].format(commit=entry["commit"], dim=dim, width=width),
        "sha256": entry["sha256"][key],
        "archive": f"{name}_dim_{dim}_width_{width}.pt",
    }


def archive_path(source: dict, name: str, cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """Where the downloaded file of ``source`` lives in the cache folder."""
    return Path(cache_dir) / archive_name(source, name)


def archive_name(source: dict, name: str) -> str:
    """The file name in the cache folder: given, or the last part of the url's path."""
    file_name = source.get("archive") or unquote(PurePosixPath(urlparse(source["url"]).path).name)
    if not file_name or file_name in (".", "..") or "/" in file_name or "\\" in file_name:
        raise DownloadError(
            f"dataset {name!r}: cannot use {file_name!r} as the downloaded file's name; "
            f"give a plain file name as source.archive"
        )
    return file_name


def _check_holdout_names(config: dict, experiment: str, listed: str | Path) -> None:
    """The holdouts of a list become file names: none may be unusable or share one with another."""
    from perturbot.config import holdout_runs
    from perturbot.slugs import SlugError

    try:
        holdout_runs(config, experiment)
    except SlugError as err:
        raise DataError(f"{listed} (the holdouts of experiments.{experiment}): {err}") from None
