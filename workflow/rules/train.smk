rule train_autoencoder:
    """A shared autoencoder, trained once on the training split of the data it is keyed by.

    The key hashes everything that determines those data and the network (dataset,
    split settings, holdout, autoencoder settings, seed), so experiments and models
    that would train the same autoencoder use one.
    """
    input:
        data=lambda wc: f"results/{AUTOENCODERS[wc.key]['experiment']}/data",
    output:
        model="results/autoencoders/{key}/model.json",
        history="results/autoencoders/{key}/history.csv",
    log:
        "results/autoencoders/{key}/train.log",
    benchmark:
        "results/autoencoders/{key}/benchmark.tsv"
    params:
        run=lambda wc: AUTOENCODERS[wc.key],
        seed=config["seed"],
        device=config["device"],
        checkpoint="results/.checkpoints/autoencoders/{key}.pt",
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
