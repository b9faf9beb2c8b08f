"""The Kernel contract (cyntk.kernels.base): every kernel exported from cyntk.kernels obeys it.

For each kernel class: declared flags (booleans, consistent, declared on the
class itself), symmetry, positive semidefiniteness where promised, the block
= the tiled KernelProduct = ``kernel.matvec`` = a direct einsum, the tile
interface = ``_block``, and the Keras config round trip. A kernel class
exported from :mod:`cyntk.kernels` without a case here fails
:func:`test_every_exported_kernel_is_covered`.
"""

from __future__ import annotations

import inspect
import json

import keras
import numpy as np
import pytest

import cyntk.kernels as kernels_module
from cyntk.flows._kernel_setup import _deserialize_kernel, _serialize_kernel
from cyntk.flows.product import KernelProduct, has_own_matvec, is_pairwise, uses_tile_api
from cyntk.flows.tf_tiles import tile_form
from cyntk.geometry import fermat_cubic, fermat_quintic, to_real
from cyntk.kernels import (
    CosineNTKKernel,
    DeltaKernel,
    EmpiricalNTKKernel,
    GaussianFSKernel,
    InfiniteWidthKernel,
    InfiniteWidthMetricKernel,
    Kernel,
    ManifoldGaussianKernel,
    ntk_mlp,
)
from cyntk.models import MultiplicativeModel

QUINTIC = fermat_quintic()
CUBIC = fermat_cubic()
RTOL = 1e-12

#: the declarations every concrete kernel class states itself
FLAGS = (
    "component_diagonal",
    "pairwise",
    "symmetric",
    "positive_semidefinite",
    "identity_on_same_points",
    "has_tile_api",
    "has_fused_tile_matvec",
    "has_matrix_free_matvec",
    "has_tf_tile",
)
PROPERTIES = ("supports_tiles", "supports_fused_matvec", "matrix_free")


@pytest.fixture(scope="module")
def quintic_points():
    x = to_real(QUINTIC.sample_points(12, seed=5, chart=(0, 1)))
    return x[:7], x[7:]


@pytest.fixture(scope="module")
def cubic_points():
    x = to_real(CUBIC.sample_points(11, seed=2, chart=(0, 1)))
    return x[:6], x[6:]


@pytest.fixture(scope="module")
def multiplicative_model(quintic_points):
    net = ntk_mlp(10, 6, 1, activation="gelu", W_std=[1.5, 0.8], b_std=[0.2, None], n_outputs=9, seed=0)
    model = MultiplicativeModel(net, QUINTIC, kaehler=0.0, transition=0.0, volk=0.0, dtype="float64")
    model(quintic_points[0][:2])
    return model


def _make(name, request):
    """(kernel, (x1, x2), m) of one contract case."""
    if name == "ManifoldGaussianKernel-cubic-chart":
        kernel = ManifoldGaussianKernel(0.7, CUBIC, (0, 1), space="chart", rescaling="riemannian")
        return kernel, request.getfixturevalue("cubic_points"), 1
    pts = request.getfixturevalue("quintic_points")
    if name == "GaussianFSKernel":
        kernel = GaussianFSKernel(0.3)
    elif name == "DeltaKernel":
        kernel = DeltaKernel()
    elif name == "InfiniteWidthKernel":
        kernel = InfiniteWidthKernel("relu", W_std=1.7, b_std=0.4, depth=2)
    elif name == "InfiniteWidthKernel-erf-nngp":
        kernel = InfiniteWidthKernel("erf", W_std=1.3, b_std=0.1, depth=1, kind="nngp")
    elif name == "CosineNTKKernel":
        kernel = CosineNTKKernel(3.0)
    elif name == "ManifoldGaussianKernel":
        kernel = ManifoldGaussianKernel(0.8, QUINTIC, (0, 1))
    elif name == "InfiniteWidthMetricKernel":
        kernel = InfiniteWidthMetricKernel(request.getfixturevalue("multiplicative_model"))
    elif name == "EmpiricalNTKKernel":
        kernel = EmpiricalNTKKernel(request.getfixturevalue("multiplicative_model"))
    else:  # pragma: no cover
        raise KeyError(name)
    return kernel, pts, 9


CASES = [
    "GaussianFSKernel",
    "DeltaKernel",
    "InfiniteWidthKernel",
    "InfiniteWidthKernel-erf-nngp",
    "CosineNTKKernel",
    "ManifoldGaussianKernel",
    "ManifoldGaussianKernel-cubic-chart",
    "InfiniteWidthMetricKernel",
    "EmpiricalNTKKernel",
]


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return _make(request.param, request)


