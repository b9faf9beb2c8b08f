"""MetricNTKCallback end to end: short fits on a small quintic set and on stand-in models.

Kept small for 2 CPU cores: 5-10 tracked points, 2-3 epochs, networks of width
<= 128 except the one lazy-regime control.
"""

from __future__ import annotations

import contextlib
import warnings

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from cyntk.callbacks import (
    MetricNTKCallback,
    MetricNTKHistory,
    kernel_target_alignment,
    plot_figure4,
    pooled_block_spectrum,
    relative_frobenius_change,
)
from cyntk.geometry import fermat_quintic, make_dataset
from cyntk.models import MultiplicativeModel

DISTANCE_WORDS = ("wasserstein", "frobenius", "kernel_distance")


# ----------------------------------------------------------------------------- fixtures / helpers
@pytest.fixture(scope="module")
def quintic():
    """A small Fermat-quintic data set: 270 train and 30 validation points."""
    return make_dataset(fermat_quintic(), 300, seed=0)


def mlp(width, depth, out, activation="gelu", d=10):
    return keras.Sequential(
        [keras.Input((d,))]
        + [keras.layers.Dense(width, activation=activation) for _ in range(depth)]
        + [keras.layers.Dense(out, use_bias=False)]
    )


def quintic_model(ds, width=32, depth=3, optimizer=None, seed=0):
    """cymetric's multiplicative model g = G + G * H(nn) with the sigma loss (cheap to trace)."""
    keras.utils.set_random_seed(seed)
    model = MultiplicativeModel(mlp(width, depth, 9), ds, kaehler=0.0, transition=0.0, volk=0.0)
    model.compile(optimizer or keras.optimizers.Adam(1e-3))
    return model


def to_hermitian(o, n):
    """cymetric's ``to_hermitian``: n*n reals (row-major A) -> hermitian (B, n, n) via band parts."""
    t1 = tf.reshape(tf.complex(o, tf.zeros_like(o)), (-1, n, n))
    up = tf.linalg.band_part(t1, 0, -1)
    low = tf.linalg.band_part(1j * t1, -1, 0)
    out = up + tf.transpose(up, perm=[0, 2, 1]) - tf.linalg.band_part(t1, 0, 0)
    return out + low + tf.transpose(low, perm=[0, 2, 1], conjugate=True)


class CymetricStandIn(keras.Model):
    """A model with only cymetric's call signature: real (B, 2N) -> complex (B, n, n).

    No cyntk base class or attributes; trained with a squared loss against target
    components y (B, n*n) in a hand-written ``train_step``, like cymetric's models.
    """

    def __init__(self, n=3, width=16, out_rank=3, **kwargs):
        super().__init__(**kwargs)
        self.n, self.out_rank = n, out_rank
        self.nn = keras.Sequential([keras.layers.Dense(width, activation="gelu"), keras.layers.Dense(n * n)])
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, x, training=None, j_elim=None):
        o = self.nn(x, training=training)
        if self.out_rank == 4:  # a bad model: neither metric nor vector
            return tf.reshape(o, (-1, 1, self.n, self.n))
        return to_hermitian(o, self.n)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            g = self(x, training=True)
            loss = tf.reduce_mean(tf.abs(g - to_hermitian(tf.cast(y, tf.float32), self.n)) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def standin(seed=0, lr=1e-2, **kwargs):
    keras.utils.set_random_seed(seed)
    model = CymetricStandIn(**kwargs)
    model.compile(keras.optimizers.Adam(lr))
    model(np.zeros((1, 10), np.float32))
    return model


def standin_data(rng, n=64):
    x = rng.standard_normal((n, 10))
    y = np.tile(np.eye(3).reshape(1, 9), (n, 1)) + 0.1 * rng.standard_normal((n, 9))
    return x, y


def reference_ntk(model, x):
    """Private reference: Theta[a, b, I, J] from full GradientTape Jacobians (cymetric order)."""
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        g = model(x, training=False)
        n = g.shape[-1]
        lower = np.tril(np.ones((n, n), bool), -1)
        o = tf.reshape(tf.where(lower, tf.math.imag(g), tf.math.real(g)), (len(x), n * n))
    jac = tape.jacobian(o, model.trainable_variables)
    j = np.concatenate([np.reshape(a, (len(x), n * n, -1)) for a in jac], axis=-1).astype(np.float64)
    return np.einsum("aIk,bJk->abIJ", j, j)


@contextlib.contextmanager
def op_determinism():
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:  # restore the global default for the other tests of the session
        from tensorflow.python.framework import config as tf_config

        if hasattr(tf_config, "disable_op_determinism"):
            tf_config.disable_op_determinism()


# ----------------------------------------------------------------------------- quintic end to end
@pytest.fixture(scope="module")
def quintic_run(quintic, tmp_path_factory):
    """3 epochs of the multiplicative model on the quintic with the callback (every=1)."""
    log_dir = tmp_path_factory.mktemp("run")
    model = quintic_model(quintic)
    cb = MetricNTKCallback(5, 5, data=quintic, seed=0, log_dir=log_dir, log_spectrum=True)
    early = keras.callbacks.EarlyStopping(monitor="ntk_wasserstein_train_test", mode="max", patience=5)
    keras_tb = keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0)
    hist = model.fit(
        quintic.X_train, quintic.y_train, epochs=3, batch_size=64, verbose=0, callbacks=[cb, early, keras_tb]
    )
    return cb, hist, log_dir


