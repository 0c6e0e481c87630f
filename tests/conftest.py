"""Pytest fixtures shared by the test files."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> Path:
    """A venv whose site-packages holds the dependencies, not perturbot."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run(
        [python, "-c", "import importlib.util, snakemake, torch, scanpy; print(importlib.util.find_spec('perturbot'))"],
        capture_output=True, text=True, cwd=venv,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "None", f"perturbot is importable in the bare venv: {probe.stdout}"
    return python


#: The files that take longest (``make test`` prints the slowest tests), run first. pytest-xdist hands
#: out whole files (``--dist loadfile``) in collection order (``--no-loadscope-reorder``), so the last
#: file to finish is a short one and neither worker waits for the other. A stale list costs balance only.
RUN_FIRST = (
    "test_figures.py", "test_paper.py", "test_faults.py", "test_w1ot.py", "test_workflow.py", "test_cellot.py",
    "test_new_model.py", "test_otfm.py", "test_fast_path.py", "test_progress.py", "test_fingerprint.py",
    "test_bundle.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return RUN_FIRST.index(name) if name in RUN_FIRST else len(RUN_FIRST)

    items.sort(key=rank)  # stable: tests keep their order within a file
