"""Product-space FS geodesic distance d = sqrt(sum_F t_F d_F^2) against a direct computation."""

import numpy as np
import pytest

from cyntk.geometry import fs_distance, tetraquadric
from cyntk.geometry.product_distance import product_fs_distance, product_fs_distance_matrix


def _curve(z1, z2, sl, s):
    """Product of per-factor FS geodesics at parameters s (S,) -> (S, n), unit norm per factor."""
    out = np.zeros((len(s), z1.shape[0]), dtype=complex)
    for a, b in sl:
        u = z1[a:b] / np.linalg.norm(z1[a:b])
        v = z2[a:b] / np.linalg.norm(z2[a:b])
        ov = np.vdot(u, v)
        v = v * np.exp(-1j * np.angle(ov))
        th = np.arccos(np.clip(abs(ov), 0, 1))
        w = (v - np.cos(th) * u) / np.sin(th)
        out[:, a:b] = np.cos(s[:, None] * th) * u + np.sin(s[:, None] * th) * w
    return out


def _length(c, sl, t, s):
    """Length of a discretised curve with the metric pi * sum_F t_F g_F (cyntk's g_F carries 1/pi)."""
    mid = 0.5 * (c[1:] + c[:-1])
    dc = np.diff(c, axis=0) / np.diff(s)[:, None]
    speed2 = np.zeros(len(mid))
    for (a, b), tf in zip(sl, t):
        m, d = mid[:, a:b], dc[:, a:b]
        n2 = np.sum(np.abs(m) ** 2, axis=1)
        h = np.sum(np.abs(d) ** 2, axis=1) / n2 - np.abs(np.sum(np.conj(m) * d, axis=1)) ** 2 / n2**2
        speed2 += tf * h
    return float(np.sum(np.sqrt(speed2) * np.diff(s)))


def test_product_distance_is_the_geodesic_length():
    M = tetraquadric(kmoduli=[1.0, 2.0, 0.5, 3.0])
    z = M.sample_points(6, seed=0)
    sl, t = M.factor_slices, M.kmoduli
    d = product_fs_distance(z[:3], z[3:], sl, t)
    # the FS metric blocks the geometry uses (t_F/pi), times pi, give the same speed
    g = M.fs_metric_ambient(z[:1])[0] * np.pi
    dz = np.random.default_rng(0).standard_normal(8) + 0j
    speed = sum(
        tf
        * (
            np.vdot(dz[a:b], dz[a:b]).real / np.vdot(z[0, a:b], z[0, a:b]).real
            - abs(np.vdot(z[0, a:b], dz[a:b])) ** 2 / np.vdot(z[0, a:b], z[0, a:b]).real ** 2
        )
        for (a, b), tf in zip(sl, t)
    )
    assert np.real(dz @ g @ np.conj(dz)) == pytest.approx(speed, rel=1e-12)
    s = np.linspace(0, 1, 4001)
    rng = np.random.default_rng(1)
    for i in range(3):
        c = _curve(z[i], z[3 + i], sl, s)
        assert _length(c, sl, t, s) == pytest.approx(d[i], rel=1e-6)
        # a geodesic: perturbed curves with the same end points are longer
        for _ in range(5):
            bump = np.sin(np.pi * s)[:, None] * 0.05 * (rng.standard_normal(8) + 1j * rng.standard_normal(8))
            assert _length(c + bump, sl, t, s) > d[i]


def test_product_distance_reduces_and_is_a_metric():
    M = tetraquadric()
    z = M.sample_points(40, seed=2)
    D = product_fs_distance_matrix(z, None, M.factor_slices, M.kmoduli)
    np.testing.assert_allclose(D, D.T, atol=1e-15)
    assert np.all(np.diag(D) == 0)
    i, j, k = np.random.default_rng(0).integers(0, 40, (3, 2000))
    assert np.all(D[i, k] <= D[i, j] + D[j, k] + 1e-12)
    np.testing.assert_allclose(D[0, 1:4], product_fs_distance(np.repeat(z[:1], 3, 0), z[1:4], M.factor_slices))
    # one factor, t = 1: the FS distance (paper eq. 3.2)
    q = np.random.default_rng(3).standard_normal((5, 5)) + 1j * np.random.default_rng(4).standard_normal((5, 5))
    np.testing.assert_allclose(product_fs_distance(q[:2], q[2:4], [[0, 5]]), fs_distance(q[:2], q[2:4]), rtol=1e-15)
    with pytest.raises(ValueError, match="factor_slices"):
        product_fs_distance(z[:2], z[2:4], [[0, 3], [3, 7]])
    with pytest.raises(ValueError, match="positive weights"):
        product_fs_distance(z[:2], z[2:4], M.factor_slices, [1, 1, 1])
