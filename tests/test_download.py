"""Downloads for real, against an HTTP server on 127.0.0.1 serving archives made by the tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from helpers import Server, make_zip, sha256

from perturbot.data import download
from perturbot.data.download import DownloadError, UnverifiedDownloadWarning, fetch
from perturbot.data.io import DataError

MEMBER = "datasets/4i/8h.h5ad"
CONTENT = b"cells x features\n" * 1000


def make_tar(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(download, "RETRY_WAIT_S", 0.0)


def source(server: Server, path: str, data: bytes, *, sha: str | None, member: str | None = MEMBER) -> dict:
    server.files[path] = data
    return {"url": server.url + path, "sha256": sha, "member": member, "archive": None}


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_known_hash_gives_the_extracted_member(server, tmp_path):
    data = make_zip({MEMBER: CONTENT, "datasets/4i/features.txt": b"f1\nf2\n"})
    src = source(server, "/data/cellot.zip", data, sha=sha256(data))
    path = fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False)
    assert path.read_bytes() == CONTENT
    assert path == tmp_path / "cellot.zip.extracted" / sha256(data)[:12] / MEMBER
    assert (tmp_path / "cellot.zip").read_bytes() == data
    assert files_in(tmp_path / "cellot.zip.extracted") == [path]  # only the requested member
    # a second call verifies the cached archive and makes no request
    assert fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False) == path
    assert server.requests == ["/data/cellot.zip"]


def test_tar_archives_and_sha256_prefix_are_accepted(server, tmp_path):
    data = make_tar({MEMBER: CONTENT})
    src = source(server, "/cellot.tar.gz", data, sha="sha256:" + sha256(data).upper())
    assert fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False).read_bytes() == CONTENT


def test_plain_file_without_member(server, tmp_path):
    src = source(server, "/x.h5ad", CONTENT, sha=sha256(CONTENT), member=None)
    path = fetch(src, name="x", cache_dir=tmp_path, progressbar=False)
    assert path == tmp_path / "x.h5ad" and path.read_bytes() == CONTENT


def test_wrong_hash_is_a_clear_error_and_leaves_no_file(server, tmp_path):
    data = make_zip({MEMBER: CONTENT})
    wrong = "0" * 64
    src = source(server, "/cellot.zip", data, sha=wrong)
    with pytest.raises(DownloadError) as err:
        fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False)
    message = str(err.value)
    assert wrong in message and sha256(data) in message and "4i_8h" in message
    assert isinstance(err.value, DataError)
    assert files_in(tmp_path) == []
    assert server.requests == ["/cellot.zip"]  # a hash mismatch is not retried


def test_missing_hash_warns_with_the_computed_sha256(server, tmp_path):
    data = make_zip({MEMBER: CONTENT})
    src = source(server, "/cellot.zip", data, sha=None)
    with pytest.warns(UnverifiedDownloadWarning) as record:
        path = fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False)
    assert path.read_bytes() == CONTENT
    message = str(record[0].message)
    assert f"sha256: {sha256(data)}" in message and "resources/datasets.yaml" in message
    # the warning repeats on every use until the hash is recorded
    with pytest.warns(UnverifiedDownloadWarning):
        fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False)


def test_interrupted_transfer_leaves_nothing_half_written(server, tmp_path):
    data = make_zip({MEMBER: CONTENT})
    src = source(server, "/cellot.zip", data, sha=None)
    server.truncate.add("/cellot.zip")
    with pytest.raises(DownloadError, match="Nothing was saved"):
        fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False, retries=1)
    assert files_in(tmp_path) == []
    assert len(server.requests) == 2  # one retry


def test_a_transfer_that_fails_once_is_retried(server, tmp_path):
    data = make_zip({MEMBER: CONTENT})
    src = source(server, "/cellot.zip", data, sha=sha256(data))
    server.truncate.add("/cellot.zip")
    original = server.httpd.RequestHandlerClass.do_GET

    def fail_once(handler):
        original(handler)
        server.truncate.clear()

    server.httpd.RequestHandlerClass.do_GET = fail_once
    assert fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False).read_bytes() == CONTENT
    assert len(server.requests) == 2


def test_not_found_is_not_retried(server, tmp_path):
    src = {"url": server.url + "/missing.zip", "sha256": None, "member": MEMBER, "archive": None}
    with pytest.raises(DownloadError, match="404"):
        fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False, retries=3)
    assert server.requests == ["/missing.zip"]
    assert files_in(tmp_path) == []


def test_a_web_page_instead_of_the_archive_is_removed(server, tmp_path):
    src = source(server, "/handle/609681", b"<!DOCTYPE html><html>landing page</html>", sha=None)
    src["archive"] = "cellot.zip"
    with pytest.raises(DownloadError, match="web page"):
        fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    "archive",
    [
        make_zip({"../evil": b"x", MEMBER: CONTENT}),
        make_zip({"/tmp/evil": b"x", MEMBER: CONTENT}),
        make_tar({"../evil": b"x", MEMBER: CONTENT}),
        make_tar({MEMBER: CONTENT}, links={"datasets/link": "/etc/passwd"}),
        make_tar({MEMBER: CONTENT}, links={"datasets/link": "../../../outside"}),
    ],
    ids=["zip-dotdot", "zip-absolute", "tar-dotdot", "tar-absolute-link", "tar-escaping-link"],
)
def test_an_entry_escaping_the_destination_is_refused(server, tmp_path, archive):
    cache = tmp_path / "cache"
    src = source(server, "/cellot.zip", archive, sha=sha256(archive))
    with pytest.raises(DownloadError, match="outside the extraction folder"):
        fetch(src, name="4i_8h", cache_dir=cache, progressbar=False)
    assert not (cache / "cellot.zip.extracted").exists()
    assert sorted(p.name for p in tmp_path.rglob("*evil*")) == []


@pytest.mark.parametrize("member", ["../evil", "/etc/passwd", "datasets/../../evil"])
def test_a_member_path_escaping_the_destination_is_refused(server, tmp_path, member):
    data = make_zip({MEMBER: CONTENT})
    src = source(server, "/cellot.zip", data, sha=sha256(data), member=member)
    with pytest.raises(DownloadError, match="not a relative path"):
        fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False)


def test_a_missing_member_lists_the_archive_h5ad_files(server, tmp_path):
    data = make_zip({MEMBER: CONTENT})
    src = source(server, "/cellot.zip", data, sha=sha256(data), member="datasets/4i/24h.h5ad")
    with pytest.raises(DownloadError, match="datasets/4i/8h.h5ad"):
        fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False)


def test_a_placed_archive_is_verified_and_used_without_any_request(server, tmp_path):
    data = make_zip({MEMBER: CONTENT})
    (tmp_path / "cellot.zip").write_bytes(data)
    src = {"url": server.url + "/unreachable", "sha256": sha256(data), "member": MEMBER, "archive": "cellot.zip"}
    assert fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False).read_bytes() == CONTENT
    assert server.requests == []


def test_a_placed_archive_with_the_wrong_hash_is_refused_and_kept(server, tmp_path):
    data = make_zip({MEMBER: CONTENT})
    placed = tmp_path / "cellot.zip"
    placed.write_bytes(data[:-10])
    src = {"url": server.url + "/unreachable", "sha256": sha256(data), "member": MEMBER, "archive": "cellot.zip"}
    with pytest.raises(DownloadError) as err:
        fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False)
    assert sha256(data) in str(err.value) and sha256(data[:-10]) in str(err.value)
    assert placed.exists() and server.requests == []
    assert not (tmp_path / "cellot.zip.extracted").exists()


@pytest.mark.parametrize("bad", [{"sha256": "abc"}, {"archive": "../outside.zip"}])
def test_bad_source_fields_are_reported(tmp_path, bad):
    src = {"url": "http://127.0.0.1:9/x.zip", "sha256": None, "member": MEMBER, "archive": None, **bad}
    with pytest.raises(DownloadError, match="4i_8h"):
        fetch(src, name="4i_8h", cache_dir=tmp_path, progressbar=False)


def test_read_source_fetches_through_the_config_spec(server, tmp_path, monkeypatch):
    import anndata as ad
    import numpy as np

    from perturbot.data.io import read_source

    adata = ad.AnnData(np.arange(6, dtype=np.float32).reshape(3, 2))
    adata.write_h5ad(tmp_path / "small.h5ad")
    data = make_zip({MEMBER: (tmp_path / "small.h5ad").read_bytes()})
    src = source(server, "/cellot.zip", data, sha=sha256(data))
    monkeypatch.chdir(tmp_path)
    out = read_source({"source": src}, name="4i_8h")
    np.testing.assert_array_equal(out.X, adata.X)
    assert (tmp_path / "resources" / "downloads" / "cellot.zip").exists()


# The catalog of the papers' datasets

PAPER_DATASETS = ["4i_8h", "sciplex3", "lupus_kang", "glioblastoma", "crossspecies_lps", "statefate"]


@pytest.fixture(scope="module")
def catalog() -> dict:
    from helpers import REPO

    from perturbot.data.catalog import load_catalog

    return load_catalog(REPO / "resources" / "datasets.yaml")


def test_catalog_lists_every_paper_dataset_with_its_columns(catalog):
    from perturbot.data.catalog import DATASET_KEYS

    assert set(PAPER_DATASETS) <= set(catalog["datasets"])
    for name, entry in catalog["datasets"].items():
        assert all(key in entry for key in DATASET_KEYS), name
        assert entry["modality"] == ("features" if name == "4i_8h" else "expression")
        members = [entry["member"]] if isinstance(entry["member"], str) else entry["member"]
        assert all(m.endswith(".h5ad") and not download._escapes(m) for m in members), name
        assert entry["holdout_key"] is not None or entry["settings"] == ["iid"]
    sciplex = catalog["datasets"]["sciplex3"]
    assert sciplex["condition_key"] == "drug" and len(sciplex["perturbations"]) == 9
    assert catalog["datasets"]["lupus_kang"]["control"] == "ctrl"
    assert catalog["datasets"]["crossspecies_lps"]["holdouts"] == ["rat", "mouse"]


def test_catalog_specs_are_valid_config_datasets(catalog):
    from helpers import REPO
    from snakemake.utils import validate

    from perturbot.data.catalog import dataset_spec

    datasets = {name: dataset_spec(name, catalog) for name in catalog["datasets"]}
    config = {"datasets": datasets, "experiments": {f"e_{n}": {"dataset": n} for n in datasets}}
    validate(config, schema=str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    spec = datasets["glioblastoma"]
    assert spec["source"] == {
        "url": "https://www.research-collection.ethz.ch/server/api/core/bitstreams/"
        "7c5fe615-a6fa-4464-8ae7-4482a02040db/content",
        "mirrors": ["https://www.research-collection.ethz.ch/bitstreams/7c5fe615-a6fa-4464-8ae7-4482a02040db/download"],
        "sha256": None,
        "member": "datasets/scrna-gbm/hvg-top1k-train-only.h5ad",
        "archive": "processed_datasets_all.zip",
    }
    assert (spec["condition_key"], spec["control"], spec["perturbations"]) == ("perturbation", "control", ["panobinostat"])
    assert spec["subset"] == {"sample": ["PW034", "PW036", "PW040", "PW051", "PW053"]}
    assert datasets["4i_8h"]["features_file"] == "datasets/4i/features.txt"
    assert datasets["lupus_kang"]["holdouts_file"] == "datasets/scrna-lupuspatients/sample_ids.txt"
    assert datasets["lupus_kang"]["source"]["member"][0] == "datasets/scrna-lupuspatients/kang_new.h5ad"


def test_catalog_errors_name_the_problem(tmp_path, catalog):
    from perturbot.data.catalog import dataset_spec, load_catalog

    with pytest.raises(DataError, match="sciplex4"):
        dataset_spec("sciplex4", catalog)
    broken = tmp_path / "datasets.yaml"
    broken.write_text("archives: {a: {url: u, file: f.zip, sha256: null}}\ndatasets: {d: {archive: b}}\n")
    with pytest.raises(DataError, match="'d' lacks member"):
        load_catalog(broken)


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_a_catalog_dataset_downloads_and_loads(server, tmp_path, monkeypatch, catalog, name):
    """A stand-in archive with the catalog's member path and columns goes through fetch and load_dataset."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from perturbot.data.catalog import dataset_spec
    from perturbot.data.io import load_dataset

    spec = dataset_spec(name, catalog)
    perturbations = spec["perturbations"] if spec["perturbations"] != "all" else ["cisplatin", "trametinib"]
    conditions = [spec["control"], *perturbations] * 4
    obs = pd.DataFrame({spec["condition_key"]: conditions}, index=[f"c{i}" for i in range(len(conditions))])
    kept = len(conditions)
    for column, values in spec.get("subset", {}).items():  # glioblastoma: a third of the cells from a sixth patient
        obs[column] = np.resize([values[0], values[0], "PW999"], len(obs))
        kept = int((obs[column] == values[0]).sum())
    var = pd.DataFrame(index=["f1", "f2", "f3"])
    adata = ad.AnnData(np.random.default_rng(0).random((len(conditions), 3), dtype=np.float32), obs=obs, var=var)
    adata.write_h5ad(tmp_path / "stand_in.h5ad")
    members = [spec["source"]["member"]] if isinstance(spec["source"]["member"], str) else spec["source"]["member"]
    files = {members[-1]: (tmp_path / "stand_in.h5ad").read_bytes()}  # the last candidate: the fallback works
    if spec.get("features_file"):
        files[spec["features_file"]] = b"f3\nf1\n"
    data = make_zip(files)
    server.files["/cellot.zip"] = data
    spec["source"].update(url=server.url + "/cellot.zip", sha256=sha256(data), mirrors=[])
    monkeypatch.chdir(tmp_path)
    loaded, found = load_dataset(spec, name=name)
    assert found == perturbations and loaded.n_obs == kept
    assert list(loaded.var_names) == (["f3", "f1"] if spec.get("features_file") else ["f1", "f2", "f3"])
    assert (tmp_path / "resources" / "downloads" / spec["source"]["archive"]).exists()
