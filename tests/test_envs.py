"""Conda environments of the rules: small, right for their rules, pinned like the lock.

Conda channels cannot be reached from the test machines, so `--use-conda` itself
runs only where a `conda` is on PATH. Without it: every env file is checked
against requirements.lock and pyproject.toml, and against what its rules' scripts
import (static analysis of the scripts and of the perturbot modules they reach,
tests/import_graph.py); tests/test_no_install.py runs jobs without perturbot installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SNAKEMAKE, make
from import_graph import ImportGraph
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
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


#: import name -> the conda-forge package that provides it (pip name where it comes from PyPI)
PROVIDERS = {
    "anndata": "anndata",
    "igraph": "python-igraph",
    "matplotlib": "matplotlib-base",
    "numba": "numba",
    "numpy": "numpy",
    "pandas": "pandas",
    "pooch": "pooch",
    "requests": "requests",
    "safetensors": "safetensors",
    "scanpy": "scanpy",
    "scipy": "scipy",
    "seaborn": "seaborn-base",
    "sklearn": "scikit-learn",
    "statsmodels": "statsmodels",
    "torch": "pytorch",
    "tqdm": "tqdm",
    "umap": "umap-learn",
    "yaml": "pyyaml",
}
#: conda-forge packages that provide the same modules as another (one build of it)
ALIASES = {"pytorch-cpu": "pytorch", "pytorch-gpu": "pytorch", "matplotlib": "matplotlib-base", "seaborn": "seaborn-base"}
#: conda-forge name -> name in requirements.lock, where they differ
LOCK_NAMES = {"pytorch": "torch", "python-igraph": "igraph", "matplotlib-base": "matplotlib", "seaborn-base": "seaborn"}
#: package modules a job imports besides its script's: the preamble unpickles the rule's
#: params, which hold dataclasses of perturbot.config (ModelSpec, HoldoutRun)
UNPICKLED = ("perturbot.config",)
TOOLING = {"python", "pip"}


def _env(path: Path) -> tuple[dict, dict[str, str], dict[str, str]]:
    """(spec, conda package -> version pin, pip package -> version pin) of an env file."""
    spec = yaml.safe_load(path.read_text())
    conda, pip = {}, {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for entry in dep["pip"]:
                name, _, pinned = entry.partition("==")
                pip[name.strip()] = pinned.strip()
        else:
            name, _, pinned = dep.partition("=")
            conda[name.strip()] = pinned.strip()
    return spec, conda, pip


def _packages(path: Path) -> set[str]:
    _, conda, pip = _env(path)
    return {ALIASES.get(name, name) for name in [*conda, *pip]} - TOOLING


def _python_minor() -> str:
    """The Python that requirements.lock and the envs are resolved for: the oldest pyproject.toml accepts."""
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minors = [f"3.{m}" for m in range(8, 20) if Version(f"3.{m}") in SpecifierSet(requires)]
    assert minors, f"requires-python {requires!r} allows no Python 3"
    return minors[0]


def _rule_scripts() -> dict[str, tuple[Path, Path]]:
    """rule -> (its env file, its script), for every rule that runs a script."""
    out = {}
    for name, (path, body) in _rule_blocks().items():
        script, env = _directive(body, "script"), _directive(body, "conda")
        if script and env:
            out[name] = ((path.parent / env.strip("\"'")).resolve(), (path.parent / script.strip("\"'")).resolve())
    return out


@pytest.fixture(scope="module")
def needs() -> dict[str, dict[str, str]]:
    """rule -> third-party module -> where the job imports it."""
    graph = ImportGraph(REPO / "src")
    return {rule: graph.needs_of_script(script, also=UNPICKLED) for rule, (_, script) in _rule_scripts().items()}


def test_there_are_envs_for_data_training_and_analysis():
    assert {p.name for p in ENVS} >= {"data.yaml", "training.yaml", "analysis.yaml"}
    assert (REPO / "envs" / "README.md").exists()


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_file_is_conda_forge_pinned_like_the_lock_with_no_relative_path(env):
    spec, conda, pip = _env(env)
    assert spec["channels"][0] == "conda-forge" and "defaults" not in spec["channels"], spec["channels"]
    # Snakemake copies the file before `conda env create`: nothing may point at the repository
    text = env.read_text()
    assert not re.search(r"(^|\s)(-r|-e|--requirement|--editable)\s|\.\./|file:|^\s*-\s*\.", text, re.M), text
    assert conda.get("python") == _python_minor(), f"{env.name}: python={conda.get('python')}, pyproject says {_python_minor()}"
    lock = _lock()
    for name, pinned in conda.items():
        if name in TOOLING:
            continue
        lock_name = canonicalize_name(LOCK_NAMES.get(ALIASES.get(name, name), ALIASES.get(name, name)))
        assert lock_name in lock, f"{env.name}: {name} has no counterpart in requirements.lock"
        major_minor = ".".join(lock[lock_name].split(".")[:2])
        assert pinned == major_minor, f"{env.name}: {name}={pinned}, requirements.lock has {lock[lock_name]} (pin {major_minor})"
    for name, pinned in pip.items():
        assert lock.get(canonicalize_name(name)) == pinned, f"{env.name}: pip {name}=={pinned} vs lock {lock.get(canonicalize_name(name))}"
    unknown = _packages(env) - set(PROVIDERS.values())
    assert not unknown, f"{env.name}: {unknown} provide no module perturbot imports (or PROVIDERS lacks them)"


def test_each_rule_env_provides_every_module_its_job_imports(needs):
    missing = []
    for rule, (env, _) in _rule_scripts().items():
        packages = _packages(env)
        for module, where in sorted(needs[rule].items()):
            provider = PROVIDERS.get(module)
            if provider is None:
                missing.append(f"{rule}: {module} (imported in {where}) is not in PROVIDERS: name its conda-forge package")
            elif provider not in packages:
                missing.append(f"{rule}: {module} (imported in {where}) needs {provider} in envs/{env.name}")
    assert not missing, "\n".join(missing)


def test_no_env_holds_a_package_none_of_its_rules_imports(needs):
    used: dict[Path, set[str]] = {env: set() for env in ENVS}
    for rule, (env, _) in _rule_scripts().items():
        used[env] |= {PROVIDERS[m] for m in needs[rule] if m in PROVIDERS}
    for env in ENVS:
        unused = _packages(env) - used[env]
        assert not unused, f"envs/{env.name}: {sorted(unused)} are imported by none of its rules"


def test_only_the_training_env_has_torch():
    for name in ("data.yaml", "analysis.yaml"):
        _, conda, pip = _env(REPO / "envs" / name)
        assert not {"pytorch", "pytorch-cpu", "pytorch-gpu", "safetensors"} & (set(conda) | set(pip)), name


def test_the_data_and_analysis_jobs_import_no_torch():
    """The static analysis's verdict for the data and analysis envs, checked by really importing."""
    code = (
        "import sys; sys.path.insert(0, 'src');"
        "import perturbot.config, perturbot.data.io, perturbot.data.download, perturbot.preprocessing, perturbot.slugs, perturbot.logs;"
        "import perturbot.cells, perturbot.tables, perturbot.statistics, perturbot.plotting, perturbot.cell_states, perturbot.provenance;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


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
    """(snakefile or rule, finding) pairs reported by `make lint` (CI's linting job:
    `snakemake --lint` on config.yaml and configs/paper.yaml)."""
    proc = make("lint")
    output = proc.stdout + proc.stderr
    findings = re.findall(r"^Lints for (.+?):\n((?:    \*.*\n|      .*\n)+)", output, re.M)
    lints = [(where, item) for where, body in findings for item in re.findall(r"^    \* (.+?):?$", body, re.M)]
    assert proc.returncode == 0 or lints, output[-6000:]  # it failed for another reason than lints
    return lints


def test_snakemake_lint_is_clean():
    assert not _lints()


@pytest.mark.skipif(shutil.which("conda") is None and shutil.which("mamba") is None, reason="no conda or mamba on PATH: --use-conda cannot be checked here")
def test_dry_run_with_use_conda(tmp_path):
    proc = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n", "--use-conda",
         "--configfile", str(REPO / "config.yaml")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
