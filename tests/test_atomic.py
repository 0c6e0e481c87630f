"""Atomic writes: the old content or the complete new one, never half a file, and no temporary left."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from perturbot.atomic import (
    atomic_path,
    is_temporary,
    remove_stale_temporaries,
    write_text,
)


def test_a_file_is_replaced_only_when_the_write_succeeds(tmp_path):
    target = tmp_path / "out" / "table.csv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]
    write_text(target, "new\n")
    assert target.read_text() == "new\n" and [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_a_directory_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "stale.h5ad").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "all.h5ad").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["all.h5ad"]
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            raise ValueError("bad data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_the_temporary_keeps_the_suffix_that_anndata_requires(tmp_path):
    with atomic_path(tmp_path / "cells.h5ad") as tmp:
        ad.AnnData(np.ones((2, 3), np.float32)).write_h5ad(tmp)
    assert ad.read_h5ad(tmp_path / "cells.h5ad").shape == (2, 3)


def test_a_killed_writers_temporary_is_recognised_and_removed_by_its_target_only(tmp_path):
    target = tmp_path / "trametinib.pt"
    left_by_kill = tmp_path / ".trametinib.29601.tmp.pt"  # what `kill -9` during torch.save leaves
    other_target = tmp_path / ".cisplatin.29601.tmp.pt"
    finished = [tmp_path / "trametinib.pt", tmp_path / ".hidden.pt", tmp_path / "x.12.tmp.pt"]
    for path in (left_by_kill, other_target, *finished):
        path.write_text("x")
    assert is_temporary(left_by_kill) and is_temporary(other_target)
    assert not any(is_temporary(p) for p in finished)
    assert remove_stale_temporaries(target) == [left_by_kill]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [other_target, *finished])
    assert remove_stale_temporaries(tmp_path / "absent" / "state.pt") == []
