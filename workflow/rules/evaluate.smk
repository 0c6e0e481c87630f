rule predict:
    """Transport the test control cells with a trained model run and score the predictions, every perturbation in one job."""
    input:
        data="results/{experiment}/data",
        models=run_model_files,
    output:
        predictions=directory("results/{experiment}/predictions/{holdout}/{run}"),
        metrics=directory("results/{experiment}/metrics/{holdout}/{run}"),
    log:
        "results/{experiment}/logs/predict/{holdout}/{run}.log",
    conda:
        "../../envs/training.yaml"
    threads: 1
    resources:
        # the libraries, the prepared data and one model; scoring adds a fixed ~0.1 GB
        # (perturbot.metrics.BLOCK), whatever the numbers of predicted and observed cells
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    params:
        spec=spec,
        predictions=run_predictions,
        evaluation=lambda wc: config["experiments"][wc.experiment]["evaluation"],
    script:
        "../scripts/predict.py"


rule aggregate_metrics:
    """The long-format metrics table of an experiment."""
    input:
        metric_dirs,
    output:
        report(
            "results/{experiment}/metrics.csv",
            caption="../report/metrics.rst",
            category="{experiment}",
            subcategory="Metrics",
        ),
    log:
        "results/{experiment}/logs/aggregate_metrics.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/aggregate_metrics.py"


rule provenance:
    """Package version, git commit, config hash, the code of every rule of a run, and what its training and
    prediction jobs ran on (each job's environment.json, gathered per rule).

    It reruns when the code of any rule changes, as the jobs of those rules do.
    """
    input:
        unpack(job_environment_inputs),
    output:
        "results/{experiment}/provenance.json",
    log:
        "results/{experiment}/logs/provenance.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        config=config,
        code_by_rule=lambda wc: experiment_code(wc.experiment),
    script:
        "../scripts/provenance.py"


rule statistics:
    """Paired Wilcoxon signed-rank tests (or Mann-Whitney) between every pair of models, BH-adjusted."""
    input:
        "results/{experiment}/metrics.csv",
    output:
        report(
            "results/{experiment}/statistics.csv",
            caption="../report/statistics.rst",
            category="{experiment}",
            subcategory="Metrics",
        ),
    log:
        "results/{experiment}/logs/statistics.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        test=lambda wc: config["experiments"][wc.experiment]["statistical_test"],
    script:
        "../scripts/statistics.py"
