"""KernelModel: eq. (3.5) against NumPy, Delta/Gaussian flows, guards, charts, clusters, saving."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import tol  # noqa: E402
from cyntk.flows.kernel_model import KernelModel, NonPositiveMetricError  # noqa: E402
from cyntk.geometry import (  # noqa: E402
    components_from_hermitian,
    fermat_quintic,
    fs_nearest,
    hermitian_from_components,
    to_real,
)
from cyntk.kernels.analytic import InfiniteWidthKernel  # noqa: E402
from cyntk.kernels.base import Kernel  # noqa: E402
from cyntk.kernels.fs import DeltaKernel, GaussianFSKernel  # noqa: E402

M = fermat_quintic()
CHART = (0, 1)


# ----------------------------------------------------------------------------- NumPy reference
def sigma_and_grad(comps, omega_sq, kappa):
    """sigma = |1 - det g/(kappa |Omega|^2)| and d sigma / d g_I (closed form), per point.

    d det g / d g_I = det g * tr(g^{-1} E_I) with E_I = H(e_I) the hermitian
    matrix of the I-th unit component vector.
    """
    g = hermitian_from_components(comps)
    det = np.real(np.linalg.det(g))
    eta = det / (kappa * omega_sq)
    E = hermitian_from_components(np.eye(comps.shape[1]))  # (m, n, n)
    ddet = det[:, None] * np.real(np.einsum("pab,Iba->pI", np.linalg.inv(g), E))
    grad = -np.sign(1.0 - eta)[:, None] * ddet / (kappa * omega_sq)[:, None]
    return np.abs(1.0 - eta), grad


def fs_gaussian(z1, z2, sigma):
    """exp(-d/(2 sigma)) with d the FS distance (paper eqs. 3.2, 3.6), written out here."""
    ip = np.abs(np.conj(z1) @ z2.T) ** 2
    c2 = np.clip(ip / np.outer(np.sum(np.abs(z1) ** 2, 1), np.sum(np.abs(z2) ** 2, 1)), 0, 1)
    d = np.arccos(np.sqrt(c2))
    d[1 - c2 < 64 * np.finfo(float).eps] = 0.0
    return np.exp(-d / (2 * sigma))


def numpy_flow(K_tt, K_st, g_tr, g_te, omega_sq, kappa, lr, steps, batches=None):
    """Eq. (3.5): g <- g - lr * sum_{x' in B} K(x, x') dl/dg(x'), sum over the batch B."""
    g_tr, g_te = g_tr.copy(), g_te.copy()
    losses = []
    batches = [np.arange(len(g_tr))] if batches is None else batches
    for _ in range(steps):
        for b in batches:
            sig, grad = sigma_and_grad(g_tr[b], omega_sq[b], kappa)
            losses.append(sig.mean())
            g_tr = g_tr - lr * K_tt[:, b] @ grad
            g_te = g_te - lr * K_st[:, b] @ grad
    return g_tr, g_te, losses


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def small():
    z = M.sample_points(90, seed=11, chart=CHART)
    x = to_real(z)
    return dict(
        z_tr=z[:60],
        z_te=z[60:],
        x_tr=x[:60],
        x_te=x[60:],
        y_tr=KernelModel.targets(M, x[:60]),
        y_te=KernelModel.targets(M, x[60:]),
    )


def fs_components(z):
    return components_from_hermitian(M.fs_metric_pb(z))


def sgd(lr):
    return keras.optimizers.SGD(learning_rate=lr)


# ----------------------------------------------------------------------------- eq. (3.5)
def test_sgd_steps_equal_numpy_eq_3_5_gaussian(small):
    # dt = 2**-12: Keras keeps learning rates in floatx (float32), so a dt that float32 represents
    # exactly makes the comparison exact to float64 rounding
    sigma, lr = 0.05, 2.0**-12
    model = KernelModel(GaussianFSKernel(sigma), small["x_tr"], M, tile_size=16, n_threads=2)
    model.compile(optimizer=sgd(lr))
    K_tt = fs_gaussian(small["z_tr"], small["z_tr"], sigma)
    K_st = fs_gaussian(small["z_te"], small["z_tr"], sigma)
    done = 0
    for steps in (1, 5):
        hist = model.fit(small["x_tr"], small["y_tr"], batch_size=60, epochs=steps - done, verbose=0)
        done = steps
        g_tr, g_te, losses = numpy_flow(
            K_tt,
            K_st,
            fs_components(small["z_tr"]),
            fs_components(small["z_te"]),
            small["y_tr"][:, 1],
            model.kappa,
            lr,
            steps,
        )
        got_tr = components_from_hermitian(model.predict(small["x_tr"], batch_size=60, verbose=0))
        got_te = components_from_hermitian(model.predict(small["x_te"], verbose=0))
        np.testing.assert_allclose(got_tr, g_tr, **tol("float64"))
        np.testing.assert_allclose(got_te, g_te, **tol("float64"))
        # the cached train-point metric g0 - K alpha agrees with a fresh kernel product
        np.testing.assert_allclose(model.g0_train.numpy() - model.u_train.numpy(), g_tr, **tol("float64"))
        # history reports the mean sigma loss before each step
        np.testing.assert_allclose(hist.history["loss"], losses[-len(hist.history["loss"]) :], rtol=1e-10)
    # the flow moved the metric (the comparison is not trivial)
    assert losses[0] - sigma_and_grad(g_tr, small["y_tr"][:, 1], model.kappa)[0].mean() > 1e-3


def test_minibatches_give_the_stochastic_flow(small):
    kernel = InfiniteWidthKernel("relu", W_std=1.5, b_std=0.1, depth=1)
    lr = 2.0**-15
    model = KernelModel(kernel, small["x_tr"], M, tile_size=25, n_threads=1)
    model.compile(optimizer=sgd(lr))
    model.fit(small["x_tr"], small["y_tr"], batch_size=20, epochs=2, shuffle=False, verbose=0)
    K_tt = kernel(small["x_tr"], small["x_tr"])
    K_st = kernel(small["x_te"], small["x_tr"])
    batches = [np.arange(0, 20), np.arange(20, 40), np.arange(40, 60)]
    g_tr, g_te, _ = numpy_flow(
        K_tt,
        K_st,
        fs_components(small["z_tr"]),
        fs_components(small["z_te"]),
        small["y_tr"][:, 1],
        model.kappa,
        lr,
        2,
        batches,
    )
    got_te = components_from_hermitian(model.predict(small["x_te"], verbose=0))
    np.testing.assert_allclose(got_te, g_te, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.g0_train.numpy() - model.u_train.numpy(), g_tr, rtol=1e-9, atol=1e-12)


def test_mean_reduction_is_sum_with_step_divided_by_batch(small):
    outs = []
    for reduction, lr in (("sum", 2.0**-12), ("mean", 2.0**-12 * 60)):
        model = KernelModel(GaussianFSKernel(0.05), small["x_tr"], M, reduction=reduction)
        model.compile(optimizer=sgd(lr), run_eagerly=True)
        model.fit(small["x_tr"], small["y_tr"], batch_size=60, epochs=1, verbose=0)
        outs.append(model.predict(small["x_te"], verbose=0))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-9, atol=1e-13)


