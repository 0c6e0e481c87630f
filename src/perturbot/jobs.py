"""Which training jobs a model run has: one per perturbation, one for all of them, or one that fits each.

Part of the planning layer: the Snakefile decides the jobs from the models' tags
(:mod:`perturbot.models.declarations`) without importing any model, and the
training job (:func:`perturbot.experiment.train`) follows the same decision.
"""

from __future__ import annotations

from perturbot.config import ModelSpec
from perturbot.models.declarations import declaration

#: The training job of a run that learns every perturbation at once (the name of its model directory).
JOINT_JOB = "_joint"
#: The training job of a run whose perturbations are fitted one by one, in one job (a bundle of models).
EACH_JOB = "_each"
#: Jobs that fit every perturbation of a run.
RUN_JOBS = (JOINT_JOB, EACH_JOB)


#: ``joint_training: auto`` (the default) trains a run in one batched job when its experiment has more
#: perturbations than this (the schema's default of ``joint_training_threshold``); the papers' have at most 34.
JOINT_TRAINING_THRESHOLD = 50


def auto_joint(model: str, n_perturbations: int, joint_training: bool | str, threshold: int) -> bool:
    """Whether ``joint_training: auto`` switches this model's run to one batched job.

    It does for a model that can learn perturbations jointly (``multi_perturbation``) and
    would otherwise train one job each (not ``cheap_fit``: those already fit in one job,
    each on its own), when there are more than ``threshold`` perturbations.
    """
    cls = declaration(model)
    return (joint_training == "auto" and cls.multi_perturbation and not cls.joint_only and not cls.cheap_fit
            and n_perturbations > threshold)


def auto_joint_note(spec: ModelSpec, n_perturbations: int, threshold: int) -> str:
    """What a dry run and the training job's log say when :func:`auto_joint` switched a run."""
    return (f"joint_training: auto trains the {n_perturbations} perturbations of {spec.run!r} in one batched job "
            f"(more than joint_training_threshold: {threshold}); joint_training: false keeps one job each")


def training_jobs(
    spec: ModelSpec,
    perturbations: dict[str, str],
    joint_training: bool | str,
    threshold: int = JOINT_TRAINING_THRESHOLD,
) -> dict[str, list[str]]:
    """A model run's training jobs: job name -> the perturbations it learns (``perturbations``: slug -> name).

    One job, :data:`JOINT_JOB`, for every perturbation when the model always
    learns them together (``joint_only``), when the experiment asks for joint
    training (``true``) and the model can (``multi_perturbation``), or when it
    says ``auto`` and :func:`auto_joint` holds (more than ``threshold``
    perturbations, a model that would train one job each); else one job,
    :data:`EACH_JOB`, that fits every perturbation on its own when a fit takes
    seconds (``cheap_fit``: the job count of a screen does not grow with its
    perturbations); otherwise one job per perturbation, named by its slug. The
    workflow's jobs and :func:`train` both follow this, so the decision is made here only.
    """
    if joint_training not in (True, False, "auto"):
        raise ValueError(f"joint_training must be true, false or auto, not {joint_training!r}")
    cls = declaration(spec.model)
    if (cls.joint_only or (joint_training is True and cls.multi_perturbation)
            or auto_joint(spec.model, len(perturbations), joint_training, threshold)):
        return {JOINT_JOB: list(perturbations.values())}
    if cls.cheap_fit:
        return {EACH_JOB: list(perturbations.values())}
    return {slug: [name] for slug, name in perturbations.items()}


def job_of(jobs: dict[str, list[str]], slug: str) -> str:
    """The training job (of :func:`training_jobs`) whose model predicts the perturbation with this slug."""
    shared = [job for job in RUN_JOBS if job in jobs]
    return shared[0] if shared else slug
