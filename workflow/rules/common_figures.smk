"""Input functions and targets of the figure rules (figures.smk)."""

from perturbot.data.toy2d import DATASETS as TOY_DATASETS
from perturbot.slugs import slugify

OT_KINDS = ("cellot", "w1ot", "otfm")
#: Models with transport figures of their own (clustergram, vector field): the OT models and the closed-form Gaussian map.
TRANSPORT_FIGURE_KINDS = (*OT_KINDS, "gaussian_ot")
#: Figures of one experiment beside the per-perturbation and per-OT-model ones.
EXPERIMENT_FIGURES = ("mmd_boxplot", "marginals")


def figure_targets(experiment):
    """Figures of one experiment built by default (per-perturbation names need its prepared data)."""
    targets = [f"results/{experiment}/figures/{name}.pdf" for name in EXPERIMENT_FIGURES]
    targets += [f"results/{experiment}/figures/umap_{p}.pdf" for p in figure_perturbations(experiment)]
    for label in transport_figure_labels(experiment):
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
    """Model label (as in predictions and metrics) and run -> registry name, so figures colour and test by what a model is."""
    specs = SPECS[experiment].values()
    return {**{s.label: s.model for s in specs}, **{s.run: s.model for s in specs}}


def figure_runs(experiment):
    """One run per model label (the first seed): figures that overlay models draw each model once."""
    runs = {}
    for run, s in SPECS[experiment].items():
        runs.setdefault(s.label, run)
    return list(runs.values())


def run_label(experiment, run):
    """The label a run's predictions carry (obs['model'])."""
    return SPECS[experiment][run].label


def ot_labels(experiment):
    return [label for label, s in SPECS[experiment].items() if s.model in OT_KINDS]


def transport_figure_labels(experiment):
    return [label for label, s in SPECS[experiment].items() if s.model in TRANSPORT_FIGURE_KINDS]


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
            dirs.append(autoencoder_dir(experiment, h))
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


def all_trained_models(wildcards):
    """model.json of every training job of every experiment to run, and of the toy maps."""
    files = [f"{d}/model.json" for exp in experiments_to_run(config) for d in trained_model_dirs(exp)]
    return files + ([f"{d}/model.json" for d in toy_map_dirs()] if "toy_maps" in config else [])
