"""Fetch a published dataset file: download once, verify its sha256 on every use, extract one member safely.

The archives of the papers are large (about 2 GB) and sometimes only reachable by
hand, so a file already present in the cache folder (downloaded earlier or placed
there by the user) is used instead of downloading, after the same hash check.
Downloads go through pooch, which writes to a temporary file in the cache folder
and moves it into place only once complete and verified.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import posixpath
import re
import tarfile
import tempfile
import time
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import pooch
import requests

from perturbot.data.io import DataError

DEFAULT_CACHE = "resources/downloads"
RETRY_WAIT_S = 2.0
_HEX64 = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger(__name__)


class DownloadError(DataError):
    """A dataset file could not be downloaded, verified or extracted."""


class UnverifiedDownloadWarning(UserWarning):
    """A dataset file was used although no sha256 was recorded to check it against."""


class _DropPoochHashAdvice(logging.Filter):
    """pooch suggests its own API for a missing hash; our warning gives the catalog line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SHA256 hash of downloaded file")


pooch.get_logger().addFilter(_DropPoochHashAdvice())


class _HashingDownloader:
    """Wrap a pooch downloader to remember the sha256 of what it wrote, for error messages."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sha256: str | None = None

    def __call__(self, url: str, output_file: str, pooch_instance) -> None:
        self.sha256 = None
        self.inner(url, output_file, pooch_instance)
        self.sha256 = pooch.file_hash(output_file, alg="sha256")


def fetch(
    source: dict,
    name: str,
    cache_dir: str | Path = DEFAULT_CACHE,
    *,
    retries: int = 2,
    progressbar: bool | None = None,
    timeout: float = 60.0,
) -> Path:
    """Return the local path of a dataset's file, downloading and extracting it if needed.

    ``source`` is ``{url, sha256, member, archive}`` (see the config schema):
    ``archive`` names the downloaded file under ``cache_dir`` (default: the last
    part of the url), ``member`` the file to take out of that archive (``None``:
    the download is the dataset itself). A known sha256 is checked every time;
    without one the file is used with a warning that gives its sha256.
    """
    url = source["url"]
    expected = _normalise_sha256(source.get("sha256"), name)
    archive = Path(cache_dir) / _archive_name(source, name)
    downloaded = not archive.exists()
    if downloaded:
        actual = _download(url, archive, expected, name, retries=retries, progressbar=progressbar, timeout=timeout)
    else:
        actual = pooch.file_hash(str(archive), alg="sha256")
        if expected is not None and actual != expected:
            raise DownloadError(
                f"dataset {name!r}: the file {archive} is not the expected one "
                f"(its sha256 is {actual}, the catalog expects {expected}). It may be incomplete, "
                f"damaged or another version: delete it, or replace it with the right file, and run again."
            )
    member = source.get("member")
    if member is not None and _archive_kind(archive) is None:
        if downloaded:
            archive.unlink()
        raise DownloadError(
            f"dataset {name!r}: {'the file downloaded from ' + url if downloaded else str(archive)} "
            f"is not a zip or tar archive"
            + (" (the address probably leads to a web page, not to the file itself)" if downloaded else "")
            + f". Download the archive by hand (see docs/datasets.md) and save it as {archive}."
        )
    if expected is None:
        _warn_unverified(name, archive, actual)
    if member is None:
        return archive
    return _extract(archive, member, actual, name)


def _normalise_sha256(value: str | None, name: str) -> str | None:
    """Accept ``abc…`` or ``sha256:abc…``; anything else is a typo in the catalog or config."""
    if value is None:
        return None
    digest = str(value).strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(digest):
        raise DownloadError(f"dataset {name!r}: sha256 {value!r} is not 64 hexadecimal characters")
    return digest


def _archive_name(source: dict, name: str) -> str:
    """The file name in the cache folder: given, or the last part of the url's path."""
    file_name = source.get("archive") or unquote(PurePosixPath(urlparse(source["url"]).path).name)
    if not file_name or file_name in (".", "..") or "/" in file_name or "\\" in file_name:
        raise DownloadError(
            f"dataset {name!r}: cannot use {file_name!r} as the downloaded file's name; "
            f"give a plain file name as source.archive"
        )
    return file_name


