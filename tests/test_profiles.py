"""The Snakemake profiles: where each rule's jobs go, and in which software environment."""

from __future__ import annotations

import re

import yaml
from helpers import REPO

SLURM = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
DEFAULT = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
RULES = {
    m.group(1): m.group(2)
    for path in (REPO / "workflow" / "rules").glob("*.smk")
    for m in re.finditer(r"^(?:rule|checkpoint)\s+(\w+):\n((?:[ \t]+.*\n|\n)*)", path.read_text(), re.M)
}


def _partition(rule: str) -> str | None:
    return SLURM.get("set-resources", {}).get(rule, {}).get("slurm_partition", SLURM["default-resources"].get("slurm_partition"))


def test_rule_table_is_complete():
    assert {"prepare_data", "train", "train_autoencoder", "predict", "toy_map"} <= set(RULES)


def test_slurm_sends_only_training_to_the_gpu_partition():
    gpu_rules = {name for name, body in RULES.items() if re.search(r"^\s+gpu=", body, re.M)}
    assert gpu_rules >= {"train", "train_autoencoder", "toy_map"}, gpu_rules
    cpu, gpu = SLURM["default-resources"]["slurm_partition"], _partition("train")
    assert cpu and gpu and cpu != gpu
    submitted = {name for name, body in RULES.items() if not re.search(r"^\s+localrule:\s*True", body, re.M)}
    for rule in submitted:
        settings = SLURM.get("set-resources", {}).get(rule, {})
        if rule in gpu_rules:
            assert _partition(rule) == gpu and settings.get("gpu") == 1, (rule, settings)
        else:
            assert _partition(rule) == cpu and "gpu" not in settings, (rule, settings)


def test_slurm_profile_runs_jobs_in_the_conda_envs_and_the_workstation_one_in_the_running_python():
    assert SLURM["software-deployment-method"] == "conda"
    assert "software-deployment-method" not in DEFAULT and "use-conda" not in DEFAULT


def test_commands_in_readme_and_configs_give_the_slurm_profile_as_workflow_profile():
    """`--profile profiles/slurm` would keep profiles/default loaded on top (docs/cluster.md says why)."""
    for path in [REPO / "README.md", *sorted((REPO / "configs").glob("*.yaml")), REPO / "config.yaml"]:
        for line in path.read_text().splitlines():
            if re.search(r"--profile[ =]profiles/slurm", line):
                assert "--workflow-profile none" in line, f"{path.name}: {line.strip()}"


def test_rules_hold_threads_memory_and_run_time_and_profiles_do_not_restate_them():
    """Each rule says its threads, memory and run time once; a profile only overrides them for a site."""
    assert "set-threads" not in DEFAULT and "set-resources" not in DEFAULT
    for rule in ("prepare_data", "train", "train_autoencoder", "predict", "toy_map"):
        assert re.search(r"^\s+threads:\s*1\b", RULES[rule], re.M), rule
        assert re.search(r"^\s+mem_mb=", RULES[rule], re.M) and re.search(r"^\s+runtime=", RULES[rule], re.M), rule
    for rule, settings in SLURM["set-resources"].items():
        assert not {"mem_mb", "runtime"} & set(settings), f"profiles/slurm restates {rule}'s memory or run time"
