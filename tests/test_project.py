"""Project metadata that must agree across files."""

import re
import tomllib

from helpers import REPO, make


def test_snakemake_min_version_agrees_with_pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    bound = next(re.search(r">=([\d.]+)", d).group(1) for d in deps if d.startswith("snakemake["))
    assert re.search(r'min_version\("([\d.]+)"\)', (REPO / "Snakefile").read_text()).group(1) == bound


def test_make_clean_removes_stale_checkpoints():
    clean = (REPO / "Makefile").read_text().split("clean:", 1)[1].splitlines()[1]
    assert "results/.checkpoints" in clean


def test_snakefile_and_rules_are_formatted_with_snakefmt():
    """`make format-check` (CI's formatting job: `snakefmt --check`, settings in pyproject.toml)
    passes, and it checks the Snakefile and every rule file."""
    proc = make("format-check")
    assert proc.returncode == 0, f"run `snakefmt Snakefile workflow/rules/`:\n{proc.stderr[-3000:]}"
    files = ["Snakefile", *(f"workflow/rules/{p.name}" for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    assert f"All {len(files)} file(s) would be left unchanged" in proc.stderr
    assert " ".join(files) in proc.stdout
