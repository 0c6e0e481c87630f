"""The workflow plans from an environment that holds Snakemake alone, as its users install it.

Users type `snakemake --cores N --use-conda` from a `conda create -n snakemake snakemake`
(or `pip install snakemake`) environment: the Snakefile and the rules (the planning layer)
may import the standard library, PyYAML and what Snakemake itself brings, nothing else;
jobs get numpy, torch and anndata from envs/*.yaml. The check: every shipped config
dry-runs, lints and lists its rules from a virtual environment holding only Snakemake, at
the version of requirements.lock (built once under the ignored .venv-snakemake/), where any
heavy import fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import REPO

CONFIGS = ["config.yaml", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").glob("*.yaml"))]
ONLY_SNAKEMAKE = REPO / ".venv-snakemake"


def commands(config: str) -> list[list[str]]:
    return [["-n", "--nolock", "--cores", "1", "--configfile", config]]


EXTRA_COMMANDS = [["--lint", "--configfile", "config.yaml"], ["--list-rules"]]


def run_snakemake(python: Path | str, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "snakemake", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def lock_version(package: str) -> str:
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name.lower() == package:
            return version
    raise AssertionError(f"{package} is not pinned in requirements.lock")


@pytest.fixture(scope="module")
def snakemake_only() -> Path:
    """A virtual environment with nothing but `pip install snakemake==<the lock's>`, kept between runs."""
    python = ONLY_SNAKEMAKE / "bin" / "python"
    stamp = ONLY_SNAKEMAKE / f".snakemake-{lock_version('snakemake')}"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(ONLY_SNAKEMAKE)], check=True)
        proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"snakemake=={lock_version('snakemake')}"],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"pip install snakemake failed:\n{proc.stderr[-3000:]}")
        stamp.touch()
    return python


def test_the_snakemake_only_environment_has_no_scientific_stack(snakemake_only):
    for module in ("numpy", "pandas", "torch", "anndata", "scipy"):
        proc = subprocess.run([str(snakemake_only), "-c", f"import {module}"], capture_output=True, text=True)
        assert proc.returncode != 0, f"{module} is importable in {ONLY_SNAKEMAKE}: the check would prove nothing"


@pytest.mark.parametrize("args", [c for config in CONFIGS for c in commands(config)] + EXTRA_COMMANDS,
                         ids=lambda a: " ".join(a))
def test_a_snakemake_only_environment_plans_the_workflow(snakemake_only, args):
    # PYTHONNOUSERSITE: nothing from the user's site-packages either
    proc = run_snakemake(snakemake_only, args, env={"PYTHONNOUSERSITE": "1", "PYTHONPATH": ""})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


# ---------------------------------------------------------------- jobs take their packages from their own env
LEAK = textwrap.dedent(
    """
    import sys
    sys.path.extend(sys.argv[1:])  # what Snakemake's preamble does: the parent's path, appended
    import importlib.util
    before = importlib.util.find_spec("numpy") is not None
    from perturbot.jobenv import own_packages_only
    dropped = own_packages_only()
    try:
        import numpy
        after = True
    except ModuleNotFoundError:
        after = False
    print(before, after, len(dropped))
    """
)


def test_a_conda_env_job_does_not_import_the_parent_environments_packages(snakemake_only):
    """The Snakemake-only venv stands in for a job's conda env that lacks numpy; the parent's (.venv's)
    site-packages, handed over by Snakemake, provide it until own_packages_only() drops them."""
    parent_site = next(p for p in sys.path if p.endswith("site-packages"))
    proc = subprocess.run(
        [str(snakemake_only), "-c", LEAK, parent_site, str(REPO / "src")], capture_output=True, text=True,
        env={**os.environ, "CONDA_PREFIX": str(ONLY_SNAKEMAKE), "PYTHONNOUSERSITE": "1", "PYTHONPATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False", "1"]  # leaked before, refused after, one entry dropped


def test_without_a_conda_env_a_job_keeps_its_path():
    from perturbot.jobenv import foreign_site_packages

    path = ["/src", "/parent/lib/python3.11/site-packages", "/env/lib/python3.11/site-packages"]
    assert foreign_site_packages(path, "/env", None) == []  # no env activated: Snakemake's own interpreter
    assert foreign_site_packages(path, "/env", "/other") == []  # an env is active, but this is not its python
    assert foreign_site_packages(path, "/env", "/env") == ["/parent/lib/python3.11/site-packages"]


def test_every_workflow_script_confines_its_imports_first():
    import ast

    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        body = ast.parse(script.read_text()).body[1:]  # after the docstring
        first = ast.unparse(body[0]), ast.unparse(body[1])
        assert first == ("from perturbot.jobenv import own_packages_only", "own_packages_only()"), script.name
