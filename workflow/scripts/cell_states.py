"""Rule cell_states: Leiden cell states of the test control cells (the cells every model transports)."""

from pathlib import Path

import anndata as ad

from perturbot.cell_states import leiden_states
from perturbot.cells import model_input
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
data = ad.read_h5ad(Path(snakemake.input.data) / f"{snakemake.wildcards.holdout}.h5ad")
states = leiden_states(model_input(data), resolution=snakemake.params.resolution, seed=snakemake.params.seed)
states.rename_axis("cell").to_frame().to_csv(snakemake.output[0])
