"""The workflow on a real one-node SLURM cluster through profiles/slurm.

The cluster runs on 127.0.0.1 from Debian's packages, with one fake GPU (a
generic resource backed by /dev/null). Setting it up installs system packages
and writes /etc/slurm, so the test only runs where that is wanted: in CI
(CI=true) or with PERTURBOT_TEST_SLURM=1, as root on a Debian-like system.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, run_workflow, small_features_config

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ENABLED = os.environ.get("CI") == "true" or os.environ.get("PERTURBOT_TEST_SLURM") == "1"
if not ENABLED:
    pytest.skip(
        "SLURM test runs in CI only (CI=true) or with PERTURBOT_TEST_SLURM=1: "
        "it installs slurm and munge with apt-get and writes /etc/slurm",
        allow_module_level=True,
    )

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged"]
SLURM_ETC = Path("/etc/slurm")
MUNGE_RUN = Path("/run/munge")
# MinJobAge keeps finished jobs visible to squeue (status checks) and scontrol
# (the assertions) for 30 minutes: longer than the whole run on a loaded machine,
# and more than 3x the first status-check delay.
STATUS_DELAY_S = 2
SLURM_CONF = """\
ClusterName=perturbot
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=1800
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 RealMemory=64000 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
"""
GRES_CONF = "NodeName=localhost Name=gpu File=/dev/null\n"


def _install() -> None:
    if all(shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") for b in BINARIES):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        check=True, env=env, capture_output=True, timeout=600,
    )


def _write_config(state: Path) -> dict[Path, bytes | None]:
    """Write slurm.conf and gres.conf (slurmstepd drops SLURM_CONF, so /etc/slurm it is); return what was there."""
    SLURM_ETC.mkdir(parents=True, exist_ok=True)
    files = {SLURM_ETC / "slurm.conf": SLURM_CONF.format(state=state), SLURM_ETC / "gres.conf": GRES_CONF}
    previous = {path: (path.read_bytes() if path.exists() else None) for path in files}
    for path, text in files.items():
        path.write_text(text)
    return previous


def _restore(previous: dict[Path, bytes | None]) -> None:
    for path, content in previous.items():
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(content)


def _start(cmd: list[str], log: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, **kwargs)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_idle_node(daemons: list[subprocess.Popen], logs: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p.args[0] for p in daemons if p.poll() is not None]
        if dead:
            break
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip()
        if out == "idle":
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
    raise RuntimeError(f"SLURM node not idle after {timeout}s (exited: {dead}):\n{tails}")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """munged, slurmctld and slurmd in the foreground, so that each is stopped by its PID."""
    if os.geteuid() != 0:
        pytest.fail("the SLURM test needs root (apt-get, /etc/slurm, /run/munge)")
    _install()
    state = tmp_path_factory.mktemp("slurm")
    for sub in ("ctld", "d"):
        (state / sub).mkdir()
    previous = _write_config(state)
    MUNGE_RUN.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_RUN, "munge", "munge")
    daemons: list[subprocess.Popen] = []
    logs = [state / "munged.out", MUNGE_RUN / "test.log", state / "slurmctld.log", state / "slurmd.log"]
    try:
        daemons.append(
            _start(
                ["/usr/sbin/munged", "-F", "--force", f"--log-file={MUNGE_RUN}/test.log",
                 f"--pid-file={MUNGE_RUN}/test.pid", f"--seed-file={MUNGE_RUN}/test.seed"],
                logs[0], user="munge", group="munge",
            )
        )
        daemons.append(_start(["/usr/sbin/slurmctld", "-D", "-i"], state / "slurmctld.out"))
        daemons.append(_start(["/usr/sbin/slurmd", "-D", "-N", "localhost"], state / "slurmd.out"))
        _wait_for_idle_node(daemons, [*logs, state / "slurmctld.out", state / "slurmd.out"])
        yield state
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True)
        for proc in reversed(daemons):
            _stop(proc)
        for name in ("test.log", "test.pid", "test.seed"):
            (MUNGE_RUN / name).unlink(missing_ok=True)
        _restore(previous)


def _slurm_jobs() -> list[dict[str, str]]:
    """Every job slurmctld still remembers (MinJobAge), as key=value fields."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        jobs.append(fields)
    return jobs


def _profile(tmp_path: Path) -> Path:
    """The shipped SLURM profile; without conda on PATH, minus its conda deployment (jobs use this Python)."""
    shipped = REPO / "profiles" / "slurm"
    if shutil.which("conda") or shutil.which("mamba"):
        return shipped
    profile = tmp_path / "profile"
    profile.mkdir()
    text = (shipped / "config.yaml").read_text()
    assert "software-deployment-method: conda\n" in text
    (profile / "config.yaml").write_text(text.replace("software-deployment-method: conda\n", ""))
    return profile


def test_workflow_runs_on_slurm_with_gpu_requests(slurm_cluster, tmp_path, monkeypatch):
    # the job scripts call the Python of this test run
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    config = small_features_config(
        models=["identity", "cellot"],
        model_params={"cellot": {"n_iters": 20, "eval_every": 10, "hidden_units": [8, 8], "batch_size": 32, "val_size": 20}},
    )
    config["datasets"]["toy"]["synthetic"]["perturbations"] = 1
    # the shipped profile (with its conda envs where conda exists), plus what a cluster without slurmdbd needs
    run_workflow(
        tmp_path,
        config,
        "--workflow-profile", str(_profile(tmp_path)),
        "--slurm-status-command", "squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks", str(STATUS_DELAY_S),
        "results/toy_iid/metrics.csv",  # figures are local rules: nothing more for SLURM to do
        timeout=600,
    )

    metrics = pd.read_csv(tmp_path / "results/toy_iid/metrics.csv")
    assert set(metrics.model) == {"identity", "cellot"}
    assert metrics.perturbation.nunique() == 1
    assert metrics.value.notna().all()
    for model in ("identity", "cellot"):
        assert {"mmd", "l2_means", "r2_means", "gt_rmse"} <= set(metrics[metrics.model == model].metric)

    jobs = {job["Comment"]: job for job in _slurm_jobs() if job.get("WorkDir") == str(tmp_path)}
    rules = sorted(comment.split("_wildcards")[0] for comment in jobs)
    # local rules (here the metrics table) stay on the submit host
    assert rules == ["rule_predict", "rule_predict", "rule_prepare_data", "rule_train", "rule_train"], rules
    for comment, job in jobs.items():
        assert job["JobState"] == "COMPLETED", (comment, job["JobState"])
        wants_gpu = "gres:gpu:1" in job.get("TresPerJob", "")
        assert wants_gpu == comment.startswith("rule_train_"), (comment, job.get("TresPerJob"))
        # only training jobs queue for the GPU partition
        assert job["Partition"] == ("gpu" if wants_gpu else "cpu"), (comment, job["Partition"])
        if wants_gpu:
            assert job["CpusPerTres"] == "gres:gpu:2"  # cpus_per_gpu of the profile
