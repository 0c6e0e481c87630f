"""The metrics table: its columns and the merge of per-prediction files; no torch here."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

METRICS_COLUMNS = ["experiment", "setting", "holdout", "model", "perturbation", "seed", "n_cells", "draw", "metric", "value"]


def aggregate_metrics(paths: list[str | Path], out: str | Path) -> pd.DataFrame:
    frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    frame = frame.sort_values(
        ["experiment", "setting", "holdout", "model", "perturbation", "seed", "n_cells", "draw", "metric"], kind="stable"
    )
    frame.to_csv(out, index=False)
    return frame
