"""The 2-D data sets of the W1-OT paper: shapes, seeding and the geometry each one promises."""

from __future__ import annotations

import numpy as np
import pytest

from perturbot.data.toy2d import DATASETS, bookshelf, circles, make_2d, moons, swiss_roll


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shapes_dtype_and_seeding(name):
    src, tgt = make_2d(name, 300, seed=4)
    assert src.shape == tgt.shape == (300, 2)
    assert src.dtype == tgt.dtype == np.float32
    again = make_2d(name, 300, seed=4)
    assert np.array_equal(src, again[0]) and np.array_equal(tgt, again[1])
    assert not np.array_equal(src, make_2d(name, 300, seed=5)[0])


def test_bookshelf_strips():
    src, tgt = bookshelf(2000, seed=0)
    assert 0 <= src[:, 0].min() and src[:, 0].max() <= 1
    assert 2 <= tgt[:, 0].min() and tgt[:, 0].max() <= 3
    assert np.std(src[:, 1]) == pytest.approx(0.001, rel=0.1)


def test_circles_radii_double():
    src, tgt = circles(2000, seed=0, noise=0.0)
    assert np.allclose(np.sort(np.unique(np.round(np.linalg.norm(src, axis=1), 4))), [0.5, 1.0])
    assert np.allclose(np.sort(np.unique(np.round(np.linalg.norm(tgt, axis=1), 4))), [1.0, 2.0])
    assert (np.linalg.norm(src, axis=1) < 0.75).mean() == pytest.approx(0.5)


def test_swiss_roll_and_moons():
    src, tgt = swiss_roll(3000, seed=0)
    assert np.allclose(src.mean(0), 0, atol=0.1) and np.allclose(src.std(0), 1, atol=0.1)
    assert np.linalg.norm(tgt, axis=1).max() < 3.5  # scaled roll, radius up to 0.2 * 14.1 + noise
    up, down = moons(1000, seed=0, noise=0.0)
    assert np.allclose(np.linalg.norm(up, axis=1), 1.0, atol=1e-5) and (up[:, 1] >= -1e-6).all()
    assert np.allclose(np.linalg.norm(down - [1.0, 0.5], axis=1), 1.0, atol=1e-5)
    with pytest.raises(KeyError):
        make_2d("spiral")