def test_fit_records_one_entry_per_epoch(quintic_run):
    cb, hist, _ = quintic_run
    h = cb.history
    assert h.epochs == [0, 1, 2, 3]
    assert h.meta["output_kind"] == "metric" and h.meta["m"] == 9
    assert cb.x_train.shape == (5, 10) and cb.x_test.shape == (5, 10)
    for key, values in h.scalars.items():
        v = np.asarray(values)
        assert v.shape == (4,) and np.all(np.isfinite(v)), key
        if any(w in key for w in DISTANCE_WORDS):
            assert np.all(v >= 0), key
            assert v[0] == 0.0, key  # epoch 0 against itself: exactly zero
    assert h.scalar("ntk_frobenius_train_test")[-1] > 1e-3  # the kernel moved
    assert h.scalar("ntk_wasserstein_train_test")[-1] > 0
    for spectra in h.spectra.values():
        assert len(spectra) == 4
    assert h.spectra["pooled_train_test"][0].shape == (9 * 9 * 5,)
    assert h.spectra["full_train_train"][0].shape == (9 * 5,)
    # Keras logs / History / EarlyStopping see the documented keys at every tracked epoch
    for key in cb.log_keys:
        assert hist.history[key] == pytest.approx(h.scalars[key][1:], rel=1e-12), key
    assert set(cb.log_keys) == {
        "ntk_wasserstein_train_test",
        "ntk_wasserstein_step_train_test",
        "ntk_frobenius_train_test",
        "ntk_kernel_distance_train_test",
        "ntk_full_wasserstein_train_train",
        "ntk_log_wasserstein_train_test",
    }


def test_recorded_w1_equals_scipy(quintic_run):
    h = quintic_run[0].history
    for block in ("train_test", "train_train"):
        s0 = h.spectrum(f"pooled_{block}", 0)
        for i, e in enumerate(h.epochs):
            st = h.spectrum(f"pooled_{block}", e)
            w = scipy.stats.wasserstein_distance(st, s0)
            assert h.scalars[f"ntk_wasserstein_{block}"][i] == pytest.approx(w, rel=1e-10, abs=1e-15)
            if i:
                prev = h.spectrum(f"pooled_{block}", h.epochs[i - 1])
                assert h.scalars[f"ntk_wasserstein_step_{block}"][i] == pytest.approx(
                    scipy.stats.wasserstein_distance(st, prev), rel=1e-10, abs=1e-15
                )
    # the W_1 machinery on these very spectra: shifting by c gives c
    s = h.spectrum("pooled_train_test", 3)
    assert scipy.stats.wasserstein_distance(s + 0.25, s) == pytest.approx(0.25)


