"""Infinite-width metric-NTK of the multiplicative model: NumPy composition and wide networks."""

from __future__ import annotations

import numpy as np
import pytest

from cyntk.flows.kernel_model import KernelModel
from cyntk.geometry import components_from_hermitian, fermat_quintic, to_real
from cyntk.kernels import infinite_width_kernel, metric_ntk, ntk_mlp
from cyntk.kernels.infinite_metric import (
    InfiniteWidthMetricKernel,
    network_infinite_width_kernel,
    patch_normalise,
)
from cyntk.models import MultiplicativeModel

M = fermat_quintic()
ARCH = dict(activation="gelu", W_std=[1.5, 1.2, 0.7], b_std=[0.2, 0.1, None], depth=2)


def _model(width, seed=0):
    net = ntk_mlp(
        10, width, ARCH["depth"], activation="gelu", W_std=ARCH["W_std"], b_std=ARCH["b_std"], n_outputs=9, seed=seed
    )
    return MultiplicativeModel(net, M, kaehler=0.0, transition=0.0, volk=0.0, dtype="float64")


@pytest.fixture(scope="module")
def pts():
    # representatives not patch-normalised (scaled by a complex number) to test u(x)
    z = M.sample_points(8, seed=11) * (0.7 * np.exp(0.3j))
    return to_real(z)


def test_network_kernel_read_from_layers():
    k = network_infinite_width_kernel(_model(16).network)
    assert k.activation == "gelu" and k.depth == 2
    x = np.random.default_rng(0).normal(size=(4, 10))
    np.testing.assert_array_equal(k(x), infinite_width_kernel(x, **ARCH))


def test_against_numpy_composition(pts):
    """M from the model itself (c(g) - c(G) = M o for the actual network) and a NumPy einsum."""
    model = _model(32)
    kernel = InfiniteWidthMetricKernel(model)
    mmap = kernel.metric_map(pts)
    # M o = c(g) - c(G), with o the network at the patch-normalised points
    o = model.network(patch_normalise(pts)).numpy()
    g = model(pts).numpy()
    G = model.fs_metric(pts).numpy()
    diff = components_from_hermitian(g) - components_from_hermitian(G)
    np.testing.assert_allclose(np.einsum("aIJ,aJ->aI", mmap, o), diff, rtol=1e-12, atol=1e-12 * np.abs(diff).max())
    # Theta_inf_g = k(u, u') M M'^T, u the patch-normalised points (projective invariance of k o u)
    u = patch_normalise(pts)
    scalar = infinite_width_kernel(u, **ARCH)
    expected = scalar[:, :, None, None] * np.einsum("aIK,bJK->abIJ", mmap, mmap)
    theta = kernel(pts)
    np.testing.assert_allclose(theta, expected, rtol=1e-13, atol=1e-14 * np.abs(expected).max())
    np.testing.assert_allclose(
        kernel(pts[:3], pts[3:]), expected[:3, 3:], rtol=1e-13, atol=1e-14 * np.abs(expected).max()
    )
    flat = theta.transpose(0, 2, 1, 3).reshape(8 * 9, 8 * 9)
    np.testing.assert_allclose(flat, flat.T, atol=1e-13 * np.abs(flat).max())
    assert np.linalg.eigvalsh(flat).min() > -1e-10 * np.abs(flat).max()
    # the same points in another representative give the same kernel
    z2 = (pts[:, :5] + 1j * pts[:, 5:]) * np.exp(1.1j) * 1.7
    np.testing.assert_allclose(kernel(to_real(z2)), theta, rtol=1e-10, atol=1e-12 * np.abs(theta).max())


def test_wide_network_metric_ntk_approaches_the_limit(pts):
    """Seeded Monte-Carlo: relative Frobenius distance falls ~ width^-1/2 (loose bounds)."""
    x = pts[:5]
    limit = InfiniteWidthMetricKernel(_model(8))(x)
    errs = {}
    for width in (64, 1024):
        model = _model(width, seed=width)
        rng = np.random.default_rng(width)
        e = []
        for _ in range(2):
            for v in model.network.trainable_variables:
                v.assign(rng.standard_normal(v.shape))
            emp = metric_ntk(model, x)
            e.append(np.linalg.norm(emp - limit) / np.linalg.norm(limit))
        errs[width] = float(np.mean(e))
    assert errs[1024] < 0.2, errs
    assert errs[1024] < errs[64] / 2.0, errs


def test_usable_in_kernel_model_and_callback_engine(pts):
    kernel = InfiniteWidthMetricKernel(_model(16))
    x = to_real(M.sample_points(8, seed=12, chart=(0, 1)))
    km = KernelModel(kernel, x, M)
    assert km(x[:2]).shape == (2, 3, 3)
    ntk_fn = kernel.as_ntk_fn()
    np.testing.assert_array_equal(ntk_fn(None, pts[:3]), kernel(pts[:3]))


def test_rejects_non_multiplicative_and_bad_networks():
    with pytest.raises(ValueError, match="model"):
        InfiniteWidthMetricKernel(object())
    import keras

    net = keras.Sequential([keras.Input((10,)), keras.layers.Dense(9)])
    with pytest.raises(ValueError, match="NTKDense"):
        network_infinite_width_kernel(net)
