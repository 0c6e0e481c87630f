"""The fault matrix of issue 23: a run killed, edited, out of disk or run twice at once ends right or says why.

Each case starts Snakemake in its own process group, as a user's shell would, and
injects its fault at a known moment through a ``sitecustomize`` module that lives
here, not in the package: with ``PERTURBOT_TEST_FAULT=<path fragment>|<what>|<n>``
every process of the run (Snakemake and its jobs) wraps ``perturbot.atomic.atomic_path``,
and the ``n``-th write of a path containing the fragment, once its temporary is
written and before it takes the output's name, does ``what``: ``kill`` (SIGKILL to
the whole process group: a node failure, ``kill -9 -PGID``), ``enospc`` (the write
fails as on a full disk) or ``wait:<file>`` (holds the job until the file exists).

After the fault the run is rerun as a user would (``--unlock``, then
``--rerun-incomplete``). It must end with metrics identical to the uninterrupted
reference run (one for the module), or stop with a clear message; and nothing
half-written may remain in ``results/``.

Cases that fault in training or prediction start from a copy of the reference run
with those stages' outputs removed (a run that got that far), so that the matrix
does not prepare and train the same data six times.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, SNAKEMAKE, run_workflow, small_features_config

from perturbot.atomic import is_temporary

pytestmark = pytest.mark.slow

EXPERIMENT = "results/toy_iid"
METRICS = f"{EXPERIMENT}/metrics.csv"
CELLOT = {"n_iters": 100, "checkpoint_every": 20, "eval_every": 20, "hidden_units": [16, 16], "batch_size": 64,
          "val_size": 20}
#: the stages after training, and after data preparation (what a case that faults there reruns)
PREDICTED = ("predictions", "metrics", "metrics.csv")
TRAINED = ("models", *PREDICTED)

HOOK = '''
"""Test-only fault injection (tests/test_faults.py): wraps perturbot.atomic.atomic_path in every process."""
import os

_FAULT = os.environ.get("PERTURBOT_TEST_FAULT")
if _FAULT:
    import contextlib
    import errno
    import signal
    import time

    import perturbot.atomic as _atomic

    _where, _what, _nth = _FAULT.split("|")
    _real, _seen = _atomic.atomic_path, [0]

    @contextlib.contextmanager
    def atomic_path(path):
        hit = _where in str(path)
        if hit:
            _seen[0] += 1
        with _real(path) as tmp:
            yield tmp
            if not hit or _seen[0] != int(_nth):
                return
            if _what == "kill":  # the temporary written, not yet in place: the worst moment to die
                os.killpg(os.getpgrp(), signal.SIGKILL)
            if _what == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            if _what.startswith("wait:"):
                while not os.path.exists(_what[5:]):
                    time.sleep(0.05)

    _atomic.atomic_path = atomic_path
'''


def _config(**cellot) -> dict:
    config = small_features_config(models=["cellot"], model_params={"cellot": {**CELLOT, **cellot}})
    config["datasets"]["toy"]["synthetic"]["perturbations"] = 1
    return config


def _write_config(workdir: Path, config: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "test_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _start(workdir: Path, config: dict, fault: str | None = None, hooks: Path | None = None) -> subprocess.Popen:
    """Snakemake towards the metrics in its own process group; ``fault``: PERTURBOT_TEST_FAULT."""
    path = _write_config(workdir, config)
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", METRICS, "--configfile", str(path)]  # last: --configfile takes every later word
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    if fault is not None:
        env["PERTURBOT_TEST_FAULT"] = fault
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hooks), env.get("PYTHONPATH")]))
    log = (workdir / "snakemake.log").open("a")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(workdir: Path) -> str:
    return (workdir / "snakemake.log").read_text()[-4000:]


def _rerun(workdir: Path, config: dict) -> None:
    """What a user does after a killed run: remove the stale lock, run again."""
    run_workflow(workdir, config, "--unlock")
    run_workflow(workdir, config, "--cores", "1", "--rerun-incomplete", METRICS)


def _half_written(workdir: Path) -> list[Path]:
    """Temporaries of atomic writes anywhere under results/ (checkpoints included)."""
    return [p for p in (workdir / "results").rglob("*") if is_temporary(p)]


def _copy_of_reference(reference: Path, workdir: Path, remove: tuple[str, ...]) -> None:
    """The reference run's directory (Snakemake's records included) without the outputs of ``remove``."""
    shutil.copytree(reference, workdir, symlinks=True)
    (workdir / "snakemake.log").write_text("")
    for name in remove:
        path = workdir / EXPERIMENT / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _assert_same_metrics(workdir: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(workdir / METRICS), pd.read_csv(reference / METRICS))


@pytest.fixture(scope="module")
def hooks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hooks")
    (folder / "sitecustomize.py").write_text(textwrap.dedent(HOOK))
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run, the answer every case must reach."""
    workdir = tmp_path_factory.mktemp("faults") / "reference"
    proc = _start(workdir, _config())
    assert _finish(proc) == 0, _tail(workdir)
    assert not _half_written(workdir)
    return workdir


