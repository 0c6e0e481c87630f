# perturbot: neural optimal transport for single-cell perturbation responses.
# The demo runs with `config.yaml`; `--configfile my.yaml` runs my.yaml alone.
import importlib.machinery
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.20")  # as pyproject.toml

# Jobs run the checkout's own package, never an installed copy: src/ goes first on
# sys.path here, and Snakemake hands this process's sys.path to every `script:` job
# (its preamble extends the job's sys.path with it before unpickling the params),
# so local, cluster and --use-conda jobs import perturbot from src/ without installing it.
SRC = os.path.join(workflow.basedir, "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
_installed = importlib.machinery.PathFinder.find_spec("perturbot", [p for p in sys.path if p != SRC])
_location = _installed and next(iter(_installed.submodule_search_locations or [os.path.dirname(_installed.origin)]))
if _location and os.path.realpath(_location) != os.path.realpath(os.path.join(SRC, "perturbot")):
    raise WorkflowError(
        f"A copy of perturbot is installed at {_location}; jobs could import it "
        f"instead of this workflow's {SRC}. Uninstall it (pip uninstall perturbot) or install it "
        "editable (pip install --no-deps -e .)."
    )

if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# For clusters without conda: an Apptainer image holding the three environments of envs/,
# built from the committed Dockerfile (`make containerize` writes it; docs/cluster.md). Used
# only with --software-deployment-method conda apptainer; without it, this line changes nothing.
containerized: os.path.join(workflow.basedir, "perturbot.sif")


include: "workflow/rules/common.smk"
include: "workflow/rules/common_figures.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/w1bench.smk"


# every script rule's jobs rerun when the code they run changes (perturbot.codehash)
add_code_params(workflow.rules)


rule all:
    default_target: True
    input:
        all_targets,