def test_shuffled_batches_find_their_train_points(small):
    # full batch: shuffling must not matter (each step is eq. 3.5 over all points)
    preds = []
    for shuffle in (False, True):
        model = KernelModel(GaussianFSKernel(0.05), small["x_tr"], M)
        model.compile(optimizer=sgd(2e-4), run_eagerly=True)
        model.fit(small["x_tr"], small["y_tr"], batch_size=60, epochs=2, shuffle=shuffle, verbose=0)
        preds.append(model.predict(small["x_te"], verbose=0))
    np.testing.assert_allclose(preds[0], preds[1], rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------- Delta kernel
def test_delta_kernel_test_point_takes_its_nearest_train_update(small):
    model = KernelModel(DeltaKernel(), small["x_tr"], M)
    model.compile(optimizer=sgd(2.0**-13))
    model.fit(small["x_tr"], small["y_tr"], batch_size=60, epochs=3, verbose=0)
    g_tr = components_from_hermitian(model.predict(small["x_tr"], verbose=0))
    g_te = components_from_hermitian(model.predict(small["x_te"], verbose=0))
    upd_tr = g_tr - fs_components(small["z_tr"])
    upd_te = g_te - fs_components(small["z_te"])
    _, nn = fs_nearest(small["z_te"], small["z_tr"], k=1)
    np.testing.assert_allclose(upd_te, upd_tr[nn[:, 0]], rtol=1e-12, atol=1e-15)
    assert np.abs(upd_te).max() > 1e-4
    # on the train points the Delta flow is local: each point follows its own gradient
    g_ref, _, _ = numpy_flow(
        np.eye(60),
        np.zeros((0, 60)),
        fs_components(small["z_tr"]),
        np.zeros((0, 9)),
        small["y_tr"][:, 1],
        model.kappa,
        2.0**-13,
        3,
    )
    np.testing.assert_allclose(g_tr, g_ref, **tol("float64"))


# ----------------------------------------------------------------------------- 50-step gains
@pytest.fixture(scope="module")
def gain_data():
    z = M.sample_points(1500, seed=5, chart=CHART)
    x = to_real(z)
    return x[:1000], KernelModel.targets(M, x[:1000]), x[1000:], KernelModel.targets(M, x[1000:])


@pytest.mark.parametrize("kernel", [GaussianFSKernel(0.02), DeltaKernel()], ids=["gaussian", "delta"])
def test_fifty_steps_gain_orders_of_magnitude_on_train_but_not_on_test(gain_data, kernel, capsys):
    x, y, xt, yt = gain_data
    model = KernelModel(kernel, x, M, n_threads=2)
    # eq. (3.5) with a decaying step dt_s = 1e-3 * 0.85**s (a Keras schedule)
    model.compile(optimizer=sgd(keras.optimizers.schedules.ExponentialDecay(1e-3, 1, 0.85)))
    before = [model.evaluate(a, b, batch_size=1000, verbose=0, return_dict=True)["loss"] for a, b in ((x, y), (xt, yt))]
    model.fit(x, y, batch_size=len(x), epochs=50, verbose=0)
    after = [model.evaluate(a, b, batch_size=1000, verbose=0, return_dict=True)["loss"] for a, b in ((x, y), (xt, yt))]
    train_gain, test_gain = before[0] / after[0], before[1] / after[1]
    with capsys.disabled():
        print(
            f"\n[{type(kernel).__name__}] 50 steps, 1000 train / 500 test points: train gain "
            f"{train_gain:.3g}, test gain {test_gain:.3g}"
        )
    assert train_gain > 1e3
    assert 0.5 < test_gain < 5


# ----------------------------------------------------------------------------- stability guard
@pytest.fixture(scope="module")
def guard_data(small):
    return small["x_tr"], small["y_tr"]


def train_min_eigenvalue(model):
    g = model.g0_train.numpy() - model.u_train.numpy()
    return np.linalg.eigvalsh(hermitian_from_components(g)).min()


def test_overshooting_flow_raises_and_keeps_the_last_valid_metric(guard_data):
    x, y = guard_data
    model = KernelModel(GaussianFSKernel(0.05), x, M)
    model.compile(optimizer=sgd(0.05))
    with pytest.raises(NonPositiveMetricError, match="non-positive-definite"):
        model.fit(x, y, batch_size=len(x), epochs=5, verbose=0)
    assert np.all(model.alpha.numpy() == 0.0)
    assert np.linalg.eigvalsh(model.predict(x, verbose=0)).min() > 0


def test_stop_policy_warns_and_stops(guard_data):
    x, y = guard_data
    model = KernelModel(GaussianFSKernel(0.05), x, M, on_non_positive="stop")
    lr = keras.optimizers.schedules.PiecewiseConstantDecay([2], [2e-4, 0.05])
    model.compile(optimizer=sgd(lr))
    with pytest.warns(RuntimeWarning, match="Training stopped"):
        hist = model.fit(x, y, batch_size=len(x), epochs=10, verbose=0)
    assert len(hist.history["loss"]) == 4  # 3 good steps, the 4th is refused
    assert np.any(model.alpha.numpy() != 0.0)
    assert train_min_eigenvalue(model) > 0


def test_backoff_policy_shrinks_the_step_and_keeps_the_metric_valid(guard_data):
    x, y = guard_data
    model = KernelModel(GaussianFSKernel(0.05), x, M, on_non_positive="backoff")
    model.compile(optimizer=sgd(0.05))
    hist = model.fit(x, y, batch_size=len(x), epochs=4, verbose=0)
    assert sum(hist.history["backoffs"]) >= 1
    assert min(hist.history["min_eigenvalue"]) > 0
    assert train_min_eigenvalue(model) > 0
    assert np.all(np.isfinite(hist.history["loss"])) and np.any(model.alpha.numpy() != 0.0)


# ----------------------------------------------------------------------------- charts
@pytest.fixture(scope="module")
def two_charts():
    za = M.sample_points(30, seed=21, chart=(0, 1))
    zb = M.sample_points(30, seed=22, chart=(2, 3))
    return za, zb


def test_mixed_charts_are_refused(two_charts):
    za, zb = two_charts
    x = to_real(np.concatenate([za, zb]))
    with pytest.raises(ValueError, match="mixes 2 charts"):
        KernelModel(GaussianFSKernel(0.05), x, M)
    model = KernelModel(GaussianFSKernel(0.05), to_real(za), M)
    with pytest.raises(ValueError, match="charts without train points"):
        model.predict(to_real(zb), verbose=0)


def test_separate_charts_flow_independently(two_charts):
    za, zb = two_charts
    x = to_real(np.concatenate([za, zb]))
    y = KernelModel.targets(M, x)
    both = KernelModel(GaussianFSKernel(0.3), x, M, mixed_charts="separate", kappa=0.0175)
    both.compile(optimizer=sgd(1e-4))
    both.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    alone = KernelModel(GaussianFSKernel(0.3), to_real(zb), M, kappa=0.0175)
    alone.compile(optimizer=sgd(1e-4))
    alone.fit(to_real(zb), y[30:], batch_size=30, epochs=2, verbose=0)
    zq = M.sample_points(5, seed=23, chart=(2, 3))
    np.testing.assert_allclose(
        both.predict(to_real(zq), verbose=0), alone.predict(to_real(zq), verbose=0), rtol=1e-10, atol=1e-14
    )


# ----------------------------------------------------------------------------- clusters
def test_clusters_flow_separately_and_test_points_use_the_nearest_cluster(small):
    x, y = small["x_tr"], small["y_tr"]
    model = KernelModel(GaussianFSKernel(0.3), x, M, clusters=3, cluster_batch_size=None)
    model.compile(optimizer=sgd(1e-4))
    model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    labels = model.cluster_labels.numpy()
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    _, nn = fs_nearest(small["z_te"], small["z_tr"], k=1)
    test_labels = labels[nn[:, 0]]
    got = model.predict(small["x_te"], verbose=0)
    checked = 0
    for c in range(3):
        members = labels == c
        sub = KernelModel(GaussianFSKernel(0.3), x[members], M, kappa=model.kappa)
        sub.compile(optimizer=sgd(1e-4), run_eagerly=True)
        sub.fit(x[members], y[members], batch_size=int(members.sum()), epochs=2, verbose=0)
        np.testing.assert_allclose(
            model.predict(x[members], verbose=0), sub.predict(x[members], verbose=0), rtol=1e-10, atol=1e-14
        )
        q = test_labels == c
        if q.any():
            np.testing.assert_allclose(got[q], sub.predict(small["x_te"][q], verbose=0), rtol=1e-10, atol=1e-14)
            checked += 1
    assert checked >= 2
    # with one global kernel the same flow differs (the clusters really cut the kernel)
    full = KernelModel(GaussianFSKernel(0.3), x, M)
    full.compile(optimizer=sgd(1e-4))
    full.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    assert np.abs(full.predict(small["x_te"], verbose=0) - got).max() > 1e-8


# ----------------------------------------------------------------------------- Keras integration
def test_callbacks_history_and_tensorboard(small, tmp_path):
    x, y = small["x_tr"], small["y_tr"]
    model = KernelModel(GaussianFSKernel(0.05), x, M)
    model.compile(optimizer=sgd(2e-4))
    seen = []
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(dict(logs)))
    hist = model.fit(
        x,
        y,
        batch_size=30,
        epochs=3,
        verbose=0,
        validation_data=(small["x_te"], small["y_te"]),
        callbacks=[
            cb,
            keras.callbacks.TensorBoard(log_dir=str(tmp_path / "tb")),
            keras.callbacks.EarlyStopping(monitor="loss", patience=1),
        ],
    )
    expected = {"loss", "sigma_loss", "min_eigenvalue", "val_loss", "val_min_eigenvalue"}
    assert expected <= set(hist.history)
    assert len(seen) == 3 and hist.history["loss"][2] < hist.history["loss"][0]
    assert list((tmp_path / "tb" / "train").glob("events.out.tfevents.*"))
    assert list((tmp_path / "tb" / "validation").glob("events.out.tfevents.*"))


