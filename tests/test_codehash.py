"""Code as a rerun trigger: each script rule's param `code` fingerprints the code its jobs run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import REPO, small_features_config

from perturbot.codehash import code_fingerprint, file_digest, files_reached, model_modules

SCRIPTS = REPO / "workflow" / "scripts"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_reached_modules_follow_imports_in_functions_relative_imports_and_packages(tmp_path):
    src = _package(tmp_path / "src", {
        "perturbot/__init__.py": "",
        "perturbot/a.py": "def f():\n    from .sub import b\n    return b\n",
        "perturbot/sub/__init__.py": "",
        "perturbot/sub/b.py": "import numpy\nfrom perturbot import c\n",
        "perturbot/c.py": "X = 1\n",
        "perturbot/unused.py": "X = 2\n",
    })
    script = _package(tmp_path, {"script.py": "import os\nfrom perturbot.a import f\n"}) / "script.py"
    reached = files_reached(script, src=src)
    assert sorted(reached) == sorted([str(script), "perturbot", "perturbot.a", "perturbot.sub", "perturbot.sub.b", "perturbot.c"])


def test_digest_ignores_comments_docstrings_and_layout_but_not_code(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('"""Doc."""\n\ndef f(x):\n    """What f does."""\n    return x + 1\n')
    before = file_digest(path)
    path.write_text('"""Other doc."""\n# a comment\n\n\ndef f(x):  # noqa\n    """Said otherwise."""\n\n    return x + 1\n')
    file_digest.cache_clear()
    assert file_digest(path) == before
    path.write_text('"""Doc."""\n\ndef f(x):\n    return x + 2\n')
    file_digest.cache_clear()
    assert file_digest(path) != before


def test_a_training_job_s_code_is_its_model_s_not_the_others():
    reached = files_reached(SCRIPTS / "train.py", model_modules(["cellot"]))
    assert {"perturbot.models.cellot", "perturbot.experiment", "perturbot.training"} <= set(reached)
    assert not {"perturbot.models.w1ot", "perturbot.models.otfm"} & set(reached)
    script = str(SCRIPTS / "train.py")
    assert code_fingerprint(script, ("cellot",)) != code_fingerprint(script, ("w1ot",))
    # figures and tables do not run model code
    assert not any(name.startswith("perturbot.models.") for name in files_reached(SCRIPTS / "figure_mmd_boxplot.py"))


def _checkout_with_own_src(tmp_path: Path) -> Path:
    """The repository as links, but with its own copy of src/ (to edit) and of the Snakefile
    (whose directory is the src/ jobs import)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for entry in REPO.iterdir():
        if entry.name in {"src", "Snakefile"}:
            (shutil.copytree if entry.is_dir() else shutil.copy)(entry, repo / entry.name)
        elif entry.name not in {".git", ".venv", ".snakemake", "results", ".pytest_cache"}:
            (repo / entry.name).symlink_to(entry)
    return repo


@pytest.mark.slow
def test_editing_a_module_a_job_runs_reruns_it_and_provenance_names_the_code(bare_python, tmp_path):
    """provenance.json is made, then a module its job imports is edited: a dry run says the job
    will rerun because its params (the `code` param) changed."""
    repo = _checkout_with_own_src(tmp_path)
    (repo / "run.yaml").write_text(yaml.safe_dump(small_features_config(), sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)

    def snakemake(*args):
        return subprocess.run([str(bare_python), "-m", "snakemake", "--cores", "1", *args, "--configfile", "run.yaml"],
                              cwd=repo, capture_output=True, text=True, timeout=600, env=env)

    target = "results/toy_iid/provenance.json"
    proc = snakemake(target)
    assert proc.returncode == 0, proc.stderr[-4000:]
    code = json.loads((repo / target).read_text())["code"]
    assert set(code["train"]) == set(code["predict"]) == {"identity", "observed"}
    assert code["prepare_data"] and code["figure_mmd_boxplot"]

    # Snakemake 9.27's --list-changes params lists every output with recorded params, changed or
    # not (ParamsChange keeps the file of an empty change); the dry run's reasons are exact
    unchanged = snakemake("-n", target)
    assert unchanged.returncode == 0 and "Nothing to be done" in unchanged.stdout + unchanged.stderr
    module = repo / "src" / "perturbot" / "provenance.py"
    module.write_text(module.read_text() + "\nLIBRARIES = (*LIBRARIES, 'matplotlib')\n")
    changed = snakemake("-n", target)
    assert changed.returncode == 0, changed.stderr[-4000:]
    assert "Params have changed since last execution" in changed.stdout, changed.stdout[-3000:]
    assert "provenance" in changed.stdout
