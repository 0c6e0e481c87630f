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
        environment="results/autoencoders/{key}/environment.json",
    log:
        "results/autoencoders/{key}/train.log",
    benchmark:
        "results/autoencoders/{key}/benchmark.tsv"
    conda:
        "../../envs/training.yaml"
    threads: 1
    resources:
        gpu=GPU_REQUEST,
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=480,
    params:
        run=lambda wc: AUTOENCODERS[wc.key],
        seed=config["seed"],
        device=config["device"],
        checkpoint="results/.checkpoints/autoencoders/{key}.pt",
    script:
        "../scripts/train_autoencoder.py"


rule train:
    """One training job of a model run: every perturbation at once (job `_joint`), every one on its own in one
    job (`_each`, models whose fit takes seconds), or one (job = its slug).

    Which jobs a run has is decided by perturbot.jobs.training_jobs alone.
    """
    input:
        data="results/{experiment}/data",
        autoencoder=autoencoder_input,
    output:
        model="results/{experiment}/models/{holdout}/{run}/{job}/model.json",
        history="results/{experiment}/models/{holdout}/{run}/{job}/history.csv",
        environment="results/{experiment}/models/{holdout}/{run}/{job}/environment.json",
    log:
        "results/{experiment}/logs/train/{holdout}/{run}/{job}.log",
    benchmark:
        "results/{experiment}/models/{holdout}/{run}/{job}/benchmark.tsv"
    conda:
        "../../envs/training.yaml"
    threads: 1
    resources:
        gpu=GPU_REQUEST,
        # a joint or _each job holds every perturbation's cells (and networks) at once
        mem_mb=lambda wc, attempt: (16000 if wc.job in RUN_JOBS else 8000) * attempt,
        runtime=lambda wc: 720 if wc.job in RUN_JOBS else 480,
    params:
        spec=spec,
        perturbations=lambda wc: run_training_jobs(wc.experiment, wc.run)[wc.job],
        checkpoint=lambda wc: f"results/.checkpoints/{wc.experiment}/{wc.holdout}/{wc.run}/{wc.job}.pt",
    script:
        "../scripts/train.py"
