"""Long jobs report progress: log lines, the live history, patience, SIGTERM, ``perturbot progress``."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import REPO

from perturbot.cli import main as cli
from perturbot.models.autoencoder import AutoEncoder
from perturbot.models.w1ot import W1OT
from perturbot.progress import training_jobs
from perturbot.checkpoints import Checkpoint
from perturbot.training import PROGRESS_FILE, Progress, TrainingInterrupted, format_duration, live_history


def cells(n: int = 200, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# ------------------------------------------------------------ Progress alone


def test_best_patience_and_log_line(caplog, tmp_path):
    history_path = tmp_path / "history.csv"
    caplog.set_level(logging.INFO, logger="perturbot")
    seen = []
    with live_history(history_path, "job/x"), Progress("toy", 100, patience=2, score_name="val_loss") as progress:
        for it in progress.iterations(0, 100):
            if it % 10 == 0:
                score = {10: 3.0, 20: 2.0, 30: 2.5, 40: 2.0, 50: 1.0}.get(it, 5.0)
                improved = progress.record(it, [{"iteration": it, "val_loss": score}], score=score, losses={"loss": 1.5})
                seen.append((it, bool(improved[0]), progress.converged))
                # the history on disk grows with every evaluation
                assert len(pd.read_csv(history_path)) == it // 10
                if progress.converged:
                    break
    # 30 is worse and 40 only ties the best 2.0: two evaluations without gain, patience 2 stops at 40
    assert seen == [(10, True, False), (20, True, False), (30, False, False), (40, False, True)]
    assert progress.best == [2.0] and progress.best_iteration == [20]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("toy ")]
    assert len(lines) == 4
    assert lines[1].startswith("toy 20/100 (20.0%)")
    for part in ("elapsed", "it/s", "left", "loss 1.5", "val_loss 2, best 2 at 20", "no gain for 0/2 evaluations"):
        assert part in lines[1]
    status = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert status["status"] == "done" and status["iteration"] == 40 and status["best"] == 2.0


def test_joint_scores_stop_when_every_one_has_stalled():
    progress = Progress("joint", 100, patience=1, higher_is_better=True)
    assert list(progress.record(10, [], score=[1.0, 1.0])) == [True, True]
    assert list(progress.record(20, [], score=[0.5, 2.0])) == [False, True]
    assert not progress.converged  # the second perturbation still improves
    progress.record(30, [], score=[0.5, 1.0])
    assert progress.converged
    nan = Progress("no validation", 100, patience=1)
    for it in (10, 20, 30):
        nan.record(it, [], score=float("nan"))
    assert not nan.converged  # nothing to judge: the full budget runs


def test_state_round_trip_and_durations():
    progress = Progress("toy", 10, patience=3)
    progress.record(5, [], score=[1.0, 2.0])
    progress.record(10, [], score=[1.5, 1.0])
    again = Progress("toy", 10, patience=3)
    again.load_state_dict(progress.state_dict())
    assert (again.best, again.best_iteration, again.stalled) == ([1.0, 1.0], [5, 10], [1, 0])
    assert [format_duration(s) for s in (42, 192, 3900, float("inf"))] == ["42s", "3m12s", "1h05m", "?"]
    with pytest.raises(ValueError, match="patience"):
        Progress("toy", 10, patience=0)


# ------------------------------------------------------------ models


def test_autoencoder_patience_stops_before_the_cap():
    # lr 0: the validation loss never changes, so patience 2 stops at the third evaluation
    model = AutoEncoder(hidden_units=(8,), latent_dim=2, lr=0.0, n_iters=1000, eval_every=10, patience=2, device="cpu")
    model.fit(cells())
    assert model.history_["iteration"].tolist() == [10, 20, 30]
    full = AutoEncoder(hidden_units=(8,), latent_dim=2, lr=0.0, n_iters=50, eval_every=10, device="cpu").fit(cells())
    assert full.history_["iteration"].tolist() == [10, 20, 30, 40, 50]  # no patience: the whole budget


def test_autoencoder_cadence_scales_with_the_budget_and_keeps_the_papers():
    from perturbot.config import early_stopping
    from perturbot.models.autoencoder import default_eval_every
    from perturbot.models.cae import ConditionalAutoencoder

    assert default_eval_every(250_000, None) == 2_500  # a fixed budget: the paper's cadence, the same weights kept
    assert default_eval_every(250_000, 10) == 500  # early stopping: at least every 500 iterations
    assert default_eval_every(5_000, 10) == 250 and default_eval_every(3_000, 1) == 150  # at least 20 per budget
    assert default_eval_every(10, 3) == 1
    paper = {"patience": None}  # configs/paper.yaml: neither patience nor a cadence reaches the autoencoder
    assert early_stopping(paper, AutoEncoder) == {} and AutoEncoder().resolved_params()["eval_every"] == 2_500
    assert ConditionalAutoencoder().resolved_params()["eval_every"] == 2_500
    assert AutoEncoder(**early_stopping({"patience": 10}, AutoEncoder)).resolved_params()["eval_every"] == 500
    assert AutoEncoder(eval_every=2_500, patience=10).resolved_params()["eval_every"] == 2_500  # asked for: kept


def test_an_autoencoder_whose_best_comes_first_stops_5000_iterations_later_not_25000():
    # the case: the best validation at the first one (lr 0: nothing improves after it), the default
    # budget of 250,000 and the workflow's patience 10. At the old 2,500-iteration cadence it ran 27,500.
    # The first validation stays the paper's (2,500): no weights from before it are kept.
    model = AutoEncoder(hidden_units=(4,), latent_dim=2, lr=0.0, batch_size=4, patience=10, device="cpu")
    model.fit(cells(60, 3))
    assert model.get_params()["eval_every"] is None  # saved as asked: the cadence follows the budget
    assert model.history_["iteration"].tolist() == list(range(2_500, 7_501, 500))
    short = AutoEncoder(hidden_units=(4,), latent_dim=2, lr=0.0, batch_size=4, n_iters=2_000, patience=2,
                        device="cpu").fit(cells(60, 3))
    assert short.history_["iteration"].tolist() == [2_000]  # a budget below 2,500: validated at its end
    middle = AutoEncoder(hidden_units=(4,), latent_dim=2, lr=0.0, batch_size=4, n_iters=4_000, patience=2,
                         device="cpu").fit(cells(60, 3))
    assert middle.history_["iteration"].tolist() == [2_500, 2_700, 2_900]
    asked = AutoEncoder(hidden_units=(4,), latent_dim=2, lr=0.0, batch_size=4, n_iters=400, eval_every=100,
                        patience=2, device="cpu").fit(cells(60, 3))
    assert asked.history_["iteration"].tolist() == [100, 200, 300]  # an explicit cadence starts at eval_every


def test_w1ot_patience_in_each_stage():
    model = W1OT(
        n_iters=100, eval_every=10, patience=1, lr_potential=0.0, lr_potential_min=0.0, lr_step=0.0,
        hidden_units=(8,), step_hidden_units=(8,), batch_size=32, val_size=20, device="cpu",
    )
    model.fit(cells(), cells(seed=1) + 1.0)
    stages = model.history_.groupby("stage")["iteration"].apply(list).to_dict()
    assert stages == {"potential": [10, 20], "step": [110, 120]}


# ------------------------------------------------------------ SIGTERM

TRAIN_SCRIPT = """
import sys, numpy as np, torch
torch.set_num_threads(1)
from perturbot.models.autoencoder import AutoEncoder
from perturbot.training import live_history
x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
model = AutoEncoder(**PARAMS)
with live_history(sys.argv[2], "sigterm"):
    model.fit(x, checkpoint=sys.argv[1])