def _killed(workdir: Path, config: dict, fault: str, hooks: Path, metrics: bool = False) -> None:
    """A run that dies (with Snakemake) at the fault; what it leaves looks unfinished (``metrics``: the
    previous run's metrics table stays until the rerun replaces it)."""
    proc = _start(workdir, config, fault, hooks)
    assert _finish(proc) == -signal.SIGKILL, _tail(workdir)
    assert (workdir / METRICS).exists() == metrics
    assert _half_written(workdir), "the fault did not hit a write in progress"


CASES = ["kill_prepare_data", "kill_training", "kill_prediction", "edited_config", "disk_full", "two_runs"]


@pytest.mark.parametrize("case", CASES)
def test_fault_then_rerun(case, reference, hooks, tmp_path):
    workdir = tmp_path / case
    config = _config()
    if case == "kill_prepare_data":
        # the data directory written to its temporary, not yet renamed
        _killed(workdir, config, f"{EXPERIMENT}/data|kill|1", hooks)
        assert not (workdir / EXPERIMENT / "data").exists()
        _rerun(workdir, config)
    elif case == "kill_training":
        # the second checkpoint half-written: the rerun resumes from the first
        _copy_of_reference(reference, workdir, TRAINED)
        _killed(workdir, config, ".checkpoints/|kill|2", hooks)
        assert not list((workdir / EXPERIMENT).rglob("model.json"))
        _rerun(workdir, config)
        log = next((workdir / EXPERIMENT / "logs/train").rglob("*.log")).read_text()
        assert "resuming from checkpoint" in log
    elif case == "kill_prediction":
        _copy_of_reference(reference, workdir, PREDICTED)
        _killed(workdir, config, "predictions/|kill|1", hooks)
        _rerun(workdir, config)
    elif case == "edited_config":
        # a finished run whose model setting is edited trains again (the kill at its checkpoint shows it)
        _copy_of_reference(reference, workdir, ())
        edited = _config(lr=1e-3)
        # killed under lr 1e-3 with a checkpoint on disk, then the config is edited back to the reference's
        _killed(workdir, edited, ".checkpoints/|kill|2", hooks, metrics=True)
        assert not list((workdir / EXPERIMENT).rglob("model.json"))
        _rerun(workdir, config)
        log = next((workdir / EXPERIMENT / "logs/train").rglob("*.log")).read_text()
        assert "belongs to another run (lr: 0.001 -> 0.0001); starting afresh" in log
    elif case == "disk_full":
        _copy_of_reference(reference, workdir, PREDICTED)
        proc = _start(workdir, config, "predictions/|enospc|1", hooks)
        assert _finish(proc) != 0
        log = (workdir / EXPERIMENT / "logs/predict/all/cellot.log").read_text()
        assert "No space left on device" in log, log[-3000:]
        assert not _half_written(workdir)
        assert not list((workdir / EXPERIMENT).glob("predictions/*/*/*")), "a failed write left an output"
        run_workflow(workdir, config, "--cores", "1", METRICS)  # space freed: the same command again
    elif case == "two_runs":
        # the first run holds its prediction job; a second one on the same directory must refuse to start
        _copy_of_reference(reference, workdir, PREDICTED)
        release = tmp_path / "release"
        first = _start(workdir, config, f"predictions/|wait:{release}|1", hooks)
        try:
            deadline = time.monotonic() + 300
            while not list((workdir / EXPERIMENT / "predictions").rglob(".*.tmp*")):
                assert first.poll() is None and time.monotonic() < deadline, _tail(workdir)
                time.sleep(0.1)
            # Snakemake sees the running job's outputs first and calls them incomplete; told to rerun them
            # (its own advice), it meets the first run's lock: either way the second run touches nothing
            second = run_workflow(workdir, config, "--cores", "1", METRICS, check=False)
            assert second.returncode != 0
            assert "IncompleteFilesException" in second.stderr or "cannot be locked" in second.stderr, second.stderr
            second = run_workflow(workdir, config, "--cores", "1", "--rerun-incomplete", METRICS, check=False)
            assert second.returncode != 0
            assert "Directory cannot be locked" in second.stderr, second.stderr[-3000:]
            assert first.poll() is None
        finally:
            release.touch()
        assert _finish(first) == 0, _tail(workdir)
    else:
        raise AssertionError(case)
    _assert_same_metrics(workdir, reference)
    assert not _half_written(workdir), _half_written(workdir)
    incomplete = workdir / ".snakemake" / "incomplete"
    assert not incomplete.exists() or not any(incomplete.iterdir()), "Snakemake still has outputs marked incomplete"
