"""Keras metric models on complete intersections / products of projective spaces.

The in-graph geometry (charts, pullbacks, |Omega|^2, product FS metric) must equal
the NumPy geometry of :class:`cyntk.geometry.CompleteIntersection` in float64, and
cymetric's stored values to its complex64 rounding.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

from cyntk.geometry import CYDataset, bicubic, make_dataset
from cyntk.models import FSModel, MultiplicativeModel

REF = Path(__file__).resolve().parent / "data"  # cymetric reference arrays, see data/*/README.md


def _ref(name):
    d = REF / name
    if not (d / "points_reference.npz").is_file():
        raise FileNotFoundError(f"reference data {d} is missing from the repository checkout")
    return CYDataset.load(d), dict(np.load(d / "points_reference.npz"))


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


@pytest.mark.parametrize("name", ["cymetric_tetraquadric", "cymetric_cicy_p5_33"])
def test_fs_model_matches_numpy_geometry_and_cymetric(name):
    ds, r = _ref(name)
    m = FSModel(ds, dtype="float64")
    X = r["X"]
    geo = ds.manifold.geometry(r["points"], check_variety=False)
    patch, j = m.charts(X)
    np.testing.assert_array_equal(np.asarray(patch), r["one_idx"])
    np.testing.assert_array_equal(np.asarray(j), r["elim_idx"])
    assert _rel(m.pullbacks(X), geo["pullbacks"]) < 1e-12
    assert _rel(m.omega_sq(X), geo["omega_sq"]) < 1e-12
    g = m(X).numpy()
    assert g.shape == (len(X), 3, 3)
    assert _rel(g, geo["fs_metric_pb"]) < 1e-12
    assert _rel(g, r["g_fs_pb"]) < 3e-7  # cymetric's complex64 dQ/dz factors
    terms = m.loss_terms(X, r["y"], terms=("sigma", "kaehler", "volk"))
    assert float(np.max(terms["kaehler"])) < 1e-20  # the FS metric is Kaehler
    assert np.all(np.isfinite(terms["sigma"]))
    # serialisation round trip keeps the manifold
    clone = FSModel.from_config(m.get_config())
    np.testing.assert_allclose(clone(X).numpy(), g, rtol=0, atol=1e-14)


# the transition loss on these manifolds: tests/test_transition_cicy.py (against the real cymetric)


def test_multiplicative_model_trains_on_the_bicubic_with_the_callback():
    from cyntk.callbacks import MetricNTKCallback

    keras.utils.set_random_seed(0)
    ds = make_dataset(bicubic(), 400, seed=0, val_split=0.25)
    net = keras.Sequential(
        [
            keras.Input((2 * ds.manifold.ncoords,)),
            keras.layers.Dense(32, activation="gelu"),
            keras.layers.Dense(9, use_bias=False, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3)),
        ]
    )
    model = MultiplicativeModel(net, ds, kaehler=0.0, transition=0.0, volk=0.0)
    model.compile(keras.optimizers.Adam(1e-3))
    Xt, yt = ds.X_train.astype("float32"), ds.y_train.astype("float32")
    Xv, yv = ds.X_val.astype("float32"), ds.y_val.astype("float32")
    before = model.measures(Xv, yv, which=("sigma",))["sigma"]
    cb = MetricNTKCallback(Xt[:4], Xv[:4], every=1)
    model.fit(Xt, yt, batch_size=100, epochs=2, verbose=0, callbacks=[cb])
    after = model.measures(Xv, yv, which=("sigma",))["sigma"]
    assert model(Xv[:2]).shape == (2, 3, 3)
    assert after < before
    assert len(cb.history) >= 2  # epoch 0 and every epoch recorded


def test_kernel_model_takes_a_cymetric_product_dataset_chart_by_chart():
    from cyntk.flows import KernelModel
    from cyntk.kernels import GaussianFSKernel

    ds, r = _ref("cymetric_tetraquadric")
    with pytest.raises(ValueError, match="mixes .* charts .*one="):
        KernelModel(GaussianFSKernel(sigma=1.0), r["X"][:40], ds)
    model = KernelModel(GaussianFSKernel(sigma=1.0), r["X"][:40], ds, mixed_charts="separate")
    assert model.kappa == ds.kappa and model.kernel.factor_slices == ((0, 2), (2, 4), (4, 6), (6, 8))
