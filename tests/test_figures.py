"""Figures: the plotting functions on small constructed tables, and the figure rules on a tiny workflow run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from helpers import run_workflow, small_features_config

from perturbot.cell_states import mean_cost_by_state
from perturbot.data.synthetic import DRUG_NAMES
from perturbot.plotting import (
    cost_summary,
    display_name,
    figure_tests,
    iid_vs_holdout_pairs,
    job_resources,
    marginal_features,
    mmd_boxplot,
    model_color,
    response_field,
    stars,
    training_runs,
)
from perturbot.models import available, tags
from perturbot.plotting.scores import TOO_FEW, held_out_rows
from perturbot.statistics import model_tests

#: What the workflow passes to every figure: each label's registry name and capability tags.
KINDS = {name: tags(name) for name in available()}


def metrics_table(values: dict[str, list[float]], setting: str = "iid", holdout: str = "all") -> pd.DataFrame:
    rows = [
        {"experiment": "e", "setting": setting, "holdout": holdout, "model": m, "perturbation": f"p{i}", "metric": "mmd", "value": v}
        for m, vs in values.items()
        for i, v in enumerate(vs)
    ]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- palette and names


def test_one_colour_per_model_whatever_its_label():
    assert model_color("cellot") == model_color("cellot_genes") == model_color("my_ot", {"my_ot": tags("cellot")})
    assert model_color("cellot") != model_color("w1ot")
    assert display_name("w1ot") == "W1-OT" and display_name("w1ot_genes") == "W1-OT (genes)"


# ---------------------------------------------------------------- scores


def test_stars_thresholds():
    assert [stars(p) for p in (0.0005, 0.005, 0.03, 0.2, float("nan"))] == ["***", "**", "*", "n.s.", "n.s."]


def test_stars_come_from_the_statistics_table_adjusted_p():
    low = [0.01, 0.012, 0.011, 0.013, 0.009, 0.010, 0.014, 0.012]
    table = metrics_table(
        {
            "identity": [1.0 + 0.01 * i for i in range(8)],
            "observed": [0.001] * 8,
            "scgen": [0.0105, 0.0115, 0.0095, 0.0125, 0.0135, 0.0108, 0.0118, 0.0098],  # indistinguishable
            "cellot": low,
        }
    )
    statistics = model_tests(table, ("mmd",))
    tests = figure_tests(statistics, "mmd", list(table["model"].unique()), KINDS).set_index("baseline")
    # observed is the lower bound, not a competitor
    assert set(tests.index) == {"identity", "scgen"}
    # 8 of 8 paired differences negative: exact p = 2 / 2^8; five of the six pairs are fully
    # separated, so BH multiplies it by 6 / 5
    row = statistics.set_index(["model_a", "model_b"]).loc[("cellot", "identity")]
    assert row["p_value"] == pytest.approx(2 / 2**8)
    assert row["p_adjusted"] == pytest.approx(2 / 2**8 * 6 / 5)
    assert tests.loc["identity", "p"] == pytest.approx(row["p_adjusted"])
    assert tests.loc["identity", "stars"] == "**"
    assert tests.loc["scgen", "stars"] == "n.s."
    assert tests.loc["identity", "better"] == "cellot"
    figure = mmd_boxplot(table, statistics, kinds=KINDS)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert sorted(texts) == ["**", "n.s."]
    assert not [t for t in mmd_boxplot(table, kinds=KINDS).axes[0].texts]  # no table, no stars


def test_too_few_perturbations_say_so_instead_of_stars():
    table = metrics_table({"identity": [1.0, 1.1, 1.2], "cellot": [0.1, 0.2, 0.3]})
    statistics = model_tests(table, ("mmd",))
    assert not statistics["testable"].any()  # 3 pairs: the smallest p is 0.25
    texts = [t.get_text() for t in mmd_boxplot(table, statistics, kinds=KINDS).axes[0].texts]
    assert texts == [TOO_FEW]


def test_points_are_means_over_seeds_with_error_bars():
    rows = metrics_table({"identity": [1.0, 2.0], "cellot": [0.1, 0.2]})
    table = pd.concat([rows.assign(seed=0, value=rows["value"] * 0.9), rows.assign(seed=1, value=rows["value"] * 1.1)])
    figure = mmd_boxplot(table)
    points = [c for c in figure.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(points) == 2  # one per model
    ys = sorted(np.concatenate([c.lines[0].get_ydata() for c in points]).tolist())
    assert ys == pytest.approx([0.1, 0.2, 1.0, 2.0])
    assert all(c.has_yerr for c in points)
    # the bar is the s.d. over the two seeds: 0.1 v sqrt(2) around v
    segments = np.concatenate([c.lines[2][0].get_segments() for c in points])
    half = sorted(float(seg[1, 1] - seg[0, 1]) / 2 for seg in segments)
    assert half == pytest.approx([0.1 * v * np.sqrt(2) for v in (0.1, 0.2, 1.0, 2.0)])


def test_labels_are_tested_by_what_the_model_is():
    table = metrics_table({"identity": [1.0, 1.1, 1.2], "mine": [0.1, 0.2, 0.3]})
    statistics = model_tests(table, ("mmd",))
    assert figure_tests(statistics, "mmd", ["identity", "mine"]).empty  # nothing said about "mine": not tested as OT
    kinds = {"identity": tags("identity"), "mine": tags("w1ot")}
    assert list(figure_tests(statistics, "mmd", ["identity", "mine"], kinds)["ot"]) == ["mine"]


def test_iid_companion_rows_pair_with_the_held_out_rows_and_stay_out_of_the_box_plot():
    held = metrics_table({"cellot": [0.2, 0.3]}, setting="ood", holdout="line_B")
    companion = metrics_table({"cellot": [0.1, 0.15]}, setting="iid", holdout="line_B")
    pairs = iid_vs_holdout_pairs(pd.concat([held, companion]))
    assert pairs.sort_values("perturbation")[["value_iid", "value_holdout"]].to_numpy().tolist() == [[0.1, 0.2], [0.15, 0.3]]
    assert len(held_out_rows(pd.concat([held, companion]))) == 2
    with pytest.raises(ValueError, match="companion"):
        iid_vs_holdout_pairs(held)


def test_the_energy_distance_is_drawn_and_tested_wherever_the_mmd_is():
    """Box plot, statistics and the i.i.d.-against-held-out figure: one panel (row) for each of mmd and edistance."""
    from perturbot.plotting import iid_vs_holdout

    values = {"identity": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5], "cellot": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
    table = pd.concat([metrics_table(values).assign(metric=m) for m in ("mmd", "edistance")])
    statistics = model_tests(table)
    assert set(statistics["metric"]) == {"mmd", "edistance"}
    assert statistics.set_index("metric").loc["edistance", "p_value"] == pytest.approx(2 / 2**6)
    figure = mmd_boxplot(table, statistics, kinds=KINDS)
    assert [ax.get_ylabel() for ax in figure.axes] == ["MMD² (RBF) ↓ (log)", "Energy distance ↓ (log)"]
    assert all("*" in "".join(t.get_text() for t in ax.texts) for ax in figure.axes)  # stars on both
    held = pd.concat([metrics_table({"cellot": [0.2, 0.3]}, "ood", "line_B").assign(metric=m) for m in ("mmd", "edistance")])
    companion = pd.concat([metrics_table({"cellot": [0.1, 0.1]}, "iid", "line_B").assign(metric=m) for m in ("mmd", "edistance")])
    paired = iid_vs_holdout(pd.concat([held, companion]), kinds=KINDS)
    assert [ax.get_ylabel() for ax in paired.axes] == ["MMD² (RBF) (log)", "Energy distance (log)"]


# ---------------------------------------------------------------- cells


def test_response_field_averages_the_cells_of_each_square():
    pcs = np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.1], [0.9, 0.9], [0.8, 0.9], [0.9, 0.8], [0.6, 0.1]])
    resp = np.array([[1, 0], [2, 0], [3, 0], [0, 1], [0, 2], [0, 3], [5, 5]], float)
    cx, cy, u, v = response_field(pcs, resp, bins=2, lims=((0, 1), (0, 1)), min_cells=2)
    # the lone cell at (0.6, 0.1) is in a square with too few cells
    assert cx.tolist() == [0.25, 0.75] and cy.tolist() == [0.25, 0.75]
    assert u.tolist() == [2.0, 0.0] and v.tolist() == [0.0, 2.0]


def test_umaps_jit_functions_are_cached_on_disk():
    # umap-learn compiles without numba's cache; cell_states and umap_embeddings turn it on, so that
    # only the first job on a machine compiles (about 9 s). Compiled code loaded from the cache is the
    # same machine code: a run with a cold cache and one with a warm cache gave identical states and UMAPs.
    import anndata as ad
    import umap.umap_
    from numba.core.caching import NullCache

    from perturbot.cell_states import leiden_states
    from perturbot.jit_cache import cache_umap_compilation

    rng = np.random.default_rng(0)
    cells = ad.AnnData(rng.normal(size=(120, 6)).astype(np.float32))
    before = leiden_states(cells, seed=0)  # the first call turns the cache on
    assert cache_umap_compilation() > 0
    assert not isinstance(umap.umap_.smooth_knn_dist._cache, NullCache)
    pd.testing.assert_series_equal(leiden_states(cells, seed=0), before)


def test_mean_cost_by_state_and_its_side_bars():
    states = pd.Series({"a": "S0", "b": "S0", "c": "S1"}, name="state")
    costs = pd.DataFrame(
        {"cell": ["a", "b", "c", "a", "b", "c"], "perturbation": ["x"] * 3 + ["y"] * 3, "transport_cost": [1, 3, 10, 2, 2, 2]}
    )
    table = mean_cost_by_state(costs, states)
    assert table.loc["x"].tolist() == [2.0, 10.0] and table.loc["y"].tolist() == [2.0, 2.0]
    summary = cost_summary(table)
    assert summary.loc["x", "sum"] == 12 and summary.loc["x", "cv"] == pytest.approx(4 / 6)
    assert summary.loc["y", "cv"] == 0
    with pytest.raises(ValueError, match="different cells"):
        mean_cost_by_state(costs.assign(cell=["q"] * 6), states)
    # a repeated cell name would be counted once per repeat by the merge: refused
    repeated = pd.Series(["S0", "S0", "S1"], index=["a", "a", "c"], name="state")
    with pytest.raises(ValueError, match="cell states name 1 cell\\(s\\) more than once, e.g. 'a'"):
        mean_cost_by_state(costs, repeated)


def test_marginal_features_markers_for_scrna_else_the_most_changed():
    control = np.zeros((20, 3))
    perturbed = np.zeros((20, 3))
    perturbed[:, 2] = 5.0
    perturbed[:, 0] = np.linspace(-1, 1, 20)
    names = ["f0", "f1", "f2"]
    assert marginal_features({}, "p", control, perturbed, names, 1) == ["f2"]
    info = {"markers": {"p": np.array(["f1", "f0"])}}
    assert marginal_features(info, "p", control, perturbed, names, 1) == ["f1"]
    assert marginal_features(info, "p", control, perturbed, names, 1, chosen=["f0"]) == ["f0"]
    with pytest.raises(ValueError, match="nope"):
        marginal_features({}, "p", control, perturbed, names, 1, chosen=["nope"])


# ---------------------------------------------------------------- timing


def test_training_runs_and_job_resources_from_benchmark_files(tmp_path):
    run = tmp_path / "results/exp/models/all/cellot/drug"
    run.mkdir(parents=True)
    (run / "model.json").write_text(json.dumps({"model": "cellot", "state": {"n_features_in_": 12}}))
    pd.DataFrame({"iteration": [500, 1000, 1500, 2000]}).to_csv(run / "history.csv", index=False)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (run / "benchmark.tsv").write_text(header + "30.0\t0:00:30\t512.5\t0\t0\t0\t0\t0\t0\t28.0\n")
    ae = tmp_path / "results/autoencoders/0123456789abcdef"
    ae.mkdir(parents=True)
    (ae / "benchmark.tsv").write_text(header + "8.0\t0:00:08\t300.0\t0\t0\t0\t0\t0\t0\t7.0\n")
    untrained = tmp_path / "results/exp/models/all/identity/drug"
    untrained.mkdir(parents=True)
    (untrained / "model.json").write_text(json.dumps({"model": "identity", "state": {"n_features_in_": 12}}))
    (untrained / "history.csv").write_text("")
    runs = training_runs([run, untrained])
    assert runs.loc[0, ["kind", "dimension", "iterations"]].tolist() == ["cellot", 12, 2000]
    assert runs.loc[0, "s_per_1k_iters"] == pytest.approx(15.0)
    jobs = job_resources([run / "benchmark.tsv", ae / "benchmark.tsv"])
    assert jobs[["model", "job", "wall_s", "max_rss_mb"]].to_dict("records") == [
        {"model": "autoencoder", "job": "0123456789abcdef", "wall_s": 8.0, "max_rss_mb": 300.0},
        {"model": "cellot", "job": "drug", "wall_s": 30.0, "max_rss_mb": 512.5},
    ]


# ---------------------------------------------------------------- the rules on a tiny run

EXP = "toy_iid"
DRAWN = DRUG_NAMES[0]  # figures.perturbations: one UMAP only, to keep the run short


def per_experiment_figures(root: Path) -> list[Path]:
    names = ["mmd_boxplot", "marginals", f"umap_{DRAWN}"]
    names += [f"{figure}_{run}" for figure in ("clustergram", "vector_field") for run in OT_RUNS]
    return [root / "results" / EXP / "figures" / f"{n}.pdf" for n in names]


#: Two seeds: runs are <label>.seed<k>, each OT run has its own clustergram and vector field.
OT_RUNS = [f"{model}.seed{seed}" for model in ("cellot", "w1ot") for seed in (0, 1)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run for every figure test: all figure rules, two seeds, CellOT and W1-OT trained jointly."""
    root = tmp_path_factory.mktemp("figures")
    config = small_features_config(
        models=["identity", "observed", "scgen", "cellot", "w1ot"],
        seeds=[0, 1],
        joint_training=True,
        model_params={
            "cellot": {"n_iters": 60, "eval_every": 30, "hidden_units": [16, 16]},
            "w1ot": {"n_iters_potential": 20, "n_iters_step": 20, "eval_every": 10, "batch_size": 32},
        },
        autoencoder={"n_iters": 100, "eval_every": 50, "hidden_units": [32], "latent_dim": 4},
        figures={"umap_max_cells": 60, "perturbations": [DRAWN]},
    )
    config["toy_maps"] = {
        "datasets": ["moons"],
        "n_cells": 60,
        "model_params": {"w1ot": {"n_iters_potential": 20, "n_iters_step": 20, "eval_every": 10, "batch_size": 32, "val_size": 20},
                         "cellot": {"n_iters": 20, "eval_every": 10, "batch_size": 32, "val_size": 20}},
    }
    run_workflow(root, config, "--cores", "2")
    return root, config


