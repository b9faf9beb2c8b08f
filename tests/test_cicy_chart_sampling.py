"""Chart-fixed sampling on complete intersections in products of projective spaces."""

import numpy as np
import pytest

import cyntk.geometry.cicy_sampling as cs
from cyntk.geometry.cicy_manifolds import bicubic, get_cicy, tetraquadric


def _common_chart(M, seed=0):
    c = M.charts(M.sample_points(2000, seed=seed))
    rows, cnt = np.unique(c, axis=0, return_counts=True)
    return rows[np.argmax(cnt)]


@pytest.mark.parametrize("make", [bicubic, tetraquadric])
def test_chart_rows_are_respected_and_reproducible(make):
    M = make()
    row = _common_chart(M)
    z = M.sample_points(300, seed=5, chart=row)
    assert z.shape == (300, M.ncoords)
    np.testing.assert_array_equal(M.charts(z), np.tile(row, (300, 1)))
    assert M.residual(z).max() < 1e-10
    np.testing.assert_array_equal(z, M.sample_points(300, seed=5, chart=tuple(int(v) for v in row)))
    z2, pid = M.sample_points(300, seed=5, chart=row, return_planes=True)
    np.testing.assert_array_equal(z2, z)
    assert np.all(np.diff(pid) >= 0)
    assert not np.array_equal(z, M.sample_points(300, seed=6, chart=row))


def test_two_equations_chart_row():
    M = get_cicy("cicy", configuration="5|3,3", seed=0)
    row = _common_chart(M)
    assert len(row) == 3
    z = M.sample_points(20, seed=2, chart=row)
    np.testing.assert_array_equal(M.charts(z), np.tile(row, (20, 1)))


def test_bad_chart_rows():
    M = bicubic()
    with pytest.raises(ValueError, match="chart row of 3 distinct integers.*received 2 entries"):
        M.sample_points(5, chart=(0, 3))
    with pytest.raises(ValueError, match="chart row of 3"):
        M.sample_points(5, chart=(0, 3, 3))  # a coordinate used twice
    with pytest.raises(ValueError, match="chart row of 3"):
        M.sample_points(5, chart=(0, 3, 6))  # out of range
    with pytest.raises(ValueError, match="entry 1 .*factor 1.* must lie in \\[3, 6\\)"):
        M.sample_points(5, chart=(0, 1, 4))  # the one index of factor 1 in factor 0
    with pytest.raises(ValueError, match="chart row of 3"):
        M.sample_points(5, chart=(0, 3.0, 1))


def test_no_acceptance_raises(monkeypatch):
    M = bicubic()
    monkeypatch.setattr(cs, "_CHART_MAX_TRIES", 100)
    monkeypatch.setattr(M, "charts", lambda z: np.zeros((len(z), 3), dtype=np.int64))  # never the asked chart
    with pytest.raises(RuntimeError, match="none of .* sampled points lies in that chart"):
        M.sample_points(5, seed=0, chart=(0, 3, 1))
