"""KernelModel with empirical NTKs: dual form, primal form and the linearised network agree."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from test_kernel_model import sigma_and_grad  # noqa: E402

from cyntk.flows.kernel_model import KernelModel  # noqa: E402
from cyntk.geometry import components_from_hermitian, fermat_quintic, to_real  # noqa: E402
from cyntk.kernels.empirical import EmpiricalNTKKernel  # noqa: E402
from cyntk.models import MultiplicativeModel, components_from_hermitian_tf  # noqa: E402

M = fermat_quintic()
LR = 2.0**-9


def metric_model(seed):
    """A float64 multiplicative metric model g = G + G * H(nn(x)) with a small tanh network."""
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(seed)
        net = keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Dense(6, activation="tanh"),
                keras.layers.Dense(9, kernel_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed)),
            ]
        )
        model = MultiplicativeModel(net, M, dtype="float64")
    finally:
        keras.config.set_dtype_policy(old)
    return model


@pytest.fixture(scope="module")
def data():
    z = M.sample_points(32, seed=3, chart=(0, 1))
    x = to_real(z)
    return x[:24], KernelModel.targets(M, x[:24]), x[24:]


def linearised_reference(model, x_tr, omega_sq, kappa, x_te, steps):
    """Gradient descent on g_lin = g(theta0) + J (theta - theta0) with explicit Jacobians (NumPy)."""
    params = model.trainable_variables

    def jac(x):
        with tf.GradientTape(persistent=True) as tape:
            f = tf.reshape(components_from_hermitian_tf(model(tf.constant(x), training=False)), [-1])
        J = tape.jacobian(f, params, experimental_use_pfor=False)
        return np.concatenate([j.numpy().reshape(f.shape[0], -1) for j in J], axis=1), f.numpy()

    J_tr, f_tr = jac(x_tr)
    J_te, f_te = jac(x_te)
    dtheta = np.zeros(J_tr.shape[1])
    for _ in range(steps):
        g = (f_tr + J_tr @ dtheta).reshape(len(x_tr), 9)
        _, grad = sigma_and_grad(g, omega_sq, kappa)
        dtheta = dtheta - LR * J_tr.T @ grad.reshape(-1)
    return (f_tr + J_tr @ dtheta).reshape(-1, 9), (f_te + J_te @ dtheta).reshape(-1, 9)


def test_dual_primal_and_linearised_network_agree(data):
    x, y, xt = data
    net = metric_model(0)
    kernel = EmpiricalNTKKernel(net)
    preds = {}
    for form in ("dual", "primal"):
        model = KernelModel(kernel, x, M, form=form, point_chunk=7)
        model.compile(optimizer=keras.optimizers.SGD(LR))
        model.fit(x, y, batch_size=len(x), epochs=3, verbose=0)
        preds[form] = [components_from_hermitian(model.predict(a, verbose=0)) for a in (x, xt)]
    ref_tr, ref_te = linearised_reference(net, x, y[:, 1], model.kappa, xt, 3)
    for form in ("dual", "primal"):
        np.testing.assert_allclose(preds[form][0], ref_tr, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(preds[form][1], ref_te, rtol=1e-9, atol=1e-13)
    # the flow changed the metric noticeably at the test points
    g0_te = components_from_hermitian(net(tf.constant(xt)).numpy())
    assert np.abs(ref_te - g0_te).max() > 1e-4 * np.abs(g0_te).max()


def test_after_kernel_uses_the_checkpoint(data):
    x, y, xt = data
    net = metric_model(1)
    # "train" the network: any change of weights gives a new checkpoint
    rng = np.random.default_rng(0)
    for v in net.trainable_variables:
        v.assign(v + 0.05 * rng.standard_normal(v.shape))
    g_ckpt = components_from_hermitian(net(tf.constant(xt)).numpy())
    kernel = EmpiricalNTKKernel(net)  # the after-kernel at this checkpoint
    model = KernelModel(kernel, x, M, form="primal")
    for v in net.trainable_variables:  # training goes on; the flow must not notice
        v.assign(v * 0.5)
    model.compile(optimizer=keras.optimizers.SGD(LR))
    g0 = components_from_hermitian(model.predict(xt, verbose=0))
    np.testing.assert_allclose(g0, g_ckpt, rtol=1e-12, atol=1e-15)
    dual = KernelModel(kernel, x, M)
    dual.compile(optimizer=keras.optimizers.SGD(LR))
    model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    dual.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    np.testing.assert_allclose(model.predict(xt, verbose=0), dual.predict(xt, verbose=0), rtol=1e-9, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["dual", "primal"])
def test_empirical_ntk_flow_save_load(data, tmp_path, form):
    x, y, xt = data
    model = KernelModel(EmpiricalNTKKernel(metric_model(2)), x, M, form=form)
    model.compile(optimizer=keras.optimizers.SGD(LR))
    model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    model.save(tmp_path / "ntk_flow.keras")
    loaded = keras.models.load_model(tmp_path / "ntk_flow.keras")
    np.testing.assert_allclose(loaded.predict(xt, verbose=0), model.predict(xt, verbose=0), rtol=1e-12, atol=1e-15)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    loaded.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    np.testing.assert_allclose(loaded.predict(xt, verbose=0), model.predict(xt, verbose=0), rtol=1e-10, atol=1e-14)


def test_kernel_of_a_network_with_another_input_width_is_refused(data):
    from cyntk.kernels.ntk_networks import ntk_mlp

    x, _, _ = data
    net = ntk_mlp(8, 16, 1, n_outputs=9, seed=0)  # built for (B, 8) inputs, not (B, 10)
    with pytest.raises(ValueError, match="cannot be evaluated on the train points of shape"):
        KernelModel(EmpiricalNTKKernel(net), x, M, base_metric="fubini_study")
