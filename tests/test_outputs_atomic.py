"""Every output is written whole or not at all, and a killed job's temporaries are removed by the job that owns them.

A failing write is simulated where the bytes go (a disk filling up half-way
through): the writer writes part of its file, then raises ``OSError``. The
output must keep its previous content (or not exist) and no temporary may remain.
"""

from __future__ import annotations

import errno
import json
import pathlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import run_workflow, small_features_config

from perturbot.atomic import is_temporary, remove_stale_outputs, write_csv, write_json
from perturbot.models.base import MODEL_JSON, WEIGHTS_FILE


def _disk_full(write):
    """``write`` as a writer that runs out of space half-way: part of the bytes land, then ENOSPC."""

    def failing(self_or_path, *args, **kwargs):
        write(self_or_path, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    return failing


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if is_temporary(p))


def _fitted():
    from perturbot.models.scgen import ScGen

    rng = np.random.default_rng(0)
    return ScGen().fit(rng.normal(size=(20, 3)).astype(np.float32), rng.normal(size=(20, 3)).astype(np.float32))


def test_a_model_saved_on_a_full_disk_keeps_its_previous_files(tmp_path, monkeypatch):
    model = _fitted()
    model.save(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in (MODEL_JSON, WEIGHTS_FILE)}

    import perturbot.models.base as base

    monkeypatch.setattr(base, "save_file", _disk_full(lambda tensors, path: Path(path).write_bytes(b"half")))
    with pytest.raises(OSError):
        model.save(tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(pathlib.Path, "write_text", _disk_full(lambda self, text: self.write_bytes(text[:5].encode())))
    with pytest.raises(OSError):
        model.save(tmp_path)
    monkeypatch.undo()
    assert {name: (tmp_path / name).read_bytes() for name in (MODEL_JSON, WEIGHTS_FILE)} == before
    assert _leftovers(tmp_path) == []


def test_a_latent_models_description_is_written_whole(tmp_path, monkeypatch):
    from perturbot.latent import LatentModel, load_model
    from perturbot.models.autoencoder import AutoEncoder
    from perturbot.models.scgen import ScGen

    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(40, 6)).astype(np.float32)
    autoencoder = AutoEncoder(hidden_units=(8,), latent_dim=2, n_iters=5, eval_every=5, val_cells=0, device="cpu")
    model = LatentModel(ScGen(), autoencoder.fit(np.concatenate([source, target]))).fit(source, target)
    model.save(tmp_path)
    before = (tmp_path / MODEL_JSON).read_text()
    monkeypatch.setattr(pathlib.Path, "write_text", _disk_full(lambda self, text: self.write_bytes(text[:5].encode())))
    with pytest.raises(OSError):
        model.save(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / MODEL_JSON).read_text() == before and _leftovers(tmp_path) == []
    np.testing.assert_allclose(load_model(tmp_path).transport(source), model.transport(source))


def test_a_history_is_written_whole(tmp_path, monkeypatch):
    from perturbot.experiment import write_history

    model = _fitted()
    model.history_ = pd.DataFrame({"iteration": [1, 2], "loss": [0.5, 0.25]})
    history = tmp_path / "history.csv"
    write_history(model, history)
    monkeypatch.setattr(pd.DataFrame, "to_csv", _disk_full(lambda self, path, **kw: Path(path).write_text("iterat")))
    model.history_ = pd.DataFrame({"iteration": [1, 2, 3], "loss": [0.5, 0.25, 0.1]})
    with pytest.raises(OSError):
        write_history(model, history)
    monkeypatch.undo()
    assert pd.read_csv(history)["iteration"].tolist() == [1, 2]
    assert _leftovers(tmp_path) == []


