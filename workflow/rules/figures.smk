from perturbot.data.toy2d import DATASETS as TOY_DATASETS
from perturbot.slugs import slugify

OT_KINDS = ("cellot", "w1ot")
#: Figures of one experiment beside the per-perturbation and per-OT-model ones.
EXPERIMENT_FIGURES = ("mmd_boxplot", "marginals")


def figure_targets(experiment):
    """Figures of one experiment built by default (per-perturbation names need its prepared data)."""
    targets = [f"results/{experiment}/figures/{name}.pdf" for name in EXPERIMENT_FIGURES]
    targets += [f"results/{experiment}/figures/umap_{p}.pdf" for p in figure_perturbations(experiment)]
    for label in ot_labels(experiment):
        targets.append(f"results/{experiment}/figures/clustergram_{label}.pdf")
        targets.append(f"results/{experiment}/figures/vector_field_{label}.pdf")
    if draws_iid_vs_holdout(experiment):
        targets.append(f"results/{experiment}/figures/iid_vs_holdout.pdf")
    return targets


def global_figure_targets():
    """Figures that span experiments (results/figures/), built by default."""
    targets = ["results/figures/job_resources.csv"]
    if "toy_maps" in config:
        targets.append("results/figures/toy_maps.pdf")
    if "toy_maps" in config or any(ot_labels(exp) for exp in experiments_to_run(config)):
        targets.append("results/figures/training_time.pdf")
    return targets


def figure_options(experiment):
    return config["experiments"][experiment]["figures"]


def model_kinds(experiment):
    """Model label -> registry name, so figures colour and test by what a model is."""
    return {label: s.model for label, s in SPECS[experiment].items()}


def ot_labels(experiment):
    return [label for label, s in SPECS[experiment].items() if s.model in OT_KINDS]


def draws_iid_vs_holdout(experiment):
    exp = config["experiments"][experiment]
    return exp.get("iid_companion", False) and exp["setting"] != "iid"


def figure_holdout(experiment):
    """The holdout drawn in single-holdout figures: figures.holdout, else the first."""
    chosen = figure_options(experiment).get("holdout")
    return slugify(chosen) if chosen else holdout_slugs(experiment)[0]


def figure_perturbations(experiment):
    """Slugs of the perturbations drawn one by one: figures.perturbations, else the first four."""
    info = data_info(experiment)
    chosen = figure_options(experiment).get("perturbations") or info["perturbations"][:4]
    unknown = sorted(set(chosen) - set(info["perturbations"]))
    if unknown:
        raise WorkflowError(f"experiments.{experiment}.figures.perturbations: unknown {', '.join(unknown)}")
    return [slugify(p) for p in chosen]


def holdout_predictions(experiment, labels, perturbations):
    holdout = figure_holdout(experiment)
    return [f"results/{experiment}/predictions/{holdout}/{m}/{p}.h5ad" for m in labels for p in perturbations]


def trained_model_dirs(experiment):
    """Every model directory an experiment trains (the autoencoder included)."""
    slugs = list(data_info(experiment)["slugs"])
    dirs = []
    for h in holdout_slugs(experiment):
        if uses_autoencoder(experiment):
            dirs.append(f"results/{experiment}/models/{h}/autoencoder")
        for label in SPECS[experiment]:
            for job in ["_joint"] if trains_jointly(experiment, label) else slugs:
                dirs.append(f"results/{experiment}/models/{h}/{label}/{job}")
    return dirs


def toy_settings():
    return config["toy_maps"]


def toy_map_dirs():
    s = toy_settings()
    return [f"results/toy_maps/{d}/{m}" for d in s["datasets"] for m in s["models"]]


def figure_report(path, caption, experiment="{experiment}", subcategory="Figures", **labels):
    return report(path, caption=f"../report/{caption}.rst", category=experiment, subcategory=subcategory, labels=labels or None)


rule figure_mmd_boxplot:
    """MMD, L2 and R² of means per model across perturbations or holdouts, with rank-sum stars."""
    input:
        "results/{experiment}/metrics.csv",
    output:
        pdf=figure_report("results/{experiment}/figures/mmd_boxplot.pdf", "mmd_boxplot", subcategory="Scores", figure="mmd_boxplot"),
        png="results/{experiment}/figures/mmd_boxplot.png",
    log:
        "results/{experiment}/logs/figures/mmd_boxplot.log",
    params:
        kinds=lambda wc: model_kinds(wc.experiment),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure_mmd_boxplot.py"


rule figure_iid_vs_holdout:
    """Each holdout's MMD under the i.i.d. companion model and the held-out model, paired."""
    input:
        "results/{experiment}/metrics.csv",
    output:
        pdf=figure_report("results/{experiment}/figures/iid_vs_holdout.pdf", "iid_vs_holdout", subcategory="Scores", figure="iid_vs_holdout"),
        png="results/{experiment}/figures/iid_vs_holdout.png",
    log:
        "results/{experiment}/logs/figures/iid_vs_holdout.log",
    params:
        kinds=lambda wc: model_kinds(wc.experiment),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure_iid_vs_holdout.py"