def test_tensorboard_event_files(quintic_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cb, _, log_dir = quintic_run
    acc = EventAccumulator(
        str(log_dir / "metric_ntk"), size_guidance={"tensors": 0, "images": 0, "histograms": 0, "scalars": 0}
    )
    acc.Reload()
    tags = acc.Tags()
    stored = (
        set(tags.get("tensors", []))
        | set(tags.get("scalars", []))
        | set(tags.get("histograms", []))
        | set(tags.get("images", []))
    )
    for key in cb.history.scalars:
        tag = f"metric_ntk/{key}"
        assert tag in stored, tag
        if tag in tags.get("tensors", []):
            events = acc.Tensors(tag)
            steps = [e.step for e in events]
            values = [float(tf.make_ndarray(e.tensor_proto)) for e in events]
        else:
            events = acc.Scalars(tag)
            steps, values = [e.step for e in events], [e.value for e in events]
        assert steps == cb.history.epochs, tag
        np.testing.assert_allclose(values, np.float32(cb.history.scalars[key]), rtol=1e-6, err_msg=tag)
    for name in ("pooled_train_train", "pooled_test_test", "pooled_train_test", "full_train_train", "full_test_test"):
        tag = f"metric_ntk_spectrum/{name}"
        assert tag in stored and f"metric_ntk_log_spectrum/{name}" in stored, tag
        events = acc.Tensors(tag)
        assert [e.step for e in events] == cb.history.epochs
        buckets = tf.make_ndarray(events[-1].tensor_proto)
        assert buckets.shape == (cb.histogram_bins, 3)
        assert buckets[:, 2].sum() == cb.history.spectra[name][-1].size
        assert buckets[0, 0] == cb.history.spectra[name][-1].min()
    assert "metric_ntk_figure/train_test" in stored  # image: epoch 0 vs latest
    # beside Keras' own TensorBoard callback, which also logs the keys put into `logs`
    keras_acc = EventAccumulator(str(log_dir / "train"), size_guidance={"tensors": 0, "scalars": 0})
    keras_acc.Reload()
    keras_tags = set(keras_acc.Tags().get("tensors", [])) | set(keras_acc.Tags().get("scalars", []))
    assert {"epoch_loss", "epoch_ntk_wasserstein_train_test"} <= keras_tags
    assert sorted(p.name for p in log_dir.iterdir()) == ["metric_ntk", "train"]


def test_saved_history_and_figure4(quintic_run):
    cb, _, log_dir = quintic_run
    path = log_dir / "metric_ntk" / "history.npz"
    assert path.is_file() and (log_dir / "metric_ntk" / "history.json").is_file()
    loaded = MetricNTKHistory.load(path)
    assert loaded.epochs == cb.history.epochs
    for k in cb.history.scalars:
        np.testing.assert_array_equal(loaded.scalar(k), cb.history.scalar(k))
    np.testing.assert_array_equal(loaded.arrays["x_train"], cb.x_train)
    fig = plot_figure4(path)
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[1].lines[0].get_data()[0], [0, 1, 2, 3])


def test_weights_bitwise_identical_with_and_without_callback(quintic, tmp_path):
    def train(with_callback):
        # Dropout: a callback that ran the model with training=True would draw its random numbers
        keras.utils.set_random_seed(3)
        net = keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Dense(16, activation="gelu"),
                keras.layers.Dropout(0.2),
                keras.layers.Dense(16, activation="gelu"),
                keras.layers.Dense(9, use_bias=False),
            ]
        )
        model = MultiplicativeModel(net, quintic, kaehler=0.0, transition=0.0, volk=0.0)
        model.compile(keras.optimizers.Adam(1e-3))
        cbs = (
            [
                MetricNTKCallback(
                    4,
                    4,
                    data=quintic,
                    seed=1,
                    log_dir=tmp_path / "tb",
                    log_all_blocks=True,
                    train_targets=np.ones((len(quintic.X_train), 9)),
                )
            ]
            if with_callback
            else []
        )
        hist = model.fit(
            quintic.X_train, quintic.y_train, epochs=2, batch_size=32, shuffle=True, verbose=0, callbacks=cbs
        )
        return [w.copy() for w in model.get_weights()], hist.history["loss"]

    with op_determinism():
        w0, loss0 = train(False)
        w1, loss1 = train(True)
    assert len(w0) == len(w1)
    for a, b in zip(w0, w1):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert loss0 == loss1


