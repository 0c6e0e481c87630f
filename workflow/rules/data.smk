include: "common_data.smk"


rule download_archive:
    """Download one archive and check its sha256, once, however many datasets come from it.

    The output is a small record, not the archive, so that an archive placed by hand
    is used as it is and a change to this rule never deletes a 2 GB download.
    """
    output:
        "resources/downloads/{archive}.fetched.json",
    log:
        "resources/downloads/logs/{archive}.log",
    wildcard_constraints:
        archive="|".join(map(re.escape, ARCHIVES)) if ARCHIVES else "^$",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        source=lambda wc: config["datasets"][ARCHIVES[wc.archive]]["source"],
        dataset=lambda wc: ARCHIVES[wc.archive],
    script:
        "../scripts/download_archive.py"


rule download_dataset:
    """Take a dataset's file (and its feature or sample list) out of its verified archive."""
    input:
        lambda wc: f"resources/downloads/{archive_file(wc.dataset)}.fetched.json",
    output:
        "resources/downloads/{dataset}.verified.json",
    log:
        "resources/downloads/logs/{dataset}.log",
    wildcard_constraints:
        dataset="|".join(map(re.escape, downloaded_datasets())) or "^$",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        dataset=lambda wc: config["datasets"][wc.dataset],
        member_hint=lambda wc: member_hint(wc.dataset),
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
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        # a whole dataset, with its raw counts, in memory
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=120,
    params:
        dataset=lambda wc: dataset_of(config, wc.experiment),
        experiment=lambda wc: config["experiments"][wc.experiment],
        runs=lambda wc: holdout_runs(config, wc.experiment),
        preparation=lambda wc: preparation(config, wc.experiment),
    script:
        "../scripts/prepare_data.py"
