"""Rule train_autoencoder: the shared autoencoder of an (experiment, holdout)."""

from pathlib import Path

from perturbot.experiment import train_autoencoder
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
train_autoencoder(
    Path(snakemake.input.data) / f"{snakemake.wildcards.holdout}.h5ad",
    Path(snakemake.output.model).parent,
    params=snakemake.params.autoencoder,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    checkpoint=snakemake.params.checkpoint,
    threads=snakemake.threads,
)
