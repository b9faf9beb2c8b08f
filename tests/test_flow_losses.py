"""The named per-point losses of KernelModel against NumPy formulas: values and flow gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cyntk.flows import KernelModel
from cyntk.flows._kernel_common import LOSS_NAMES
from cyntk.geometry import components_from_hermitian, fermat_quintic, hermitian_from_components, to_real
from cyntk.kernels import DeltaKernel


def _setup(n=6, seed=3):
    M = fermat_quintic()
    z = M.sample_points(n, seed=seed, chart=(0, 1))
    x = to_real(z)
    y = KernelModel.targets(M, x)
    return M, x, y


def _eta(o, omega_sq, kappa):
    """eta = det g / (kappa |Omega|^2) from real components o (P, 9), NumPy."""
    g = hermitian_from_components(o.reshape(len(o), 3, 3) if o.ndim == 3 else o)
    return np.real(np.linalg.det(g)) / (kappa * omega_sq)


def _grad_sigma_squared(o, omega_sq, kappa):
    """d (1 - eta)^2 / d o (P, 9) by Jacobi's formula d det H = det H tr(H^-1 dH)."""
    g = hermitian_from_components(o)
    eta = np.real(np.linalg.det(g)) / (kappa * omega_sq)
    cof = np.linalg.det(g)[:, None, None] * np.swapaxes(np.linalg.inv(g), 1, 2)  # d det / d H[r, c]
    out = np.zeros_like(o)
    for i in range(o.shape[1]):
        e = np.zeros(o.shape[1])
        e[i] = 1.0
        dH = hermitian_from_components(np.broadcast_to(e, o.shape))  # H is linear in o
        ddet = np.real(np.sum(cof * dH, axis=(1, 2)))
        out[:, i] = -2.0 * (1.0 - eta) * ddet / (kappa * omega_sq)
    return out


def test_sigma_squared_is_a_named_loss():
    assert "sigma_squared" in LOSS_NAMES
    with pytest.raises(ValueError, match="sigma_squared"):
        KernelModel._resolve_loss("sigma_cubed")


def test_sigma_squared_value_matches_numpy():
    M, x, y = _setup()
    model = KernelModel(DeltaKernel(), x, M, loss={"sigma": 1.0, "sigma_squared": 1.0})
    rng = np.random.default_rng(0)
    o = components_from_hermitian(M.fs_metric_pb(M.sample_points(6, seed=3, chart=(0, 1))))
    o = o.reshape(6, 9) * (1 + 0.2 * rng.standard_normal((6, 9)))
    g = hermitian_from_components(o)
    terms = model.pointwise_loss(g, x, y)
    eta = _eta(o, y[:, 1], model.kappa)
    np.testing.assert_allclose(terms["sigma_squared"].numpy(), (1 - eta) ** 2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(terms["sigma"].numpy(), np.abs(1 - eta), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(terms["loss"].numpy(), np.abs(1 - eta) + (1 - eta) ** 2, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_sigma_squared_flow_step_is_minus_dt_times_the_numpy_gradient(reduction):
    # the Delta kernel is the identity on the train points, so one SGD(dt) step of eq. 3.5 moves
    # each point's components by -dt dL/do at that point (divided by N for reduction="mean")
    M, x, y = _setup()
    model = KernelModel(DeltaKernel(), x, M, loss="sigma_squared", reduction=reduction)
    o0 = components_from_hermitian(model.predict(x, batch_size=len(x), verbose=0)).reshape(len(x), 9)
    grad = _grad_sigma_squared(o0, y[:, 1], model.kappa)
    scale = 1.0 if reduction == "sum" else 1.0 / len(x)
    # a power of 2 (exact in float32, where Keras keeps the learning rate) moving g by ~1e-3 relative
    dt = 2.0 ** np.floor(np.log2(1e-3 * np.abs(o0).max() / (scale * np.abs(grad).max())))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=dt))
    # Jacobi's formula against central differences of the NumPy loss
    h = 1e-6
    fd = np.zeros_like(o0)
    for i in range(9):
        e = np.zeros(9)
        e[i] = h
        fd[:, i] = ((1 - _eta(o0 + e, y[:, 1], model.kappa)) ** 2 - (1 - _eta(o0 - e, y[:, 1], model.kappa)) ** 2) / (
            2 * h
        )
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    o1 = components_from_hermitian(model.predict(x, batch_size=len(x), verbose=0)).reshape(len(x), 9)
    np.testing.assert_allclose(o1 - o0, -dt * scale * grad, rtol=1e-9, atol=1e-14)
