"""Rule figure_marginals: one holdout, the chosen perturbations, their markers or most changed features."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from pathlib import Path

import anndata as ad

from perturbot.cells import evaluation_target, model_input
from perturbot.logs import log_job
from perturbot.plotting import marginal_features, marginals, save_figure

log_job(snakemake)
options = snakemake.params.figures
holdout = snakemake.params.holdout
data = ad.read_h5ad(Path(snakemake.input.data) / f"{holdout}.h5ad")
info = data.uns["perturbot"]
control = model_input(data)
predictions: dict[str, dict[str, ad.AnnData]] = {}
for path in snakemake.params.predictions:
    pred = ad.read_h5ad(path)
    # a prediction that is the control cells themselves (identity) is drawn already, as control
    if not snakemake.params.kinds[pred.obs["model"].iloc[0]]["copies_input"]:
        predictions.setdefault(pred.obs["perturbation"].iloc[0], {})[pred.obs["model"].iloc[0]] = pred
rows = []
for perturbation, by_model in predictions.items():
    target = evaluation_target(data, perturbation)
    features = marginal_features(
        info, perturbation, control.X, target, data.var_names, options["n_marginals"], options.get("marginal_features")
    )
    rows.append(
        {"name": perturbation, "control": control, "observed": ad.AnnData(target, var=data.var), "predictions": by_model, "features": features}
    )
value_label = "log-normalised expression" if info["recipe"]["modality"] != "features" else "feature value"
title = f"{snakemake.wildcards.experiment}, holdout {holdout}"
save_figure(marginals(rows, title=title, value_label=value_label), snakemake.output.pdf)
