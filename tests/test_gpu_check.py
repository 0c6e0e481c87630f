"""The prepared GPU check runs here on the CPU and says so in its CUDA columns."""

from __future__ import annotations

import importlib.util
import math

from helpers import REPO


def test_gpu_check_runs_on_cpu_and_marks_cuda_absent(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
