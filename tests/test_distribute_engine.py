"""The TensorFlow kernel-product engine: tiles against the NumPy reference, shards, errors, resuming a fit."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cyntk.flows import KernelModel  # noqa: E402
from cyntk.flows.options import Chunking  # noqa: E402
from cyntk.flows.product import KernelProduct  # noqa: E402
from cyntk.flows.tf_product import TFKernelProduct  # noqa: E402
from cyntk.flows.tf_tiles import acos, tile_form  # noqa: E402
from cyntk.geometry import fermat_quintic, to_real  # noqa: E402
from cyntk.kernels.analytic import InfiniteWidthKernel  # noqa: E402
from cyntk.kernels.cosine import CosineNTKKernel  # noqa: E402
from cyntk.kernels.fs import DeltaKernel, GaussianFSKernel  # noqa: E402
from cyntk.kernels.manifold import ManifoldGaussianKernel  # noqa: E402

M = fermat_quintic()

KERNELS = {
    "gauss": lambda: GaussianFSKernel(0.1),
    "gauss_wide": lambda: GaussianFSKernel(30.0),
    "relu_paper": lambda: InfiniteWidthKernel("relu", W_std=80.52, b_std=5.716, depth=1),
    "relu_nngp": lambda: InfiniteWidthKernel("relu", W_std=1.5, b_std=0.1, depth=1, kind="nngp"),
    "relu_depth3": lambda: InfiniteWidthKernel("relu", W_std=1.4, b_std=0.1, depth=3),
    "relu_depth2_nngp": lambda: InfiniteWidthKernel("relu", W_std=1.4, b_std=0.1, depth=2, kind="nngp"),
    "linear": lambda: InfiniteWidthKernel("relu", W_std=1.2, b_std=0.3, depth=0),
    "erf_numpy_tiles": lambda: InfiniteWidthKernel("erf", W_std=1.4, b_std=0.1, depth=2),
    "cosine": lambda: CosineNTKKernel(3.0),
    "manifold": lambda: ManifoldGaussianKernel(0.3, M, (0, 1), rescaling="riemannian"),
    "delta": lambda: DeltaKernel(),
}
TF_FORMS = {"gauss", "gauss_wide", "relu_paper", "relu_nngp", "relu_depth3", "relu_depth2_nngp", "linear", "cosine"}
TF_FORMS |= {"manifold"}


@pytest.fixture(scope="module")
def pts():
    x = to_real(M.sample_points(190, seed=11, chart=(0, 1)))
    return x[:130], x[130:]


def _close(u, ref, rtol=1e-12):
    assert np.abs(u - ref).max() <= rtol * np.abs(ref).max(), np.abs(u - ref).max() / np.abs(ref).max()


def test_acos_matches_numpy():
    c = np.concatenate(
        [np.linspace(-1, 1, 20001), 1 - np.logspace(-16, -1, 300), -1 + np.logspace(-16, -1, 300), [0.5, -0.5]]
    )
    ours = acos(tf.constant(c)).numpy()
    ref = np.arccos(c)
    assert np.abs(ours - ref).max() <= 4.5e-16
    assert np.all(np.abs(ours - ref) <= 2.3e-16 * np.abs(ref) + 1e-300)
    pos = c[c >= 0]
    np.testing.assert_array_equal(acos(tf.constant(pos), nonnegative=True).numpy(), acos(tf.constant(pos)).numpy())


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_tf_engine_equals_the_numpy_engine(pts, rng, name):
    kernel = KERNELS[name]()
    xa, xb = pts
    assert (tile_form(kernel) is not None) == (name in TF_FORMS)
    ref = KernelProduct(kernel, 9, tile_size=256)
    eng = TFKernelProduct(kernel, 9, tile_size=32, n_threads=2, tiles="xla")  # 5 x 5 tiles, the last one padded
    assert (eng.form is not None) == (name in TF_FORMS)
    va, vb = rng.standard_normal((len(xa), 9)), rng.standard_normal((len(xb), 9))
    for x2, v, same in ((xa, va, True), (xb, vb, False)):
        expected = ref.matvec(xa, x2, v, same=same)
        _close(eng.matvec(xa, x2, v, same=same), expected)
        # three shards: disjoint parts whose sum is the product
        parts = [eng.matvec(xa, x2, v, same=same, shard=(r, 3)) for r in range(3)]
        _close(sum(parts), expected)
        assert sum(np.any(p != 0) for p in parts) >= 2
    # the same scheduling and shards with the kernel's NumPy blocks as tiles
    np_tiles = TFKernelProduct(kernel, 9, tile_size=32, n_threads=2, tiles="numpy")
    assert np_tiles.form is None and np_tiles.tiles == "numpy"
    parts = [np_tiles.matvec(xa, xa, va, same=True, shard=(r, 2)) for r in range(2)]
    _close(parts[0] + parts[1], ref.matvec(xa, xa, va, same=True))
    # block-diagonal (clustered) products
    groups = np.arange(len(xa)) % 3
    expected = ref.grouped_matvec(xa, groups, xa, groups, va, same=True)
    parts = [eng.grouped_matvec(xa, groups, xa, groups, va, same=True, shard=(r, 2)) for r in range(2)]
    _close(parts[0] + parts[1], expected)


def test_dense_kernel_product_is_the_ground_truth(pts, rng):
    """The TF tiles against the kernel's own dense block (not the other engine)."""
    xa, _ = pts
    v = rng.standard_normal((len(xa), 9))
    for kernel in (GaussianFSKernel(0.2), InfiniteWidthKernel("relu", W_std=80.52, b_std=5.716)):
        _close(TFKernelProduct(kernel, 9, tile_size=64, tiles="xla").matvec(xa, xa, v, same=True), kernel(xa) @ v)


