"""Infinite-width kernels for any activation: neural-tangents arrays, independent quadrature, Monte-Carlo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cyntk.kernels import InfiniteWidthKernel, infinite_width_kernel, metric_ntk, ntk_mlp
from cyntk.kernels.analytic import ACTIVATIONS, NNGPAndNTK
from cyntk.kernels.dual import CLOSED_FORMS, dual_activation, numerical

DATA = Path(__file__).resolve().parent / "data" / "nt_infinite_width.npz"
REF = dict(np.load(DATA))
NAMES = sorted(k[: -len("_spec")] for k in REF if k.endswith("_spec"))


def _kwargs(spec, deg=None):
    return dict(
        activation=spec["activation"],
        W_std=spec["W_std"],
        b_std=spec["b_std"],
        depth=spec["depth"],
        parameterization=spec["parameterization"],
        width=spec["width"],
        quad_deg=deg or spec["deg"] or 64,
    )


def _rel(ours, ref):
    return np.abs(ours - ref).max() / np.abs(ref).max()


@pytest.mark.parametrize("name", NAMES)
def test_matches_neural_tangents(name):
    """Every architecture of tests/data/nt_infinite_width.npz (see NT_REFERENCE.md)."""
    spec = json.loads(str(REF[f"{name}_spec"]))
    p1, p2 = REF[f"{name}_ntk_12"].shape
    x1, x2 = REF["x1"][:p1], REF["x2"][:p2]
    kw = _kwargs(spec)
    both12 = infinite_width_kernel(x1, x2, kind="both", **kw)
    both11 = infinite_width_kernel(x1, None, kind="both", **kw)
    closed = spec["activation"] in CLOSED_FORMS
    rtol = 1e-13 if closed else 5e-14  # quadrature: the same Gauss-Hermite rule as nt's
    assert _rel(both12.nngp, REF[f"{name}_nngp_12"]) <= rtol
    assert _rel(both12.ntk, REF[f"{name}_ntk_12"]) <= rtol
    assert _rel(both11.nngp, REF[f"{name}_nngp_11"]) <= rtol
    ref11 = REF[f"{name}_ntk_11"]
    off = ~np.eye(p1, dtype=bool)
    scale = np.abs(ref11).max()
    assert np.abs(both11.ntk - ref11)[off].max() <= rtol * scale
    # diagonal: nt's arctan2 angle is ~1e-8 instead of 0 for the relu family (README of
    # tests/data/ntk); every other activation agrees there as well
    diag_tol = 3e-8 if spec["activation"] in ("relu", "leaky_relu", "abs") else 1e-13
    assert np.abs(np.diag(both11.ntk) - np.diag(ref11)).max() <= diag_tol * scale
    # class == function, symmetric blocks
    kernel = InfiniteWidthKernel(**kw)
    np.testing.assert_array_equal(kernel(x1, x2), both12.ntk)
    np.testing.assert_array_equal(both11.ntk, both11.ntk.T)
    np.testing.assert_array_equal(both11.nngp, both11.nngp.T)


@pytest.mark.parametrize("name", [n for n in NAMES if json.loads(str(REF[f"{n}_spec"]))["deg"]])
def test_default_quadrature_is_converged(name):
    """The default 64 nodes per axis against nt's 120 (smooth activations; elu is only C^1)."""
    spec = json.loads(str(REF[f"{name}_spec"]))
    p1, p2 = REF[f"{name}_ntk_12"].shape
    ours = infinite_width_kernel(REF["x1"][:p1], REF["x2"][:p2], kind="both", **{**_kwargs(spec), "quad_deg": 64})
    tol = 1e-3 if spec["activation"] == "elu" else 1e-12
    assert _rel(ours.ntk, REF[f"{name}_ntk_12"]) <= tol
    assert _rel(ours.nngp, REF[f"{name}_nngp_12"]) <= tol


# ----------------------------------------------------------------------------- independent checks
def _trapezoid_expectation(f, g, k11, k12, k22, h=0.05, lim=9.0):
    """E[f(u) g(v)] by the 2-D trapezoidal rule after the Cholesky map (independent of Gauss-Hermite)."""
    s = np.arange(-lim, lim + h / 2, h)
    w = h * np.exp(-(s**2) / 2) / np.sqrt(2 * np.pi)
    a = np.sqrt(k11)[..., None, None]
    b = (k12 / np.sqrt(k11))[..., None, None]
    c = np.sqrt(np.maximum(k22 - k12**2 / k11, 0.0))[..., None, None]
    return np.sum(np.outer(w, w) * f(a * s[:, None]) * g(b * s[:, None] + c * s[None, :]), axis=(-1, -2))


@pytest.mark.parametrize("activation", ["gelu", "sin", "cos", "tanh", "softplus", "silu", "sigmoid", "erf"])
def test_expectation_maps_against_trapezoid(activation):
    dual = dual_activation(activation, deg=256)  # q = 2.5 needs ~200 nodes for tanh (dual.py)
    q1 = np.array([0.3, 1.2, 2.5])
    q2 = np.array([0.7, 1.9])
    k = np.array([[0.2, -0.3], [0.5, 1.1], [-0.9, 2.0]])
    e_phi, e_dphi = dual.expectations(q1, q2, k)
    Q1, Q2 = np.broadcast_to(q1[:, None], k.shape), np.broadcast_to(q2[None, :], k.shape)
    np.testing.assert_allclose(e_phi, _trapezoid_expectation(dual.fn, dual.fn, Q1, k, Q2), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(e_dphi, _trapezoid_expectation(dual.dfn, dual.dfn, Q1, k, Q2), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dual.variance(q1), _trapezoid_expectation(dual.fn, dual.fn, q1, q1, q1), rtol=1e-11)


def test_gelu_closed_form_equals_its_quadrature():
    """Closed form vs the same activation through the Gauss-Hermite path (a whole network)."""
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(6, 4)) / 2, rng.normal(size=(5, 4)) / 2
    g = CLOSED_FORMS["gelu"]
    quad = numerical("gelu_quadrature", g.fn, g.dfn, deg=120)
    kw = dict(W_std=[1.4, 1.1, 0.7], b_std=[0.2, 0.1, None], depth=2)
    exact = infinite_width_kernel(x1, x2, activation="gelu", kind="both", **kw)
    numer = infinite_width_kernel(x1, x2, activation=quad, kind="both", **kw)
    np.testing.assert_allclose(numer.ntk, exact.ntk, rtol=1e-12)
    np.testing.assert_allclose(numer.nngp, exact.nngp, rtol=1e-12)


