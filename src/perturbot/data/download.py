"""Fetch a published dataset file: download once, verify its sha256 on every use, extract members safely.

The archives of the papers are large (about 2 GB) and sometimes only reachable by
hand, so a file already present in the cache folder (downloaded earlier or placed
there by the user) is used instead of downloading, after the same hash check.
Downloads go through pooch, which writes to a temporary file in the cache folder
and moves it into place only once complete and verified; the transfer itself is
streamed here so that its progress (bytes, rate, time left) reaches the job's log.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tarfile
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pooch
import requests

from perturbot.atomic import write_text
from perturbot.data.catalog import DEFAULT_CACHE, archive_path
from perturbot.errors import DownloadError

RETRY_WAIT_S = 2.0
PROGRESS_EVERY_S = 10.0
CHUNK_BYTES = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger(__name__)


class MissingMemberError(DownloadError):
    """None of a dataset's candidate members is in the archive."""


class UnverifiedDownloadWarning(UserWarning):
    """A dataset file was used although no sha256 was recorded to check it against."""


class _DropPoochHashAdvice(logging.Filter):
    """pooch suggests its own API for a missing hash; our warning gives the catalog line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SHA256 hash of downloaded file")


pooch.get_logger().addFilter(_DropPoochHashAdvice())


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class _StreamingDownloader:
    """A pooch downloader that streams over HTTP(S), logs progress lines and remembers the sha256 it wrote.

    Progress goes through :mod:`logging` (one line every ``PROGRESS_EVERY_S``), which
    a job's log file keeps readable, unlike a terminal progress bar.
    """

    def __init__(self, timeout: float, name: str) -> None:
        self.timeout = timeout
        self.name = name
        self.sha256: str | None = None

    def __call__(self, url: str, output_file: str, pooch_instance) -> None:
        self.sha256 = None
        if urlparse(url).scheme not in ("http", "https"):
            pooch.choose_downloader(url, progressbar=False)(url, output_file, pooch_instance)
        else:
            self._stream(url, output_file)
        self.sha256 = pooch.file_hash(output_file, alg="sha256")

    def _stream(self, url: str, output_file: str) -> None:
        with requests.get(url, stream=True, timeout=self.timeout, allow_redirects=True) as response:
            response.raise_for_status()
            total = int(response.headers.get("Content-Length") or 0) or None
            start = last = time.monotonic()
            done = 0
            with open(output_file, "wb") as fh:
                for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                    fh.write(chunk)
                    done += len(chunk)
                    now = time.monotonic()
                    if now - last >= PROGRESS_EVERY_S:
                        last = now
                        log.info("dataset %r: %s", self.name, _progress(done, total, now - start))
            if total is not None and done < total:
                raise requests.exceptions.ConnectionError(
                    f"the transfer stopped after {_size(done)} of {_size(total)}"
                )
            log.info("dataset %r: downloaded %s in %s", self.name, _size(done), _duration(time.monotonic() - start))


def _progress(done: int, total: int | None, elapsed: float) -> str:
    """``1.2 GB of 1.9 GB (63%), 8.4 MB/s, 1 min 23 s left`` (no share or time left without a size)."""
    rate = done / max(elapsed, 1e-9)
    if total is None:
        return f"{_size(done)} so far, {_size(rate)}/s"
    left = (total - done) / rate if rate > 0 else float("inf")
    eta = _duration(left) if left != float("inf") else "unknown time"
    return f"{_size(done)} of {_size(total)} ({100 * done / total:.0f}%), {_size(rate)}/s, {eta} left"


def sha256_record(archive: Path) -> Path:
    """``<file>.sha256`` next to a download: the hash seen at its first download, in ``sha256sum`` format."""
    return archive.with_name(archive.name + ".sha256")


def fetch_archive(
    source: dict,
    name: str,
    cache_dir: str | Path = DEFAULT_CACHE,
    *,
    retries: int = 2,
    timeout: float = 60.0,
) -> tuple[Path, str]:
    """Download (once) and verify the file of ``source``; return its path and sha256.

    The expected sha256 is the catalog's (``source.sha256``) or, while that is unknown,
    the one recorded in ``<file>.sha256`` at the first download. The addresses tried are
    ``source.url`` and then each of ``source.mirrors``.
    """
    given = _normalise_sha256(source.get("sha256"), name)
    archive = archive_path(source, name, cache_dir)
    record = sha256_record(archive)
    recorded = None if given is not None else _read_record(record, name)
    expected = given or recorded
    wants_archive = bool(_candidates(source.get("member")))
    if not archive.exists():
        actual = _download_any(source, archive, expected, name, wants_archive, retries=retries, timeout=timeout)
    else:
        actual = pooch.file_hash(str(archive), alg="sha256")
        if expected is not None and actual != expected:
            where = (
                "the catalog expects" if given else f"{record} recorded at its first download says"
            )
            raise DownloadError(
                f"dataset {name!r}: the file {archive} is not the expected one "
                f"(its sha256 is {actual}, {where} {expected}). It may be incomplete, "
                f"damaged or another version: delete it, or replace it with the right file, and run again"
                + ("" if given else f" (delete {record} too if the new file is the one you want)")
                + "."
            )
        if wants_archive and _archive_kind(archive) is None:
            raise DownloadError(
                f"dataset {name!r}: {archive} is not a zip or tar archive. Download the archive by hand "
                f"(see docs/datasets.md) and save it as {archive}."
            )
    if given is None:
        if recorded is None:
            write_text(record, f"{actual}  {archive.name}\n")
        _warn_unverified(name, archive, actual, record)
    return archive, actual


def fetch(
    source: dict,
    name: str,
    cache_dir: str | Path = DEFAULT_CACHE,
    *,
    retries: int = 2,
    progressbar: bool | None = None,
    timeout: float = 60.0,
    member_hint: str | None = None,
) -> Path:
    """Return the local path of a dataset's file, downloading and extracting it if needed.

    ``source`` is ``{url, sha256, member, archive, mirrors}`` (see the config schema):
    ``archive`` names the downloaded file under ``cache_dir`` (default: the last
    part of the url), ``member`` the file to take out of that archive, or a list of
    candidate paths of which the first present is used (``None``: the download is
    the dataset itself). ``member_hint`` says where the member is written, for the
    error when none of the candidates exists. ``progressbar`` is accepted for
    compatibility: progress always goes to the log.
    """
    archive, sha = fetch_archive(source, name, cache_dir, retries=retries, timeout=timeout)
    candidates = _candidates(source.get("member"))
    if not candidates:
        return archive
    return extract(archive, candidates, sha, name, hint=member_hint)


def fetch_dataset(spec: dict, name: str, cache_dir: str | Path = DEFAULT_CACHE, *, member_hint: str | None = None, **kwargs) -> dict:
    """Fetch a dataset's file and its companions from one verified archive: local paths as a dict.

    ``path``: the data; ``features_file``: the feature list (required when the
    dataset names one); ``holdouts_file``: the list of holdouts, or None when the
    archive has none (the experiments' own holdouts then stand). A dataset whose
    download is the ``.h5ad`` itself keeps its companion paths as local paths.
    """
    source = spec["source"]
    archive, sha = fetch_archive(source, name, cache_dir, **kwargs)
    candidates = _candidates(source.get("member"))
    if not candidates:
        return {"path": str(archive), "features_file": spec.get("features_file"), "holdouts_file": spec.get("holdouts_file")}
    out = {"path": str(extract(archive, candidates, sha, name, hint=member_hint))}
    features = spec.get("features_file")
    out["features_file"] = str(extract(archive, [features], sha, name, hint="features_file")) if features else None
    holdouts = spec.get("holdouts_file")
    found = extract_if_present(archive, holdouts, sha, name) if holdouts else None
    if holdouts and found is None:
        log.info("dataset %r: the archive has no %s; the experiments' holdouts are used", name, holdouts)
    out["holdouts_file"] = str(found) if found else None
    return out


def extract_if_present(archive: Path, member: str, archive_sha256: str, name: str) -> Path | None:
    """Take a companion file (a feature list, a list of samples) out of an archive; None if it has none."""
    try:
        return extract(archive, [member], archive_sha256, name)
    except MissingMemberError:
        return None


def _candidates(member) -> list[str]:
    if member is None:
        return []
    return [member] if isinstance(member, str) else [str(m) for m in member]


def _read_record(record: Path, name: str) -> str | None:
    if not record.exists():
        return None
    words = record.read_text().split()
    digest = words[0].lower() if words else ""
    if not _HEX64.fullmatch(digest):
        raise DownloadError(f"dataset {name!r}: {record} does not start with a sha256; delete it and run again")
    return digest


def _normalise_sha256(value: str | None, name: str) -> str | None:
    """Accept ``abc…`` or ``sha256:abc…``; anything else is a typo in the catalog or config."""
    if value is None:
        return None
    digest = str(value).strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(digest):
        raise DownloadError(f"dataset {name!r}: sha256 {value!r} is not 64 hexadecimal characters")
    return digest


def _download_any(
    source: dict, target: Path, expected: str | None, name: str, wants_archive: bool, *, retries: int, timeout: float
) -> str:
    """Try ``url`` then each mirror; the first address that gives the right file wins."""
    urls = [source["url"], *[m["url"] if isinstance(m, dict) else m for m in source.get("mirrors") or []]]
    failures = []
    for url in urls:
        try:
            sha = _download(url, target, expected, name, retries=retries, timeout=timeout)
        except DownloadError as err:
            if len(urls) == 1:
                raise
            failures.append(str(err))
            log.warning("%s", err)
            continue
        if wants_archive and _archive_kind(target) is None:
            target.unlink()
            err = DownloadError(
                f"dataset {name!r}: the file downloaded from {url} is not a zip or tar archive "
                f"(the address probably leads to a web page, not to the file itself); it was deleted. "
                f"Download the archive by hand (see docs/datasets.md) and save it as {target}."
            )
            if len(urls) == 1:
                raise err
            failures.append(str(err))
            log.warning("%s", err)
            continue
        return sha
    raise DownloadError(
        f"dataset {name!r}: none of the {len(urls)} addresses gave the file:\n"
        + "\n".join(f"  ({i}) {msg}" for i, msg in enumerate(failures, 1))
    )


def _download(url: str, target: Path, expected: str | None, name: str, *, retries: int, timeout: float) -> str:
    """Download ``url`` to ``target`` with pooch (hash-checked, atomic); return its sha256.

    Network failures are retried; a wrong hash is not, since downloading the same
    bytes again would not help.
    """
    downloader = _StreamingDownloader(timeout, name)
    known_hash = f"sha256:{expected}" if expected else None
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("dataset %r: downloading %s to %s", name, url, target)
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
                f"(its sha256 is {downloader.sha256}, the expected one is {expected}); it was deleted. "
                f"The server may serve a new version of the data, or the recorded sha256 is wrong."
            ) from err
    return downloader.sha256 or pooch.file_hash(str(target), alg="sha256")


def _is_client_error(err: requests.exceptions.RequestException) -> bool:
    """A 4xx answer (wrong address, no access) will not change on a second try."""
    response = getattr(err, "response", None)
    return response is not None and 400 <= response.status_code < 500


def _warn_unverified(name: str, archive: Path, sha256: str, record: Path) -> None:
    bar = "!" * 78
    warnings.warn(
        f"\n{bar}\n"
        f"dataset {name!r}: no sha256 is recorded in the catalog for {archive}, so nothing shows that it is\n"
        f"the file the authors published. Its sha256 is\n    {sha256}\n"
        f"(kept in {record}, which later runs check until the catalog has it).\n"
        f"Record it so that every later run, anywhere, checks it: add the line\n"
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
    """Map each entry to whether it is a regular file, and list the entries that are unsafe to extract.

    Tar entries go through the standard library's ``data`` filter (links leaving the
    folder, device files, absolute paths), and the text check of names on top.
    """
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
        entries = {i.filename: not i.is_dir() for i in infos}
        return entries, [n for n in entries if _escapes(n)]
    entries, unsafe = {}, []
    with tarfile.open(archive) as tf, tempfile.TemporaryDirectory() as dest:
        for info in tf.getmembers():
            entries[info.name] = info.isfile()
            label = f"{info.name} -> {info.linkname}" if info.issym() or info.islnk() else info.name
            try:
                tarfile.data_filter(info, dest)
            except tarfile.FilterError:
                unsafe.append(label)
                continue
            target = None
            if info.issym():
                target = posixpath.join(posixpath.dirname(info.name), info.linkname)
            elif info.islnk():
                target = info.linkname
            if _escapes(info.name) or (target is not None and _escapes(target)):
                unsafe.append(label)
    return entries, unsafe


def extract(archive: Path, candidates: list[str], archive_sha256: str, name: str, *, hint: str | None = None) -> Path:
    """Extract the first present candidate member into a temporary folder, then move it into place.

    The destination folder is named after the archive's hash, so a new version of
    the archive never reuses files taken out of an older one.
    """
    for member in candidates:
        if _escapes(member) or posixpath.normpath(member) in (".", ""):
            raise DownloadError(f"dataset {name!r}: member {member!r} is not a relative path inside the archive")
    base = archive.parent / f"{archive.name}.extracted" / archive_sha256[:12]
    for member in candidates:
        if (base / posixpath.normpath(member)).is_file():
            return base / posixpath.normpath(member)
    kind = _archive_kind(archive)
    if kind is None:
        raise DownloadError(f"dataset {name!r}: {archive} is not a zip or tar archive")
    entries, unsafe = _entries(archive, kind)
    if unsafe:
        raise DownloadError(
            f"dataset {name!r}: refusing to extract from {archive}: it contains entries that would be "
            f"written outside the extraction folder ({', '.join(map(repr, unsafe[:5]))}). "
            f"The archive is damaged or was tampered with."
        )
    member = next((m for m in candidates if entries.get(m, False)), None)
    if member is None:
        raise MissingMemberError(_missing_member_message(archive, candidates, entries, name, hint))
    if member != candidates[0]:
        log.info("dataset %r: %s is not in %s; using %s", name, candidates[0], archive.name, member)
    dest = base / posixpath.normpath(member)
    with tempfile.TemporaryDirectory(dir=archive.parent.resolve(), prefix=f".{archive.name}.extracting-") as tmp:
        if kind == "zip":
            pooch.Unzip(members=[member], extract_dir=tmp)(str(archive), "download", None)
        else:
            with tarfile.open(archive) as tf:
                tf.extract(tf.getmember(member), path=tmp, filter="data")
        extracted = Path(tmp) / member
        if not extracted.is_file() or extracted.is_symlink():
            raise DownloadError(f"dataset {name!r}: extracting {member!r} from {archive} gave no regular file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(extracted, dest)
    return dest


def _missing_member_message(archive: Path, candidates: list[str], entries: dict[str, bool], name: str, hint: str | None) -> str:
    """Name the candidates, list the archive's files in the dataset's folder, and say which line to change."""
    folders = sorted({posixpath.dirname(c) for c in candidates})
    folder = posixpath.commonpath(folders) if folders and all(folders) else ""
    files = sorted(n for n, is_file in entries.items() if is_file and (not folder or n.startswith(folder + "/")))
    if not files:
        files = sorted({n.split("/")[0] + ("/" if "/" in n else "") for n in entries})
        listing = f"it has nothing under {folder}/; its top-level entries: " if folder else "its entries: "
    else:
        listing = f"its files under {folder}/: " if folder else "its files: "
    shown = ", ".join(files[:40]) + (f", … ({len(files) - 40} more)" if len(files) > 40 else "")
    wanted = candidates[0] if len(candidates) == 1 else "any of " + ", ".join(candidates)
    where = hint or "source.member in your config (or the dataset's member in resources/datasets.yaml)"
    return (
        f"dataset {name!r}: {archive} holds no file {wanted}; {listing}{shown}. "
        f"Put the right path in {where}."
    )