def _download(
    url: str, target: Path, expected: str | None, name: str, *, retries: int, progressbar: bool | None, timeout: float
) -> str:
    """Download ``url`` to ``target`` with pooch (hash-checked, atomic); return its sha256.

    Network failures are retried; a wrong hash is not, since downloading the same
    bytes again would not help.
    """
    if progressbar is None:
        progressbar = importlib.util.find_spec("tqdm") is not None
    if urlparse(url).scheme in ("http", "https"):
        inner = pooch.HTTPDownloader(progressbar=progressbar, timeout=timeout)
    else:
        inner = pooch.choose_downloader(url, progressbar=progressbar)
    downloader = _HashingDownloader(inner)
    known_hash = f"sha256:{expected}" if expected else None
    for attempt in range(retries + 1):
        try:
            pooch.retrieve(url, known_hash=known_hash, fname=target.name, path=target.parent, downloader=downloader)
            break
        except requests.exceptions.RequestException as err:
            if attempt == retries or _is_client_error(err):
                raise DownloadError(
                    f"dataset {name!r}: downloading {url} failed after {attempt + 1} attempt(s): {err}. "
                    f"Nothing was saved. Check the address and your connection, or download the file "
                    f"by hand and save it as {target} (see docs/datasets.md)."
                ) from err
            log.warning("dataset %r: download failed (%s); trying again (%d left)", name, err, retries - attempt)
            time.sleep(RETRY_WAIT_S * (attempt + 1))
        except ValueError as err:
            if downloader.sha256 is None:
                raise
            raise DownloadError(
                f"dataset {name!r}: the file downloaded from {url} is not the expected one "
                f"(its sha256 is {downloader.sha256}, the catalog expects {expected}); it was deleted. "
                f"The server may serve a new version of the data, or the recorded sha256 is wrong."
            ) from err
    return downloader.sha256 or pooch.file_hash(str(target), alg="sha256")


def _is_client_error(err: requests.exceptions.RequestException) -> bool:
    """A 4xx answer (wrong address, no access) will not change on a second try."""
    response = getattr(err, "response", None)
    return response is not None and 400 <= response.status_code < 500


def _warn_unverified(name: str, archive: Path, sha256: str) -> None:
    bar = "!" * 78
    warnings.warn(
        f"\n{bar}\n"
        f"dataset {name!r}: no sha256 is recorded for {archive}, so nothing shows that it is the\n"
        f"file the authors published. Its sha256 is\n    {sha256}\n"
        f"Record it so that every later run checks it: add the line\n"
        f"    sha256: {sha256}\n"
        f"to the archive's entry in resources/datasets.yaml, or under datasets.{name}.source in your config.\n"
        f"{bar}",
        UnverifiedDownloadWarning,
        stacklevel=3,
    )


def _archive_kind(path: Path) -> str | None:
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    return None


def _escapes(path: str) -> bool:
    """True if an archive path would land outside the folder it is extracted into."""
    path = path.replace("\\", "/")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return True
    norm = posixpath.normpath(path)
    return norm == ".." or norm.startswith("../")


def _entries(archive: Path, kind: str) -> tuple[dict[str, bool], list[str]]:
    """Map each entry to whether it is a regular file, and list the entries that would escape."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
        entries = {i.filename: not i.is_dir() for i in infos}
        return entries, [n for n in entries if _escapes(n)]
    entries, unsafe = {}, []
    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            entries[info.name] = info.isfile()
            target = None
            if info.issym():
                target = posixpath.join(posixpath.dirname(info.name), info.linkname)
            elif info.islnk():
                target = info.linkname
            if _escapes(info.name) or (target is not None and (info.linkname.startswith("/") or _escapes(target))):
                unsafe.append(info.name if target is None else f"{info.name} -> {info.linkname}")
    return entries, unsafe


def _extract(archive: Path, member: str, archive_sha256: str, name: str) -> Path:
    """Extract one file with pooch into a temporary folder, then move it into place.

    The destination folder is named after the archive's hash, so a new version of
    the archive never reuses files taken out of an older one.
    """
    if _escapes(member) or posixpath.normpath(member) in (".", ""):
        raise DownloadError(f"dataset {name!r}: member {member!r} is not a relative path inside the archive")
    dest = archive.parent / f"{archive.name}.extracted" / archive_sha256[:12] / posixpath.normpath(member)
    if dest.is_file():
        return dest
    kind = _archive_kind(archive)
    entries, unsafe = _entries(archive, kind)
    if unsafe:
        raise DownloadError(
            f"dataset {name!r}: refusing to extract from {archive}: it contains entries that would be "
            f"written outside the extraction folder ({', '.join(map(repr, unsafe[:5]))}). "
            f"The archive is damaged or was tampered with."
        )
    if not entries.get(member, False):
        similar = [n for n in entries if n.endswith(".h5ad")][:20]
        raise DownloadError(
            f"dataset {name!r}: {archive} holds no file {member!r}"
            + (f"; its .h5ad files: {', '.join(similar)}" if similar else "")
            + ". Correct source.member (or the catalog entry)."
        )
    processor_class = pooch.Unzip if kind == "zip" else pooch.Untar
    with tempfile.TemporaryDirectory(dir=archive.parent.resolve(), prefix=f".{archive.name}.extracting-") as tmp:
        processor_class(members=[member], extract_dir=tmp)(str(archive), "download", None)
        extracted = Path(tmp) / member
        if not extracted.is_file() or extracted.is_symlink():
            raise DownloadError(f"dataset {name!r}: extracting {member!r} from {archive} gave no regular file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(extracted, dest)
    return dest
