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


# Candidates, mirrors, the sha256 record, progress, companions and damaged files


def test_tar_symlink_chains_are_refused_by_the_data_filter(server, tmp_path):
    """a -> .., b -> a/.. and a file b/x: extracting b/x would write outside the folder."""
    archive = make_tar({"b/x": CONTENT, MEMBER: CONTENT}, links={"a": "..", "b": "a/.."})
    cache = tmp_path / "cache"
    src = source(server, "/chain.tar.gz", archive, sha=sha256(archive), member="b/x")
    with pytest.raises(DownloadError, match="outside the extraction folder"):
        fetch(src, name="4i_8h", cache_dir=cache)
    assert not (tmp_path / "x").exists() and not (cache / "cellot.zip.extracted").exists()


def test_tar_special_files_are_refused(server, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(MEMBER)
        info.size = len(CONTENT)
        tf.addfile(info, io.BytesIO(CONTENT))
        device = tarfile.TarInfo("datasets/dev")
        device.type = tarfile.CHRTYPE
        tf.addfile(device)
    src = source(server, "/dev.tar", buf.getvalue(), sha=sha256(buf.getvalue()))
    with pytest.raises(DownloadError, match="datasets/dev"):
        fetch(src, name="4i_8h", cache_dir=tmp_path)


def test_the_first_present_candidate_member_is_used(server, tmp_path):
    data = make_zip({"datasets/scrna-lupuspatients/kang-hvg.h5ad": CONTENT})
    src = source(server, "/c.zip", data, sha=sha256(data))
    src["member"] = ["datasets/scrna-lupuspatients/kang_new.h5ad", "datasets/scrna-lupuspatients/kang-hvg.h5ad"]
    path = fetch(src, name="lupus", cache_dir=tmp_path)
    assert path.name == "kang-hvg.h5ad" and path.read_bytes() == CONTENT


def test_no_candidate_lists_the_dataset_folder_and_the_line_to_change(server, tmp_path):
    data = make_zip({
        "datasets/scrna-lupuspatients/kang-v3.h5ad": CONTENT,
        "datasets/scrna-lupuspatients/sample_ids.txt": b"101\n",
        "datasets/4i/8h.h5ad": CONTENT,
    })
    src = source(server, "/c.zip", data, sha=sha256(data))
    src["member"] = ["datasets/scrna-lupuspatients/kang_new.h5ad", "datasets/scrna-lupuspatients/kang-hvg.h5ad"]
    hint = "the member line of datasets.lupus_kang in resources/datasets.yaml"
    with pytest.raises(DownloadError) as err:
        fetch(src, name="lupus", cache_dir=tmp_path, member_hint=hint)
    message = str(err.value)
    assert "kang_new.h5ad" in message and "kang-hvg.h5ad" in message and hint in message
    assert "datasets/scrna-lupuspatients/kang-v3.h5ad" in message and "sample_ids.txt" in message
    assert "datasets/4i/8h.h5ad" not in message  # only the dataset's own folder


def test_a_mirror_is_tried_when_the_address_fails(server, tmp_path):
    data = make_zip({MEMBER: CONTENT})
    server.files["/page"] = b"<!DOCTYPE html><html>record page</html>"
    server.files["/mirror.zip"] = data
    src = {"url": server.url + "/page", "mirrors": [server.url + "/gone", server.url + "/mirror.zip"],
           "sha256": sha256(data), "member": MEMBER, "archive": "cellot.zip"}
    assert fetch(src, name="4i_8h", cache_dir=tmp_path).read_bytes() == CONTENT
    assert server.requests == ["/page", "/gone", "/mirror.zip"]


def test_every_address_failing_reports_each(server, tmp_path):
    src = {"url": server.url + "/a", "mirrors": [server.url + "/b"], "sha256": None, "member": MEMBER,
           "archive": "cellot.zip"}
    with pytest.raises(DownloadError) as err:
        fetch(src, name="4i_8h", cache_dir=tmp_path)
    assert "(1)" in str(err.value) and "/a" in str(err.value) and "(2)" in str(err.value) and "/b" in str(err.value)
    assert files_in(tmp_path) == []


def test_the_first_download_records_its_sha256_and_later_runs_check_it(server, tmp_path):
    data = make_zip({MEMBER: CONTENT})
    src = source(server, "/cellot.zip", data, sha=None)
    with pytest.warns(UnverifiedDownloadWarning):
        fetch(src, name="4i_8h", cache_dir=tmp_path)
    assert (tmp_path / "cellot.zip.sha256").read_text() == f"{sha256(data)}  cellot.zip\n"
    other = make_zip({MEMBER: b"another version"})
    (tmp_path / "cellot.zip").write_bytes(other)
    with pytest.raises(DownloadError) as err:
        fetch(src, name="4i_8h", cache_dir=tmp_path)
    assert sha256(data) in str(err.value) and sha256(other) in str(err.value) and "cellot.zip.sha256" in str(err.value)


def test_progress_is_logged_with_bytes_rate_and_time_left(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(download, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(download, "CHUNK_BYTES", 4096)
    data = make_zip({MEMBER: CONTENT * 20})
    src = source(server, "/cellot.zip", data, sha=sha256(data))
    with caplog.at_level("INFO", logger="perturbot.data.download"):
        fetch(src, name="4i_8h", cache_dir=tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    assert any("%)" in m and "/s" in m and "left" in m and " of " in m for m in lines), lines
    assert any(m.startswith("dataset '4i_8h': downloaded") for m in lines)


def test_companion_files_come_from_the_same_archive(server, tmp_path):
    from perturbot.data.download import fetch_dataset

    data = make_zip({MEMBER: CONTENT, "datasets/4i/features.txt": b"f1\nf2\n"})
    src = source(server, "/cellot.zip", data, sha=sha256(data))
    spec = {"source": src, "features_file": "datasets/4i/features.txt", "holdouts_file": "datasets/4i/ids.txt"}
    files = fetch_dataset(spec, name="4i_8h", cache_dir=tmp_path)
    assert Path(files["features_file"]).read_bytes() == b"f1\nf2\n" and files["holdouts_file"] is None
    assert Path(files["path"]).read_bytes() == CONTENT and server.requests == ["/cellot.zip"]
    with pytest.raises(DownloadError, match="features_file"):
        fetch_dataset({**spec, "features_file": "datasets/4i/nope.txt"}, name="4i_8h", cache_dir=tmp_path)


@pytest.mark.parametrize("cut", [0.5, 0.0])
def test_a_damaged_h5ad_member_is_one_line_naming_the_file_and_the_fix(server, tmp_path, monkeypatch, cut):
    import anndata as ad
    import numpy as np

    from perturbot.data.io import load_dataset

    ad.AnnData(np.ones((4, 2), dtype=np.float32)).write_h5ad(tmp_path / "ok.h5ad")
    whole = (tmp_path / "ok.h5ad").read_bytes()
    data = make_zip({MEMBER: whole[: int(len(whole) * cut)]})
    src = source(server, "/cellot.zip", data, sha=sha256(data))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset({"source": src, "modality": "features"}, name="4i_8h")
    message = str(err.value)
    assert "\n" not in message and MEMBER.split("/")[-1] in message
    assert "cellot.zip.extracted" in message and "delete" in message


def test_a_damaged_local_h5ad_names_the_file(tmp_path):
    from perturbot.data.io import load_dataset

    (tmp_path / "cells.h5ad").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(DataError, match=r"cells\.h5ad is not a readable \.h5ad file.*replace it"):
        load_dataset({"source": "cells.h5ad", "modality": "features"}, name="mine", base_dir=tmp_path)


def test_holdouts_come_from_the_archive_list_once_it_is_there(tmp_path):
    import json

    from perturbot.data.catalog import apply_holdouts_files

    config = {
        "datasets": {"lupus": {"source": {"url": "u"}, "holdouts_file": "datasets/x/sample_ids.txt"}},
        "experiments": {"oos": {"dataset": "lupus", "setting": "oos", "holdouts": ["101"]},
                        "iid": {"dataset": "lupus", "setting": "iid", "holdouts": []}},
    }
    apply_holdouts_files(config, tmp_path)
    assert config["experiments"]["oos"]["holdouts"] == ["101"]  # not downloaded yet: the config's list
    (tmp_path / "ids.txt").write_text("101\n1015\n107\n")
    (tmp_path / "lupus.verified.json").write_text(json.dumps({"holdouts_file": str(tmp_path / "ids.txt")}))
    apply_holdouts_files(config, tmp_path)
    assert config["experiments"]["oos"]["holdouts"] == ["101", "1015", "107"]
    assert config["experiments"]["iid"]["holdouts"] == []