rule figure_marginals:
    """Marginal densities of selected features for control, observed and predicted cells."""
    input:
        data="results/{experiment}/data",
        predictions=lambda wc: holdout_predictions(wc.experiment, SPECS[wc.experiment], figure_perturbations(wc.experiment)),
    output:
        pdf=figure_report("results/{experiment}/figures/marginals.pdf", "marginals", subcategory="Distributions", figure="marginals"),
        png="results/{experiment}/figures/marginals.png",
    log:
        "results/{experiment}/logs/figures/marginals.log",
    params:
        figures=lambda wc: figure_options(wc.experiment),
        holdout=lambda wc: figure_holdout(wc.experiment),
        kinds=lambda wc: model_kinds(wc.experiment),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure_marginals.py"


rule figure_umap:
    """Joint UMAP of observed perturbed and every model's predicted cells for one perturbation."""
    input:
        data="results/{experiment}/data",
        predictions=lambda wc: holdout_predictions(wc.experiment, SPECS[wc.experiment], [wc.perturbation]),
    output:
        pdf=figure_report(
            "results/{experiment}/figures/umap_{perturbation}.pdf", "umap", subcategory="Joint UMAPs", figure="umap", perturbation="{perturbation}"
        ),
        png="results/{experiment}/figures/umap_{perturbation}.png",
    log:
        "results/{experiment}/logs/figures/umap_{perturbation}.log",
    params:
        figures=lambda wc: figure_options(wc.experiment),
        holdout=lambda wc: figure_holdout(wc.experiment),
        perturbation=lambda wc: data_info(wc.experiment)["slugs"][wc.perturbation],
        kinds=lambda wc: model_kinds(wc.experiment),
        seed=config["seed"],
    threads: 1
    conda:
        "../../envs/analysis.yaml"
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
    params:
        resolution=lambda wc: figure_options(wc.experiment)["leiden_resolution"],
        seed=config["seed"],
    threads: 1
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/cell_states.py"


rule figure_clustergram:
    """Mean transport cost of an OT model per perturbation and control cell state."""
    input:
        states=lambda wc: f"results/{wc.experiment}/cell_states/{figure_holdout(wc.experiment)}.csv",
        predictions=lambda wc: holdout_predictions(wc.experiment, [wc.model], data_info(wc.experiment)["slugs"]),
    output:
        pdf=figure_report(
            "results/{experiment}/figures/clustergram_{model}.pdf", "clustergram", subcategory="Transport cost", figure="clustergram", model="{model}"
        ),
        png="results/{experiment}/figures/clustergram_{model}.png",
        table="results/{experiment}/figures/clustergram_{model}.csv",
    log:
        "results/{experiment}/logs/figures/clustergram_{model}.log",
    params:
        kinds=lambda wc: model_kinds(wc.experiment),
        holdout=lambda wc: figure_holdout(wc.experiment),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure_clustergram.py"


rule figure_vector_field:
    """Mean response on a grid of the control cells' first two PCs, for an OT model and scGen."""
    input:
        data="results/{experiment}/data",
        predictions=lambda wc: holdout_predictions(
            wc.experiment,
            [wc.model] + [m for m, k in model_kinds(wc.experiment).items() if k == "scgen"],
            figure_perturbations(wc.experiment),
        ),
    output:
        pdf=figure_report(
            "results/{experiment}/figures/vector_field_{model}.pdf", "vector_field", subcategory="Vector fields", figure="vector_field", model="{model}"
        ),
        png="results/{experiment}/figures/vector_field_{model}.png",
    log:
        "results/{experiment}/logs/figures/vector_field_{model}.log",
    params:
        figures=lambda wc: figure_options(wc.experiment),
        holdout=lambda wc: figure_holdout(wc.experiment),
        kinds=lambda wc: model_kinds(wc.experiment),
        perturbations=lambda wc: [data_info(wc.experiment)["slugs"][p] for p in figure_perturbations(wc.experiment)],
    localrule: True
    conda:
        "../../envs/analysis.yaml"
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
        toy_dataset="|".join(TOY_DATASETS),
        toy_model="|".join(OT_KINDS),
    params:
        settings=lambda wc: toy_settings(),
        seed=config["seed"],
        device=config["device"],
    threads: 1
    resources:
        gpu=GPU_REQUEST,
        mem_mb=2000,
    conda:
        "../../envs/training.yaml"
    script:
        "../scripts/toy_map.py"


rule figure_toy_maps:
    """Source, target, mapped points and transport rays of each model on each 2-D data set."""
    input:
        lambda wc: [f"{d}/points.csv" for d in toy_map_dirs()],
    output:
        pdf=figure_report("results/figures/toy_maps.pdf", "toy_maps", experiment="Across experiments", figure="toy_maps"),
        png="results/figures/toy_maps.png",
    log:
        "results/figures/logs/toy_maps.log",
    params:
        seed=config["seed"],
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure_toy_maps.py"


def all_trained_models(wildcards):
    """model.json of every training job of every experiment to run, and of the toy maps."""
    files = [f"{d}/model.json" for exp in experiments_to_run(config) for d in trained_model_dirs(exp)]
    return files + ([f"{d}/model.json" for d in toy_map_dirs()] if "toy_maps" in config else [])


rule figure_training_time:
    """Training time of CellOT and W1-OT against the dimension they were trained in."""
    input:
        all_trained_models,
    output:
        pdf=figure_report("results/figures/training_time.pdf", "training_time", experiment="Across experiments", figure="training_time"),
        png="results/figures/training_time.png",
    log:
        "results/figures/logs/training_time.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
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
