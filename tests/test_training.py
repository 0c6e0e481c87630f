"""Shared training conventions: device choice, validation subsets, checkpoints, validation MMD."""

import numpy as np
import pytest
import torch

from perturbot import checkpoints, metrics, training, validation


def test_cuda_request_without_a_gpu_stops_with_the_fix(monkeypatch):
    """device: cuda never trains on the CPU unnoticed: the job stops, naming the cause and the fix."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # unset: no crash
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU-only build, as conda gives on a login node
    with pytest.raises(training.DeviceError, match="CPU-only build.*CONDA_OVERRIDE_CUDA=12.6 snakemake"):
        training.resolve_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", "12.6")  # a CUDA build on a node without a GPU
    with pytest.raises(training.DeviceError, match=r"sees no GPU \(CUDA_VISIBLE_DEVICES=<unset>\)"):
        training.resolve_device("cuda:0")
    assert training.resolve_device("auto") == torch.device("cpu")
    assert training.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        training.resolve_device("tpu")


def test_auto_uses_the_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # the GPU SLURM assigned appears to torch as cuda:0
    assert training.resolve_device("auto") == torch.device("cuda")


def test_validation_subset_is_seeded_disjoint_and_bounded():
    train, val = validation.carve_validation(1000, max_cells=500, seed=3)
    assert len(val) == 200  # at most 20% of the cells
    assert not set(train) & set(val) and len(train) + len(val) == 1000
    again = validation.carve_validation(1000, max_cells=500, seed=3)
    np.testing.assert_array_equal(val, again[1])
    assert len(validation.carve_validation(9, max_cells=500, seed=0)[1]) == 0


def test_checkpoint_round_trip_is_atomic_and_weights_only(tmp_path):
    ckpt = checkpoints.Checkpoint(tmp_path / "sub" / "state.pt", every=10)
    assert ckpt.load() is None and ckpt.due(20) and not ckpt.due(25)
    gen = training.make_generator(7)
    state = {"iteration": 10, "weights": torch.arange(3.0), "rng": checkpoints.generator_state(gen)}
    ckpt.save(state)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["state.pt"]  # no temporary left
    loaded = ckpt.load()
    assert loaded["iteration"] == 10 and torch.equal(loaded["weights"], torch.arange(3.0))
    other = training.make_generator(0)
    checkpoints.restore_generator(other, loaded["rng"])
    assert torch.equal(torch.rand(4, generator=other), torch.rand(4, generator=gen))
    (tmp_path / "sub" / ".state.4242.tmp.pt").write_bytes(b"half")  # a killed run's torch.save
    ckpt.clear()
    assert ckpt.load() is None and not list((tmp_path / "sub").iterdir())


def test_validation_mmd_matches_the_evaluation_mmd_on_the_same_bandwidths():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(loc=0.3, size=(25, 4))
    torch_value = validation.mmd_rbf_torch(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert torch_value == pytest.approx(metrics.mmd(x, y, gammas=validation.VALIDATION_GAMMAS), rel=1e-5)
    # batched: one value per stacked pair
    batched = validation.mmd_rbf_torch(torch.from_numpy(np.stack([x[:25], x[:25]])), torch.from_numpy(np.stack([y, y])))
    assert batched.shape == (2,)
