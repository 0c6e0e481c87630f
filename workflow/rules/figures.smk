rule figure_mmd_boxplot:
    """MMD, energy distance, L2 and R² of means per model across perturbations or holdouts, with the stars of statistics.csv."""
    input:
        metrics="results/{experiment}/metrics.csv",
        statistics="results/{experiment}/statistics.csv",
    output:
        pdf=figure_report(
            "results/{experiment}/figures/mmd_boxplot.pdf", "mmd_boxplot", subcategory="Scores", figure="mmd_boxplot"
        ),
        png="results/{experiment}/figures/mmd_boxplot.png",
    log:
        "results/{experiment}/logs/figures/mmd_boxplot.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        kinds=lambda wc: model_kinds(wc.experiment),
    script:
        "../scripts/figure_mmd_boxplot.py"


rule figure_iid_vs_holdout:
    """Each holdout's MMD and energy distance under the i.i.d. companion model and the held-out model, paired."""
    input:
        "results/{experiment}/metrics.csv",
    output:
        pdf=figure_report(
            "results/{experiment}/figures/iid_vs_holdout.pdf",
            "iid_vs_holdout",
            subcategory="Scores",
            figure="iid_vs_holdout",
        ),
        png="results/{experiment}/figures/iid_vs_holdout.png",
    log:
        "results/{experiment}/logs/figures/iid_vs_holdout.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        kinds=lambda wc: model_kinds(wc.experiment),
    script:
        "../scripts/figure_iid_vs_holdout.py"


rule figure_marginals:
    """Marginal densities of selected features for control, observed and predicted cells."""
    input:
        data="results/{experiment}/data",
        predictions=lambda wc: prediction_dirs(wc.experiment, figure_runs(wc.experiment)),
    output:
        pdf=figure_report(
            "results/{experiment}/figures/marginals.pdf", "marginals", subcategory="Distributions", figure="marginals"
        ),
        png="results/{experiment}/figures/marginals.png",
    log:
        "results/{experiment}/logs/figures/marginals.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        figures=lambda wc: figure_options(wc.experiment),
        holdout=lambda wc: figure_holdout(wc.experiment),
        kinds=lambda wc: model_kinds(wc.experiment),
        predictions=lambda wc: holdout_predictions(
            wc.experiment, figure_runs(wc.experiment), figure_perturbations(wc.experiment)
        ),
    script:
        "../scripts/figure_marginals.py"


rule umap_embeddings:
    """Joint UMAPs of control, observed and every model's predicted cells, one per drawn perturbation (a tool rule)."""
    input:
        data="results/{experiment}/data",
        predictions=lambda wc: prediction_dirs(wc.experiment, figure_runs(wc.experiment)),
    output:
        directory("results/{experiment}/umap"),
    log:
        "results/{experiment}/logs/umap_embeddings.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    params:
        holdout=lambda wc: figure_holdout(wc.experiment),
        perturbations=lambda wc: {
            p: {
                "name": data_info(wc.experiment)["slugs"][p],
                "predictions": holdout_predictions(wc.experiment, figure_runs(wc.experiment), [p]),
            }
            for p in figure_perturbations(wc.experiment)
        },
        kinds=lambda wc: model_kinds(wc.experiment),
        max_cells=lambda wc: figure_options(wc.experiment)["umap_max_cells"],
        seed=config["seed"],
    script:
        "../scripts/umap_embeddings.py"


rule figure_umap:
    """Draw the joint UMAP of one perturbation."""
    input:
        "results/{experiment}/umap",
    output:
        pdf=figure_report(
            "results/{experiment}/figures/umap_{perturbation}.pdf",
            "umap",
            subcategory="Joint UMAPs",
            figure="umap",
            perturbation="{perturbation}",
        ),
        png="results/{experiment}/figures/umap_{perturbation}.png",
    log:
        "results/{experiment}/logs/figures/umap_{perturbation}.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        embedding="results/{experiment}/umap/{perturbation}.h5ad",
        figures=lambda wc: figure_options(wc.experiment),
        holdout=lambda wc: figure_holdout(wc.experiment),
        modality=lambda wc: dataset_of(config, wc.experiment)["modality"],
        kinds=lambda wc: model_kinds(wc.experiment),
    script:
        "../scripts/figure_umap.py"


rule cell_states:
    """Leiden cell states of the test control cells of one holdout (the input of the clustergram)."""
    input:
        data="results/{experiment}/data",
    output:
        "results/{experiment}/cell_states/{holdout}.csv",
    log:
        "results/{experiment}/logs/cell_states/{holdout}.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    params:
        resolution=lambda wc: figure_options(wc.experiment)["leiden_resolution"],
        seed=config["seed"],
    script:
        "../scripts/cell_states.py"


