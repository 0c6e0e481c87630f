rule download_dataset:
    """Download, verify and extract a dataset once, however many experiments use it."""
    output:
        "resources/downloads/{dataset}.verified.json",
    log:
        "resources/downloads/logs/{dataset}.log",
    params:
        source=lambda wc: config["datasets"][wc.dataset]["source"],
    retries: 2
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/download_dataset.py"


checkpoint prepare_data:
    """Load, check, split and preprocess the data of every holdout of an experiment.

    One job per experiment, so that a bad dataset stops the run before any training.
    """
    input:
        dataset_input,
    output:
        directory("results/{experiment}/data"),
    log:
        "results/{experiment}/logs/prepare_data.log",
    params:
        dataset=lambda wc: dataset_of(config, wc.experiment),
        experiment=lambda wc: config["experiments"][wc.experiment],
        runs=lambda wc: holdout_runs(config, wc.experiment),
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/prepare_data.py"
