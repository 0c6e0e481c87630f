"""The static import analysis behind tests/test_envs.py, on a small made-up package."""

from __future__ import annotations

from pathlib import Path

from import_graph import ImportGraph

FILES = {
    "perturbot/__init__.py": "from importlib.metadata import version\n",
    "perturbot/a.py": (
        "from __future__ import annotations\n"
        "import numpy as np\n"
        "from perturbot import b\n"
        "def used(x: 'pd.DataFrame'):\n"
        "    import scipy.sparse\n"
        "    return b.helper()\n"
        "def unused():\n"
        "    import statsmodels\n"
    ),
    "perturbot/b.py": (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import torch\n"
        "try:\n"
        "    import fancy_optional\n"
        "except ImportError:\n"
        "    fancy_optional = None\n"
        "def helper():\n"
        "    import scanpy as sc\n"
        "    sc.tl.leiden(None, flavor='igraph')\n"
        "def other():\n"
        "    import matplotlib\n"
    ),
    "perturbot/registry.py": (
        "from importlib import import_module\n"
        "_R = {'m': 'perturbot.models_m:M'}\n"
        "def get(name):\n"
        "    module, cls = _R[name].split(':')\n"
        "    return getattr(import_module(module), cls)\n"
    ),
    "perturbot/models_m.py": "import safetensors\nclass M:\n    def fit(self):\n        import sklearn\n",
}


def _graph(tmp_path: Path) -> ImportGraph:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return ImportGraph(tmp_path)


def test_follows_top_level_imports_and_only_the_functions_a_script_reaches(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import pandas as pd\nfrom perturbot.a import used\nused(pd.DataFrame())\n")
    needs = _graph(tmp_path).needs_of_script(script)
    # numpy: a's top level; scipy: used(); scanpy and igraph: b.helper() via sc.tl.leiden
    assert set(needs) == {"pandas", "numpy", "scipy", "scanpy", "igraph"}
    assert needs["scipy"] == "perturbot.a.used" and needs["scanpy"] == "perturbot.b.helper"
    # not: statsmodels (unused()), matplotlib (b.other()), torch (TYPE_CHECKING), fancy_optional (try/except ImportError)


def test_registry_strings_reach_the_registered_classes(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("from perturbot import registry\nregistry.get('m')().fit()\n")
    assert set(_graph(tmp_path).needs_of_script(script)) == {"safetensors", "sklearn"}


def test_a_module_imported_for_unpickling_runs_only_its_top_level(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("x = 1\n")
    assert set(_graph(tmp_path).needs_of_script(script, also=("perturbot.a",))) == {"numpy"}
