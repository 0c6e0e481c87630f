"""Rule cell_states: Leiden cell states of the test control cells (the cells every model transports)."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

import anndata as ad

from perturbot.atomic import remove_stale_outputs, write_csv
from perturbot.cell_states import leiden_states
from perturbot.cells import model_input
from perturbot.logs import log_job

log_job(snakemake)
remove_stale_outputs(*snakemake.output)
data = ad.read_h5ad(Path(snakemake.input.data) / f"{snakemake.wildcards.holdout}.h5ad")
states = leiden_states(model_input(data), resolution=snakemake.params.resolution, seed=snakemake.params.seed)
write_csv(states.rename_axis("cell").to_frame(), snakemake.output[0])