def test_save_and_load_round_trip(small, tmp_path):
    x, y = small["x_tr"], small["y_tr"]
    model = KernelModel(GaussianFSKernel(0.3), x, M, clusters=2, cluster_batch_size=None, on_non_positive="backoff")
    model.compile(optimizer=sgd(2e-4))
    model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    path = tmp_path / "flow.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, KernelModel)
    assert isinstance(loaded.kernel, GaussianFSKernel) and loaded.kernel.sigma == 0.3
    assert loaded.on_non_positive == "backoff" and loaded.n_clusters == 2
    np.testing.assert_array_equal(loaded.cluster_labels.numpy(), model.cluster_labels.numpy())
    np.testing.assert_allclose(
        loaded.predict(small["x_te"], verbose=0), model.predict(small["x_te"], verbose=0), rtol=1e-13, atol=1e-15
    )
    # training continues identically (optimizer state restored)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    loaded.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    np.testing.assert_allclose(
        loaded.predict(small["x_te"], verbose=0), model.predict(small["x_te"], verbose=0), rtol=1e-12, atol=1e-15
    )


def test_config_round_trip_delta_kernel(small):
    model = KernelModel(DeltaKernel(), small["x_tr"], M, loss={"sigma": 1.0, "volk": 0.5}, reduction="mean")
    config = model.get_config()
    clone = KernelModel.from_config(config)
    assert isinstance(clone.kernel, DeltaKernel)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(
        clone.predict(small["x_te"], verbose=0), model.predict(small["x_te"], verbose=0), rtol=1e-14
    )


