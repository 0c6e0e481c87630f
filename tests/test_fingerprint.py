"""A checkpoint resumes only the run that wrote it: same class, resolved hyper-parameters, data and versions."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from perturbot import checkpoints
from perturbot.fingerprint import NOT_IN_RUN, data_digest, differences, fit_arrays, run_fingerprint
from perturbot.models.autoencoder import AutoEncoder
from perturbot.models.cellot import PRESETS, CellOT
from perturbot.models.otfm import OTFlowMatching
from perturbot.models.w1ot import W1OT

SMALL = {
    "cellot": (CellOT, dict(n_iters=40, n_inner_iters=2, eval_every=10, checkpoint_every=10, hidden_units=[8, 8],
                            batch_size=32, val_size=20, lr=1e-2, device="cpu"), "lr", 1e-4),
    "w1ot": (W1OT, dict(n_iters=30, eval_every=10, checkpoint_every=10, batch_size=32, hidden_units=(8, 8),
                        step_hidden_units=(8, 8), val_size=20, device="cpu"), "lr_potential", 1e-4),
    "otfm": (OTFlowMatching, dict(n_iters=30, eval_every=10, checkpoint_every=10, batch_size=32, hidden_units=(16, 16),
                                  embedding_dim=4, val_size=20, lr=1e-2, device="cpu"), "lr", 1e-4),
    "autoencoder": (AutoEncoder, dict(hidden_units=(16,), latent_dim=3, n_iters=30, eval_every=10, checkpoint_every=10,
                                      batch_size=32, val_cells=20, lr=1e-2, device="cpu"), "lr", 1e-4),
}


class _Killed(Exception):
    pass


def _cells(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(n, 4)).astype(np.float32)
    return source, (source * 0.5 + 1.0 + 0.1 * rng.normal(size=source.shape)).astype(np.float32)


def _fit(model, source, target, checkpoint=None):
    kwargs = {"checkpoint": str(checkpoint)} if checkpoint else {}
    if isinstance(model, AutoEncoder):
        return model.fit(np.concatenate([source, target]), **kwargs)
    return model.fit(source, target, **kwargs)


def _output(model, source) -> np.ndarray:
    return model.reconstruct(source) if isinstance(model, AutoEncoder) else model.transport(source)


def _killed_after_first_checkpoint(monkeypatch, model, source, target, checkpoint) -> None:
    """Fit until the first checkpoint is written, then die (a killed job)."""
    save = checkpoints.Checkpoint.save

    def save_then_die(self, state):
        save(self, state)
        raise _Killed

    monkeypatch.setattr(checkpoints.Checkpoint, "save", save_then_die)
    with pytest.raises(_Killed):
        _fit(model, source, target, checkpoint)
    monkeypatch.setattr(checkpoints.Checkpoint, "save", save)
    assert checkpoint.exists()


@pytest.mark.parametrize("name", list(SMALL))
def test_a_checkpoint_of_another_configuration_starts_afresh(name, tmp_path, monkeypatch, caplog):
    """The issue's experiment: killed at lr 1e-2, refitted at lr 1e-4, the refit must be a clean 1e-4 run."""
    cls, params, key, new_value = SMALL[name]
    source, target = _cells()
    checkpoint = tmp_path / "ckpt.pt"
    _killed_after_first_checkpoint(monkeypatch, cls(**params), source, target, checkpoint)

    changed = {**params, key: new_value}
    straight = _fit(cls(**changed), source, target)
    with caplog.at_level(logging.WARNING, logger="perturbot"):
        refit = _fit(cls(**changed), source, target, checkpoint)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("belongs to another run" in w and f"{key}: {params.get(key, cls.default_params()[key])!r} -> {new_value!r}" in w
               for w in warnings), warnings
    assert not any("resuming" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(_output(refit, source), _output(straight, source))
    assert refit.history_.equals(straight.history_)
    assert not checkpoint.exists()


def test_other_cells_of_the_same_width_start_afresh(tmp_path, monkeypatch, caplog):
    cls, params, _, _ = SMALL["cellot"]
    checkpoint = tmp_path / "ckpt.pt"
    _killed_after_first_checkpoint(monkeypatch, cls(**params), *_cells(seed=0), checkpoint)
    other = _cells(seed=1)
    straight = cls(**params).fit(*other)
    with caplog.at_level(logging.WARNING, logger="perturbot"):
        refit = cls(**params).fit(*other, checkpoint=str(checkpoint))
    message = next(r.getMessage() for r in caplog.records if "another run" in r.getMessage())
    assert "data: " in message and "lr" not in message  # only the data differ, and the message says so
    np.testing.assert_array_equal(refit.transport(other[0]), straight.transport(other[0]))


def test_other_network_widths_start_afresh_instead_of_a_size_mismatch(tmp_path, monkeypatch, caplog):
    cls, params, _, _ = SMALL["w1ot"]
    source, target = _cells()
    checkpoint = tmp_path / "ckpt.pt"
    _killed_after_first_checkpoint(monkeypatch, cls(**params), source, target, checkpoint)
    wider = {**params, "hidden_units": (16, 16)}
    with caplog.at_level(logging.WARNING, logger="perturbot"):
        refit = cls(**wider).fit(source, target, checkpoint=str(checkpoint))  # no load_state_dict size mismatch
    assert "hidden_units: [8, 8] -> [16, 16]" in caplog.text
    np.testing.assert_array_equal(refit.transport(source), cls(**wider).fit(source, target).transport(source))


def test_the_same_run_resumes_and_stores_its_fingerprint(tmp_path, monkeypatch, caplog):
    cls, params, _, _ = SMALL["otfm"]
    source, target = _cells()
    checkpoint = tmp_path / "ckpt.pt"
    _killed_after_first_checkpoint(monkeypatch, cls(**params), source, target, checkpoint)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["fingerprint"] == run_fingerprint(cls(**params), fit_arrays(source, {cls.single_perturbation: target}))
    assert saved["iteration"] == 10
    with caplog.at_level(logging.INFO, logger="perturbot"):
        cls(**params).fit(source, target, checkpoint=str(checkpoint))
    assert any("resuming from checkpoint" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("content", ["legacy", "garbage"])
def test_a_checkpoint_without_fingerprint_or_unreadable_starts_afresh(content, tmp_path, caplog):
    cls, params, _, _ = SMALL["otfm"]
    source, target = _cells()
    checkpoint = tmp_path / "ckpt.pt"
    if content == "legacy":  # written before fingerprints: a valid state the model would otherwise load
        checkpoints.Checkpoint(checkpoint).save({"iteration": 10})
    else:
        checkpoint.write_bytes(b"not a checkpoint")
    straight = cls(**params).fit(source, target)
    with caplog.at_level(logging.WARNING, logger="perturbot"):
        refit = cls(**params).fit(source, target, checkpoint=str(checkpoint))
    expected = "no fingerprint" if content == "legacy" else "cannot be read"
    assert any(expected in r.getMessage() for r in caplog.records), caplog.text
    np.testing.assert_array_equal(refit.transport(source), straight.transport(source))


# ------------------------------------------------------------- the fingerprint itself
def test_fingerprint_holds_resolved_settings_and_leaves_out_where_the_run_happens():
    fast = run_fingerprint(CellOT(preset="fast"), {})
    assert fast["params"]["lr"] == PRESETS["fast"]["lr"]  # the preset's value, not the None that defers to it
    assert fast["params"]["hidden_units"] == list(PRESETS["fast"]["hidden_units"])
    assert fast["class"] == "perturbot.models.cellot.CellOT"
    assert not NOT_IN_RUN & set(fast["params"])
    same = run_fingerprint(CellOT(preset="fast", device="cuda", checkpoint_every=7), {})
    assert differences(fast, same) == []
    explicit = run_fingerprint(CellOT(preset="fast", lr=PRESETS["fast"]["lr"]), {})
    assert differences(fast, explicit) == []  # the same settings, however they are given


def test_data_digest_sees_one_changed_value_and_the_order_of_arrays():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = a.copy()
    assert data_digest({"source": a}) == data_digest({"source": b})
    b[2, 3] += 1
    assert data_digest({"source": a}) != data_digest({"source": b})
    assert data_digest({"x": a, "y": a.T}) != data_digest({"y": a.T, "x": a})
    assert data_digest({"x": a}) != data_digest({"x": a.reshape(4, 3)})  # same bytes, other shape


def test_differences_name_each_changed_key():
    old = {"class": "C", "data": "1", "params": {"lr": 0.01, "seed": 0}}
    new = {"class": "C", "data": "2", "params": {"lr": 0.0001, "seed": 0}}
    assert differences(old, new) == ["data: '1' -> '2'", "lr: 0.01 -> 0.0001"]
    assert differences(None, new) == ["the checkpoint has no fingerprint (written by an older perturbot)"]


# ------------------------------------------------------------- the workflow: a killed job, an edited config
@pytest.mark.slow
def test_an_edited_config_reruns_a_killed_training_afresh(tmp_path):
    """Killed mid-training, the config's lr lowered (as CellOT's divergence message advises), rerun:
    the job's log names the change and the metrics are those of a run at the new lr from the start."""
    import os
    import signal

    import pandas as pd
    from helpers import run_workflow
    from test_resume import CELLOT, METRICS, _config, _start_workflow, _tail, _wait_for

    first = _config()
    first["experiments"]["toy_iid"]["model_params"]["cellot"] = {**CELLOT, "lr": 1e-3}
    edited = _config()
    edited["experiments"]["toy_iid"]["model_params"]["cellot"] = {**CELLOT, "lr": 5e-4}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _start_workflow(straight, edited)  # the edited config, uninterrupted, alongside
    proc = _start_workflow(killed, first)
    try:
        _wait_for("results/.checkpoints/toy_iid/*/cellot/*.pt", killed, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    run_workflow(killed, edited, "--unlock")
    run_workflow(killed, edited, "--cores", "1", "--rerun-incomplete", METRICS)
    log = next((killed / "results/toy_iid/logs/train").rglob("cellot/*.log")).read_text()
    assert "belongs to another run (lr: 0.001 -> 0.0005); starting afresh" in log
    assert "resuming from checkpoint" not in log
    assert reference.wait(timeout=600) == 0, _tail(straight)
    pd.testing.assert_frame_equal(pd.read_csv(killed / METRICS), pd.read_csv(straight / METRICS))
