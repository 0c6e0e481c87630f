"""Rule predict: transport the test control cells and score the prediction."""

from pathlib import Path

from perturbot.experiment import predict_and_evaluate
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
predict_and_evaluate(
    Path(snakemake.input.data) / f"{snakemake.wildcards.holdout}.h5ad",
    Path(snakemake.input.model).parent,
    snakemake.params.spec,
    snakemake.params.perturbation,
    experiment=snakemake.wildcards.experiment,
    out_prediction=snakemake.output.prediction,
    out_metrics=snakemake.output.metrics,
    evaluation=snakemake.params.evaluation,
    threads=snakemake.threads,
)
