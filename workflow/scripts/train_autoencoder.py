"""Rule train_autoencoder: a shared autoencoder, keyed by the data and settings it is trained on."""

import json
from pathlib import Path

from perturbot.experiment import train_autoencoder
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
run = snakemake.params.run
out_dir = Path(snakemake.output.model).parent
train_autoencoder(
    Path(snakemake.input.data) / f"{run['holdout']}.h5ad",
    out_dir,
    params=run["key"]["autoencoder"],
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    checkpoint=snakemake.params.checkpoint,
    threads=snakemake.threads,
)
# what this autoencoder was trained on, for people reading results/autoencoders/
(out_dir / "trained_on.json").write_text(json.dumps(run, indent=1, default=str))