def test_volk_term_is_logged_and_differentiated(small):
    model = KernelModel(GaussianFSKernel(0.05), small["x_tr"], M, loss={"sigma": 1.0, "volk": 0.1})
    model.compile(optimizer=sgd(1e-4))
    hist = model.fit(small["x_tr"], small["y_tr"], batch_size=60, epochs=2, verbose=0)
    assert {"sigma_loss", "volk_loss"} <= set(hist.history)
    np.testing.assert_allclose(
        hist.history["loss"][0], hist.history["sigma_loss"][0] + 0.1 * hist.history["volk_loss"][0], rtol=1e-12
    )


# ----------------------------------------------------------------------------- bad input
class WrongShapeKernel:
    """A duck-typed kernel whose blocks have the wrong shape."""

    component_diagonal = True

    def __call__(self, x1, x2=None):
        return np.ones((len(x1), 3))


class FourComponentKernel(Kernel):
    """A full kernel with m = 4 components (a metric with n = 2, not the quintic's n = 3)."""

    component_diagonal = False

    def _block(self, x1, x2):
        x2 = x1 if x2 is None else x2
        return np.ones((len(x1), len(x2), 4, 4))


def test_bad_inputs_raise_clear_errors(small):
    x, y = small["x_tr"], small["y_tr"]
    with pytest.raises(ValueError, match="at least one point"):
        KernelModel(GaussianFSKernel(0.1), np.zeros((0, 10)), M)
    with pytest.raises(ValueError, match=r"\(P, 2N\) = \(P, 10\)"):
        KernelModel(GaussianFSKernel(0.1), x[:, :8], M)
    with pytest.raises(ValueError, match="finite"):
        bad = x.copy()
        bad[2, 3] = np.nan
        KernelModel(GaussianFSKernel(0.1), bad, M)
    with pytest.raises(ValueError, match=r"block of shape \(2, 3\)"):
        KernelModel(WrongShapeKernel(), x, M)
    with pytest.raises(ValueError, match="m = n\\^2 = 9"):
        KernelModel(FourComponentKernel(), x, M)
    with pytest.raises(ValueError, match="kaehler"):
        KernelModel(GaussianFSKernel(0.1), x, M, loss="kaehler")
    with pytest.raises(ValueError, match="EmpiricalNTKKernel"):
        KernelModel(GaussianFSKernel(0.1), x, M, form="primal")

    model = KernelModel(GaussianFSKernel(0.1), x, M)
    for lr in (0.0, -0.1):
        with pytest.raises(ValueError, match="learning rate"):
            model.compile(optimizer=sgd(lr))
    with pytest.raises(TypeError, match="loss"):
        model.compile(optimizer=sgd(1e-3), loss="mse")
    model.compile(optimizer=sgd(1e-3))
    y_bad = y.copy()
    y_bad[4, 1] = np.inf
    with pytest.raises(ValueError, match="finite"):
        model.fit(x, y_bad, batch_size=60, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"shape \(P, 2\)"):
        model.fit(x, y[:, :1], batch_size=60, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="not among the model's train points"):
        model.fit(small["x_te"], small["y_te"], epochs=1, verbose=0)
    # the same checks inside the graph (tf.data input is not pre-checked)
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((small["x_te"], small["y_te"])).batch(30)
    with pytest.raises(ValueError, match="not among the model's train points"):
        model.fit(ds, epochs=1, verbose=0)
    y_nan = y.copy()
    y_nan[4, 1] = np.nan
    ds = tf.data.Dataset.from_tensor_slices((x, y_nan)).batch(60)
    with pytest.raises(ValueError, match="not finite"):
        model.fit(ds, epochs=1, verbose=0)
    assert np.all(model.alpha.numpy() == 0.0)


