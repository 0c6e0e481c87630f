"""Rule toy_map: fit one OT model on one 2-D data set, save it and its mapped points."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

import numpy as np
import pandas as pd

from perturbot import models
from perturbot.atomic import remove_stale_outputs, write_csv
from perturbot.data.toy2d import make_2d
from perturbot.logs import log_job
from perturbot.training import set_threads

log_job(snakemake)
remove_stale_outputs(*snakemake.output, within=Path(snakemake.output.points).parent)
set_threads(snakemake.threads)
settings = snakemake.params.settings
name = snakemake.wildcards.toy_model
source, target = make_2d(snakemake.wildcards.toy_dataset, n=settings["n_cells"], seed=snakemake.params.seed)
params = {**settings["model_params"].get(name, {}), "seed": snakemake.params.seed, "device": snakemake.params.device}
model = models.get(name)(**params).fit(source, target)
mapped = model.transport(source)
out = Path(snakemake.output.points).parent
model.save(out)
write_csv(model.history_, snakemake.output.history, index=False)
nan = np.full(len(target), np.nan)
points = pd.concat(
    [
        pd.DataFrame({"set": "source", "x": source[:, 0], "y": source[:, 1], "tx": mapped[:, 0], "ty": mapped[:, 1]}),
        pd.DataFrame({"set": "target", "x": target[:, 0], "y": target[:, 1], "tx": nan, "ty": nan}),
    ]
)
write_csv(points, snakemake.output.points, index=False)
