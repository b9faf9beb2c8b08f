"""KernelModel's option groups: PositivityGuard and Chunking, as objects or as flat keywords."""

from __future__ import annotations

import numpy as np
import pytest

from cyntk.flows import Chunking, KernelModel, PositivityGuard
from cyntk.geometry import fermat_quintic, to_real
from cyntk.kernels import GaussianFSKernel

M = fermat_quintic()


@pytest.fixture(scope="module")
def x():
    return to_real(M.sample_points(40, seed=3, chart=(0, 1)))


def test_groups_and_flat_keywords_build_the_same_model(x):
    k = GaussianFSKernel(0.2)
    a = KernelModel(k, x, M, guard=PositivityGuard("backoff", 0.25, 7, 1e-6), chunking=Chunking(64, 1, 16))
    b = KernelModel(
        k,
        x,
        M,
        on_non_positive="backoff",
        backoff_factor=0.25,
        max_backoffs=7,
        eigenvalue_floor=1e-6,
        tile_size=64,
        n_threads=1,
        point_chunk=16,
    )
    for m in (a, b):
        assert (m.on_non_positive, m.backoff_factor, m.max_backoffs, m.eigenvalue_floor) == ("backoff", 0.25, 7, 1e-6)
        assert (m.tile_size, m.n_threads, m.point_chunk) == (64, 1, 16)
    assert a.guard == b.guard and a.chunking == b.chunking
    # defaults: the documented values
    d = KernelModel(k, x, M)
    assert d.guard == PositivityGuard() and d.guard.on_non_positive == "raise" and d.chunking.tile_size is None
    # no tile size given: the engine's own (NumPy tiles on a CPU: 256 points; XLA tiles on a CPU: 2048)
    assert d.chunking.engine == "tf" and d._product.engine == "tf" and d.chunking.tiles == "auto"
    assert (d._product.tiles, d.tile_size) == ("numpy", 256)
    assert KernelModel(k, x, M, tiles="xla").tile_size == 2048
    assert KernelModel(k, x, M, engine="numpy").tile_size == 256


def test_config_round_trip_keeps_the_groups(x):
    m = KernelModel(GaussianFSKernel(0.2), x, M, guard=PositivityGuard("stop"), chunking=Chunking(chunk_size=32))
    clone = KernelModel.from_config(m.get_config())
    assert clone.guard == m.guard and clone.chunking == m.chunking


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(guard=PositivityGuard(), on_non_positive="stop"), ValueError, r"either in `guard`"),
        (dict(chunking=Chunking(), tile_size=8), ValueError, r"either in `chunking`"),
        (dict(chunk_size=8, point_chunk=8), ValueError, r"`chunk_size` .* not both"),
        (dict(guard={"on_non_positive": "stop"}), TypeError, r"`guard` must be a PositivityGuard; received dict"),
        (dict(backoff_factor=1.5), ValueError, r"`backoff_factor` must be in \(0, 1\); received 1.5"),
        (dict(tile_size=0), ValueError, r"`tile_size` must be a positive integer; received 0"),
    ],
)
def test_bad_options_are_named(x, kwargs, err, match):
    with pytest.raises(err, match=match):
        KernelModel(GaussianFSKernel(0.2), x, M, **kwargs)


def test_groups_validate_themselves():
    with pytest.raises(ValueError, match="`on_non_positive` must be one of"):
        PositivityGuard("ignore")
    with pytest.raises(ValueError, match=r"`eigenvalue_floor` must be a finite number >= 0; received -1"):
        PositivityGuard(eigenvalue_floor=-1)
    with pytest.raises(TypeError, match="`n_threads` must be a positive integer"):
        Chunking(n_threads=True)
    assert Chunking(tile_size=512.0).tile_size == 512 and np.isclose(
        PositivityGuard(backoff_factor=0.5).backoff_factor, 0.5
    )
