"""Every experiment of configs/paper.yaml, scaled down, on stand-in data with the papers' columns.

The stand-in archive has the catalog's file name and member paths and is placed
by hand in resources/downloads/ (as a user would with the real 1.9 GB archive),
so the real paper config — catalog entries, holdouts, companions, pseudo-perturbation,
scaling datasets — runs end to end; only budgets, cells, holdouts and models shrink.
"""

import copy
import zipfile

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import REPO, run_workflow

from perturbot.data.catalog import load_catalog
from perturbot.data.synthetic import make_counts, make_features
from perturbot.preprocessing import normalize_log1p

pytestmark = pytest.mark.slow
TINY = {
    "cellot": {"n_iters": 20, "eval_every": 10, "batch_size": 64},
    "w1ot": {"n_iters": 20, "eval_every": 10, "batch_size": 64},
    "cae": {"n_iters": 20, "eval_every": 10, "hidden_units": [16], "latent_dim": 4},
}
TINY_AUTOENCODER = {"n_iters": 20, "eval_every": 10, "hidden_units": [16], "latent_dim": 4}


def stand_in(entry: dict, holdouts: list[str]) -> ad.AnnData:
    """A small dataset with the catalog entry's condition column, control, perturbations and holdout column."""
    perturbations = entry["perturbations"] if entry["perturbations"] != "all" else ["cisplatin", "trametinib"]
    perturbations = perturbations[:2]
    if entry["modality"] == "features":
        adata = make_features(cells=120, perturbations=len(perturbations), features=48, seed=0)
        old = adata.obs["drug"].astype(str)
    else:
        adata = make_counts(cells=120, perturbations=len(perturbations), features=150, seed=0)
        normalize_log1p(adata)  # the processed files hold log-normalised expression
        old = adata.obs["condition"].astype(str)
    names = dict(zip(adata.uns["synthetic"]["perturbations"], perturbations), control=entry["control"])
    obs = pd.DataFrame({entry["condition_key"]: old.map(names).to_numpy()}, index=adata.obs_names)
    if entry["holdout_key"]:
        values = (holdouts or ["a"]) + ["other"]
        if entry["holdout_key"] in entry.get("subset", {}):  # glioblastoma: cells of the kept patients only
            values = list(entry["subset"][entry["holdout_key"]])
        obs[entry["holdout_key"]] = np.resize(values, adata.n_obs)
    return ad.AnnData(np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X, dtype=np.float32), obs=obs, var=adata.var)


def scaled_down(config: dict, catalog: dict) -> dict:
    config = copy.deepcopy(config)
    config["device"] = "cpu"
    config.pop("toy_maps", None)
    for dataset in config["datasets"].values():
        if "catalog" in dataset:
            entry = catalog["datasets"][dataset["catalog"]]
            if entry["perturbations"] != "all":
                dataset["perturbations"] = entry["perturbations"][:1]
        else:
            dataset["synthetic"]["cells"] = 100
    for exp in config["experiments"].values():
        exp["holdouts"] = exp.get("holdouts", [])[:1]
        exp.pop("seeds", None)
        ot = [m for m in exp["models"] if (m if isinstance(m, str) else m["model"]) in ("cellot", "w1ot")]
        exp["models"] = ot[:1] or exp["models"][:1]
        exp["model_params"] = TINY
        exp["autoencoder"] = TINY_AUTOENCODER
        exp["n_hvg"] = 100
        exp["n_markers"] = 10
        exp["min_cells"] = 3
    return config


def test_every_paper_experiment_runs_scaled_down(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    catalog = load_catalog(REPO / "resources" / "datasets.yaml")
    archive = catalog["archives"]["cellot"]["file"]
    downloads = tmp_path / "resources" / "downloads"
    downloads.mkdir(parents=True)
    with zipfile.ZipFile(downloads / archive, "w") as zf:
        for name, entry in catalog["datasets"].items():
            holdouts = next(
                (e.get("holdouts", []) for e in config["experiments"].values()
                 if config["datasets"][e["dataset"]].get("catalog") == name and e.get("holdouts")),
                entry.get("holdouts", []),
            )
            path = tmp_path / f"{name}.h5ad"
            adata = stand_in(entry, [str(h) for h in holdouts][:1])
            adata.write_h5ad(path)
            zf.write(path, entry["member"] if isinstance(entry["member"], str) else entry["member"][0])
            if entry.get("features_file"):
                zf.writestr(entry["features_file"], "\n".join(adata.var_names))
    small = scaled_down(config, catalog)
    targets = [f"results/{exp}/metrics.csv" for exp in small["experiments"]]
    run_workflow(tmp_path, small, *targets, "--cores", "2", timeout=1500)
    # no hash in the catalog yet: the loud warning prints the computed one
    assert "sha256" in (downloads / "logs" / "4i.log").read_text()

    for exp, spec in small["experiments"].items():
        metrics = pd.read_csv(tmp_path / f"results/{exp}/metrics.csv")
        labels = {m if isinstance(m, str) else m["name"] for m in spec["models"]}
        assert set(metrics["model"]) == labels, exp
        assert metrics["value"].notna().any(), exp
    sensitivity = pd.read_csv(tmp_path / "results/w1ot_sensitivity/metrics.csv")
    assert "logfc_mae" in set(sensitivity["metric"])
    lupus = pd.read_csv(tmp_path / "results/lupus_oos/metrics.csv")
    assert set(lupus["setting"]) == {"oos", "iid"}  # the held-out run and its i.i.d. companion