def test_learning_rate_zero_freezes_the_kernel(quintic):
    model = quintic_model(quintic, optimizer=keras.optimizers.SGD(0.0))
    cb = MetricNTKCallback(4, 4, data=quintic, seed=2, log_all_blocks=True, log_spectrum=True)
    model.fit(quintic.X_train, quintic.y_train, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    assert cb.history.epochs == [0, 1, 2]
    for key, values in cb.history.scalars.items():
        if any(w in key for w in DISTANCE_WORDS):
            assert values == [0.0, 0.0, 0.0], key  # exactly: the weights never moved


def test_lazy_regime_moves_much_less_than_the_paper_setup(quintic):
    """Paper: 3 x 128 gelu, Adam 1e-3. Lazy: one hidden layer of 2048, SGD 1e-4."""

    def change(width, depth, optimizer):
        keras.utils.set_random_seed(0)
        model = MultiplicativeModel(mlp(width, depth, 9), quintic, kaehler=0.0, transition=0.0, volk=0.0)
        model.compile(optimizer)
        cb = MetricNTKCallback(4, 4, data=quintic, seed=0)
        model.fit(quintic.X_train, quintic.y_train, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
        return cb.history.scalar("ntk_frobenius_train_train")[-1], cb.history.scalar("ntk_wasserstein_train_test")[-1]

    paper = change(128, 3, keras.optimizers.Adam(1e-3))
    lazy = change(2048, 1, keras.optimizers.SGD(1e-4))
    assert paper[0] > 1e-2
    assert lazy[0] < 0.02 * paper[0]
    assert lazy[1] < 0.02 * paper[1]


# ----------------------------------------------------------------------------- every / resume
def test_every_and_final_record(rng):
    x, y = standin_data(rng)
    model = standin()
    cb = MetricNTKCallback(x[:3], x[3:6], every=2)
    hist = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[cb])
    assert cb.history.epochs == [0, 2, 3]  # 3: final state (track_last)
    assert len(hist.history["ntk_wasserstein_train_test"]) == 1  # only tracked epochs reach logs
    assert hist.history["ntk_wasserstein_train_test"][0] == cb.history.scalars["ntk_wasserstein_train_test"][1]


class Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("simulated interruption")


def test_resume_after_interruption_continues_the_history(rng, tmp_path):
    x, y = standin_data(rng)
    model = standin()
    pts = dict(train_points=x[:4], test_points=x[4:8], log_dir=tmp_path, save_kernels=True)
    cb1 = MetricNTKCallback(**pts)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[cb1, Interrupt(1)])
    saved = MetricNTKHistory.load(tmp_path / "metric_ntk" / "history.npz")
    assert saved.epochs == [0, 1, 2]  # nothing lost at the interruption

    # a new process: same points, resume from the file, continue with initial_epoch
    cb2 = MetricNTKCallback(**pts, resume=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights restored: no warning
        model.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, verbose=0, callbacks=[cb2])
    h = cb2.history
    assert h.epochs == [0, 1, 2, 3, 4]
    for k in saved.scalars:
        np.testing.assert_array_equal(h.scalar(k)[:3], saved.scalar(k))
    # still measured against the original epoch 0 kernel (saved with save_kernels)
    kdir = tmp_path / "metric_ntk" / "kernels"
    th0 = np.load(kdir / "epoch_000000.npz")["theta"].astype(np.float64)
    th4 = np.load(kdir / "epoch_000004.npz")["theta"].astype(np.float64)
    th3 = np.load(kdir / "epoch_000003.npz")["theta"].astype(np.float64)
    assert h.scalars["ntk_frobenius_train_train"][4] == pytest.approx(
        relative_frobenius_change(th4[:4, :4], th0[:4, :4]), rel=1e-12
    )
    assert h.scalars["ntk_frobenius_step_train_train"][4] == pytest.approx(
        relative_frobenius_change(th4[:4, :4], th3[:4, :4]), rel=1e-12
    )
    assert MetricNTKHistory.load(tmp_path / "metric_ntk" / "history.npz").epochs == [0, 1, 2, 3, 4]

    # a fit that restarts its numbering at 0 continues after the last record
    cb3 = MetricNTKCallback(**pts, resume=True)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb3])
    assert cb3.history.epochs == [0, 1, 2, 3, 4, 5]

    # weights not restored (a fresh model): warned
    cb4 = MetricNTKCallback(**pts, resume=True)
    with pytest.warns(UserWarning, match="differs from the one recorded"):
        standin(seed=9).fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb4])

    # resuming with other points is refused
    with pytest.raises(ValueError, match="recorded on other train points"):
        MetricNTKCallback(x[10:14], x[4:8], log_dir=tmp_path, resume=True)


# ----------------------------------------------------------------------------- other models
def test_cymetric_signature_standin_and_reference_kernel(rng, tmp_path):
    x, y = standin_data(rng)
    model = standin()
    assert not hasattr(model, "network") and not hasattr(model, "spec")
    cb = MetricNTKCallback(x[:4], x[4:7], log_dir=tmp_path, save_kernels=True, spectrum="singular_values")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    assert cb.history.epochs == [0, 1, 2]
    theta = np.load(tmp_path / "metric_ntk" / "kernels" / "epoch_000002.npz")["theta"]
    ref = reference_ntk(model, x[:7])
    np.testing.assert_allclose(theta, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(
        cb.history.spectrum("pooled_train_test"),
        pooled_block_spectrum(ref[:4, 4:], "singular_values"),
        rtol=1e-3,
        atol=1e-4 * np.abs(ref).max(),
    )
    np.testing.assert_allclose(
        cb.history.spectrum("pooled_test_test"),
        pooled_block_spectrum(ref[4:, 4:], "singular_values"),
        rtol=1e-3,
        atol=1e-4 * np.abs(ref).max(),
    )


def test_plain_regression_network_and_alignment(rng):
    x = rng.standard_normal((64, 5))
    y = np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.05), loss="mse")
    cb = MetricNTKCallback(x[:6], x[6:12], train_targets=y[:6], block="train_train", save_kernels=False)
    hist = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    assert cb.history.meta["output_kind"] == "vector" and cb.history.meta["m"] == 2
    for key in ("ntk_target_alignment", "ntk_residual_alignment"):
        assert key in hist.history and len(hist.history[key]) == 2
        v = cb.history.scalar(key)
        assert np.all((v > 0) & (v <= 1 + 1e-12)), key
    # the recorded alignment is the formula applied to the kernel at that epoch
    from cyntk.kernels import metric_ntk

    theta = metric_ntk(model, x[:6]).astype(np.float64)
    assert cb.history.scalars["ntk_target_alignment"][-1] == pytest.approx(
        kernel_target_alignment(theta, y[:6]), rel=1e-6
    )
    resid = model(x[:6].astype(np.float32), training=False).numpy() - y[:6]
    assert cb.history.scalars["ntk_residual_alignment"][-1] == pytest.approx(
        kernel_target_alignment(theta, resid), rel=1e-5
    )


