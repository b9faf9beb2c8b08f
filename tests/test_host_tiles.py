"""The fused NumPy tile of the Gaussian-FS kernel (cyntk.flows.host_tiles) against the kernel and the NumPy engine."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from cyntk.flows.host_tiles import host_tile, projector_features  # noqa: E402
from cyntk.flows.product import KernelProduct  # noqa: E402
from cyntk.flows.tf_product import TFKernelProduct  # noqa: E402
from cyntk.geometry import fermat_quintic, to_complex, to_real  # noqa: E402
from cyntk.geometry.cicy_manifolds import bicubic  # noqa: E402
from cyntk.kernels.fs import GaussianFSKernel  # noqa: E402

M = fermat_quintic()


@pytest.fixture(scope="module")
def pts():
    return to_real(M.sample_points(300, seed=5, chart=(0, 1)))


def _block(tile, s1, s2, diag):
    """The tile's kernel block, read off by contracting with the identity."""
    eye = np.eye(len(s2[0]))
    return tile.matvec(s1, s2, eye, None, diag)[0]


def test_projector_features_give_the_squared_overlaps():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((7, 4)) + 1j * rng.standard_normal((7, 4))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    f, g = projector_features(u)
    assert f.shape == g.shape == (7, 17)
    c2 = np.abs(np.conj(u) @ u.T) ** 2
    np.testing.assert_allclose(f @ g.T, 2 * c2 - 1, rtol=0, atol=4e-15)


@pytest.mark.parametrize("sigma", [0.1, 3.0])
def test_blocks_match_the_kernel(pts, sigma):
    k = GaussianFSKernel(sigma)
    tile = host_tile(k)
    st = tile.state(pts)
    a, b = slice(0, 120), slice(120, 300)
    ref = k.tile_block(k.tile_state(pts[a]), k.tile_state(pts[b]))
    np.testing.assert_allclose(_block(tile, tuple(s[a] for s in st), tuple(s[b] for s in st), False), ref, rtol=1e-13)
    diag = _block(tile, tuple(s[a] for s in st), tuple(s[a] for s in st), True)
    np.testing.assert_array_equal(diag, diag.T)  # exactly symmetric
    np.testing.assert_array_equal(np.diag(diag), 1.0)
    np.testing.assert_allclose(diag, k(pts[a], None), rtol=1e-13)


def test_threshold_duplicates_and_clipping(pts):
    # a duplicate point (up to a phase and scale) is at distance 0, exactly as in the kernel
    z = to_complex(pts[:40])
    z[7] = (0.3 - 2.0j) * z[3]
    x = to_real(z)
    for k in (GaussianFSKernel(0.5), GaussianFSKernel(0.5, threshold=1e-3), GaussianFSKernel(0.5, threshold=0.7)):
        tile = host_tile(k)
        st = tile.state(x)
        off = _block(tile, tuple(s[:20] for s in st), tuple(s[5:] for s in st), False)
        ref = k(x[:20], x[5:])
        np.testing.assert_allclose(off, ref, rtol=1e-13)
        assert off[3, 2] == 1.0  # x[3] against x[7]
        np.testing.assert_allclose(_block(tile, st, st, True), k(x, None), rtol=1e-13)


def test_product_of_projective_spaces():
    B = bicubic().with_kmoduli([1.0, 2.5])
    x = to_real(B.sample_points(90, seed=2))
    k = GaussianFSKernel(0.4, manifold=B)
    tile = host_tile(k)
    st = tile.state(x)
    np.testing.assert_allclose(_block(tile, st, st, True), k(x, None), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(
        _block(tile, tuple(s[:30] for s in st), tuple(s[30:] for s in st), False), k(x[:30], x[30:]), rtol=1e-13
    )


@pytest.mark.parametrize("kernel", [lambda: GaussianFSKernel(0.1), lambda: GaussianFSKernel(0.7, threshold=1e-4)])
def test_engine_products_with_host_tiles_equal_the_numpy_engine(pts, kernel):
    k = kernel()
    v = np.random.default_rng(1).standard_normal((len(pts), 9))
    eng = TFKernelProduct(k, 9, tiles="numpy", tile_size=64, n_threads=2)
    assert eng.host is not None
    ref = KernelProduct(k, 9, tile_size=64)
    for args, kw in (((pts, pts, v), {"same": True}), ((pts[:100], pts[100:], v[100:]), {})):
        u_ref = ref.matvec(*args, **kw)
        u = eng.matvec(*args, **kw)
        assert np.abs(u - u_ref).max() <= 1e-12 * np.abs(u_ref).max()
        parts = sum(eng.matvec(*args, shard=(r, 3), **kw) for r in range(3))
        assert np.abs(parts - u_ref).max() <= 1e-12 * np.abs(u_ref).max()


def test_bad_points_and_overridden_blocks(pts):
    k = GaussianFSKernel(0.1)
    x = pts[:10].copy()
    x[4] = 0.0
    with pytest.raises(ValueError, match="point 4"):
        host_tile(k).state(x)
    x[4] = np.nan
    with pytest.raises(ValueError, match="point 4"):
        TFKernelProduct(k, 9, tiles="numpy").matvec(x, x, np.ones((10, 9)), same=True)

    class Scaled(GaussianFSKernel):
        def _block(self, x1, x2):
            return 2.0 * super()._block(x1, x2)

    assert host_tile(Scaled(0.1)) is None  # the engine then calls the subclass's own block
    s = Scaled(0.1)
    u = TFKernelProduct(s, 9, tiles="numpy").matvec(pts[:50], pts[:50], np.ones((50, 9)), same=True)
    np.testing.assert_allclose(u, 2.0 * KernelProduct(k, 9).matvec(pts[:50], pts[:50], np.ones((50, 9)), same=True))
