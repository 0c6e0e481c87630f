"""The workflow fetches an archive over HTTP once, however many experiments and datasets use it."""

import pytest
from helpers import Server, make_zip, run_workflow, sha256

from perturbot.data.catalog import dataset_spec, load_catalog
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


def test_a_damaged_member_stops_prepare_data_and_leaves_no_data_tmp(tmp_path):
    path = tmp_path / "cells.h5ad"
    make_features(cells=120, perturbations=1, features=6, seed=0).write_h5ad(path)
    archive = make_zip({MEMBER: path.read_bytes()[:2000]})
    server = Server()
    server.files["/archive.zip"] = archive
    try:
        proc = run_workflow(tmp_path, config(server.url + "/archive.zip", sha256(archive)), "results/first/data",
                            "--cores", "1", check=False)
    finally:
        server.close()
    assert proc.returncode != 0
    assert "cells.h5ad is not a readable .h5ad file" in proc.stderr and "toy.zip.extracted" in proc.stderr
    assert not (tmp_path / "results/first/data.tmp").exists() and not (tmp_path / "results/first/data").exists()


# ---- the papers' archive, as public sources describe it, served on 127.0.0.1 ------------------------

REST_PATH = "/server/api/core/bitstreams/7c5fe615-a6fa-4464-8ae7-4482a02040db/content"
FOUR_I_FEATURES = ["feature_7", "feature_2", "feature_0", "feature_9", "feature_4", "feature_5"]
GBM_PATIENTS = ["PW034", "PW036", "PW040", "PW051", "PW053"]


def h5ad_bytes(adata, tmp_path, name) -> bytes:
    path = tmp_path / f"{name}.h5ad"
    adata.write_h5ad(path)
    return path.read_bytes()


def papers_archive(tmp_path) -> bytes:
    """processed_datasets_all.zip in miniature: 4i with features.txt, glioblastoma with a sixth patient, the rest as files."""
    import numpy as np

    from perturbot.data.synthetic import make_counts
    from perturbot.preprocessing import normalize_log1p

    four_i = make_features(cells=60, perturbations=1, features=10, seed=0)
    gbm = make_counts(cells=120, perturbations=1, features=40, seed=0)
    normalize_log1p(gbm)
    gbm.obs["perturbation"] = gbm.obs["condition"].astype(str).replace({"trametinib": "panobinostat"}).to_numpy()
    gbm.obs["sample"] = np.resize(GBM_PATIENTS + ["PW999"], gbm.n_obs)
    gbm.obs = gbm.obs[["perturbation", "sample"]]
    return make_zip({
        "datasets/4i/8h.h5ad": h5ad_bytes(four_i, tmp_path, "4i"),
        "datasets/4i/features.txt": "\n".join(FOUR_I_FEATURES).encode(),
        "datasets/4i/drugs.txt": b"trametinib\n",
        "datasets/scrna-gbm/hvg-top1k-train-only.h5ad": h5ad_bytes(gbm, tmp_path, "gbm"),
        "datasets/scrna-lupuspatients/kang-hvg.h5ad": b"not used here",
        "datasets/scrna-lupuspatients/sample_ids.txt": b"101\n1015\n",
        "datasets/scrna-sciplex3/hvg-top1k-train-only.h5ad": b"not used here",
        "datasets/scrna-sciplex3/hvg-top1k.h5ad": b"not used here",
        "datasets/scrna-statefate/invitro-hvg.h5ad": b"not used here",
        "datasets/scrna-crossspecies/hvg-top1k-train-only.h5ad": b"not used here",
    })


def test_two_paper_experiments_share_one_request_to_the_papers_archive(tmp_path):
    import anndata as ad
    import yaml
    from helpers import REPO

    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    archive = papers_archive(tmp_path)
    server = Server()
    server.files[REST_PATH] = archive
    catalog = load_catalog(REPO / "resources/datasets.yaml")
    datasets = {}
    for name in ("4i", "glioblastoma"):  # the paper's entries, pointed at the local server
        source = dataset_spec(paper["datasets"][name]["catalog"], catalog)["source"]
        datasets[name] = {**paper["datasets"][name], "source": {**source, "url": server.url + REST_PATH, "mirrors": []}}
    experiments = {e: {**paper["experiments"][e], "models": ["identity"], "min_cells": 3}
                   for e in ("4i_iid", "glioblastoma_oos")}
    experiments["4i_iid"].pop("seeds")
    config = {"seed": 0, "device": "cpu", "datasets": datasets, "experiments": experiments}
    try:
        run_workflow(tmp_path, config, "results/4i_iid/data", "results/glioblastoma_oos/data", "--cores", "2")
    finally:
        server.close()
    assert server.requests == [REST_PATH]  # one archive, fetched once, for both datasets
    downloads = tmp_path / "resources/downloads"
    assert (downloads / "processed_datasets_all.zip.sha256").read_text().split()[0] == sha256(archive)
    assert "downloaded" in (downloads / "logs/processed_datasets_all.zip.log").read_text()
    four_i = ad.read_h5ad(tmp_path / "results/4i_iid/data/all.h5ad")
    assert list(four_i.var_names) == FOUR_I_FEATURES  # CellOT's data[:, features]
    for patient in GBM_PATIENTS:
        gbm = ad.read_h5ad(tmp_path / f"results/glioblastoma_oos/data/{patient}.h5ad")
        assert set(gbm.obs["sample"]) == set(GBM_PATIENTS)  # the sixth patient is gone
        assert set(gbm.obs.loc[gbm.obs["split"] == "test", "sample"]) == {patient}
