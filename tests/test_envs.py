"""Conda environments of the rules: they parse, every rule has one, their pins agree, lint is clean.

Conda channels cannot be reached from the test machines, so `--use-conda` itself
is not run; these are the checks that can be made without it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SNAKEMAKE
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ENVS = sorted((REPO / "envs").glob("*.yaml"))
RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
ACTIONS = ("script", "shell", "notebook", "wrapper")
RULE_START = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.M)


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"requirements.lock: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = pinned
    return pins


def _rule_blocks() -> dict[str, tuple[Path, str]]:
    """Each rule's (file, body): from its header to the next line that starts at column 0."""
    blocks = {}
    for path in RULE_FILES:
        text = path.read_text()
        for match in RULE_START.finditer(text):
            rest = text[match.end():]
            end = re.search(r"^\S", rest, re.M)
            blocks[match.group(1)] = (path, rest[: end.start()] if end else rest)
    return blocks


def _directive(body: str, name: str) -> str | None:
    """The value of a rule directive given on the line after it (or on the same line)."""
    match = re.search(rf"^\s+{name}:[ \t]*(\S.*)?\n(\s+(\S.*))?", body, re.M)
    if not match:
        return None
    return (match.group(1) or match.group(3) or "").strip()


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_file_parses_and_pins_like_the_python_install(env):
    spec = yaml.safe_load(env.read_text())
    assert set(spec) >= {"channels", "dependencies"}, spec
    assert "defaults" not in spec["channels"]
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    python = next(d for d in conda if d.split("=")[0] == "python")
    assert python == f"python={sys.version_info.major}.{sys.version_info.minor}", python
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(python.split("=")[1]) in Requirement(f"python{requires}").specifier
    # pip installs the lock file and the perturbot package itself, from this repository
    assert f"-r {Path('..') / 'requirements.lock'}" in pip
    local = [p for p in pip if not p.startswith("-") and (env.parent / p).resolve() == REPO]
    assert local, f"{env.name} does not install perturbot (pip: {pip})"
    lock = _lock()
    for entry in pip:
        if "==" in entry:
            name, pinned = entry.split("==")
            assert lock.get(canonicalize_name(name)) == pinned, f"{env.name}: {entry} vs lock {lock.get(canonicalize_name(name))}"
    for entry in conda:
        name, _, pinned = entry.partition("=")
        if name not in ("python", "pip") and pinned:
            assert lock.get(canonicalize_name(name), "").startswith(pinned.rstrip("*").rstrip(".")), entry


def test_lock_satisfies_pyproject_and_matches_the_installed_versions():
    lock = _lock()
    for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} (pyproject) is not in requirements.lock"
        assert Version(lock[name]) in req.specifier, f"lock {req.name}=={lock[name]} violates pyproject {dep}"
    mismatched = {}
    for name, pinned in lock.items():
        try:
            installed = Version(version(name)).public  # torch's "+cpu" is a build, not a version
        except PackageNotFoundError:
            installed = None
        if installed != Version(pinned).public:
            mismatched[name] = (pinned, installed)
    assert not mismatched, f"requirements.lock vs installed: {mismatched}"


def test_every_rule_with_a_job_has_a_conda_env():
    blocks = _rule_blocks()
    out = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--list-rules"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    listed = re.findall(r"^(\w+)(?: \(.*)?$", out, re.M)  # "name (docstring...", docstrings may wrap
    assert sorted(blocks) == sorted(listed), "rules found in the .smk files differ from snakemake --list-rules"
    for name, (path, body) in blocks.items():
        if not any(_directive(body, action) is not None for action in ACTIONS):
            continue  # a target-only rule such as `all` runs nothing
        env = _directive(body, "conda")
        assert env, f"rule {name} ({path.name}) has no conda: directive"
        env_path = (path.parent / env.strip("\"'")).resolve()
        assert env_path in [e.resolve() for e in ENVS], f"rule {name}: conda env {env} is not one of envs/*.yaml"
    assert not any(_directive(body, "run") is not None for _, body in blocks.values()), (
        "a run: block ignores conda:; use script:"
    )


def _lints() -> list[tuple[str, str]]:
    """(snakefile or rule, finding) pairs reported by `snakemake --lint` on the demo config."""
    proc = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--lint", "--configfile", str(REPO / "config.yaml")],
        cwd=REPO, capture_output=True, text=True,
    )
    output = proc.stdout + proc.stderr
    findings = re.findall(r"^Lints for (.+?):\n((?:    \*.*\n|      .*\n)+)", output, re.M)
    lints = [(where, item) for where, body in findings for item in re.findall(r"^    \* (.+?):?$", body, re.M)]
    assert proc.returncode == 0 or lints, output[-6000:]  # it failed for another reason than lints
    return lints


def test_snakemake_lint_is_clean():
    assert not _lints()