def test_non_finite_entries_and_bad_shards_raise(pts):
    xa, _ = pts
    eng = TFKernelProduct(GaussianFSKernel(0.1), 9, tile_size=32, tiles="xla")
    bad = xa.copy()
    bad[40, 0] = np.nan
    with np.errstate(invalid="ignore"), pytest.raises(ValueError, match=r"GaussianFSKernel returned non-finite"):
        eng.matvec(bad, bad, np.ones((len(bad), 9)), same=True)
    for shard, err, msg in (
        ((2, 2), ValueError, r"0 <= index < count; received \(2, 2\)"),
        ((0, 0), ValueError, r"received \(0, 0\)"),
        ("ab", TypeError, r"pair \(index, count\) of integers"),
    ):
        with pytest.raises(err, match=msg):
            eng.matvec(xa, xa, np.ones((len(xa), 9)), shard=shard)


def test_engine_options_are_validated():
    assert Chunking().engine == "tf" and Chunking().tile_size is None
    with pytest.raises(ValueError, match=r"`engine` must be one of 'tf', 'numpy'; received 'jax'"):
        Chunking(engine="jax")
    with pytest.raises(ValueError, match=r"`device` needs engine='tf'"):
        Chunking(engine="numpy", device="/GPU:0")
    with pytest.raises(TypeError, match=r"`device` must be None or a device name"):
        Chunking(device=3)
    with pytest.raises(ValueError, match=r"`tiles` must be one of 'auto', 'xla', 'numpy'; received 'gpu'"):
        Chunking(tiles="gpu")
    with pytest.raises(ValueError, match=r"`tiles` must be one of 'auto', 'xla', 'numpy'; received 'gpu'"):
        TFKernelProduct(GaussianFSKernel(0.1), 9, tiles="gpu")


def test_interrupted_fit_resumes_with_backup_and_restore(tmp_path):
    """A fit stopped after epoch 2 (a lost worker, say) resumes from its backup to the same final state."""
    x = to_real(M.sample_points(40, seed=2, chart=(0, 1)))
    y = KernelModel.targets(M, x)

    def model():
        m = KernelModel(GaussianFSKernel(0.1), x, M, tile_size=16, tiles="xla")
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=2.0**-12, momentum=0.5))
        return m

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("worker lost")

    full = model()
    full.fit(x, y, batch_size=len(x), epochs=4, verbose=0, shuffle=False)
    first = model()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="worker lost"):
        first.fit(x, y, batch_size=len(x), epochs=4, verbose=0, shuffle=False, callbacks=[backup, Crash()])
    assert int(first.optimizer.iterations.numpy()) == 2
    again = model()  # a fresh process would build the same model
    hist = again.fit(x, y, batch_size=len(x), epochs=4, verbose=0, shuffle=False, callbacks=[backup])
    assert len(hist.history["loss"]) == 2  # epochs 3 and 4 only
    assert int(again.optimizer.iterations.numpy()) == 4
    for name in ("alpha", "u_train"):
        np.testing.assert_allclose(getattr(again, name).numpy(), getattr(full, name).numpy(), rtol=1e-12, atol=0)