def test_user_callable_loss_of_the_metric(small):
    import tensorflow as tf

    def squared_eta(g, y):
        """(det g / |Omega|^2 / kappa0 - 1)^2 per point, a smooth Monge-Ampere loss."""
        det = tf.math.real(tf.linalg.det(g))
        return (det / (0.0175 * y[:, 1]) - 1.0) ** 2

    x, y = small["x_tr"], small["y_tr"]
    model = KernelModel(GaussianFSKernel(0.05), x, M, loss=squared_eta)
    model.compile(optimizer=sgd(1e-5), run_eagerly=True)
    hist = model.fit(x, y, batch_size=60, epochs=3, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    det = np.real(np.linalg.det(hermitian_from_components(fs_components(small["z_tr"]))))
    np.testing.assert_allclose(hist.history["loss"][0], np.mean((det / (0.0175 * y[:, 1]) - 1) ** 2), rtol=1e-10)

    def wrong_shape(g, y):
        return tf.zeros((3,), tf.float64)

    bad = KernelModel(GaussianFSKernel(0.05), x, M, loss=wrong_shape)
    bad.compile(optimizer=sgd(1e-5), run_eagerly=True)
    with pytest.raises(ValueError, match="per-point"):
        bad.fit(x, y, batch_size=60, epochs=1, verbose=0)
