"""Analytic infinite-width NNGP/NTK: neural-tangents reference, quadrature, Monte-Carlo."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import dblquad
from scipy.special import erf

from cyntk.kernels import InfiniteWidthKernel, infinite_width_kernel, metric_ntk, ntk_mlp

ARCHS = {"A": ("relu", 80.52, 5.716, 1), "B": ("relu", 1.5, 0.05, 1), "C": ("relu", 1.4, 0.1, 3)}


@pytest.fixture(scope="module")
def iw_ref(ntk_reference_dir):
    return dict(np.load(ntk_reference_dir / "infinite_width.npz"))


# ----------------------------------------------------------------------------- reference
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_relu_matches_neural_tangents(iw_ref, arch):
    act, w_std, b_std, depth = ARCHS[arch]
    x1, x2 = iw_ref["x1"], iw_ref["x2"]
    kw = dict(activation=act, W_std=w_std, b_std=b_std, depth=depth)
    nngp12, ntk12 = infinite_width_kernel(x1, x2, kind="both", **kw)
    nngp11, ntk11 = infinite_width_kernel(x1, None, kind="both", **kw)
    for ours, key in ((nngp12, "nngp_12"), (ntk12, "ntk_12"), (nngp11, "nngp_11")):
        ref = iw_ref[f"{arch}_{key}"]
        assert np.abs(ours - ref).max() <= 1e-13 * np.abs(ref).max(), key
    ref = iw_ref[f"{arch}_ntk_11"]
    off = ~np.eye(len(x1), dtype=bool)
    assert np.abs(ntk11 - ref)[off].max() <= 1e-13 * np.abs(ref).max()
    # neural-tangents' diagonal carries an arctan2 rounding error (README): rtol ~1e-7
    np.testing.assert_allclose(np.diag(ntk11), np.diag(ref), rtol=1e-7)
    # the kernel object gives the same blocks and is symmetric/PSD
    kernel = InfiniteWidthKernel(act, W_std=w_std, b_std=b_std, depth=depth)
    block = kernel(x1)
    np.testing.assert_array_equal(block, ntk11)
    np.testing.assert_array_equal(block, block.T)
    eig = np.linalg.eigvalsh(block)
    assert eig.min() >= -1e-10 * eig.max()
    assert kernel.component_diagonal and kernel(x1[0], x2[0]).shape == ()
    assert kernel(x1[:3], x2[0]).shape == (3,)


# ----------------------------------------------------------------------------- quadrature
def _gauss_expectation(f, g, k11, k12, k22, h=0.04, lim=9.0):
    """E[f(u) g(v)], (u, v) ~ N(0, [[k11, k12], [k12, k22]]), by the 2-D trapezoidal rule.

    With u = a s, v = b s + c t (Cholesky), s, t ~ N(0, 1); the trapezoidal rule on a
    fine grid is spectrally accurate for smooth, rapidly decaying integrands.
    """
    s = np.arange(-lim, lim + h / 2, h)
    w = h * np.exp(-(s**2) / 2) / np.sqrt(2 * np.pi)
    a = np.sqrt(k11)[..., None, None]
    b = (k12 / np.sqrt(k11))[..., None, None]
    c = np.sqrt(np.maximum(k22 - k12**2 / k11, 0.0))[..., None, None]
    u = a * s[:, None]
    v = b * s[:, None] + c * s[None, :]
    return np.sum(np.outer(w, w) * f(u) * g(v), axis=(-1, -2))


def _recursion_by_quadrature(x1, x2, phi, dphi, w_std, b_std, depth):
    d = x1.shape[1]
    q1 = w_std**2 * np.sum(x1**2, 1) / d + b_std**2
    q2 = w_std**2 * np.sum(x2**2, 1) / d + b_std**2
    k = w_std**2 * x1 @ x2.T / d + b_std**2
    ntk = k.copy()
    for _ in range(depth):
        Q1, Q2 = np.broadcast_to(q1[:, None], k.shape), np.broadcast_to(q2[None, :], k.shape)
        k_new = w_std**2 * _gauss_expectation(phi, phi, Q1, k, Q2) + b_std**2
        ntk = k_new + w_std**2 * _gauss_expectation(dphi, dphi, Q1, k, Q2) * ntk
        q1 = w_std**2 * _gauss_expectation(phi, phi, q1, q1, q1) + b_std**2
        q2 = w_std**2 * _gauss_expectation(phi, phi, q2, q2, q2) + b_std**2
        k = k_new
    return k, ntk


@pytest.mark.parametrize("w_std, b_std, depth", [(1.0, 0.0, 1), (1.7, 0.3, 2), (2.5, 0.5, 3)])
def test_erf_matches_gaussian_quadrature(rng, w_std, b_std, depth):
    x1 = rng.normal(size=(5, 3))
    x2 = rng.normal(size=(4, 3))

    def d_erf(u):
        return 2 / np.sqrt(np.pi) * np.exp(-(u**2))

    nngp_q, ntk_q = _recursion_by_quadrature(x1, x2, erf, d_erf, w_std, b_std, depth)
    nngp, ntk = infinite_width_kernel(x1, x2, activation="erf", W_std=w_std, b_std=b_std, depth=depth, kind="both")
    np.testing.assert_allclose(nngp, nngp_q, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ntk, ntk_q, rtol=1e-9, atol=1e-12)
    # x2 = None: same numbers, symmetric
    nngp_s, ntk_s = infinite_width_kernel(
        x1, None, activation="erf", W_std=w_std, b_std=b_std, depth=depth, kind="both"
    )
    np.testing.assert_allclose(
        ntk_s, infinite_width_kernel(x1, x1 + 0.0, activation="erf", W_std=w_std, b_std=b_std, depth=depth), rtol=1e-12
    )
    np.testing.assert_array_equal(ntk_s, ntk_s.T)


def test_relu_single_layer_closed_form(rng):
    """Depth 1: the arc-cosine formulas against adaptive 2-D quadrature over u, v > 0."""
    x1, x2 = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    w_std, b_std, d = 1.3, 0.2, 3
    nngp, ntk = infinite_width_kernel(x1, x2, W_std=w_std, b_std=b_std, depth=1, kind="both")
    for a in range(2):
        for b in range(2):
            k11 = w_std**2 * x1[a] @ x1[a] / d + b_std**2
            k22 = w_std**2 * x2[b] @ x2[b] / d + b_std**2
            k12 = w_std**2 * x1[a] @ x2[b] / d + b_std**2
            cov_inv = np.linalg.inv([[k11, k12], [k12, k22]])
            norm = 2 * np.pi * np.sqrt(k11 * k22 - k12**2)

            def density(v, u):
                return np.exp(-0.5 * (cov_inv[0, 0] * u * u + 2 * cov_inv[0, 1] * u * v + cov_inv[1, 1] * v * v)) / norm

            lim_u, lim_v = 14 * np.sqrt(k11), 14 * np.sqrt(k22)
            e_phi = dblquad(lambda v, u: u * v * density(v, u), 0, lim_u, 0, lim_v, epsabs=1e-12, epsrel=1e-11)[0]
            e_dphi = dblquad(density, 0, lim_u, 0, lim_v, epsabs=1e-12, epsrel=1e-11)[0]
            nngp_q = w_std**2 * e_phi + b_std**2
            np.testing.assert_allclose(nngp[a, b], nngp_q, rtol=1e-9)
            np.testing.assert_allclose(ntk[a, b], nngp_q + w_std**2 * e_dphi * k12, rtol=1e-9)


def test_depth_zero_is_linear_kernel(rng):
    x1, x2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    expected = 2.0**2 * x1 @ x2.T / 4 + 0.5**2
    for act in ("relu", "erf"):
        np.testing.assert_allclose(
            infinite_width_kernel(x1, x2, activation=act, W_std=2.0, b_std=0.5, depth=0), expected, rtol=1e-14
        )


# ----------------------------------------------------------------------------- Monte-Carlo
def _mean_relative_error(x, width, n_seeds, activation, w_std, b_std, depth, analytic, seed=0):
    """Mean over random draws of ||Theta_emp - Theta_inf||_F / ||Theta_inf||_F at one width.

    One network per width; every draw re-samples all parameters from N(0, 1) (NTK
    parameterisation), so the traced NTK functions are reused.
    """
    net = ntk_mlp(x.shape[1], width, depth, activation=activation, W_std=w_std, b_std=b_std)
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(n_seeds):
        for v in net.trainable_variables:
            v.assign(rng.standard_normal(v.shape))
        emp = metric_ntk(net, x)[:, :, 0, 0]
        errors.append(np.linalg.norm(emp - analytic) / np.linalg.norm(analytic))
    return float(np.mean(errors))


def test_wide_relu_networks_converge_like_inverse_sqrt_width(iw_ref):
    x = iw_ref["x1"][:6]
    analytic = infinite_width_kernel(x, activation="relu", W_std=1.5, b_std=0.05, depth=1)
    widths = np.array([64, 256, 1024, 4096])
    errors = np.array(
        [_mean_relative_error(x, w, 10, "relu", 1.5, 0.05, 1, analytic, seed=i) for i, w in enumerate(widths)]
    )
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.7 < slope < -0.3, (slope, errors)
    assert errors[-1] < 0.05


def test_wide_erf_network_converges():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, 4))
    analytic = infinite_width_kernel(x, activation="erf", W_std=1.6, b_std=0.2, depth=2)
    errs = {w: _mean_relative_error(x, w, 6, "erf", 1.6, 0.2, 2, analytic, seed=w) for w in (128, 2048)}
    assert errs[2048] < 0.08
    assert errs[2048] < errs[128] / 2.5  # ~ 1/sqrt(16) = 1/4 expected
