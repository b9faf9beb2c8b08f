"""The NumPy core of kernel flows: tiled products, grouped products, eigenvalues, row lookup."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tol
from cyntk.flows.product import KernelProduct, RowIndex, is_pairwise, min_eigenvalues
from cyntk.geometry import fermat_quintic, hermitian_from_components, to_real
from cyntk.kernels.analytic import InfiniteWidthKernel
from cyntk.kernels.base import Kernel
from cyntk.kernels.fs import DeltaKernel, GaussianFSKernel

M = fermat_quintic()


class FullGaussian(Kernel):
    """A full (non-diagonal) kernel ``exp(-|x - x'|^2 / 2) A`` with a fixed SPD m x m matrix A."""

    component_diagonal = False
    pairwise = True

    def __init__(self, m):
        r = np.random.default_rng(0).standard_normal((m, m))
        self.A = r @ r.T + m * np.eye(m)

    def _block(self, x1, x2):
        x2 = x1 if x2 is None else x2
        d2 = np.sum((x1[:, None] - x2[None]) ** 2, axis=-1)
        return np.exp(-d2 / 2)[:, :, None, None] * self.A


@pytest.fixture(scope="module")
def pts():
    x = to_real(M.sample_points(120, seed=8, chart=(0, 1)))
    return x[:70], x[70:]


def dense_product(kernel, x1, x2, v, m):
    blk = kernel(x1, x2)
    if blk.ndim == 2:
        return blk @ v
    return np.einsum("abIJ,bJ->aI", blk, v)


@pytest.mark.parametrize(
    "kernel",
    [GaussianFSKernel(0.2), InfiniteWidthKernel("relu", W_std=2.0, b_std=0.3, depth=2), FullGaussian(9)],
    ids=["gaussian", "relu-ntk", "full"],
)
@pytest.mark.parametrize("tile, threads", [(1, 1), (7, 1), (7, 2), (16, 3), (1000, 2)])
def test_tiled_products_equal_untiled(pts, rng, kernel, tile, threads):
    xa, xb = pts
    v = rng.standard_normal((len(xa), 9))
    prod = KernelProduct(kernel, 9, tile_size=tile, n_threads=threads)
    assert prod.pairwise
    # another point set (rectangular tiles) and the set with itself (upper-triangle tiles)
    np.testing.assert_allclose(prod.matvec(xb, xa, v), dense_product(kernel, xb, xa, v, 9), **tol("float64"))
    np.testing.assert_allclose(
        prod.matvec(xa, xa, v, same=True), dense_product(kernel, xa, None, v, 9), **tol("float64")
    )


def test_non_pairwise_kernels_see_the_whole_source_set(pts, rng):
    xa, xb = pts
    kernel = DeltaKernel()
    assert not is_pairwise(kernel)
    v = rng.standard_normal((len(xa), 9))
    prod = KernelProduct(kernel, 9, tile_size=5)
    np.testing.assert_array_equal(prod.matvec(xb, xa, v), dense_product(kernel, xb, xa, v, 9))
    np.testing.assert_array_equal(prod.matvec(xa, xa, v, same=True), v)

    class RowChunked(GaussianFSKernel):
        pairwise = False  # forces the row-chunk path of a kernel without its own matvec

    chunked = RowChunked(0.2)
    prod = KernelProduct(chunked, 9, tile_size=9)
    np.testing.assert_allclose(prod.matvec(xb, xa, v), dense_product(chunked, xb, xa, v, 9), **tol("float64"))


def test_grouped_product_is_the_block_diagonal_kernel(pts, rng):
    xa, xb = pts
    kernel = GaussianFSKernel(0.2)
    ga = rng.integers(0, 3, len(xa))
    gb = rng.integers(0, 3, len(xb))
    v = rng.standard_normal((len(xa), 9))
    prod = KernelProduct(kernel, 9, tile_size=8, n_threads=2)
    mask = gb[:, None] == ga[None, :]
    np.testing.assert_allclose(prod.grouped_matvec(xb, gb, xa, ga, v), (kernel(xb, xa) * mask) @ v, **tol("float64"))
    mask = ga[:, None] == ga[None, :]
    np.testing.assert_allclose(
        prod.grouped_matvec(xa, ga, xa, ga, v, same=True), (kernel(xa, None) * mask) @ v, **tol("float64")
    )


def test_wrong_block_shapes_are_reported(pts):
    xa, _ = pts

    class Bad(Kernel):
        component_diagonal = False
        pairwise = True

        def _block(self, x1, x2):
            x2 = x1 if x2 is None else x2
            return np.zeros((len(x1), len(x2), 4, 4))

    with pytest.raises(ValueError, match=r"must return \(70, 70, 9, 9\)"):
        KernelProduct(Bad(), 9, tile_size=100).matvec(xa, xa, np.zeros((70, 9)))


def test_min_eigenvalues_match_eigvalsh(rng):
    a = rng.standard_normal((20, 3, 3)) + 1j * rng.standard_normal((20, 3, 3))
    h = a @ np.conj(np.swapaxes(a, 1, 2)) - 2.0 * np.eye(3)
    from cyntk.geometry import components_from_hermitian

    comps = components_from_hermitian(h)
    np.testing.assert_allclose(min_eigenvalues(comps), np.linalg.eigvalsh(h)[:, 0], **tol("float64"))
    np.testing.assert_allclose(hermitian_from_components(comps), h, **tol("float64"))


def test_row_index_finds_shuffled_and_float32_batches(pts, rng):
    xa, xb = pts
    index = RowIndex(xa)
    perm = rng.permutation(len(xa))[:25]
    np.testing.assert_array_equal(index.lookup(xa[perm]), perm)
    np.testing.assert_array_equal(index.lookup(xa[perm].astype(np.float32)), perm)
    with pytest.raises(ValueError, match="not among the model's train points"):
        index.lookup(xb[:3])
    with pytest.raises(ValueError, match="not among the model's train points"):
        index.lookup(xa[:3] + 1e-4)
    with pytest.raises(ValueError, match="distinct"):
        RowIndex(np.concatenate([xa, xa[:1]]))