def _full(kernel, x1, x2, m):
    return kernel.full(x1, x2, n_components=m)


def _close(a, b, scale=None):
    scale = np.abs(b).max() if scale is None else scale
    assert np.asarray(a).shape == np.asarray(b).shape
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= RTOL * max(scale, 1e-300)


def _exported_kernel_classes():
    return {
        obj
        for name in kernels_module.__all__
        if inspect.isclass(obj := getattr(kernels_module, name)) and issubclass(obj, Kernel) and obj is not Kernel
    }


# ----------------------------------------------------------------------------- coverage
def test_every_exported_kernel_is_covered():
    covered = {name.split("-")[0] for name in CASES}
    exported = {cls.__name__ for cls in _exported_kernel_classes()}
    assert exported, "no Kernel subclasses found in cyntk.kernels.__all__"
    missing = exported - covered
    assert not missing, f"kernel classes without a contract case in tests/test_kernel_contract.py: {sorted(missing)}"


@pytest.mark.parametrize("cls", sorted(_exported_kernel_classes(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_every_kernel_class_declares_its_flags_and_is_registered(cls):
    for flag in FLAGS:
        assert flag in vars(cls), f"{cls.__name__} must declare `{flag}` itself"
        assert isinstance(vars(cls)[flag], bool), f"{cls.__name__}.{flag} must be a bool"
    assert keras.saving.get_registered_object(f"cyntk>{cls.__name__}") is cls


# ----------------------------------------------------------------------------- flags
def test_flags_are_booleans_and_consistent(case):
    kernel, (x1, _), m = case
    for name in FLAGS + PROPERTIES:
        assert isinstance(getattr(kernel, name), bool), name
    if kernel.pairwise:
        assert kernel.symmetric, "pairwise kernels must be symmetric (half tiling)"
    if kernel.supports_fused_matvec:
        assert kernel.supports_tiles and kernel.component_diagonal
    if kernel.identity_on_same_points:
        assert kernel.positive_semidefinite
    assert kernel.supports_tiles == kernel.has_tile_api
    assert kernel.matrix_free == kernel.has_matrix_free_matvec
    if kernel.has_tf_tile:  # the TF engine's tiles replace the pairwise block (its own, not the NumPy tile API)
        assert kernel.pairwise and not kernel.matrix_free
    if tile_form(kernel) is not None:
        assert kernel.has_tf_tile, "cyntk.flows.tf_tiles reads the declaration"
    # the engine's readers report the declarations
    assert is_pairwise(kernel) == kernel.pairwise
    assert has_own_matvec(kernel) == kernel.matrix_free
    assert uses_tile_api(kernel) == kernel.supports_tiles
    prod = KernelProduct(kernel, m)
    assert (prod.pairwise, prod.own_matvec) == (kernel.pairwise, kernel.matrix_free)
    blk = kernel(x1[:3], x1[:2])
    if kernel.component_diagonal:
        assert blk.shape == (3, 2)
    else:
        assert blk.shape == (3, 2, m, m)
        assert kernel.n_components in (None, m)


# ----------------------------------------------------------------------------- symmetry, PSD
def test_symmetry(case):
    kernel, (x1, x2), m = case
    same = _full(kernel, x1, None, m)
    _close(same, same.transpose(1, 0, 3, 2))
    if kernel.symmetric:
        _close(_full(kernel, x1, x2, m), _full(kernel, x2, x1, m).transpose(1, 0, 3, 2))
    if kernel.identity_on_same_points:
        np.testing.assert_array_equal(kernel(x1), np.eye(len(x1)))


def test_positive_semidefinite_where_promised(case):
    kernel, (x1, x2), m = case
    if not kernel.positive_semidefinite:  # no promise: the class must say why in its documentation
        doc = " ".join((type(kernel).__doc__ or "").split()).lower()
        assert "positive semidefinite" in doc or "positive definite" in doc, type(kernel).__name__
        return
    x = np.concatenate([x1, x2])
    blk = _full(kernel, x, None, m)
    mat = blk.transpose(0, 2, 1, 3).reshape(len(x) * m, len(x) * m)
    ev = np.linalg.eigvalsh(0.5 * (mat + mat.T))
    assert ev.min() >= -1e-10 * np.abs(ev).max()


# ----------------------------------------------------------------------------- products
def test_block_tiled_product_matvec_and_einsum_agree(case, rng):
    kernel, (x1, x2), m = case
    v2 = rng.standard_normal((len(x2), m))
    v1 = rng.standard_normal((len(x1), m))
    ref = np.einsum("abIJ,bJ->aI", _full(kernel, x1, x2, m), v2)
    ref_same = np.einsum("abIJ,bJ->aI", _full(kernel, x1, None, m), v1)
    _close(kernel.matvec(x1, x2, v2), ref)
    for tile, threads in ((2, 1), (3, 2), (100, 1)):
        prod = KernelProduct(kernel, m, tile_size=tile, n_threads=threads)
        _close(prod.matvec(x1, x2, v2), ref)
        _close(prod.matvec(x1, x1, v1, same=True), ref_same)
    if kernel.component_diagonal:
        _close(kernel(x1, x2) @ v2, ref)


def test_tile_interface_equals_block(case, rng):
    kernel, (x1, x2), m = case
    if not kernel.supports_tiles:
        with pytest.raises(NotImplementedError):
            kernel.tile_state(x1)
        return
    s1, s2 = kernel.tile_state(x1), kernel.tile_state(x2)
    blk, same = kernel._block(x1, x2), kernel._block(x1, None)
    _close(kernel.tile_block(s1, s2), blk)
    _close(kernel.tile_block(s1), same)
    rows = slice(1, 4)
    _close(kernel.tile_block(tuple(s[rows] for s in s1), s2), blk[rows])
    if kernel.supports_fused_matvec:
        v2 = rng.standard_normal((len(x2), m))
        v1 = rng.standard_normal((len(x1), m))
        u2, u1 = kernel.tile_matvec(s1, s2, v2, v1)
        _close(u2, blk @ v2)
        _close(u1, blk.T @ v1)
        u, none = kernel.tile_matvec(s1, None, v1)
        assert none is None
        _close(u, same @ v1)


# ----------------------------------------------------------------------------- serialisation
def test_keras_config_round_trip(case):
    kernel, (x1, x2), m = case
    cfg = json.loads(json.dumps(keras.saving.serialize_keras_object(kernel)))
    assert cfg["registered_name"] == f"cyntk>{type(kernel).__name__}"
    again = keras.saving.deserialize_keras_object(cfg)
    assert type(again) is type(kernel)
    for name in FLAGS + PROPERTIES:
        assert getattr(again, name) == getattr(kernel, name), name
    _close(again(x1, x2), kernel(x1, x2))
    _close(again(x1), kernel(x1))
    if not isinstance(kernel, EmpiricalNTKKernel):  # a KernelModel saves its empirical NTK without the model
        _close(_deserialize_kernel(json.loads(json.dumps(_serialize_kernel(kernel))))(x1, x2), kernel(x1, x2))


def test_configs_saved_before_keras_registration_still_load(quintic_points):
    x1, x2 = quintic_points
    old = {"class_name": "GaussianFSKernel", "module": "cyntk.kernels.fs", "config": {"sigma": 0.3}}
    np.testing.assert_array_equal(_deserialize_kernel(old)(x1, x2), GaussianFSKernel(0.3)(x1, x2))
    old = {
        "class_name": "ManifoldGaussianKernel",
        "module": "cyntk.kernels.manifold",
        "config": {"sigma": 0.8, "chart": [0, 1], "space": "input", "rescaling": "none", "manifold": "fermat_quintic"},
    }
    ref = ManifoldGaussianKernel(0.8, QUINTIC, (0, 1))(x1, x2)
    np.testing.assert_array_equal(_deserialize_kernel(old)(x1, x2), ref)


def test_subclass_overriding_block_loses_the_fast_paths(quintic_points):
    x1, x2 = quintic_points

    class Doubled(GaussianFSKernel):
        def _block(self, a, b):
            return 2.0 * super()._block(a, b)

    class DoubledDelta(DeltaKernel):
        def _block(self, a, b):
            return 2.0 * super()._block(a, b)

    assert GaussianFSKernel(0.3).supports_tiles and not Doubled(0.3).supports_tiles
    assert DeltaKernel().matrix_free and not DoubledDelta().matrix_free
    v = np.ones((len(x2), 9))
    prod = KernelProduct(Doubled(0.3), 9, tile_size=2)
    _close(prod.matvec(x1, x2, v), 2.0 * GaussianFSKernel(0.3)(x1, x2) @ v)