def test_points_drawn_once_from_data(quintic):
    a = MetricNTKCallback(10, 10, data=quintic, seed=5)
    b = MetricNTKCallback(10, 10, data={"X_train": quintic.X_train, "X_val": quintic.X_val}, seed=5)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert all(any(np.array_equal(p, q) for q in quintic.X_train) for p in a.x_train)
    assert all(any(np.array_equal(p, q) for q in quintic.X_val) for p in a.x_test)
    with pytest.warns(UserWarning, match="P_train=6 != P_test=5.*uses singular values"):
        c = MetricNTKCallback(6, 5, data=quintic.X_train, seed=5)  # one pool: disjoint sets
    assert not any(np.array_equal(p, q) for p in c.x_train for q in c.x_test)
    assert c.history.meta["spectrum_kinds"]["train_test"] == "singular_values"  # 6 x 5: no eigenvalues


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments_are_rejected_clearly(rng, tmp_path, quintic):
    x = rng.standard_normal((6, 10))
    with pytest.raises(ValueError, match=r"`test_points` must contain at least 2 points .* received 1"):
        MetricNTKCallback(x[:3], x[3:4])
    with pytest.raises(ValueError, match=r"`train_points` must be at least 2 .* received 1"):
        MetricNTKCallback(1, 3, data=quintic)
    with pytest.raises(ValueError, match=r"same width d .* received d=10 and d=8"):
        MetricNTKCallback(x[:3], x[3:, :8])
    with pytest.raises(ValueError, match=r"`train_points` must have shape \(P, d\)"):
        MetricNTKCallback(x[0], x[3:])
    for every in (0, -2):
        with pytest.raises(ValueError, match=rf"`every` must be a positive integer .* received {every}"):
            MetricNTKCallback(x[:3], x[3:], every=every)
    with pytest.raises(TypeError, match=r"`every` must be a positive integer .* received 1.5"):
        MetricNTKCallback(x[:3], x[3:], every=1.5)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"`log_dir` must be a directory .* is a file"):
        MetricNTKCallback(x[:3], x[3:], log_dir=blocker / "logs")
    with pytest.raises(ValueError, match="counts need `data`"):
        MetricNTKCallback(3, 3)
    with pytest.raises(ValueError, match=r"`test_points`=40 exceeds the 30 points"):
        MetricNTKCallback(3, 40, data=quintic)
    with pytest.raises(ValueError, match="`block` must be one of"):
        MetricNTKCallback(x[:3], x[3:], block="train")
    with pytest.raises(ValueError, match="`wasserstein_p` must be a finite number >= 1"):
        MetricNTKCallback(x[:3], x[3:], wasserstein_p=0.5)


def test_bad_models_and_points_fail_at_train_begin(rng):
    x, y = standin_data(rng)
    model = standin()
    with pytest.raises(ValueError, match=r"could not call the model on `train_points` of shape \(3, 8\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[MetricNTKCallback(x[:3, :8], x[3:6, :8])])
    bad = standin(out_rank=4)
    with pytest.raises(
        ValueError,
        match=r"output is a metric \(complex \(B, n, n\).* or a vector .*received "
        r"output of dtype float32 and shape \(2, 1, 3, 3\)",
    ):
        bad.fit(x, y, epochs=1, verbose=0, callbacks=[MetricNTKCallback(x[:3], x[3:6])])
    with pytest.raises(ValueError, match=r"`train_targets` must have m=9 components"):
        model.fit(
            x, y, epochs=1, verbose=0, callbacks=[MetricNTKCallback(x[:3], x[3:6], train_targets=np.zeros((3, 4)))]
        )
