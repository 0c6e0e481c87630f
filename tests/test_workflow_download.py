"""The workflow fetches a dataset over HTTP once, however many experiments use it."""

import pytest
from helpers import Server, make_zip, run_workflow, sha256

from perturbot.data.synthetic import make_features

pytestmark = pytest.mark.slow
MEMBER = "datasets/toy/cells.h5ad"


@pytest.fixture
def served_dataset(tmp_path):
    path = tmp_path / "cells.h5ad"
    make_features(cells=120, perturbations=1, features=6, seed=0).write_h5ad(path)
    archive = make_zip({MEMBER: path.read_bytes(), "datasets/README": b"toy"})
    server = Server()
    server.files["/archive.zip"] = archive
    yield server, sha256(archive)
    server.close()


def config(url, sha):
    source = {"url": url, "sha256": sha, "member": MEMBER, "archive": "toy.zip"}
    dataset = {"source": source, "modality": "features", "condition_key": "drug", "control": "control"}
    experiment = {"dataset": "toy", "models": ["identity"]}
    return {"datasets": {"toy": dataset}, "experiments": {"first": experiment, "second": dict(experiment)}}


def test_two_experiments_share_one_verified_download(served_dataset, tmp_path):
    server, sha = served_dataset
    run_workflow(tmp_path, config(server.url + "/archive.zip", sha), "results/first/data", "results/second/data", "--cores", "2")
    assert server.requests == ["/archive.zip"]
    assert (tmp_path / "resources/downloads/toy.zip").exists()
    for exp in ("first", "second"):
        assert (tmp_path / f"results/{exp}/data/all.h5ad").exists()


def test_a_checksum_mismatch_stops_the_run_and_leaves_nothing(served_dataset, tmp_path):
    server, _ = served_dataset
    proc = run_workflow(tmp_path, config(server.url + "/archive.zip", "0" * 64), "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "sha256" in proc.stderr
    assert not (tmp_path / "resources/downloads/toy.zip").exists()
    assert not (tmp_path / "results/first/data").exists()
