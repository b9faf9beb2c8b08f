"""Continuous-time integration of frozen-kernel flows (paper 2.12) vs Euler steps (3.5): cyntk.flows.ode."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cyntk.flows.kernel_model import KernelModel  # noqa: E402
from cyntk.flows.ode import KernelFlowODE, integrate_flow, stability_limit  # noqa: E402
from cyntk.flows.product import min_eigenvalues  # noqa: E402
from cyntk.geometry import fermat_quintic, to_real  # noqa: E402
from cyntk.kernels import GaussianFSKernel  # noqa: E402
from cyntk.models import losses as L  # noqa: E402

M = fermat_quintic()
CHART = (0, 1)
N_TRAIN = 20
N_STEPS = 50
TIGHT = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def flow():
    z = M.sample_points(N_TRAIN + 6, seed=3, chart=CHART)
    x = to_real(z)
    kappa = M.kappa(M.sample_points(2000, seed=4))

    def squared(g, y):
        eta = tf.math.real(L.determinant(g)) / (kappa * y[:, 1])
        return (1.0 - eta) ** 2

    def make(**kw):
        # the paper's Gaussian-FS kernel, sigma = 30, with the smooth loss (1 - eta)^2
        return KernelModel(GaussianFSKernel(30.0), x[:N_TRAIN], M, loss=squared, kappa=kappa, **kw)

    y = KernelModel.targets(M, x[:N_TRAIN])
    st = stability_limit(make(), y)
    return dict(x=x[:N_TRAIN], x_te=x[N_TRAIN:], y=y, kappa=kappa, make=make, st=st, squared=squared)


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


# ----------------------------------------------------------------------------- ODE vs Euler / fit
def test_dopri_and_bdf_agree_with_many_small_euler_steps_of_fit(flow):
    make, x, y = flow["make"], flow["x"], flow["y"]
    # a power of two (Keras keeps the learning rate in float32), ~5% of the stability limit
    dt = 2.0 ** np.floor(np.log2(0.05 * flow["st"]["dt_max"]))
    steps = 16
    T = steps * dt
    model = make()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=dt))
    model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    g_fit = model.g0_train.numpy() - model.u_train.numpy()

    e1 = integrate_flow(make(), y, [0.0, T], method="euler", dt=dt, update_model=False)
    # integrate_flow's Euler is fit's SGD step for step (eq. 3.5)
    np.testing.assert_allclose(e1["alpha"][-1], model.alpha.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(e1["g_train"][-1], g_fit, rtol=1e-11, atol=1e-14)
    e2 = integrate_flow(make(), y, [0.0, T], method="euler", dt=dt / 2, update_model=False)
    e4 = integrate_flow(make(), y, [0.0, T], method="euler", dt=dt / 4, update_model=False)
    d = integrate_flow(make(), y, [0.0, T], method="dopri", update_model=False, **TIGHT)
    b = integrate_flow(make(), y, [0.0, T], method="bdf", update_model=False, **TIGHT)
    gd = d["g_train"][-1]
    err = [rel(e["g_train"][-1], gd) for e in (e1, e2, e4)]
    # the flow moved the metric far more than the discretisation error ...
    assert rel(gd, d["g_train"][0]) > 50 * err[0]
    assert d["loss"][-1] < 0.9 * d["loss"][0]
    # ... Euler converges to the ODE solution at first order ...
    assert 1.8 < err[0] / err[1] < 2.2 and 1.8 < err[1] / err[2] < 2.2, err
    assert err[0] < 5e-3
    # ... and its Richardson extrapolation matches the adaptive solutions far better than Euler does
    richardson = 2 * e4["g_train"][-1] - e2["g_train"][-1]
    assert rel(richardson, gd) < 0.05 * err[2]
    assert rel(b["g_train"][-1], gd) < 1e-3 * err[2]
    assert d["n_rhs"] > 0 and b["n_rhs"] > 0


def test_update_model_and_x_eval(flow):
    make, y = flow["make"], flow["y"]
    T = 20 * flow["st"]["dt_max"]
    model = make()
    r = integrate_flow(model, y, [0.0, T / 2, T], method="dopri", x_eval=flow["x_te"])
    assert r["g_eval"].shape == (3, len(flow["x_te"]), 9) and r["alpha"].shape == (3, N_TRAIN, 9)
    np.testing.assert_allclose(r["g_eval"][0], make()._base_components_np(flow["x_te"]), rtol=1e-12)
    # the model now continues from alpha(T): predictions and the cached train metric agree
    from cyntk.geometry import components_from_hermitian

    got = components_from_hermitian(model.predict(flow["x_te"], verbose=0))
    np.testing.assert_allclose(got, r["g_eval"][-1], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(model.g0_train.numpy() - model.u_train.numpy(), r["g_train"][-1], rtol=1e-10, atol=1e-13)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=2.0**-20))
    ev = model.evaluate(flow["x"], y, batch_size=N_TRAIN, verbose=0, return_dict=True)
    assert ev["loss"] == pytest.approx(r["loss"][-1], rel=1e-9)


# ----------------------------------------------------------------------------- Jacobian
@pytest.mark.parametrize("loss, n_pts", [("squared", 6), ("sigma+volk", 3)])
def test_closed_form_jacobian_matches_finite_differences(flow, loss, n_pts):
    """BDF's Jacobian -Hess K against central differences of the right-hand side (all columns).

    With the batch-level volk term the full Hessian is used instead of per-point blocks."""
    xs = flow["x"][:n_pts]
    spec = flow["squared"] if loss == "squared" else {"sigma": 1.0, "volk": 0.5}
    model = KernelModel(GaussianFSKernel(0.5), xs, M, loss=spec, kappa=flow["kappa"])
    ode = KernelFlowODE(model, KernelModel.targets(M, xs))
    assert ode.pointwise == (loss == "squared")
    a = np.random.default_rng(0).standard_normal((n_pts, 9)) * 1e-3
    t = tf.constant(0.0, tf.float64)
    J = ode.jacobian()(t, tf.constant(a)).numpy()
    assert J.shape == (9 * n_pts, 9 * n_pts)
    f = ode.rhs()
    eps = 1e-6
    fd = np.zeros_like(J)
    for i in range(a.size):
        e = np.zeros(a.size)
        e[i] = eps
        fd[:, i] = (
            f(t, tf.constant(a + e.reshape(a.shape))).numpy() - f(t, tf.constant(a - e.reshape(a.shape))).numpy()
        ).reshape(-1) / (2 * eps)
    np.testing.assert_allclose(J, fd, atol=1e-6 * np.abs(fd).max(), rtol=0)
    assert np.abs(J).max() > 0 and not np.allclose(J, J.T)  # -Hess K is not symmetric


# ----------------------------------------------------------------------------- step size
def test_euler_explodes_above_stability_limit_while_dopri_and_bdf_do_not(flow):
    """The paper's 'Gaussian flows explode for unlucky step sizes': eq. 3.5 with dt above
    dt_max = 2/lambda_max(Hess K) leaves the flow (its fastest mode oscillates and grows); the
    adaptive (Dormand-Prince) and stiff (BDF) solutions of 2.12 over the same flow time do not."""
    make, y, st = flow["make"], flow["y"], flow["st"]
    dt_max = st["dt_max"]
    assert dt_max == pytest.approx(2.0 / st["lambda_max"]) and st["lambda_max"] > 0
    factors = (0.9, 5.0)
    times = [0.0] + [N_STEPS * f * dt_max for f in factors]
    d = integrate_flow(make(), y, times, method="dopri", update_model=False)
    b = integrate_flow(make(), y, times, method="bdf", update_model=False)
    for r in (d, b):
        assert np.all(np.isfinite(r["g_train"]))
        assert min_eigenvalues(r["g_train"][-1], 3).min() > 0
        assert np.all(np.diff(r["loss"]) < 0)  # the flow itself decreases the loss
    assert rel(b["g_train"][-1], d["g_train"][-1]) < 1e-4
    dev = {}
    for i, f in enumerate(factors, start=1):
        try:
            e = integrate_flow(make(), y, [0.0, times[i]], method="euler", dt=f * dt_max, update_model=False)
            g = e["g_train"][-1]
            bad = not np.all(np.isfinite(g)) or min_eigenvalues(g, 3).min() <= 0
            dev[f] = np.inf if bad else rel(g, d["g_train"][i])
        except FloatingPointError:
            dev[f] = np.inf
    # below the limit Euler follows the flow; well above it, it explodes. (Just above it the outcome
    # depends on the point set: dt_max is the bound at t = 0 and lambda_max falls along this flow.)
    assert dev[0.9] < 5e-3, dev
    assert dev[5.0] == np.inf, dev


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors(flow):
    make, y = flow["make"], flow["y"]
    model = make()
    with pytest.raises(TypeError, match="KernelModel"):
        integrate_flow(object(), y, [0.0, 1e-4])
    with pytest.raises(ValueError, match=r"\(N, 2\) = \(20, 2\)"):
        integrate_flow(model, y[:, :1], [0.0, 1e-4])
    with pytest.raises(ValueError, match=r"\(N, 2\) = \(20, 2\)"):
        integrate_flow(model, y[:5], [0.0, 1e-4])
    with pytest.raises(ValueError, match="method"):
        integrate_flow(model, y, [0.0, 1e-4], method="leapfrog")
    with pytest.raises(ValueError, match="dt"):
        integrate_flow(model, y, [0.0, 1e-4], method="euler")
    with pytest.raises(ValueError, match="sample_weight"):
        integrate_flow(model, y, [0.0, 1e-4], sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="times"):
        integrate_flow(model, y, [1e-4, 0.0], method="dopri")
    other = to_real(M.sample_points(2, seed=5, chart=(1, 0)))
    with pytest.raises(ValueError, match="chart"):
        integrate_flow(model, y, [0.0, 1e-4], x_eval=other)
    with pytest.raises(ValueError, match="alpha"):
        KernelFlowODE(model, y).stiffness(np.zeros((3, 9)))
    # the primal form (linearised network) has no dual coefficients to integrate
    from cyntk.kernels.empirical import EmpiricalNTKKernel
    from cyntk.models import MultiplicativeModel

    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((10,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(9)])
        metric = MultiplicativeModel(net, M, dtype="float64")
    finally:
        keras.config.set_dtype_policy(old)
    primal = KernelModel(EmpiricalNTKKernel(metric), flow["x"][:4], M, form="primal")
    with pytest.raises(ValueError, match="dual"):
        integrate_flow(primal, y[:4], [0.0, 1e-4])
    with pytest.raises(ValueError, match="dual"):
        stability_limit(primal, y[:4])
