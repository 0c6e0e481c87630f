"""A job's errors reach its log file: the project's clear errors as one line, anything else with its traceback."""

import ast
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
from helpers import REPO

from perturbot.config import ConfigError
from perturbot.data.download import DownloadError
from perturbot.data.io import DataError
from perturbot.errors import ClearError, describe
from perturbot.params import ParameterError
from perturbot.slugs import SlugError

JOB = """
import logging, sys
sys.path.insert(0, {src!r})
from perturbot.data.io import DataError
from perturbot.logs import log_to_file

log_to_file(sys.argv[1], context="experiment 'demo'")
logging.getLogger("perturbot").info("reading the data")
if sys.argv[2] == "data":
    raise DataError("condition_key 'drug' is not an obs column")
raise ValueError("operands could not be broadcast together")  # what a library's bug looks like
"""


def run_job(tmp_path, kind):
    script = tmp_path / "job.py"
    script.write_text(JOB.format(src=str(REPO / "src")))
    log = tmp_path / "logs" / "job.log"
    proc = subprocess.run([sys.executable, str(script), str(log), kind], capture_output=True, text=True, timeout=60)
    return proc, log.read_text()


def test_a_clear_error_goes_to_the_log_and_stderr_as_one_line(tmp_path):
    proc, log = run_job(tmp_path, "data")
    assert proc.returncode == 1
    line = "Data error in experiment 'demo': condition_key 'drug' is not an obs column"
    assert line in log and line in proc.stderr
    assert "reading the data" in log  # the records before it are kept
    assert "Traceback" not in log and "Traceback" not in proc.stderr


def test_any_other_error_keeps_its_traceback_and_is_not_called_a_data_error(tmp_path):
    proc, log = run_job(tmp_path, "library")
    assert proc.returncode == 1
    for text in (log, proc.stderr):
        assert "Traceback" in text and "ValueError: operands could not be broadcast together" in text
        assert "job failed in experiment 'demo'" in text and "Data error" not in text


def test_the_project_errors_are_clear_and_say_what_they_are():
    assert describe(DataError("x"), "experiment 'e'") == "Data error in experiment 'e': x"
    assert describe(DownloadError("y")) == "Download error: y"
    assert describe(ConfigError("z")) == "Configuration error: z"
    assert describe(SlugError("w")) == "Name error: w"
    assert describe(ParameterError("cellot.lr: 'fast' is not a number")) == "Hyper-parameter error: cellot.lr: 'fast' is not a number"
    # callers that catch ValueError still catch them; a plain ValueError is not clear
    for cls in (DataError, DownloadError, ConfigError, SlugError, ParameterError):
        assert issubclass(cls, ClearError) and issubclass(cls, ValueError)
    assert not issubclass(ValueError, ClearError)


def test_workflow_scripts_leave_errors_to_the_log():
    """A script that catches an error and prints it would keep it from the job's log (and exit 1 without a word there)."""
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
        assert "sys.exit" not in calls, script.name
        for handler in (n for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler)):  # cleaning up is fine
            assert any(isinstance(n, ast.Raise) for n in ast.walk(handler)), f"{script.name} swallows an error"
        assert "log_job" in calls, script.name  # perturbot.logs.log_job: the job's log gets its errors


def test_the_command_line_shows_clear_errors_and_lets_bugs_raise(tmp_path, monkeypatch, capsys):
    import perturbot.predict
    from perturbot.cli import main

    args = ["predict", "--model", "m", "--input", "in.h5ad", "--output", str(tmp_path / "out.h5ad")]

    def failing(error):
        def predict_file(*_, **__):
            raise error
        return predict_file

    monkeypatch.setattr(perturbot.predict, "predict_file", failing(DataError("layer 'counts' not found")))
    assert main(args) == 2
    assert "perturbot predict: error: layer 'counts' not found" in capsys.readouterr().err
    monkeypatch.setattr(perturbot.predict, "predict_file", failing(ValueError("a library's bug")))
    with pytest.raises(ValueError, match="a library's bug"):
        main(args)


def test_prediction_input_with_a_repeated_gene_is_refused_by_name():
    from perturbot.predict import GeneMismatchError, _prepare_like_training

    cells = ad.AnnData(np.arange(12, dtype=np.float32).reshape(4, 3))
    cells.var_names = ["g0", "g1", "g0"]
    recipe = {"genes": ["g1", "g0"], "normalize_total": None}
    with pytest.raises(GeneMismatchError, match="1 of the model's genes/features occur more than once in the input, e.g. g0"):
        _prepare_like_training(cells, recipe, None)
    with pytest.raises(DataError, match="layer 'counts' not found"):
        _prepare_like_training(cells, recipe, "counts")
    cells.var_names = ["g0", "g1", "g2"]
    np.testing.assert_array_equal(_prepare_like_training(cells, recipe, None), cells.X[:, [1, 0]])