def test_aggregate_metrics_writes_its_table_whole(tmp_path, monkeypatch):
    from perturbot.tables import METRICS_COLUMNS, aggregate_metrics

    row = {"experiment": "e", "setting": "iid", "holdout": "all", "model": "m", "perturbation": "p", "seed": 0,
           "n_cells": 10, "draw": 0, "metric": "mmd", "value": 0.1}
    part = tmp_path / "part.csv"
    pd.DataFrame([{c: row[c] for c in METRICS_COLUMNS}]).to_csv(part, index=False)
    out = tmp_path / "metrics.csv"
    out.write_text("old\n")
    monkeypatch.setattr(pd.DataFrame, "to_csv", _disk_full(lambda self, path, **kw: Path(path).write_text("experim")))
    with pytest.raises(OSError):
        aggregate_metrics([part], out)
    monkeypatch.undo()
    assert out.read_text() == "old\n" and _leftovers(tmp_path) == []
    aggregate_metrics([part], out)
    assert pd.read_csv(out)["value"].tolist() == [0.1]


def test_a_figure_is_written_whole_and_a_killed_ones_temporaries_go(tmp_path, monkeypatch):
    import matplotlib.figure

    from perturbot.plotting.style import plt, save_figure

    pdf = tmp_path / "fig.pdf"
    (tmp_path / ".fig.31337.tmp.pdf").write_text("half")  # what a kill -9 during savefig leaves
    fig = plt.figure()
    save_figure(fig, pdf)
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.with_suffix(".png").exists()
    assert _leftovers(tmp_path) == []
    before = pdf.read_bytes()
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        _disk_full(lambda self, path, **kw: Path(path).write_bytes(b"%PDF-half")))
    with pytest.raises(OSError):
        save_figure(plt.figure(), pdf)
    assert pdf.read_bytes() == before and _leftovers(tmp_path) == []


def test_json_and_csv_helpers_round_trip(tmp_path):
    write_json(tmp_path / "a" / "x.json", {"k": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"k": [1, 2]}
    write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv", index=False)
    assert (tmp_path / "t.csv").read_text() == "a\n1\n"


def test_stale_temporaries_of_a_jobs_outputs_and_folder_are_removed(tmp_path):
    data = tmp_path / "results" / "exp" / "data"
    stale_dir = tmp_path / "results" / "exp" / ".data.4242.tmp"  # a killed prepare_data
    (stale_dir / "sub").mkdir(parents=True)
    (stale_dir / "all.h5ad").write_text("half")
    other = tmp_path / "results" / "exp" / ".metrics.4242.tmp.csv"  # another job's: not ours to remove
    other.write_text("x")
    model_dir = tmp_path / "models" / "run" / "_joint"
    (model_dir / "inner").mkdir(parents=True)
    kept = [model_dir / "model.json", model_dir / ".hidden", model_dir / "inner" / "weights.safetensors"]
    left = [model_dir / ".weights.77.tmp.safetensors", model_dir / ".preprocessing.77.tmp.json",
            model_dir / "inner" / ".model.77.tmp.json"]
    for path in (*kept, *left):
        path.write_text("x")

    removed = remove_stale_outputs(data)
    assert removed == [stale_dir] and not stale_dir.exists() and other.exists()
    removed = remove_stale_outputs(model_dir / "model.json", within=model_dir)
    assert sorted(removed) == sorted(left)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in left)
    assert remove_stale_outputs(tmp_path / "missing" / "x.csv", within=tmp_path / "missing") == []


@pytest.mark.slow
def test_prepare_data_and_provenance_remove_what_killed_runs_left(tmp_path):
    """The issue's case: a killed prepare_data leaves results/<exp>/.data.<pid>.tmp/ forever."""
    results = tmp_path / "results" / "toy_iid"
    stale = [results / ".data.4242.tmp", results / ".provenance.4242.tmp.json"]
    stale[0].mkdir(parents=True)
    (stale[0] / "all.h5ad").write_text("half")
    stale[1].write_text("{")
    run_workflow(tmp_path, small_features_config(), "--cores", "1", "results/toy_iid/data",
                 "results/toy_iid/provenance.json")
    assert not any(p.exists() for p in stale)
    assert json.loads((results / "provenance.json").read_text())
    assert (results / "data" / "all.h5ad").exists() and _leftovers(tmp_path / "results") == []