# ----------------------------------------------------------------------------- API
def test_kind_both_is_named_and_ordered():
    x = np.random.default_rng(0).normal(size=(4, 3))
    both = infinite_width_kernel(x, activation="gelu", kind="both")
    assert isinstance(both, NNGPAndNTK)
    nngp, ntk = both
    np.testing.assert_array_equal(nngp, infinite_width_kernel(x, activation="gelu", kind="nngp"))
    np.testing.assert_array_equal(ntk, infinite_width_kernel(x, activation="gelu", kind="ntk"))
    assert both.nngp is nngp and both.ntk is ntk


def test_readout_arguments_and_no_bias():
    x = np.random.default_rng(1).normal(size=(5, 3))
    a = infinite_width_kernel(x, activation="tanh", W_std=[1.2, 0.8], b_std=[0.1, None])
    b = infinite_width_kernel(x, activation="tanh", W_std=1.2, b_std=0.1, readout_W_std=0.8, readout_bias=False)
    c = infinite_width_kernel(x, activation="tanh", W_std=1.2, b_std=0.1, readout_W_std=0.8, readout_b_std=0.0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # 'ntk': a zero-scale bias contributes nothing
    s_nobias = infinite_width_kernel(x, b_std=[0.1, None], parameterization="standard", width=8)
    s_zero = infinite_width_kernel(x, b_std=[0.1, 0.0], parameterization="standard", width=8)
    np.testing.assert_allclose(s_zero - s_nobias, 1.0, rtol=1e-13)  # 'standard': d f/d b = 1


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(activation="swish2"), "activation"),
        (dict(W_std=[1.0, 2.0, 3.0]), "W_std"),
        (dict(b_std=-1.0), "b_std"),
        (dict(parameterization="mup"), "parameterization"),
        (dict(parameterization="standard"), "width"),
        (dict(quad_deg=0), "quad_deg"),
        (dict(readout_bias="no"), "readout_bias"),
    ],
)
def test_errors_name_the_argument(bad, match):
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=match):
        infinite_width_kernel(x, **bad)
    with pytest.raises(ValueError, match=match):
        InfiniteWidthKernel(**bad)


def test_every_activation_is_psd_and_finite():
    x = np.random.default_rng(2).normal(size=(12, 4))
    for act in ACTIVATIONS:
        k = InfiniteWidthKernel(act, W_std=1.3, b_std=0.2, depth=2)(x)
        assert np.isfinite(k).all(), act
        eig = np.linalg.eigvalsh(k)
        assert eig.min() >= -1e-10 * eig.max(), act


# ----------------------------------------------------------------------------- Monte-Carlo
def _mc_error(x, width, n_draws, analytic, seed, **kw):
    """Mean relative Frobenius distance of wide networks' empirical NTKs to ``analytic``."""
    net = ntk_mlp(x.shape[1], width, kw["depth"], **{k: v for k, v in kw.items() if k != "depth"})
    rng = np.random.default_rng(seed)
    errs = []
    for _ in range(n_draws):
        for layer in net.layers:
            for v in layer.trainable_variables:
                std = 1.0  # 'ntk': N(0, 1); 'standard': the layer's initialiser scale
                if kw.get("parameterization") == "standard":
                    std = layer.kernel_initializer.stddev if v is layer.kernel else layer.bias_initializer.stddev
                v.assign(std * rng.standard_normal(v.shape))
        emp = metric_ntk(net, x)[:, :, 0, 0]
        errs.append(np.linalg.norm(emp - analytic) / np.linalg.norm(analytic))
    return float(np.mean(errs))


@pytest.mark.parametrize(
    "activation, kw",
    [
        ("gelu", dict(W_std=[1.5, 1.2, 0.8], b_std=[0.2, 0.1, None], depth=2)),
        ("tanh", dict(W_std=1.6, b_std=0.1, depth=2)),
        ("softplus", dict(W_std=1.3, b_std=0.3, depth=1, parameterization="standard")),
    ],
)
def test_wide_networks_approach_the_kernel(activation, kw):
    """Seeded wide networks: error small at width 2048 and smaller than at 128 (~ 1/sqrt(width)).

    Loose statistical bounds (4 draws): at depth 2 the error is ~0.08 at width 2048 and falls
    to ~0.025 at 8192, like width^-1/2 (measured, gelu and relu alike).
    """
    x = np.random.default_rng(7).normal(size=(5, 4))
    errs = {}
    for width in (128, 2048):
        extra = dict(width=width) if kw.get("parameterization") == "standard" else {}
        analytic = infinite_width_kernel(x, activation=activation, **kw, **extra)
        errs[width] = _mc_error(x, width, 4, analytic, seed=width, activation=activation, **kw)
    assert errs[2048] < 0.12, errs
    assert errs[2048] < errs[128] / 1.5, errs
