"""The workflow end to end on tiny configs, a dry run, and its refusals of bad input.

The dry run of every shipped config is `make dryrun`, run by tests/test_ci.py."""

import json
from importlib.metadata import version

import pandas as pd
import pytest
from helpers import run_workflow, small_features_config

pytestmark = pytest.mark.slow


def test_bounds_end_to_end_and_reproducible(tmp_path):
    config = small_features_config()
    run_workflow(tmp_path / "a", config, "--cores", "2")
    metrics = pd.read_csv(tmp_path / "a/results/toy_iid/metrics.csv")
    assert list(metrics.columns) == [
        "experiment", "setting", "holdout", "model", "perturbation", "seed", "n_cells", "draw", "metric", "value"
    ]
    mmd = metrics[metrics.metric == "mmd"].pivot(index="perturbation", columns="model", values="value")
    assert len(mmd) == 2
    assert (mmd["identity"] > mmd["observed"]).all()
    energy = metrics[metrics.metric == "edistance"].pivot(index="perturbation", columns="model", values="value")
    assert (energy["identity"] > energy["observed"]).all()
    # every model on as many cells (observed: its reference cells, each once)
    assert metrics.groupby("perturbation")["n_cells"].nunique().eq(1).all()
    # identity has a known truth to miss, observed has no per-cell correspondence
    assert set(metrics[metrics.model == "identity"].metric) == {
        "mmd", "mmd_unbiased", "edistance", "l2_means", "r2_means", "r_means", "gt_rmse"
    }
    assert "gt_rmse" not in set(metrics[metrics.model == "observed"].metric)
    for name in ("mmd_boxplot", "marginals"):
        assert (tmp_path / f"a/results/toy_iid/figures/{name}.pdf").stat().st_size > 0
        assert (tmp_path / f"a/results/toy_iid/figures/{name}.png").exists()
    # provenance gathers what each training and prediction job ran on: here, this interpreter's packages
    record = json.loads((tmp_path / "a/results/toy_iid/provenance.json").read_text())
    trained = sorted((tmp_path / "a/results/toy_iid/models").rglob("environment.json"))
    for rule, jobs in (("train", len(trained)), ("predict", 2)):  # predict: one job per model run
        [environment] = record["jobs"][rule]  # one environment: every job ran this interpreter
        assert environment["libraries"]["numpy"] == version("numpy")
        assert environment["jobs"] == jobs and jobs >= 2, rule
    assert record["jobs"]["train_autoencoder"] == []
    # same config, fresh directory: identical numbers (the metrics alone: the figures only read them)
    run_workflow(tmp_path / "b", config, "results/toy_iid/metrics.csv", "--cores", "2")
    again = pd.read_csv(tmp_path / "b/results/toy_iid/metrics.csv")
    pd.testing.assert_frame_equal(metrics, again)


def test_configfile_replaces_the_demo_config(tmp_path):
    proc = run_workflow(tmp_path, small_features_config(), "-n", "--cores", "1")
    assert "toy_iid" in proc.stdout and "demo_iid" not in proc.stdout


def test_unknown_config_key_stops_before_any_job(tmp_path):
    config = small_features_config()
    config["experiments"]["toy_iid"]["n_hgv"] = 10
    proc = run_workflow(tmp_path, config, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "n_hgv" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["datasets"]["toy"].update(condition_key="treatment"), "condition_key 'treatment' is not an obs column"),
        (lambda c: c["datasets"]["toy"].update(control="DMSO"), "control value 'DMSO' does not occur"),
        (lambda c: c["datasets"]["toy"].update(perturbations=["aspirin"]), "unknown perturbation"),
        (lambda c: c["experiments"]["toy_iid"].update(test_fraction=0.02), "fewer than min_cells"),
    ],
)
def test_bad_data_stops_before_training_and_leaves_nothing(tmp_path, mutate, message):
    config = small_features_config()
    mutate(config)
    proc = run_workflow(tmp_path, config, "--cores", "1", check=False)
    assert proc.returncode != 0
    output = proc.stderr + proc.stdout
    assert message in output, output[-3000:]
    # the job's log, where Snakemake (and SLURM) point a user, says it too: one line, no traceback
    log = (tmp_path / "results" / "toy_iid" / "logs" / "prepare_data.log").read_text()
    assert "Data error in experiment 'toy_iid': " in log and message in log and "Traceback" not in log, log
    results = tmp_path / "results" / "toy_iid"
    assert not (results / "data").exists()
    assert not (results / "models").exists()


def test_experiments_with_the_same_data_share_one_autoencoder(tmp_path):
    from helpers import small_counts_config

    config = small_counts_config(["scgen"])
    config["experiments"]["counts_iid_again"] = {**config["experiments"]["counts_iid"], "models": ["scgen", "identity"]}
    proc = run_workflow(tmp_path, config, "results/counts_iid/metrics.csv", "results/counts_iid_again/metrics.csv", "--cores", "2")
    trained = list((tmp_path / "results" / "autoencoders").glob("*/model.json"))
    assert len(trained) == 1
    assert proc.stderr.count("rule train_autoencoder:") == 1
    for exp in ("counts_iid", "counts_iid_again"):
        metrics = pd.read_csv(tmp_path / f"results/{exp}/metrics.csv")
        assert "scgen" in set(metrics.model)
    scgen = [pd.read_csv(tmp_path / f"results/{e}/metrics.csv").query("model == 'scgen'") for e in ("counts_iid", "counts_iid_again")]
    pd.testing.assert_frame_equal(scgen[0].drop(columns="experiment").reset_index(drop=True),
                                  scgen[1].drop(columns="experiment").reset_index(drop=True))
