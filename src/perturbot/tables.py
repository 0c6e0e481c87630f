"""The metrics table: its columns, the merge of per-prediction files, and reading project tables back; no torch here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from perturbot.atomic import write_csv

METRICS_COLUMNS = ["experiment", "setting", "holdout", "model", "perturbation", "seed", "n_cells", "draw", "metric", "value"]
#: Columns of the metrics table that hold names; every other column is a number.
METRICS_LABELS = ["experiment", "setting", "holdout", "model", "perturbation", "metric"]
#: Columns of the statistics table (:func:`perturbot.statistics.model_tests`) that hold names.
STATISTICS_LABELS = ["experiment", "setting", "metric", "test", "model_a", "model_b"]
#: What reads back as missing in a number column: ``to_csv`` writes NaN as an empty field.
MISSING_NUMBER = ["", "nan", "NaN"]


def read_table(path: str | Path, labels: Sequence[str] = (), numbers: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV table this project wrote, with names kept as the strings they are.

    pandas' defaults read ``NA``, ``None``, ``null``, ``nan``, ``n/a``... as
    missing, so a perturbation or holdout of that name would vanish from the
    tables; here only an empty field or ``nan`` in a ``numbers`` column is
    missing, and ``labels`` columns are strings (``01`` stays ``01``).
    """
    return pd.read_csv(
        path, keep_default_na=False, na_values={c: MISSING_NUMBER for c in numbers}, dtype={c: str for c in labels}
    )


def read_metrics(path: str | Path) -> pd.DataFrame:
    """A metrics table (one prediction's, or an experiment's ``metrics.csv``)."""
    return read_table(path, METRICS_LABELS, [c for c in METRICS_COLUMNS if c not in METRICS_LABELS])


def read_statistics(path: str | Path) -> pd.DataFrame:
    """An experiment's ``statistics.csv``."""
    from perturbot.statistics import TEST_COLUMNS

    return read_table(path, STATISTICS_LABELS, [c for c in TEST_COLUMNS if c not in STATISTICS_LABELS])


def aggregate_metrics(paths: list[str | Path], out: str | Path) -> pd.DataFrame:
    frame = pd.concat([read_metrics(p) for p in paths], ignore_index=True)
    frame = frame.sort_values(
        ["experiment", "setting", "holdout", "model", "perturbation", "seed", "n_cells", "draw", "metric"], kind="stable"
    )
    write_csv(frame, out, index=False)
    return frame
