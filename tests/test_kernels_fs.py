"""Gaussian-FS and Delta kernels, and the shared Kernel interface."""

from __future__ import annotations

import numpy as np
import pytest

from cyntk.kernels import DeltaKernel, GaussianFSKernel, Kernel


def _points(rng, n, ncoords=5):
    z = rng.normal(size=(n, ncoords)) + 1j * rng.normal(size=(n, ncoords))
    return np.concatenate([z.real, z.imag], axis=1)


def _fs_distance_numpy(x1, x2):
    """Paper eq. (3.2), written out independently: arccos sqrt(|z1^H z2|^2 / (|z1|^2 |z2|^2))."""
    n = x1.shape[1] // 2
    z1 = x1[:, :n] + 1j * x1[:, n:]
    z2 = x2[:, :n] + 1j * x2[:, n:]
    d = np.empty((len(z1), len(z2)))
    for a in range(len(z1)):
        for b in range(len(z2)):
            c2 = abs(np.vdot(z1[a], z2[b])) ** 2 / (np.vdot(z1[a], z1[a]).real * np.vdot(z2[b], z2[b]).real)
            d[a, b] = np.arccos(np.sqrt(min(c2, 1.0)))
    return d


def test_gaussian_fs_matches_formula(rng):
    x1, x2 = _points(rng, 7), _points(rng, 5)
    kernel = GaussianFSKernel(sigma=0.3)
    assert kernel.component_diagonal and isinstance(kernel, Kernel)
    block = kernel(x1, x2)
    expected = np.exp(-_fs_distance_numpy(x1, x2) / (2 * 0.3))
    np.testing.assert_allclose(block, expected, rtol=1e-8)
    assert block.shape == (7, 5) and block.dtype == np.float64
    # symmetric, unit diagonal, projective invariance (z -> lambda z), chunking
    sym = kernel(x1)
    np.testing.assert_array_equal(sym, sym.T)
    np.testing.assert_array_equal(np.diag(sym), 1.0)
    z1 = (x1[:, :5] + 1j * x1[:, 5:]) * (0.3 - 2.0j)
    scaled = np.concatenate([z1.real, z1.imag], axis=1)
    np.testing.assert_allclose(kernel(scaled, x2), block, rtol=1e-8)
    np.testing.assert_allclose(GaussianFSKernel(0.3, chunk_size=2)(x1, x2), block, rtol=1e-14)
    # the paper's sigma = 30 gives a nearly flat kernel on P^4 (distances <= pi/2)
    flat = GaussianFSKernel()(x1, x2)
    assert flat.min() > np.exp(-np.pi / 2 / 60) - 1e-12


def test_gaussian_fs_full_and_matvec(rng):
    x1, x2 = _points(rng, 4), _points(rng, 6)
    kernel = GaussianFSKernel(sigma=0.5)
    k = kernel(x1, x2)
    full = kernel.full(x1, x2, n_components=9)
    assert full.shape == (4, 6, 9, 9)
    np.testing.assert_array_equal(full[:, :, 2, 2], k)
    assert np.all(full[:, :, 1, 2] == 0)
    v = rng.normal(size=(6, 9))
    np.testing.assert_allclose(kernel.matvec(x1, x2, v, chunk_size=3), k @ v, rtol=1e-13)
    # single points drop their axis
    assert kernel(x1[0], x2).shape == (6,) and kernel(x1[0], x2[1]).shape == ()


def test_delta_kernel_is_nearest_neighbour(rng):
    x_train = _points(rng, 20)
    x_test = _points(rng, 8)
    kernel = DeltaKernel()
    block = kernel(x_test, x_train)
    assert block.shape == (8, 20)
    np.testing.assert_array_equal(block.sum(axis=1), 1.0)
    nearest = np.argmin(_fs_distance_numpy(x_test, x_train), axis=1)
    np.testing.assert_array_equal(np.argmax(block, axis=1), nearest)
    # each point of the train set is its own nearest neighbour
    np.testing.assert_array_equal(kernel(x_train), np.eye(20))
    np.testing.assert_array_equal(kernel(x_train, x_train), np.eye(20))
    v = rng.normal(size=(20, 9))
    np.testing.assert_array_equal(kernel.matvec(x_test, x_train, v), v[nearest])
    np.testing.assert_array_equal(Kernel.matvec(kernel, x_test, x_train, v), v[nearest])
    d, idx = kernel.nearest(x_test, x_train)
    np.testing.assert_array_equal(idx, nearest)
    np.testing.assert_allclose(d, _fs_distance_numpy(x_test, x_train).min(axis=1), atol=1e-7)


def test_kernel_base_class_contract(rng):
    class Bad(Kernel):
        def _block(self, x1, x2):
            return np.zeros((1, 1))

    with pytest.raises(RuntimeError, match=r"Bad._block returned shape \(1, 1\); expected \(3, 3\)"):
        Bad()(_points(rng, 3))
    with pytest.raises(TypeError):
        Kernel()  # abstract
    assert "sigma=2.0" in repr(GaussianFSKernel(2.0))
