"""The tile interface of the fast kernels (tile_state / tile_block / tile_matvec) vs NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tol
from cyntk.flows.product import KernelProduct, uses_tile_api
from cyntk.geometry import fermat_quintic, to_complex, to_real
from cyntk.kernels.analytic import InfiniteWidthKernel, infinite_width_kernel
from cyntk.kernels.fs import GaussianFSKernel, _overlap_limit

M = fermat_quintic()


@pytest.fixture(scope="module")
def pts():
    x = to_real(M.sample_points(150, seed=3, chart=(0, 1)))
    return x[:80], x[80:]


def _relu_reference(x1, x2, w_std, b_std, depth):
    """The textbook recursion with sin(arccos c) (float64 NumPy), returns (nngp, ntk)."""
    same = x2 is None
    x2 = x1 if same else x2
    w2, b2, d = w_std**2, b_std**2, x1.shape[1]
    q1 = w2 * np.sum(x1 * x1, axis=1) / d + b2
    q2 = w2 * np.sum(x2 * x2, axis=1) / d + b2
    k = w2 * (x1 @ x2.T) / d + b2
    ntk = k.copy()
    for _ in range(depth):
        norm = np.sqrt(np.outer(q1, q2))
        cos = np.clip(k / norm, -1.0, 1.0)
        if same:
            np.fill_diagonal(cos, 1.0)
        t = np.arccos(cos)
        k_new = w2 * norm * (np.sin(t) + (np.pi - t) * cos) / (2 * np.pi) + b2
        ntk = k_new + w2 * (np.pi - t) / (2 * np.pi) * ntk
        k = k_new
        q1, q2 = w2 * q1 / 2 + b2, w2 * q2 / 2 + b2
    return k, ntk


@pytest.mark.parametrize("w_std, b_std, depth", [(80.52, 5.716, 1), (1.5, 0.05, 1), (1.4, 0.1, 3), (2.0, 0.0, 2)])
def test_relu_entries_match_the_textbook_recursion(pts, w_std, b_std, depth):
    xa, xb = pts
    for x2 in (xb, None):
        ref_k, ref_ntk = _relu_reference(xa, x2, w_std, b_std, depth)
        kw = dict(W_std=w_std, b_std=b_std, depth=depth)
        for kind, ref in (("nngp", ref_k), ("ntk", ref_ntk)):
            ours = infinite_width_kernel(xa, x2, kind=kind, **kw)
            assert np.abs(ours - ref).max() <= 1e-13 * np.abs(ref).max(), (kind, x2 is None)
            if x2 is None:
                np.testing.assert_array_equal(ours, ours.T)
        both = infinite_width_kernel(xa, x2, kind="both", **kw)
        assert np.abs(both[0] - ref_k).max() <= 1e-13 * np.abs(ref_k).max()
        assert np.abs(both[1] - ref_ntk).max() <= 1e-13 * np.abs(ref_ntk).max()


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("activation, depth", [("relu", 1), ("relu", 2), ("erf", 1)])
def test_tile_matvec_equals_block_products(pts, rng, kind, activation, depth):
    xa, xb = pts
    k = InfiniteWidthKernel(activation, W_std=1.7, b_std=0.4, depth=depth, kind=kind)
    assert uses_tile_api(k)
    s1, s2 = k.tile_state(xa), k.tile_state(xb)
    va, vb = rng.standard_normal((len(xa), 9)), rng.standard_normal((len(xb), 9))
    blk = k(xa, xb)
    np.testing.assert_array_equal(k.tile_block(s1, s2), blk)
    u1, u2 = k.tile_matvec(s1, s2, vb, va)
    np.testing.assert_allclose(u1, blk @ vb, rtol=1e-12, atol=1e-12 * np.abs(blk @ vb).max())
    np.testing.assert_allclose(u2, blk.T @ va, rtol=1e-12, atol=1e-12 * np.abs(blk.T @ va).max())
    same = k(xa)
    u, none = k.tile_matvec(s1, None, va)
    assert none is None
    np.testing.assert_allclose(u, same @ va, rtol=1e-12, atol=1e-12 * np.abs(same @ va).max())


def test_gaussian_entries_match_numpy(pts):
    xa, xb = pts
    sigma = 0.05
    za, zb = to_complex(xa), to_complex(xb)
    ua = za / np.linalg.norm(za, axis=1, keepdims=True)
    ub = zb / np.linalg.norm(zb, axis=1, keepdims=True)
    c2 = np.clip(np.abs(np.conj(ua) @ ub.T) ** 2, 0.0, 1.0)
    d = np.arccos(np.sqrt(c2))
    d[(1.0 - c2) < 64 * np.finfo(np.float64).eps] = 0.0
    ref = np.exp(-d / (2 * sigma))
    k = GaussianFSKernel(sigma)
    assert uses_tile_api(k)
    np.testing.assert_allclose(k(xa, xb), ref, rtol=1e-13)
    np.testing.assert_allclose(k.tile_block(k.tile_state(xa), k.tile_state(xb)), ref, rtol=1e-13)
    np.testing.assert_allclose(k(xa, xb), np.exp(-k.distance(xa, xb) / (2 * sigma)), rtol=1e-13)
    same = k(xa)
    np.testing.assert_array_equal(same, same.T)
    np.testing.assert_array_equal(np.diag(same), 1.0)
    # the same projective points (rescaled) are at distance 0 (threshold), also across sets
    np.testing.assert_array_equal(np.diag(k(xa[:5], 2.0 * xa[:5])), 1.0)


@pytest.mark.parametrize("threshold", [0.0, 1e-16, 64 * np.finfo(np.float64).eps, 1e-9, 0.3])
def test_overlap_limit_is_the_threshold_in_exact_arithmetic(threshold):
    lim = _overlap_limit(threshold)
    assert 1.0 - lim >= threshold
    above = np.nextafter(lim, 2.0)
    assert above > 1.0 or 1.0 - above < threshold


def test_subclass_overriding_block_keeps_its_block(pts, rng):
    xa, _ = pts

    class Doubled(GaussianFSKernel):
        def _block(self, x1, x2):
            return 2.0 * super()._block(x1, x2)

    k = Doubled(0.2)
    assert not uses_tile_api(k)
    v = rng.standard_normal((len(xa), 9))
    prod = KernelProduct(k, 9, tile_size=16, n_threads=2)
    np.testing.assert_allclose(prod.matvec(xa, xa, v, same=True), k(xa) @ v, **tol("float64"))


@pytest.mark.parametrize("tile, threads", [(1, 1), (13, 2), (64, 3), (1000, 2)])
def test_paper_relu_ntk_tiled_equals_dense(pts, rng, tile, threads):
    xa, xb = pts
    k = InfiniteWidthKernel("relu", W_std=80.52, b_std=5.716, depth=1)
    v = rng.standard_normal((len(xa), 9))
    prod = KernelProduct(k, 9, tile_size=tile, n_threads=threads)
    np.testing.assert_allclose(
        prod.matvec(xa, xa, v, same=True), k(xa) @ v, rtol=1e-12, atol=1e-12 * np.abs(k(xa) @ v).max()
    )
    np.testing.assert_allclose(
        prod.matvec(xb, xa, v), k(xb, xa) @ v, rtol=1e-12, atol=1e-12 * np.abs(k(xb, xa) @ v).max()
    )
