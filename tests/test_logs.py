"""A job's log says what the job read, how it was set, what it wrote and how long it took, and nothing
of the libraries' chatter (each figure's log once held ~55 fontTools lines and nothing else)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from helpers import REPO

JOB = textwrap.dedent(
    """
    import logging, sys
    from snakemake.iocontainers import Namedlist
    from types import SimpleNamespace
    from perturbot.logs import log_job

    out, log_file, fail = sys.argv[1], sys.argv[2], sys.argv[3] == "fail"
    job = SimpleNamespace(rule="figure_umap", log=[log_file], input=Namedlist(["cells.h5ad"]), output=Namedlist([out]),
                          wildcards=Namedlist(fromdict={"experiment": "demo"}),
                          params=Namedlist(fromdict={"perturbations": ["a", "b"], "code": "0123abcd"}))
    log_job(job)
    logging.getLogger("fontTools.subset").info("maxp pruned")  # what matplotlib's PDF backend says
    logging.getLogger("fontTools.subset").warning("a real problem")
    if fail:
        raise RuntimeError("boom")
    open(out, "w").write("x" * 2048)
    """
)


def run_job(tmp_path, fail: bool) -> str:
    log = tmp_path / "job.log"
    subprocess.run([sys.executable, "-c", JOB, str(tmp_path / "out.csv"), str(log), "fail" if fail else "ok"],
                   cwd=REPO, capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "src")})
    return log.read_text()


def test_a_job_log_names_inputs_settings_outputs_and_time_without_library_chatter(tmp_path):
    text = run_job(tmp_path, fail=False)
    lines = text.splitlines()
    assert "rule figure_umap (experiment=demo)" in lines[0]
    assert "reads cells.h5ad" in lines[1]
    assert "settings perturbations=['a', 'b']" in lines[2] and "0123abcd" not in text  # the code fingerprint is noise
    assert "maxp pruned" not in text and "a real problem" in text  # fontTools: warnings only
    assert f"wrote {tmp_path / 'out.csv'} (2 kB) in" in lines[-1] and lines[-1].endswith(" s")


def test_a_failed_job_log_ends_with_its_error_not_with_a_success_line(tmp_path):
    text = run_job(tmp_path, fail=True)
    assert "RuntimeError: boom" in text and "wrote" not in text