@pytest.mark.slow
def test_every_figure_is_built_with_its_preview(tiny_run):
    root, _ = tiny_run
    figures = per_experiment_figures(root) + [root / "results/figures" / f for f in ("training_time.pdf", "toy_maps.pdf")]
    for pdf in figures:
        assert pdf.stat().st_size > 0, pdf
        assert pdf.with_suffix(".png").stat().st_size > 0, pdf
        # TrueType fonts embedded (type 42), not referenced
        assert b"/FontFile2" in pdf.read_bytes(), pdf
    jobs = pd.read_csv(root / "results/figures/job_resources.csv")
    assert {"cellot.seed0", "w1ot.seed1", "scgen.seed0", "autoencoder", "identity.seed1"} <= set(jobs["model"])
    assert (jobs["wall_s"] > 0).all() and (jobs["max_rss_mb"] > 0).all()
    states = pd.read_csv(root / f"results/{EXP}/cell_states/all.csv")
    assert states["state"].str.match(r"S\d+$").all()


@pytest.mark.slow
def test_every_figure_of_an_experiment_with_seeds(tiny_run):
    # runs are <label>.seed<k>; predictions, and so the UMAPs and box plots, carry the label
    root, _ = tiny_run
    figures = root / "results" / EXP / "figures"
    names = {p.rsplit("/", 1)[-1] for p in (figures / "index.txt").read_text().split()}
    expected = {f"{figure}_{run}.pdf" for figure in ("clustergram", "vector_field") for run in OT_RUNS}
    assert {"mmd_boxplot.pdf", "marginals.pdf", f"umap_{DRAWN}.pdf"} | expected <= names
    assert not any(n.startswith(("clustergram_identity", "clustergram_scgen")) for n in names)  # OT runs only
    for name in names:
        assert (figures / name).stat().st_size > 0, name
    metrics = pd.read_csv(root / "results" / EXP / "metrics.csv")
    assert set(metrics["seed"]) == {0, 1}
    assert set(metrics["model"]) == {"identity", "observed", "scgen", "cellot", "w1ot"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "figure, rule",
    [("mmd_boxplot", "figure_mmd_boxplot"), ("clustergram_cellot.seed1", "figure_clustergram")],
)
def test_one_figure_rebuilds_alone(tiny_run, figure, rule):
    root, config = tiny_run
    target = root / f"results/{EXP}/figures/{figure}.pdf"
    others = [p for p in (root / "results").rglob("*") if p.is_file() and p.suffix in (".csv", ".tsv", ".json", ".h5ad", ".safetensors", ".pdf", ".png")]
    others = [p for p in others if p.with_suffix("") != target.with_suffix("") and "logs" not in p.parts]
    before = {p: p.stat().st_mtime_ns for p in others}
    stamp = target.stat().st_mtime_ns
    proc = run_workflow(root, config, str(target.relative_to(root)), "--forcerun", rule, "--cores", "1")
    assert target.stat().st_mtime_ns > stamp
    assert target.with_suffix(".png").stat().st_mtime_ns > stamp
    assert {p: p.stat().st_mtime_ns for p in others} == before
    assert f"rule {rule}:" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_report_holds_every_figure(tiny_run):
    root, config = tiny_run
    run_workflow(root, config, "--report", "report.html")
    html = (root / "report.html").read_text(errors="ignore")
    for pdf in per_experiment_figures(root):
        assert pdf.name in html, pdf.name
    for name in ("toy_maps.pdf", "training_time.pdf", "job_resources.csv", "metrics.csv"):
        assert name in html, name
    assert os.path.getsize(root / "report.html") > 100_000
