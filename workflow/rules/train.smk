rule train_autoencoder:
    """The shared autoencoder of an (experiment, holdout), trained once on its training split."""
    input:
        data="results/{experiment}/data",
    output:
        model="results/{experiment}/models/{holdout}/autoencoder/model.json",
        history="results/{experiment}/models/{holdout}/autoencoder/history.csv",
    log:
        "results/{experiment}/logs/train/{holdout}/autoencoder.log",
    benchmark:
        "results/{experiment}/models/{holdout}/autoencoder/benchmark.tsv"
    params:
        autoencoder=lambda wc: config["experiments"][wc.experiment]["autoencoder"],
        seed=config["seed"],
        device=config["device"],
        checkpoint=lambda wc: f"results/.checkpoints/{wc.experiment}/{wc.holdout}/autoencoder.pt",
    threads: 1
    resources:
        gpu=GPU_REQUEST,
        mem_mb=4000,
        runtime=240,
    conda:
        "../../envs/training.yaml"
    script:
        "../scripts/train_autoencoder.py"


rule train:
    """One model on one perturbation (one job per perturbation)."""
    input:
        data="results/{experiment}/data",
        autoencoder=autoencoder_input,
    output:
        model="results/{experiment}/models/{holdout}/{model}/{perturbation}/model.json",
        history="results/{experiment}/models/{holdout}/{model}/{perturbation}/history.csv",
    log:
        "results/{experiment}/logs/train/{holdout}/{model}/{perturbation}.log",
    benchmark:
        "results/{experiment}/models/{holdout}/{model}/{perturbation}/benchmark.tsv"
    params:
        spec=spec,
        perturbations=lambda wc: [data_info(wc.experiment)["slugs"][wc.perturbation]],
        checkpoint=lambda wc: f"results/.checkpoints/{wc.experiment}/{wc.holdout}/{wc.model}/{wc.perturbation}.pt",
    threads: 1
    resources:
        gpu=GPU_REQUEST,
        mem_mb=4000,
        runtime=240,
    conda:
        "../../envs/training.yaml"
    script:
        "../scripts/train.py"


rule train_joint:
    """One model on every perturbation at once (batched training; cae always)."""
    input:
        data="results/{experiment}/data",
        autoencoder=autoencoder_input,
    output:
        model="results/{experiment}/models/{holdout}/{model}/_joint/model.json",
        history="results/{experiment}/models/{holdout}/{model}/_joint/history.csv",
    log:
        "results/{experiment}/logs/train/{holdout}/{model}/_joint.log",
    benchmark:
        "results/{experiment}/models/{holdout}/{model}/_joint/benchmark.tsv"
    params:
        spec=spec,
        perturbations=lambda wc: list(data_info(wc.experiment)["slugs"].values()),
        checkpoint=lambda wc: f"results/.checkpoints/{wc.experiment}/{wc.holdout}/{wc.model}/_joint.pt",
    threads: 1
    resources:
        gpu=GPU_REQUEST,
        mem_mb=4000,
        runtime=240,
    conda:
        "../../envs/training.yaml"
    script:
        "../scripts/train.py"