rule figure_clustergram:
    """Mean transport cost of an OT model per perturbation and control cell state."""
    input:
        data="results/{experiment}/data",
        states=lambda wc: f"results/{wc.experiment}/cell_states/{figure_holdout(wc.experiment)}.csv",
        predictions=lambda wc: prediction_dirs(wc.experiment, [wc.run]),
    output:
        pdf=figure_report(
            "results/{experiment}/figures/clustergram_{run}.pdf",
            "clustergram",
            subcategory="Transport cost",
            figure="clustergram",
            run="{run}",
        ),
        png="results/{experiment}/figures/clustergram_{run}.png",
        table="results/{experiment}/figures/clustergram_{run}.csv",
    log:
        "results/{experiment}/logs/figures/clustergram_{run}.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        kinds=lambda wc: model_kinds(wc.experiment),
        holdout=lambda wc: figure_holdout(wc.experiment),
        label=lambda wc: run_label(wc.experiment, wc.run),
        predictions=lambda wc: holdout_predictions(wc.experiment, [wc.run], data_info(wc.experiment)["slugs"]),
    script:
        "../scripts/figure_clustergram.py"


rule figure_vector_field:
    """Mean response on a grid of the control cells' first two PCs, for an OT model and scGen."""
    input:
        data="results/{experiment}/data",
        predictions=lambda wc: prediction_dirs(wc.experiment, vector_field_runs(wc.experiment, wc.run)),
    output:
        pdf=figure_report(
            "results/{experiment}/figures/vector_field_{run}.pdf",
            "vector_field",
            subcategory="Vector fields",
            figure="vector_field",
            run="{run}",
        ),
        png="results/{experiment}/figures/vector_field_{run}.png",
    log:
        "results/{experiment}/logs/figures/vector_field_{run}.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        figures=lambda wc: figure_options(wc.experiment),
        holdout=lambda wc: figure_holdout(wc.experiment),
        kinds=lambda wc: model_kinds(wc.experiment),
        label=lambda wc: run_label(wc.experiment, wc.run),
        perturbations=lambda wc: [data_info(wc.experiment)["slugs"][p] for p in figure_perturbations(wc.experiment)],
        predictions=lambda wc: holdout_predictions(
            wc.experiment, vector_field_runs(wc.experiment, wc.run), figure_perturbations(wc.experiment)
        ),
    script:
        "../scripts/figure_vector_field.py"


rule toy_map:
    """Train one OT model on one 2-D data set and write its mapped points (small budget, from config toy_maps)."""
    output:
        points="results/toy_maps/{toy_dataset}/{toy_model}/points.csv",
        model="results/toy_maps/{toy_dataset}/{toy_model}/model.json",
        history="results/toy_maps/{toy_dataset}/{toy_model}/history.csv",
    log:
        "results/toy_maps/logs/{toy_dataset}/{toy_model}.log",
    benchmark:
        "results/toy_maps/{toy_dataset}/{toy_model}/benchmark.tsv"
    wildcard_constraints:
        toy_dataset="|".join(map(re.escape, TOY_DATASETS)) or "(?!)",
        toy_model="|".join(NEURAL_OT),
    conda:
        "../../envs/training.yaml"
    threads: 1
    resources:
        gpu=GPU_REQUEST,
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    params:
        settings=lambda wc: toy_settings(),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/toy_map.py"


rule figure_toy_maps:
    """Source, target, mapped points and transport rays of each model on each 2-D data set."""
    input:
        lambda wc: [f"{d}/points.csv" for d in toy_map_dirs()],
    output:
        pdf=figure_report(
            "results/figures/toy_maps.pdf", "toy_maps", experiment="Across experiments", figure="toy_maps"
        ),
        png="results/figures/toy_maps.png",
    log:
        "results/figures/logs/toy_maps.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        seed=config["seed"],
    script:
        "../scripts/figure_toy_maps.py"


rule figure_training_time:
    """Training time of CellOT and W1-OT against the dimension they were trained in."""
    input:
        all_trained_models,
    output:
        pdf=figure_report(
            "results/figures/training_time.pdf",
            "training_time",
            experiment="Across experiments",
            figure="training_time",
        ),
        png="results/figures/training_time.png",
    log:
        "results/figures/logs/training_time.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        models=NEURAL_OT,
    script:
        "../scripts/figure_training_time.py"


rule job_resources:
    """Wall time, CPU time and peak memory of every training job, from the benchmark files."""
    input:
        all_trained_models,
    output:
        report(
            "results/figures/job_resources.csv",
            caption="../report/job_resources.rst",
            category="Across experiments",
            subcategory="Figures",
            labels={"figure": "job_resources"},
        ),
    log:
        "results/figures/logs/job_resources.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/job_resources.py"


rule figure_index:
    """Every figure of an experiment, listed (its inputs are the figures, known once the data are prepared)."""
    input:
        lambda wc: figure_targets(wc.experiment),
    output:
        "results/{experiment}/figures/index.txt",
    log:
        "results/{experiment}/logs/figures/index.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "printf '%s\\n' {input:q} > {output:q} 2> {log:q}"
