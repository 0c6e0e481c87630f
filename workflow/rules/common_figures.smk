"""Input functions and targets of the figure rules (figures.smk)."""

from perturbot.config import is_neural_ot
from perturbot.models import available as available_models, tags as model_tags
from perturbot.slugs import slugify

#: The 2-D data sets the config asks toy maps for (the schema lists perturbot.data.toy2d's).
TOY_DATASETS = config.get("toy_maps", {}).get("datasets", [])
#: Registry names of the neural transport models (toy maps, training-time figure).
NEURAL_OT = [name for name in available_models() if is_neural_ot(name)]
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
    if "w1ot_group_size" in config:
        targets.append("results/figures/w1ot_group_size.pdf")
    if "toy_maps" in config or any(ot_labels(exp) for exp in experiments_to_run(config)):
        targets.append("results/figures/training_time.pdf")
    return targets


def figure_options(experiment):
    return config["experiments"][experiment]["figures"]


def model_kinds(experiment):
    """Model label (as in predictions and metrics) and run -> registry name and capability tags.

    Figures colour, order and test models by these tags (perturbot.models.tags), never by name.
    """
    specs = SPECS[experiment].values()
    return {**{s.label: model_tags(s.model) for s in specs}, **{s.run: model_tags(s.model) for s in specs}}


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
    return [run for run, s in SPECS[experiment].items() if s.model in NEURAL_OT]


def transport_figure_labels(experiment):
    """Runs with transport figures of their own (clustergram, vector field): every transport map."""
    return [run for run, s in SPECS[experiment].items() if model_tags(s.model)["is_ot"]]


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


def holdout_predictions(experiment, runs, perturbations):
    """Predicted-cell files of these runs and perturbations on the figures' holdout (what the scripts read)."""
    holdout = figure_holdout(experiment)
    return [f"results/{experiment}/predictions/{holdout}/{run}/{p}.h5ad" for run in runs for p in perturbations]


def prediction_dirs(experiment, runs):
    """The prediction jobs those files come from (what a figure rule waits for)."""
    return [f"results/{experiment}/predictions/{figure_holdout(experiment)}/{run}" for run in runs]


def vector_field_runs(experiment, run):
    """The runs a vector field draws: the transport run and those of figures.vector_field_compare."""
    compare = figure_options(experiment)["vector_field_compare"]
    return [run] + [r for r in figure_runs(experiment) if SPECS[experiment][r].model in compare and r != run]


def trained_model_dirs(experiment):
    """Every model directory an experiment trains (the autoencoder included)."""
    dirs = []
    for h in holdout_slugs(experiment):
        if uses_autoencoder(experiment):
            dirs.append(autoencoder_dir(experiment, h))
        for run in SPECS[experiment]:
            dirs += [f"results/{experiment}/models/{h}/{run}/{job}" for job in run_training_jobs(experiment, run)]
    return dirs


def job_environment_inputs(wildcards):
    """What provenance.json gathers, per rule: each training job's environment.json, and each prediction
    job's folder (its environment.json is inside)."""
    e = wildcards.experiment
    dirs = trained_model_dirs(e)
    return {
        "train_autoencoder": [f"{d}/environment.json" for d in dirs if d.startswith("results/autoencoders/")],
        "train": [f"{d}/environment.json" for d in dirs if not d.startswith("results/autoencoders/")],
        "predict": [f"results/{e}/predictions/{h}/{run}" for h in holdout_slugs(e) for run in SPECS[e]],
    }


def toy_settings():
    return config["toy_maps"]


def toy_map_dirs():
    s = toy_settings()
    return [f"results/toy_maps/{d}/{m}" for d in s["datasets"] for m in s["models"]]


def figure_report(path, caption, experiment="{experiment}", subcategory="Figures", **labels):
    return report(
        path, caption=f"../report/{caption}.rst", category=experiment, subcategory=subcategory, labels=labels or None
    )


def all_trained_models(wildcards):
    """model.json of every training job of every experiment to run, and of the toy maps."""
    files = [f"{d}/model.json" for exp in experiments_to_run(config) for d in trained_model_dirs(exp)]
    return files + ([f"{d}/model.json" for d in toy_map_dirs()] if "toy_maps" in config else [])
