"""The prepared GPU check runs here on the CPU and says so in its CUDA columns."""

from __future__ import annotations

import importlib.util
import math

from helpers import REPO


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_on_cpu_and_marks_cuda_absent(monkeypatch):
    module = _gpu_check()
    monkeypatch.setattr(module.torch.cuda, "is_available", lambda: False)
    lines: list[str] = []
    results = module.main(quick=True, out=lines.append)
    assert [r["model"] for r in results] == list(module.MODELS)
    for result in results:
        # a difference of two short timings: finite, but its sign is not guaranteed on a loaded machine
        assert all(math.isfinite(t) for t in result["cpu_ms"]), result
        assert all(math.isnan(t) for t in result["cuda_ms"])
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| model") and "---" not in line]
    assert len(rows) == len(module.MODELS)
    assert all(row.count("no GPU") == 5 for row in rows)


def test_joint_training_table_one_row_per_model_and_count(monkeypatch):
    module = _gpu_check()
    monkeypatch.setattr(module.torch.cuda, "is_available", lambda: False)
    for name in module.JOINT_MODELS:  # the models timed are those that can train perturbations together
        cls = module._cls(name)
        assert cls.multi_perturbation and not cls.joint_only, name
    counts = (1, 2)
    lines: list[str] = []
    results = module.joint_training(counts, threads=1, out=lines.append,  # 8 timed iterations: a margin over jitter
                                    n_features=8, n_control=64, n_cells=48, batch=32)
    cpu = [r for r in results if r["device"] == "cpu"]
    assert [(r["model"], r["perturbations"]) for r in cpu] == [(m, c) for m in module.JOINT_MODELS for c in counts]
    for r in cpu:
        assert math.isfinite(r["ms_per_iteration"]) and r["ms_per_iteration"] > 0, r
        assert math.isclose(r["ms_per_perturbation"], r["ms_per_iteration"] / r["perturbations"]), r
    cuda = [r for r in results if r["device"] == "cuda"]
    assert len(cuda) == len(cpu) and all(math.isnan(r["ms_per_iteration"]) for r in cuda)
    header = "| model | device | perturbations | ms / iteration | ms / iteration / perturbation |"
    rows = lines[lines.index(header) + 2:]
    assert len(rows) == 2 * len(module.JOINT_MODELS) * len(counts)
    assert all(row.count("no GPU") == 2 for row in rows if "| CUDA |" in row)
    assert all("no GPU" not in row for row in rows if "| CPU |" in row)
