"""Rule prepare_data: one prepared .h5ad per holdout plus perturbations.json."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

import json
from pathlib import Path

from perturbot.atomic import atomic_path, remove_stale_outputs
from perturbot.data.catalog import read_list
from perturbot.data.io import DataError, load_dataset
from perturbot.logs import log_job
from perturbot.preprocessing import prepare
from perturbot.slugs import slug_map

# a DataError is shown, in the log and on stderr, as 'Data error in experiment ...: <message>'
log_job(snakemake, context=f"experiment {snakemake.wildcards.experiment!r}")
exp = snakemake.params.experiment
dataset = snakemake.params.dataset
if isinstance(dataset["source"], dict):
    # downloaded and verified by rule download_dataset: read the local files it recorded
    with open(snakemake.input[0]) as fh:
        files = json.load(fh)
    dataset = {**dataset, "source": files["path"], "features_file": files.get("features_file"),
               "holdouts_file": files.get("holdouts_file")}


def check_holdouts() -> None:
    """The holdouts planned must be those of the dataset's list, when it has one (see apply_holdouts_files)."""
    listed = dataset.get("holdouts_file")
    if not listed or exp["setting"] == "iid" or not Path(listed).exists():
        return
    wanted, planned = read_list(listed), sorted({run.holdout for run in snakemake.params.runs})
    if sorted(set(wanted)) != planned:
        raise DataError(
            f"{listed} lists the holdouts {', '.join(wanted)}, but this run was planned with "
            f"{', '.join(planned)} (experiments.{snakemake.wildcards.experiment}.holdouts), before the list "
            f"was available. Run the workflow again: it now plans one run per holdout of the list "
            f"(or set holdouts_file: null under datasets.{exp['dataset']} to keep your own holdouts)."
        )


remove_stale_outputs(snakemake.output[0])  # the .data.<pid>.tmp/ folder of a killed run
with atomic_path(snakemake.output[0]) as tmp:  # never a half-written data directory
    tmp.mkdir()
    check_holdouts()
    adata, perturbations = load_dataset(dataset, name=exp["dataset"])
    for run in snakemake.params.runs:
        prepared = prepare(adata, perturbations=perturbations, holdout=run.holdout, companion=run.companion,
                           **snakemake.params.preparation)
        prepared.write_h5ad(tmp / f"{run.slug}.h5ad")
    info = {"perturbations": perturbations, "slugs": slug_map(perturbations, "perturbation")}
    (tmp / "perturbations.json").write_text(json.dumps(info, indent=1))
