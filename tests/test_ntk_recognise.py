"""Metric models recognised by what they compute; the per-point loop where pfor fails;
the callback across several fit calls, its failure channel and kept histories."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import small_mlp
from cyntk.callbacks import MetricNTKCallback
from cyntk.flows.kernel_model import KernelModel
from cyntk.flows.ode import stability_limit
from cyntk.geometry import chart_counts, fermat_quintic, select_chart, to_real
from cyntk.kernels import EmpiricalNTKKernel, metric_ntk, metric_ntk_path
from cyntk.kernels.ntk import _engine_for
from cyntk.kernels.recognise import hermitian_hessian_entries
from cyntk.models import MultiplicativeModel, PhiModel, hermitian_from_components_tf


def brute_force(model, x, dtype="float64"):
    """Per-point Jacobians (persistent tape, no pfor) of the real components, NumPy contraction."""
    from cyntk.kernels.recognise import output_components

    variables = model.trainable_variables
    g = np.asarray(model(tf.constant(x[:2], dtype), training=False))
    kind = "metric" if np.allclose(g, np.conj(np.swapaxes(g, -1, -2)), atol=1e-12) else "complex"
    rows = []
    for xi in x:
        with tf.GradientTape(persistent=True) as tape:
            c = output_components(kind)(model(tf.constant(xi[None], dtype), training=False))[0]
        jac = tape.jacobian(c, variables, experimental_use_pfor=False)
        rows.append(np.concatenate([np.reshape(j.numpy(), (c.shape[0], -1)) for j in jac], 1))
    J = np.stack(rows)
    return np.einsum("aip,bjp->abij", J, J)


@pytest.fixture(scope="module")
def quintic_points():
    M = fermat_quintic()
    return M, to_real(M.sample_points(5, seed=3))


class _Path:
    def __init__(self, model):
        self.path = metric_ntk_path(model)
        self.reason = _engine_for(model, output="auto", implementation="auto", chunk_size=None).reason


def _engine(model):
    return _Path(model)


def test_cyntk_multiplicative_and_phi_models_take_the_structured_path(quintic_points):
    M, x = quintic_points
    mult = _sigma_only(M)
    phi = PhiModel(small_mlp(10, 1, width=32, seed=1), M, dtype="float64")
    for model in (mult, phi):
        theta = metric_ntk(model, x)
        assert _engine(model).path.startswith("structured"), _engine(model).reason
        ref = brute_force(model, x)
        assert np.max(np.abs(theta - ref)) / np.abs(ref).max() < 1e-10


class ScatterMultiplicative(keras.Model):
    """g = G + G * H(nn(x)) with G built by an int64 tensor_scatter_nd_update (pfor cannot convert it),
    and no `network`/`fs_metric` attributes: only its behaviour identifies it."""

    def __init__(self, nn):
        super().__init__(dtype="float64")
        self.core = nn

    def _base(self, x):
        b = tf.shape(x)[0]
        diag = 1.0 + tf.reduce_sum(x[:, :3] ** 2, axis=1)  # (B,)
        idx = tf.stack([tf.range(b, dtype=tf.int64), tf.zeros([b], tf.int64)], 1)
        base = tf.tensor_scatter_nd_update(tf.ones((b, 3), x.dtype) * 0.5, idx, diag)
        return tf.linalg.diag(tf.complex(base, tf.zeros_like(base)))

    def call(self, x, training=False):
        G = self._base(x)
        return G + G * hermitian_from_components_tf(self.core(x, training=training))


class OpaqueModel(ScatterMultiplicative):
    """Not of a recognised form: the generic path (the per-point loop, since pfor fails)."""

    def call(self, x, training=False):
        G = self._base(x)
        h = hermitian_from_components_tf(self.core(x, training=training))
        return G + tf.linalg.matmul(h, tf.linalg.matmul(G, h), adjoint_a=True)


def test_pfor_failure_falls_back_to_a_loop_and_structure_is_found_by_behaviour(rng):
    x = rng.standard_normal((4, 6))
    model = ScatterMultiplicative(small_mlp(6, 9, width=8))
    with pytest.warns(RuntimeWarning, match="pfor"):
        generic = metric_ntk(model, x, implementation="generic")
    theta = metric_ntk(model, x)
    assert _engine(model).path.startswith("structured (multiplicative")
    ref = brute_force(model, x)
    for t in (generic, theta):
        assert np.max(np.abs(t - ref)) / np.abs(ref).max() < 1e-10
    opaque = OpaqueModel(small_mlp(6, 9, width=8, seed=2))
    with pytest.warns(RuntimeWarning, match="per-point Jacobian loop"):
        theta = metric_ntk(opaque, x)
    assert _engine(opaque).path == "generic (per-point loop)"
    ref = brute_force(opaque, x)
    assert np.max(np.abs(theta - ref)) / np.abs(ref).max() < 1e-10


def test_hermitian_hessian_entries_against_numpy(rng):
    D = rng.standard_normal((2, 6, 6))
    D = D + np.swapaxes(D, 1, 2)
    h = hermitian_hessian_entries(tf.constant(D)).numpy()
    S = D[:, :3, :3] + D[:, 3:, 3:]
    A = D[:, :3, 3:] - D[:, 3:, :3]
    iu, ia = np.triu_indices(3), np.triu_indices(3, 1)
    np.testing.assert_array_equal(h, np.concatenate([S[:, iu[0], iu[1]], A[:, ia[0], ia[1]]], 1))


def test_float32_kernel_stability_limit():
    M = fermat_quintic()
    x = to_real(M.sample_points(8, seed=0, chart=(0, 1)))
    model = MultiplicativeModel(small_mlp(10, 9, width=8, dtype="float32"), M, dtype="float32")
    flow = KernelModel(EmpiricalNTKKernel(model), x, M)
    out = stability_limit(flow, KernelModel.targets(M, x))
    assert np.isfinite(out["lambda_max"]) and out["dt_max"] > 0


def test_chart_helpers():
    M = fermat_quintic()
    x = to_real(M.sample_points(300, seed=1))
    counts = chart_counts(M, x)
    assert sum(counts.values()) == 300 and list(counts.values()) == sorted(counts.values(), reverse=True)
    chart = next(iter(counts))
    sel, idx = select_chart(M, x, chart, return_index=True)
    assert len(sel) == counts[chart]
    assert np.all(M.charts(M.sample_points(1, seed=1))[0] >= 0)
    np.testing.assert_array_equal(M.charts(to_complex_rows(sel))[:, 0], chart[0])
    with pytest.raises(ValueError, match="chart"):
        select_chart(M, x, (0, 0))
    with pytest.raises(ValueError, match="points"):
        chart_counts(M, x[:, :4])


def to_complex_rows(x):
    from cyntk.geometry import to_complex

    return to_complex(x)


# ----------------------------------------------------------------------------- callback
def _data(rng, n=40):
    M = fermat_quintic()
    x = to_real(M.sample_points(n, seed=int(rng.integers(1000))))
    return M, x, KernelModel.targets(M, x)


def _sigma_only(M):
    """A small float64 multiplicative model trained on the sigma loss only (cheap to trace)."""
    return MultiplicativeModel(
        small_mlp(10, 9, width=8, features=True),
        M,
        kappa=0.0176,
        sigma=1.0,
        kaehler=0.0,
        transition=0.0,
        volk=0.0,
        dtype="float64",
    )


def test_callback_across_fits_like_train_model(rng, tmp_path):
    M, x, y = _data(rng)
    model = _sigma_only(M)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    theta0 = metric_ntk(model, np.concatenate([x[:3], x[3:6]]))
    cb = MetricNTKCallback(x[:3], x[3:6], log_dir=tmp_path, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for _ in range(2):  # two fits per epoch, callbacks on the 2nd
            model.fit(x, y, epochs=1, batch_size=8, verbose=0)
            model.fit(x, y, epochs=1, batch_size=40, verbose=0, callbacks=[cb])
    assert cb.history.epochs == [0, 1, 2]
    np.testing.assert_allclose(cb.history.arrays["theta_reference"], theta0, rtol=1e-12)
    assert len(list((tmp_path / "metric_ntk").glob("events.out.tfevents.*"))) == 1
    # without model=, a model trained before the callback sees it is warned about
    cb2 = MetricNTKCallback(x[:3], x[3:6])
    with pytest.warns(UserWarning, match="optimizer steps"):
        model.fit(x, y, epochs=1, batch_size=40, verbose=0, callbacks=[cb2])
    with pytest.raises(ValueError, match="one callback"):
        other = _sigma_only(M)
        other.compile(optimizer="adam")
        other.fit(x, y, epochs=1, batch_size=40, verbose=0, callbacks=[cb])


def test_failed_record_does_not_stop_training(rng):
    M, x, y = _data(rng)
    model = _sigma_only(M)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    calls = []

    def flaky(model, pts):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("engine exploded")
        return metric_ntk(model, pts)

    cb = MetricNTKCallback(x[:3], x[3:6], ntk_fn=flaky)
    with pytest.warns(RuntimeWarning, match="engine exploded"):
        hist = model.fit(x, y, epochs=3, batch_size=40, verbose=0, callbacks=[cb])
    assert cb.history.epochs == [0, 2, 3]
    assert cb.history.meta["errors"][0]["epoch"] == 1
    assert hist.history["ntk_failed"] == [1.0]
    assert np.isnan(hist.history["ntk_wasserstein_train_test"][0])
    cb_raise = MetricNTKCallback(x[:3], x[3:6], ntk_fn=flaky, on_error="raise")
    calls.clear()
    calls.append(1)
    with pytest.raises(RuntimeError, match="engine exploded"):
        model.fit(x, y, epochs=1, batch_size=40, verbose=0, callbacks=[cb_raise])
    with pytest.raises(ValueError, match="on_error"):
        MetricNTKCallback(x[:3], x[3:6], on_error="ignore")


def test_new_history_keeps_the_old_one(rng, tmp_path):
    M, x, y = _data(rng)
    model = _sigma_only(M)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, y, epochs=1, batch_size=40, verbose=0, callbacks=[MetricNTKCallback(x[:3], x[3:6], log_dir=tmp_path)])
    with pytest.warns(UserWarning, match="already held a metric-NTK history"):
        MetricNTKCallback(x[:3], x[3:6], log_dir=tmp_path)
    kept = sorted(p.name for p in (tmp_path / "metric_ntk").glob("history.*.npz") if "_reference" not in p.name)
    assert len(kept) == 1
    from cyntk.callbacks import MetricNTKHistory

    old = MetricNTKHistory.load(tmp_path / "metric_ntk" / kept[0])
    assert old.epochs == [0, 1]


def test_kernel_model_leaves_floatx_alone_and_keeps_float64():
    """fit/evaluate/predict feed float64 through Keras without switching the global floatx."""
    from cyntk.kernels import GaussianFSKernel

    M = fermat_quintic()
    x = to_real(M.sample_points(12, seed=4, chart=(0, 1)))
    y = KernelModel.targets(M, x)
    assert keras.config.floatx() == "float32"
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append((keras.config.floatx(), keras.metrics.Mean().dtype))
    )
    flow = KernelModel(GaussianFSKernel(0.05), x, M)
    flow.compile(optimizer=keras.optimizers.SGD(learning_rate=2.0**-12))
    flow.fit(x, y, batch_size=len(x), epochs=2, verbose=0, callbacks=[probe], validation_data=(x, y))
    assert seen == [("float32", "float32")] * 2
    # the evaluated loss equals the float64 one computed from the float64 prediction
    g = flow.predict(x, batch_size=len(x), verbose=0)
    assert g.dtype == np.complex128
    det = np.real(np.linalg.det(g))
    eta = det / (flow.kappa * y[:, 1])
    loss = flow.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["sigma_loss"]
    assert loss == pytest.approx(float(np.mean(np.abs(1 - eta))), rel=1e-12)
