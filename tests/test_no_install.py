"""Jobs find perturbot in the workflow's src/, with nothing of it installed, and never a stale copy.

A throwaway venv (``bare_python``) sees this test's third-party packages (a .pth line
naming their site-packages; .pth files inside that directory, such as the editable
install's finder, are not run) but no perturbot. A whole run with that interpreter, as
a conda job would run, is tests/test_new_model.py's (every kind of job, a real CellOT
training among them); here an installed copy that would shadow src/ is refused.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow


def _snakemake(python: Path, workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(python), "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("PYTHONPATH", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=workdir)


def test_an_installed_copy_that_would_shadow_src_is_refused(bare_python, tmp_path):
    stale = tmp_path / "site" / "perturbot"
    stale.mkdir(parents=True)
    (stale / "__init__.py").write_text("raise ImportError('stale copy imported')\n")
    proc = _snakemake(bare_python, tmp_path, "-n", "--configfile", str(REPO / "config.yaml"), env={"PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the same interpreter with the stale copy on its path: the workflow stops and names it
    site = subprocess.run(
        [str(bare_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(site, "stale.pth").write_text(str(stale.parent) + "\n")
    try:
        proc = _snakemake(bare_python, tmp_path, "-n", "--configfile", str(REPO / "config.yaml"))
    finally:
        Path(site, "stale.pth").unlink()
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert str(stale) in output and "pip uninstall perturbot" in output, output[-3000:]
