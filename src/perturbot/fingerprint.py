"""What determines a training run: a checkpoint resumes only the run that wrote it.

A checkpoint is found by its path (experiment, holdout, run, job). After a
killed job the user may edit the configuration (a lower ``lr``, other data of
the same width) and rerun; resuming the old state then would train a mixture
of two runs, with the old optimiser's learning rate, and report it as the new
one. The fingerprint names everything that fixes the run's result: the model
class, its resolved hyper-parameters (``seed`` among them), a digest of the
training arrays, and the versions of perturbot and torch. A checkpoint is
resumed only when its fingerprint equals the current one exactly
(:class:`perturbot.checkpoints.Checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

#: Constructor arguments that change where or how often a run saves, not what it computes
#: (a GPU run killed on a cluster resumes on a CPU; the tests prove checkpoint_every changes nothing).
NOT_IN_RUN = frozenset({"device", "checkpoint_every"})


def data_digest(arrays: Mapping[str, Any]) -> str:
    """SHA-256 of named arrays: names, order, dtypes, shapes and bytes (first 16 hex digits)."""
    digest = hashlib.sha256()
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        digest.update(json.dumps([str(name), array.dtype.str, list(array.shape)]).encode())
        digest.update(memoryview(array).cast("B") if array.size else b"")
    return digest.hexdigest()[:16]


def fit_arrays(source: Any, targets: Mapping[str, Any]) -> dict[str, Any]:
    """The arrays of a ``fit_many(source, targets)`` call, named for :func:`data_digest`."""
    return {"source": source, **{f"target {name}": target for name, target in targets.items()}}


def _plain(value: Any) -> Any:
    """A hyper-parameter as JSON would hold it (tuples as lists, numpy scalars as numbers)."""
    from perturbot.atomic import json_default

    return json.loads(json.dumps(value, sort_keys=True, default=json_default))


def run_fingerprint(model: Any, arrays: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint of fitting ``model`` on ``arrays`` (plain values only: a checkpoint stores it).

    Hyper-parameters are the model's ``resolved_params()`` (a preset's values in
    place of the ``None`` that defers to it), so an edited preset is a different run.
    """
    import torch

    from perturbot import __version__

    params = model.resolved_params() if hasattr(model, "resolved_params") else model.get_params()
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "perturbot": __version__,
        "torch": str(torch.__version__),
        "data": data_digest(arrays),
        "params": {k: _plain(v) for k, v in sorted(params.items()) if k not in NOT_IN_RUN},
    }


def differences(saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, one ``key: saved -> current`` entry each (hyper-parameters by name)."""

    def flat(fp: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in fp.items() if k != "params"}
        out.update(fp.get("params") or {})
        return out

    if not saved:
        return ["the checkpoint has no fingerprint (written by an older perturbot)"]
    old, new = flat(saved), flat(current)
    missing = "<not set>"
    return [
        f"{key}: {old.get(key, missing)!r} -> {new.get(key, missing)!r}"
        for key in sorted(set(old) | set(new), key=lambda k: (k in current.get("params", {}), k))
        if old.get(key, missing) != new.get(key, missing)
    ]
