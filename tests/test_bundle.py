"""Models whose fit takes seconds fit every perturbation of a run in one job, with the numbers of one job each."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import run_workflow, small_features_config

from perturbot import models as registry
from perturbot.bundle import PerturbationBundle
from perturbot.config import ModelSpec
from perturbot.data.synthetic import make_features
from perturbot.experiment import EACH_JOB, JOINT_JOB, job_of, training_jobs, train
from perturbot.latent import load_model
from perturbot.models.simple import Identity
from perturbot.preprocessing import prepare

DRUGS = ["trametinib", "dasatinib", "ixazomib"]


class TrainedForLong(Identity):
    """Identity that declares a fit worth a job of its own: the tag, not the name, decides."""

    cheap_fit = False


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    adata = make_features(cells=60, perturbations=3, features=5, seed=0)
    prepared = prepare(adata, perturbations=DRUGS, condition_key="drug", control="control", modality="features",
                       min_cells=5, seed=0)
    path = tmp_path_factory.mktemp("data") / "all.h5ad"
    prepared.write_h5ad(path)
    return path


def test_a_cheap_fit_gives_one_job_per_run_whatever_the_number_of_perturbations(monkeypatch):
    slugs = {f"drug_{i}": f"drug {i}" for i in range(200)}
    names = list(slugs.values())
    cheap = {name for name in registry.available() if registry.get(name).cheap_fit}
    assert {"identity", "observed", "gaussian_ot", "popalign", "scgen"} == cheap
    for name in registry.available():
        spec = ModelSpec(label=name, model=name, space="data")
        jobs = training_jobs(spec, slugs, joint_training=False)
        if registry.get(name).joint_only:
            assert jobs == {JOINT_JOB: names}, name
        elif name in cheap:
            assert jobs == {EACH_JOB: names}, name
        else:  # the neural models keep one job per perturbation
            assert jobs == {slug: [p] for slug, p in slugs.items()}, name
        assert {job_of(jobs, slug) for slug in slugs} == (set(jobs) if len(jobs) == 1 else set(slugs))
    # joint training still means fit_many for the models that have one; the others stay in one job
    assert training_jobs(ModelSpec("g", "gaussian_ot", "data"), slugs, joint_training=True) == {JOINT_JOB: names}
    assert training_jobs(ModelSpec("i", "identity", "data"), slugs, joint_training=True) == {EACH_JOB: names}
    # the tag decides, not the name
    monkeypatch.setitem(registry._REGISTRY, "long_identity", f"{__name__}:TrainedForLong")
    monkeypatch.setattr(registry, "_REGISTERED_AT_RUN_TIME", {"long_identity"})  # as register() records it
    jobs = training_jobs(ModelSpec("l", "long_identity", "data"), slugs, joint_training=False)
    assert len(jobs) == 200 and job_of(jobs, "drug_7") == "drug_7"


@pytest.mark.parametrize("name", ["identity", "observed", "gaussian_ot", "popalign"])
def test_one_job_for_every_perturbation_predicts_what_one_job_each_did(name, data_path, tmp_path):
    import anndata as ad

    from perturbot.cells import model_input

    spec = ModelSpec(label=name, model=name, space="data", params={"seed": 3})
    x = np.asarray(model_input(ad.read_h5ad(data_path)).X)
    train(data_path, spec, EACH_JOB, DRUGS, tmp_path / EACH_JOB)
    bundle = load_model(tmp_path / EACH_JOB)
    assert isinstance(bundle, PerturbationBundle) and bundle.perturbations_ == DRUGS and bundle.members_ == {}
    saved = json.loads((tmp_path / EACH_JOB / "model.json").read_text())
    assert saved["members"] == {d: d for d in DRUGS}
    for drug in DRUGS:
        alone = train(data_path, spec, drug, [drug], tmp_path / drug)
        np.testing.assert_array_equal(bundle.transport(x, perturbation=drug), alone.transport(x))
    assert set(bundle.members_) == set(DRUGS)  # read from disk when first used, not before


def test_latent_space_bundles_keep_one_autoencoder_and_the_same_numbers(data_path, tmp_path):
    import anndata as ad

    from perturbot.cells import model_input
    from perturbot.models.autoencoder import AutoEncoder

    adata = ad.read_h5ad(data_path)
    train_cells = np.asarray(adata[adata.obs["split"] == "train"].X)
    AutoEncoder(hidden_units=[8], latent_dim=3, n_iters=20, eval_every=10, batch_size=32, val_cells=20,
                seed=0).fit(train_cells).save(tmp_path / "ae")
    spec = ModelSpec(label="scgen", model="scgen", space="latent")
    x = np.asarray(model_input(adata).X)
    train(data_path, spec, EACH_JOB, DRUGS, tmp_path / EACH_JOB, autoencoder_dir=tmp_path / "ae")
    assert sorted(p.name for p in (tmp_path / EACH_JOB).iterdir()) == ["autoencoder", "history.csv", "inner",
                                                                       "model.json", "preprocessing.json"]
    bundle = load_model(tmp_path / EACH_JOB)
    assert bundle.perturbations_ == DRUGS
    for drug in DRUGS[:2]:
        alone = train(data_path, spec, drug, [drug], tmp_path / drug, autoencoder_dir=tmp_path / "ae")
        np.testing.assert_array_equal(bundle.transport(x, perturbation=drug), alone.transport(x))


def test_a_bundle_names_its_perturbations_and_needs_a_maker():
    x = np.zeros((4, 2), np.float32)
    bundle = PerturbationBundle(Identity).fit_many(x, {"a b": x + 1, "c": x})
    assert bundle.perturbations_ == ["a b", "c"] and bundle.n_features_in_ == 2
    with pytest.raises(ValueError, match="pass perturbation= one of a b, c"):
        bundle.transport(x)
    with pytest.raises(ValueError, match="unknown perturbation 'd'"):
        bundle.transport(x, perturbation="d")
    with pytest.raises(ValueError, match="needs make"):
        PerturbationBundle().fit_many(x, {"a": x})
    one = PerturbationBundle(Identity).fit(x, x)
    np.testing.assert_array_equal(one.transport(x + 2), x + 2)  # one perturbation: no name needed


@pytest.mark.slow
def test_the_workflow_trains_each_cheap_run_in_one_job(tmp_path):
    config = small_features_config(models=["identity", "observed", "gaussian_ot", "popalign"])
    config["datasets"]["toy"]["synthetic"].update(perturbations=5, cells=120)
    proc = run_workflow(tmp_path, config, "results/toy_iid/metrics.csv", "--cores", "2")
    assert proc.stderr.count("rule train:") == 4  # one per run, not 4 x 5
    models = tmp_path / "results/toy_iid/models/all"
    assert sorted(p.relative_to(models).as_posix() for p in models.glob("*/*/model.json")) == [
        f"{run}/_each/model.json" for run in ("gaussian_ot", "identity", "observed", "popalign")
    ]
    metrics = pd.read_csv(tmp_path / "results/toy_iid/metrics.csv")
    assert metrics.groupby("model")["perturbation"].nunique().to_dict() == dict.fromkeys(
        ["gaussian_ot", "identity", "observed", "popalign"], 5
    )
    mmd = metrics[metrics.metric == "mmd"].pivot_table(index="perturbation", columns="model", values="value")
    assert (mmd["identity"] > mmd["observed"]).all()
