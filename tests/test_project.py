"""Project metadata that must agree across files."""

import re
import subprocess
import sys
import tomllib

from helpers import REPO


def test_snakemake_min_version_agrees_with_pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    bound = next(re.search(r">=([\d.]+)", d).group(1) for d in deps if d.startswith("snakemake["))
    assert re.search(r'min_version\("([\d.]+)"\)', (REPO / "Snakefile").read_text()).group(1) == bound


def test_make_clean_removes_stale_checkpoints():
    clean = (REPO / "Makefile").read_text().split("clean:", 1)[1].splitlines()[1]
    assert "results/.checkpoints" in clean


def test_snakefile_and_rules_are_formatted_with_snakefmt():
    """`snakefmt --check` (settings in pyproject.toml) passes on the Snakefile and every rule file."""
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *map(str, files)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, f"run `snakefmt Snakefile workflow/rules/`:\n{proc.stderr[-3000:]}"
