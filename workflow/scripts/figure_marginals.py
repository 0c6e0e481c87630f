"""Rule figure_marginals: first holdout, up to four perturbations, the features that change most."""

from collections import defaultdict
from pathlib import Path

import anndata as ad

from perturbot.experiment import evaluation_target, model_input
from perturbot.logs import log_to_file
from perturbot.plotting import changing_features, marginals, save_figure

log_to_file(snakemake.log[0])
options = snakemake.params.figures
by_holdout = defaultdict(lambda: defaultdict(dict))
for path in map(Path, snakemake.input.predictions):
    holdout, model = path.parts[-3], path.parts[-2]
    pred = ad.read_h5ad(path)
    by_holdout[holdout][pred.obs["perturbation"].iloc[0]][model] = pred
holdout = sorted(by_holdout)[0]
data = ad.read_h5ad(Path(snakemake.input.data) / f"{holdout}.h5ad")
control = model_input(data)
rows = []
for perturbation in data.uns["perturbot"]["perturbations"][:4]:
    target = evaluation_target(data, perturbation)
    observed = ad.AnnData(target, var=data.var)
    features = options.get("marginal_features") or changing_features(
        control.X, target, list(data.var_names), options.get("n_marginals", 4)
    )
    predictions = {m: p for m, p in by_holdout[holdout][perturbation].items() if m != "identity"}
    rows.append({"name": perturbation, "control": control, "observed": observed, "predictions": predictions, "features": features})
title = f"{snakemake.wildcards.experiment} (holdout {holdout})"
save_figure(marginals(rows, title=title), snakemake.output.pdf)
