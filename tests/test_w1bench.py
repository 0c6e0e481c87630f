"""The Wasserstein-1 benchmark's pairs and metrics (perturbot.w1bench) and the w1ot_group_size target."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from perturbot import w1bench as wb
from perturbot.data.catalog import load_catalog, pair_source
from tests.helpers import REPO, run_workflow


@pytest.fixture(scope="module")
def pair() -> wb.FunnelPair:
    return wb.make_pair(dim=8, width=4, seed=3)


def true_critic(pair):
    """The exact Kantorovich critic -f and its gradient, as array functions."""
    return (lambda x: -pair.potential(torch.as_tensor(x)).numpy(),
            lambda x: pair.critic_gradient_exact(torch.as_tensor(x)).numpy())


def test_a_plan_pair_lies_on_a_ray_of_slope_one(pair):
    # f(y) - f(x) = ||y - x||: y and its source x are on one ray of one funnel, so (x, y) is W1-optimal
    x, y = pair.sample_plan(2000, torch.Generator().manual_seed(0))
    rise = (pair.potential(y) - pair.potential(x)).numpy()
    length = (y - x).norm(dim=1).numpy()
    np.testing.assert_allclose(rise, length, atol=1e-3)  # float32, matrix-product distances
    assert (x.abs() <= wb.HALF_SIDE + 1e-5).all() and (y.abs() <= wb.HALF_SIDE).all()
    assert length.mean() > 0.1  # the points do move


def test_the_true_critic_scores_perfectly_and_its_negation_worst(pair):
    potential, gradient = true_critic(pair)
    good = wb.score_critic(potential, gradient, pair, n=3000, seed=1)
    assert good["cos"] == pytest.approx(1.0, abs=1e-6) and good["cos_exact"] == pytest.approx(1.0, abs=1e-6)
    assert good["l2_exact"] == pytest.approx(0.0, abs=1e-6)
    assert good["l2"] < 1e-3  # the benchmark's float32 matrix-product distances blur the gradient next to a centre
    assert good["w1_relative_error"] < 0.05  # two independent 3,000-point draws
    bad = wb.score_critic(lambda x: -potential(x), lambda x: -gradient(x), pair, n=3000, seed=1)
    assert bad["cos"] == pytest.approx(-1.0, abs=1e-6)
    assert bad["l2_exact"] == pytest.approx(4.0, abs=1e-4) and bad["l2"] == pytest.approx(4.0, abs=2e-3)  # ||-g - g||^2 = 4 for unit gradients
    assert bad["w1_estimate"] == pytest.approx(-good["w1_estimate"])


def test_metrics_by_hand():
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    learned = torch.tensor([[1.0, 1.0], [0.0, -2.0], [5.0, 5.0]])
    # cosines 1/sqrt(2), -1 and 0 (a zero true gradient counts 0)
    assert wb.gradient_cosine(learned, true) == pytest.approx((2**-0.5 - 1 + 0) / 3)
    # squared distances 1, 9 and 50
    assert wb.gradient_l2(learned, true) == pytest.approx(60 / 3)


def test_a_constant_critic_gets_cosine_zero_and_full_w1_error(pair):
    score = wb.score_critic(lambda x: np.zeros(len(x)), lambda x: np.zeros_like(x), pair, n=500)
    assert score["cos"] == 0.0 and score["l2_exact"] == pytest.approx(1.0, abs=1e-5)  # unit true gradients
    assert score["w1_relative_error"] == pytest.approx(1.0)


def test_pair_files_round_trip_and_a_wrong_hash_is_refused(tmp_path, pair):
    path = tmp_path / "p.pt"
    wb.save_pair(pair, path)
    back = wb.load_pair(path, sha256=wb.sha256_of(path))
    assert torch.equal(back.centers, pair.centers) and torch.equal(back.bias, pair.bias)
    with pytest.raises(ValueError, match="sha256"):
        wb.load_pair(path, sha256="0" * 64)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a benchmark pair file"):
        wb.load_pair(tmp_path / "junk.pt")
    torch.save({"centers": pair.centers}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="net.centers and net.bias"):
        wb.load_pair(tmp_path / "other.pt")


def test_the_catalogue_names_every_published_pair_with_its_hash():
    catalog = load_catalog(REPO / "resources" / "datasets.yaml")
    source = pair_source(catalog, "w1bench_nd", 64, 16)
    assert source["url"] == (
        "https://raw.githubusercontent.com/justkolesov/Wasserstein1Benchmark/"
        "359d2b120a4f186adf257a4a22d115b13f877251/benchmarks/nd/dim_64/width_16/deg_8_seed_987.pt"
    )
    assert len(catalog["benchmark_pairs"]["w1bench_nd"]["sha256"]) == 28
    with pytest.raises(ValueError, match="published ones are"):
        pair_source(catalog, "w1bench_nd", 256, 16)


def test_a_short_training_points_the_potential_the_right_way(pair):
    model = wb.fit_critic(pair, n_groups=4, n_iters=300, batch_size=256, n_samples=4000, seed=0, device="cpu")
    potential, gradient = model.potential, model.direction
    score = wb.score_critic(potential, gradient, pair, n=1000)
    assert score["cos"] > 0.5  # an untrained or reversed potential is near 0 or negative
    assert 0 < score["w1_estimate"] <= score["w1_true"] * 1.1


def write_miniature_pairs(folder, dims=(2, 4), widths=(3,)):
    for d in dims:
        for w in widths:
            wb.save_pair(wb.make_pair(d, w, seed=d + w), folder / f"dim_{d}" / f"width_{w}" / "deg_8_seed_987.pt")


@pytest.mark.slow
def test_the_workflow_target_builds_the_table_and_figure_from_local_pairs(tmp_path):
    pairs = tmp_path / "pairs"
    write_miniature_pairs(pairs)
    config = {
        "seed": 0, "device": "cpu", "datasets": {}, "experiments": {},
        "w1ot_group_size": {"pairs": str(pairs), "dims": [2, 4], "widths": [3], "n_groups": [1, 4],
                            "n_iters": 30, "batch_size": 64, "n_samples": 500, "n_test": 200,
                            "model_params": {"hidden_units": [8, 8], "eval_every": 10, "val_size": 50}},
    }
    root = tmp_path / "run"
    run_workflow(root, config, "results/figures/w1ot_group_size.pdf", "--cores", "2")
    table = pd.read_csv(root / "results/w1ot_group_size/metrics.csv")
    assert sorted(zip(table["dim"], table["n_groups"])) == [(2, 1), (2, 4), (4, 1), (4, 4)]
    assert (table["width"] == 3).all() and (table["n_iters"] == 30).all()
    assert table[["cos", "l2", "w1_relative_error", "w1_true"]].notna().all().all()
    assert (root / "results/figures/w1ot_group_size.png").stat().st_size > 0
    row = json.loads((root / "results/w1ot_group_size/dim_2/width_3/groups_4.json").read_text())
    assert row["dim"] == 2 and row["width"] == 3


def test_the_paper_config_lists_the_downloads(tmp_path):
    proc = run_workflow(tmp_path, None, "results/figures/w1ot_group_size.pdf", "-n", "--quiet", "rules",
                        "--configfile", str(REPO / "configs" / "paper.yaml"))
    counts = dict(line.split()[::-1][:2][::-1] for line in proc.stdout.splitlines()
                  if line.split() and line.split()[0] in ("download_w1bench_pair", "w1bench_fit"))
    assert counts == {"download_w1bench_pair": "20", "w1bench_fit": "100"}


def test_a_wrong_file_in_place_of_a_download_is_refused(tmp_path):
    downloads = tmp_path / "resources" / "downloads"
    downloads.mkdir(parents=True)
    wb.save_pair(wb.make_pair(2, 4, seed=0), downloads / "w1bench_nd_dim_2_width_4.pt")
    config = {"seed": 0, "device": "cpu", "datasets": {}, "experiments": {},
              "w1ot_group_size": {"dims": [2], "widths": [4], "n_groups": [4]}}
    proc = run_workflow(tmp_path, config, "resources/downloads/w1bench_nd_dim_2_width_4.fetched.json",
                        "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "is not the expected one" in proc.stdout + proc.stderr
    assert not (downloads / "w1bench_nd_dim_2_width_4.fetched.json").exists()


@pytest.mark.parametrize("change, message", [
    ({"pairs": "w1bench_typo"}, "neither a catalogued set of pairs"),
    ({"dims": [256]}, "has no pair dim_256/width_4"),
    ({"n_groups": [3]}, r"group counts \[3\] do not divide"),
])
def test_bad_settings_stop_the_run_before_anything_runs(tmp_path, change, message):
    settings = {"dims": [2], "widths": [4], "n_groups": [4], **change}
    config = {"seed": 0, "device": "cpu", "datasets": {}, "experiments": {}, "w1ot_group_size": settings}
    proc = run_workflow(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "Invalid configuration: w1ot_group_size" in output and re.search(message, output)
    assert not (tmp_path / "results").exists()
