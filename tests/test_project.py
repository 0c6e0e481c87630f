"""Project metadata that must agree across files."""

import re
import tomllib

from helpers import REPO


def test_snakemake_min_version_agrees_with_pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    bound = next(re.search(r">=([\d.]+)", d).group(1) for d in deps if d.startswith("snakemake["))
    assert re.search(r'min_version\("([\d.]+)"\)', (REPO / "Snakefile").read_text()).group(1) == bound


def test_make_clean_removes_stale_checkpoints():
    clean = (REPO / "Makefile").read_text().split("clean:", 1)[1].splitlines()[1]
    assert "results/.checkpoints" in clean
