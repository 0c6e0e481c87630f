"""Rule train: one training job of a model run (every perturbation at once, or one); saves the model and its history."""

from pathlib import Path

from perturbot.experiment import train
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
model_dir = Path(snakemake.output.model).parent
data = Path(snakemake.input.data) / f"{snakemake.wildcards.holdout}.h5ad"
autoencoder = Path(snakemake.input.autoencoder).parent if snakemake.input.autoencoder else None
train(
    data,
    snakemake.params.spec,
    snakemake.wildcards.job,
    snakemake.params.perturbations,
    model_dir,
    autoencoder_dir=autoencoder,
    checkpoint=snakemake.params.checkpoint,
    threads=snakemake.threads,
)
