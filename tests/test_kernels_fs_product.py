"""GaussianFSKernel on products of projective spaces: the product FS distance, tiles, config."""

import numpy as np
import pytest

from cyntk.geometry import default_distance_threshold, to_real
from cyntk.geometry.cicy_manifolds import bicubic, tetraquadric
from cyntk.kernels.fs import DeltaKernel, GaussianFSKernel


def _direct(z, slices, t, sigma):
    """exp(-sqrt(sum_F t_F d_F^2)/(2 sigma)) pair by pair in plain Python (threshold as the kernel's)."""
    thr = default_distance_threshold()
    P = len(z)
    out = np.empty((P, P))
    for i in range(P):
        for j in range(P):
            s = 0.0
            for (a, b), tf_ in zip(slices, t):
                u, v = z[i, a:b], z[j, a:b]
                c2 = abs(np.vdot(u, v)) ** 2 / (np.vdot(u, u).real * np.vdot(v, v).real)
                c2 = min(c2, 1.0)
                d = 0.0 if (1.0 - c2) < thr or i == j else float(np.arccos(np.sqrt(c2)))
                s += tf_ * d * d
            out[i, j] = np.exp(-np.sqrt(s) / (2 * sigma))
    return out


@pytest.mark.parametrize("make, t", [(bicubic, [1.0, 2.0]), (tetraquadric, [1.0, 0.5, 2.0, 1.5])])
def test_product_kernel_matches_direct_computation(make, t):
    M = make().with_kmoduli(t)
    z = M.sample_points(60, seed=1)
    x = to_real(z)
    k = GaussianFSKernel(sigma=0.7, manifold=M)
    assert k.factor_slices == tuple(map(tuple, M.factor_slices.tolist())) and k.t == tuple(t)
    ref = _direct(z, M.factor_slices, t, 0.7)
    K = k(x, None)
    np.testing.assert_allclose(K, ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(K, K.T)
    np.testing.assert_allclose(k(x[:20], x), ref[:20], rtol=1e-12, atol=1e-13)
    # the tile API gives the same blocks
    st = k.tile_state(x)
    np.testing.assert_allclose(
        k.tile_block(tuple(a[:15] for a in st), tuple(a[30:] for a in st)), ref[:15, 30:], rtol=1e-12
    )
    np.testing.assert_allclose(k.tile_block(tuple(a[:25] for a in st)), ref[:25, :25], rtol=1e-12, atol=1e-13)
    # it is not the FS distance of the concatenated coordinates
    assert np.abs(GaussianFSKernel(sigma=0.7)(x, None) - ref).max() > 1e-3


def test_product_kernel_config_round_trip_and_errors():
    M = bicubic()
    k = GaussianFSKernel(sigma=2.0, factor_slices=M.factor_slices, t=[1.0, 3.0])
    k2 = GaussianFSKernel.from_config(k.get_config())
    assert k2.factor_slices == ((0, 3), (3, 6)) and k2.t == (1.0, 3.0)
    x = to_real(M.sample_points(10, seed=0))
    np.testing.assert_array_equal(k(x, None), k2(x, None))
    assert "factor_slices" not in GaussianFSKernel(sigma=2.0).get_config()
    with pytest.raises(ValueError, match="`t` needs the factor layout"):
        GaussianFSKernel(t=[1.0, 1.0])
    with pytest.raises(ValueError, match="factor_slices"):
        GaussianFSKernel(factor_slices=[[0, 3], [4, 6]])
    with pytest.raises(ValueError, match="positive weights"):
        GaussianFSKernel(factor_slices=M.factor_slices, t=[1.0, -1.0])
    with pytest.raises(ValueError, match="not both"):
        GaussianFSKernel(manifold=M, factor_slices=M.factor_slices)
    with pytest.raises(ValueError, match="width"):
        GaussianFSKernel(manifold=M)(np.ones((3, 10)), None)


def test_product_tf_tile_agrees_with_block():
    tf = pytest.importorskip("tensorflow")
    from cyntk.flows.tf_tiles import compiled_tile, tile_form

    M = tetraquadric().with_kmoduli([1.0, 2.0, 0.5, 1.0])
    x = to_real(M.sample_points(64, seed=3))
    k = GaussianFSKernel(sigma=0.5, manifold=M)
    K = k(x, None)
    form = tile_form(k)
    assert form is not None and form.key[0] == "gaussian_fs_product"
    rng = np.random.default_rng(0)
    v2, v1 = rng.standard_normal((32, 3)), rng.standard_normal((32, 3))
    s1, s2 = (tuple(tf.constant(a) for a in form.state(x[s])) for s in (slice(0, 32), slice(32, 64)))
    u1, u2, fin = compiled_tile(form, "pair", shape=(32, 32))(s1, s2, tf.constant(v2), tf.constant(v1))
    assert bool(fin)
    np.testing.assert_allclose(u1.numpy(), K[:32, 32:] @ v2, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(u2.numpy(), K[:32, 32:].T @ v1, rtol=1e-12, atol=1e-13)
    u1, _, _ = compiled_tile(form, "diagonal", shape=(32, 32))(s1, s1, tf.constant(v2), tf.constant(v1))
    np.testing.assert_allclose(u1.numpy(), K[:32, :32] @ v2, rtol=1e-12, atol=1e-13)


def test_delta_kernel_takes_the_nearest_point_in_the_product_distance():
    M = bicubic().with_kmoduli([1.0, 3.0])
    z = M.sample_points(80, seed=7)
    x = to_real(z)
    k = DeltaKernel(manifold=M)
    assert k.factor_slices == ((0, 3), (3, 6)) and k.t == (1.0, 3.0)
    d_ref = -2 * 0.5 * np.log(_direct(np.concatenate([z[:30], z[30:]]), M.factor_slices, [1.0, 3.0], 0.5))[:30, 30:]
    d, idx = k.nearest(x[:30], x[30:])
    np.testing.assert_array_equal(idx, np.argmin(d_ref, axis=1))
    np.testing.assert_allclose(d, d_ref[np.arange(30), idx], rtol=1e-12, atol=1e-14)
    v = np.random.default_rng(0).standard_normal((50, 4))
    np.testing.assert_array_equal(k.matvec(x[:30], x[30:], v), v[np.argmin(d_ref, axis=1)])
    assert DeltaKernel.from_config(k.get_config()).t == (1.0, 3.0)
    # the plain FS distance of the concatenated coordinates picks other neighbours for some points
    assert np.any(DeltaKernel().nearest(x[:30], x[30:])[1] != idx)