"""
PARAMS = dict(hidden_units=(16,), latent_dim=3, n_iters=3000, eval_every=20, checkpoint_every=10**9, device="cpu")


@pytest.mark.slow
def test_sigterm_saves_the_checkpoint_and_the_rerun_resumes(tmp_path):
    checkpoint, history = tmp_path / "ckpt.pt", tmp_path / "job" / "history.csv"
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.replace("PARAMS", repr(PARAMS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, str(script), str(checkpoint), str(history)], env=env,
                            stderr=subprocess.PIPE, text=True)
    status = history.with_name(PROGRESS_FILE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(status.read_text())["iteration"] >= 100:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "received SIGTERM" in stderr
    # checkpoint_every is huge: the only checkpoint is the one written on the signal
    state = torch.load(checkpoint, weights_only=True)
    stopped = int(state["iteration"])
    assert 100 <= stopped < PARAMS["n_iters"]
    assert json.loads(status.read_text())["status"] == "interrupted"
    assert training_jobs(tmp_path)["status"].tolist() == ["interrupted"]

    x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    resumed = AutoEncoder(**PARAMS).fit(x, checkpoint=checkpoint)
    straight = AutoEncoder(**PARAMS).fit(x)
    assert not checkpoint.exists()
    pd.testing.assert_frame_equal(resumed.history_, straight.history_)
    for key, value in straight.net_.state_dict().items():
        assert torch.equal(value, resumed.net_.state_dict()[key]), key


def test_stop_flag_saves_the_last_completed_iteration(tmp_path):
    ckpt = Checkpoint(tmp_path / "c.pt", every=10**9)
    done = []
    with pytest.raises(TrainingInterrupted) as stop, Progress("toy", 50) as progress:
        for it in progress.iterations(0, 50, on_stop=lambda last: ckpt.save({"iteration": last})):
            done.append(it)
            if it == 7:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets a flag
    assert stop.value.code == 128 + signal.SIGTERM
    assert done == list(range(1, 8)) and ckpt.load() == {"iteration": 7}
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


# ------------------------------------------------------------ perturbot progress


def test_progress_command_lists_running_and_interrupted_jobs(tmp_path, capsys):
    running = tmp_path / "exp/models/all/w1ot/_joint"
    running.mkdir(parents=True)
    (running / PROGRESS_FILE).write_text(json.dumps({
        "status": "running", "what": "w1ot step", "iteration": 500, "total": 2000, "elapsed_s": 60,
        "eta_s": 180, "score_name": "val_mmd", "best": 0.0123, "best_iteration": 450, "pid": os.getpid(),
        "host": os.uname().nodename, "updated": time.time(),
    }))
    done = tmp_path / "autoencoders/abc"
    done.mkdir(parents=True)
    (done / PROGRESS_FILE).write_text(json.dumps({"status": "done", "iteration": 10, "total": 10}))
    assert cli(["progress", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "exp/models/all/w1ot/_joint" in out and "25.0%" in out and "3m00s" in out and "val_mmd 0.0123" in out
    assert "autoencoders" not in out
    assert cli(["progress", str(tmp_path), "--all"]) == 0
    assert "autoencoders/abc" in capsys.readouterr().out
    assert cli(["progress", str(tmp_path / "missing")]) == 2


# ------------------------------------------------------------ configuration


def test_top_level_patience_reaches_models_that_take_it_unless_overridden():
    from helpers import small_features_config

    from perturbot.config import model_specs

    config = small_features_config(models=["identity", "w1ot", "cae"], model_params={"cae": {"patience": 2}})
    config["patience"] = 7
    specs = {s.label: s.params for s in model_specs(config, "toy_iid")}
    assert specs["w1ot"]["patience"] == 7 and specs["cae"]["patience"] == 2
    assert "patience" not in specs["identity"]
    config["patience"] = None  # the paper preset: fixed budgets
    assert "patience" not in {s.label: s.params for s in model_specs(config, "toy_iid")}["w1ot"]


# ------------------------------------------------------------ workflow


@pytest.mark.slow
def test_workflow_training_logs_progress_and_writes_the_history(tmp_path):
    from helpers import run_workflow, small_features_config

    tiny = {"n_iters": 60, "eval_every": 20, "batch_size": 32, "hidden_units": [8], "step_hidden_units": [8]}
    config = small_features_config(models=["identity", "w1ot"], joint_training=True, model_params={"w1ot": tiny})
    run_workflow(tmp_path, config, "--cores", "1", "results/toy_iid/models/all/w1ot/_joint/model.json")
    log = (tmp_path / "results/toy_iid/logs/train/all/w1ot/_joint.log").read_text().splitlines()
    lines = [line for line in log if "w1ot potential " in line or "w1ot step " in line]
    shown = [int(line.split(" w1ot ")[1].split()[1].split("/")[0]) for line in lines]
    assert shown == [20, 40, 60, 80, 100, 120]  # one line per evaluation, both stages counted
    assert all("/120 (" in line and "it/s" in line and "left" in line and "best" in line for line in lines)
    assert "val_w1" in lines[0] and "val_mmd" in lines[-1]  # stage 2: the selection criterion
    job = tmp_path / "results/toy_iid/models/all/w1ot/_joint"
    history = pd.read_csv(job / "history.csv")
    assert history["iteration"].drop_duplicates().tolist() == shown
    status = json.loads((job / PROGRESS_FILE).read_text())
    assert status["status"] == "done" and status["iteration"] == 120 and status["total"] == 120


def test_paper_preset_trains_fixed_budgets_and_the_default_has_patience():
    import yaml
    from snakemake.utils import validate

    from perturbot.data.catalog import resolve_catalog_entries
    from perturbot.config import model_specs

    schema = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    resolve_catalog_entries(paper, str(REPO / "resources" / "datasets.yaml"))
    validate(paper, schema=schema)
    assert paper["patience"] is None
    for experiment in paper["experiments"]:
        for spec in model_specs(paper, experiment):
            assert spec.params.get("patience") in (None, 0), (experiment, spec.label)
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(demo, schema=schema)
    assert demo["patience"] == 10


def test_live_status_says_how_the_job_ended(tmp_path):
    def run(error: BaseException | None) -> str:
        with pytest.raises(type(error)) if error else nullcontext():
            with live_history(tmp_path / "history.csv", "job"):
                Progress("toy", 10).record(5, [{"iteration": 5}], score=1.0)
                if error:
                    raise error
        return json.loads((tmp_path / PROGRESS_FILE).read_text())["status"]

    assert run(None) == "done"
    assert run(TrainingInterrupted(signal.SIGTERM)) == "interrupted"
    assert run(FloatingPointError("diverged")) == "failed"
    # a model that never reports (identity, scGen) leaves no status file behind
    (tmp_path / PROGRESS_FILE).unlink()
    with live_history(tmp_path / "history.csv", "job"):
        pass
    assert not (tmp_path / PROGRESS_FILE).exists()
