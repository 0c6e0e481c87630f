rule predict:
    """Transport the test control cells with a trained model and score the prediction."""
    input:
        data="results/{experiment}/data",
        model=model_dir,
    output:
        prediction="results/{experiment}/predictions/{holdout}/{model}/{perturbation}.h5ad",
        metrics="results/{experiment}/metrics/{holdout}/{model}/{perturbation}.csv",
    log:
        "results/{experiment}/logs/predict/{holdout}/{model}/{perturbation}.log",
    params:
        spec=spec,
        perturbation=lambda wc: data_info(wc.experiment)["slugs"][wc.perturbation],
        evaluation=lambda wc: config["experiments"][wc.experiment]["evaluation"],
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/training.yaml"
    script:
        "../scripts/predict.py"


rule aggregate_metrics:
    """The long-format metrics table of an experiment."""
    input:
        metric_files,
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
    """Package version, git commit, config hash and library versions of a run."""
    output:
        "results/{experiment}/provenance.json",
    log:
        "results/{experiment}/logs/provenance.log",
    params:
        config=config,
    localrule: True
    conda:
        "../../envs/analysis.yaml"
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
    params:
        test=lambda wc: config["experiments"][wc.experiment]["statistical_test"],
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/statistics.py"
