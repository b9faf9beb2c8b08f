"""Non-local -> local metric flows (paper 2.12-2.14, 2.24-2.37): cyntk.flows.local.

The sigma sweeps run on a few fixed points of the cubic torus in chart (0, 1)
with fixed quadrature nodes, so every number here is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cyntk.flows.local import kernel_flow_velocity, local_flow_velocity, loss_gradient, sigma_sweep
from cyntk.geometry import fermat_cubic, fermat_quintic, make_dataset, to_complex, to_real
from cyntk.geometry.local_coordinates import chart_coordinates, measure_density, points_from_chart
from cyntk.kernels.cosine import cosine_normalisation
from cyntk.kernels.manifold import ManifoldGaussianKernel, manifold_cosine_amplitude

TORUS = fermat_cubic()
QUINTIC = fermat_quintic()
CHART = (0, 1)
SIGMAS = (0.2, 0.1, 0.05, 0.025, 0.0125)


# ----------------------------------------------------------------------------- independent formulas
def fermat_pieces(z, chart):
    """For a Fermat hypersurface sum z_i^d = 0: J (P, n, N), |Omega|^2 (P,) in chart (k, j), z_k = 1."""
    P, N = z.shape
    d, n = N, N - 2
    k, j = chart
    good = [i for i in range(N) if i not in (k, j)]
    J = np.zeros((P, n, N), dtype=complex)
    for a, g in enumerate(good):
        J[:, a, g] = 1.0
        J[:, a, j] = -((z[:, g] / z[:, j]) ** (d - 1))
    omega_sq = 1.0 / (d**2 * np.abs(z[:, j]) ** (2 * (d - 1)))
    return J, omega_sq


def numpy_block(z1, z2, sigma, chart, space, rescaling):
    """The manifold Gaussian written out from the complex points."""
    n = z1.shape[1] - 2
    if space == "input":
        sq = np.sum(np.abs(z1[:, None, :] - z2[None, :, :]) ** 2, axis=-1)
    else:
        good = [i for i in range(z1.shape[1]) if i not in chart]
        sq = np.sum(np.abs(z1[:, None, good] - z2[None, :, good]) ** 2, axis=-1)
    blk = np.exp(-sq / (2 * sigma**2)) / (2 * np.pi * sigma**2) ** n  # m/2 = n

    def h(z):
        J, om = fermat_pieces(z, chart)
        dens = math.factorial(n) * om  # d mu_CY / d^{2n} u
        if space == "input":
            dens = dens / np.real(np.linalg.det(J @ np.conj(np.swapaxes(J, 1, 2))))
        return dens**-0.5

    if rescaling == "riemannian":
        blk = h(z1)[:, None] * blk * h(z2)[None, :]
    return blk


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def torus_eval():
    z = TORUS.sample_points(5, seed=21, chart=CHART)
    kappa = TORUS.kappa(TORUS.sample_points(4000, seed=22))
    return to_real(z), kappa


@pytest.fixture(scope="module")
def sweeps(torus_eval):
    x, kappa = torus_eval
    out = {}
    for space in ("input", "chart"):
        for resc in ("riemannian", "none"):
            out[space, resc] = sigma_sweep(
                TORUS,
                x,
                SIGMAS,
                chart=CHART,
                kappa=kappa,
                space=space,
                rescaling=resc,
                loss="squared",
                n_nodes=512,
                seed=3,
            )
    return out


def rel(a, b):
    return np.sqrt(np.sum((a - b) ** 2, axis=(-2, -1)) / np.sum(b**2))


# ----------------------------------------------------------------------------- charts
@pytest.mark.parametrize("M", [TORUS, QUINTIC], ids=["torus", "quintic"])
def test_chart_coordinates_and_points_from_chart_round_trip(M):
    z = M.sample_points(40, seed=5, chart=CHART)
    x = to_real(z)
    u = chart_coordinates(x, CHART)
    n = M.nfold
    good = [i for i in range(M.ncoords) if i not in CHART]
    np.testing.assert_array_equal(u, np.concatenate([z[:, good].real, z[:, good].imag], axis=1))
    # start Newton 5% away in the eliminated coordinate: it returns the original points
    start = z.copy()
    start[:, CHART[1]] *= 1.05
    back, ok = points_from_chart(M, u, CHART, start)
    assert ok.all()
    np.testing.assert_allclose(back, x, atol=1e-12)
    # moved coordinates: the new points lie on X and have exactly those coordinates
    rng = np.random.default_rng(0)
    u2 = u + 0.02 * rng.standard_normal(u.shape)
    x2, ok2 = points_from_chart(M, u2, CHART, z)
    assert ok2.all()
    z2 = to_complex(x2)
    assert np.max(np.abs(M.Q(z2)) / M.monomial_scale(z2)) < 1e-12
    np.testing.assert_allclose(chart_coordinates(x2, CHART), u2, atol=1e-14)
    assert np.all(z2[:, CHART[0]] == 1.0) and u.shape == (40, 2 * n)


# ----------------------------------------------------------------------------- measure
@pytest.mark.parametrize("M", [TORUS, QUINTIC], ids=["torus", "quintic"])
def test_measure_density_closed_form(M):
    z = M.sample_points(30, seed=6, chart=CHART)
    J, om = fermat_pieces(z, CHART)
    n = M.nfold
    chart_dens = measure_density(M, to_real(z), CHART, reference="chart")
    np.testing.assert_allclose(chart_dens, math.factorial(n) * om, rtol=1e-12)
    hh = np.real(np.linalg.det(J @ np.conj(np.swapaxes(J, 1, 2))))
    np.testing.assert_allclose(measure_density(M, to_real(z), CHART), math.factorial(n) * om / hh, rtol=1e-12)
    if M is TORUS:  # dmu_CY/dV = 1 / (9 (|z1|^4 + |z2|^4)) on the torus in chart (0, 1)
        np.testing.assert_allclose(
            measure_density(M, to_real(z), CHART), 1.0 / (9 * (np.abs(z[:, 1]) ** 4 + np.abs(z[:, 2]) ** 4)), rtol=1e-12
        )
    # against cymetric's weights w = deg |Omega|^2 / det G(t=1): d mu_CY / d^{2n}u = n! w det G / deg
    geo = M.geometry(z)
    np.testing.assert_allclose(chart_dens, math.factorial(n) * geo["weights"] * geo["det_fs"] / M.degree, rtol=1e-10)


@pytest.mark.parametrize("M, n_u", [(TORUS, 100_000), (QUINTIC, 150_000)], ids=["torus", "quintic"])
def test_measure_density_integrates_to_cymetric_volume(M, n_u):
    """int_chart (d mu_CY/d^{2n}u) d^{2n}u over the chart's region = the chart's share of Vol_CY = mean(w).

    The chart region (patch 0, eliminated 1) is |u_a| <= |z_1| <= 1; u is sampled uniformly in the
    unit polydisk (volume pi^n) and z_1 solves Q = 0 (the d roots have the same modulus, one
    suffices, times d). Checks the n! of mu_CY = n! |Omega|^2 d^{2n}u independently of the weights.
    """
    n, d, N = M.nfold, M.degree, M.ncoords
    rng = np.random.default_rng(7)
    u = np.sqrt(rng.uniform(size=(n_u, n))) * np.exp(2j * np.pi * rng.uniform(size=(n_u, n)))
    z1 = (-(1.0 + np.sum(u**d, axis=1)) + 0j) ** (1.0 / d)
    inside = (np.abs(z1) <= 1) & (np.abs(z1) >= np.abs(u).max(axis=1))
    z = np.concatenate([np.ones((n_u, 1)), z1[:, None], u], axis=1)[inside]
    assert M.Q(z).__abs__().max() < 1e-10
    dens = measure_density(M, to_real(z), CHART, reference="chart")
    integral = np.pi**n * d * np.sum(dens) / n_u
    zs = M.sample_points(60_000, seed=8)
    vol_cy = M.weights(zs).mean()  # cymetric's Vol_CY = int_X mu_CY
    share = vol_cy / (N * (N - 1))  # Fermat: the N(N-1) charts are equivalent
    assert integral == pytest.approx(share, rel=0.025)
    # a density without the n! (or with the FS volume instead) would be off by far more
    assert abs(integral / math.factorial(n) - share) > 0.1 * share or n == 1


# ----------------------------------------------------------------------------- kernel
@pytest.mark.parametrize("space", ["input", "chart"])
@pytest.mark.parametrize("rescaling", ["none", "riemannian"])
@pytest.mark.parametrize("M", [TORUS, QUINTIC], ids=["torus", "quintic"])
def test_manifold_gaussian_blocks_match_numpy(M, space, rescaling):
    z = M.sample_points(14, seed=9, chart=CHART)
    x = to_real(z)
    sigma = 0.3
    k = ManifoldGaussianKernel(sigma, M, CHART, space=space, rescaling=rescaling)
    np.testing.assert_allclose(
        k(x[:9], x[9:]), numpy_block(z[:9], z[9:], sigma, CHART, space, rescaling), rtol=1e-11, atol=0
    )
    sym = k(x)
    np.testing.assert_allclose(sym, numpy_block(z, z, sigma, CHART, space, rescaling), rtol=1e-11)
    np.testing.assert_allclose(sym, sym.T, rtol=1e-13)
    assert k.component_diagonal and k.m == 2 * M.nfold


def test_manifold_cosine_amplitude_normalises_an_m_dimensional_gaussian():
    # A^2/2 = (2 pi sigma^2)^(-m/2) with sigma = sqrt(d)/sigma_w; m = d is the R^d normalisation
    sw, d, m = 7.0, 10, 6
    A = manifold_cosine_amplitude(sw, d, m)
    assert A**2 / 2 == pytest.approx((2 * np.pi * d / sw**2) ** (-m / 2), rel=1e-13)
    assert manifold_cosine_amplitude(sw, d, d) == pytest.approx(cosine_normalisation(sw, d), rel=1e-13)
    # numerically: the Gaussian (A^2/2) exp(-|u|^2/(2 sigma^2)) integrates to 1 over R^m
    sigma = math.sqrt(d) / sw
    t = np.linspace(-8 * sigma, 8 * sigma, 2001)
    one_d = np.trapezoid(np.exp(-(t**2) / (2 * sigma**2)), t)
    assert A**2 / 2 * one_d**m == pytest.approx(1.0, rel=1e-9)


# ----------------------------------------------------------------------------- sigma -> 0
def test_sigma_sweep_errors_decrease_monotonically_like_sigma_squared(sweeps):
    table = {key: r["rel_error"] for key, r in sweeps.items()}
    for key, err in table.items():
        assert np.all(np.diff(err) < 0), (key, err)
        # Laplace expansion: error ~ sigma^2 once sigma is small (ratio 4 per halving)
        ratios = err[1:] / err[:-1]
        assert np.all((ratios[-2:] > 0.2) & (ratios[-2:] < 0.3)), (key, ratios)
        assert err[-1] < 3e-3, (key, err)
        assert err[0] > 0.1, (key, err)  # the sweep starts far from the limit


def test_rescaled_kernel_tends_to_riemannian_delta_and_flat_one_does_not(sweeps):
    """Paper 2.26-2.29: the normalised Gaussian tends to the flat delta, sqrt(g~) delta_mu; the
    rescaling h = (d lambda/d mu)^(1/2) turns it into delta_mu, the flow into -dl/dg (Omega_bar = 1)."""
    for space in ("input", "chart"):
        riem, flat = sweeps[space, "riemannian"], sweeps[space, "none"]
        target = -riem["dl_dg"]  # Omega_bar = 1
        np.testing.assert_allclose(riem["local"], target)
        assert rel(riem["kernel"][-1], target) < 3e-3
        # the flat kernel's limit is -(d mu/d lambda) dl/dg, a different local flow
        ob = flat["omega_bar"]
        assert np.all((ob < 0.5) | (ob > 2.0)) or np.ptp(ob) > 0.2
        err_vs_riem = rel(flat["kernel"], target)
        expected = rel(-ob[:, None] * flat["dl_dg"], target)  # |Omega_bar - 1| weighted
        assert expected > 0.5
        assert err_vs_riem[-1] == pytest.approx(expected, rel=0.01)
        assert np.all(err_vs_riem > 0.5)
    # the Riemannian limit does not depend on the coordinates the Gaussian is written in ...
    a, b = sweeps["input", "riemannian"]["kernel"], sweeps["chart", "riemannian"]["kernel"]
    gap_riem = rel(a, b)
    assert np.all(np.diff(gap_riem) < 0) and gap_riem[-1] < 3e-3
    # ... the flat one does: dmu/dV (input space) vs dmu/d^{2n}u (chart), differing by det(J J^H)
    a, b = sweeps["input", "none"]["kernel"], sweeps["chart", "none"]["kernel"]
    assert rel(a, b)[-1] > 0.1


def test_monte_carlo_quadrature_agrees_with_local_quadrature(torus_eval):
    """The fixed-sample flow (cymetric weights w/P, what a KernelModel sums) and the chart
    quadrature (importance sampling with density n!|Omega|^2) give the same kernel velocity at
    points well inside the chart, for a width the sample resolves: an independent check of the
    local quadrature. (Near the chart's boundary the sample, restricted to one chart as in the
    paper, truncates the Gaussian, and its error does not go to 0.)"""
    _, kappa = torus_eval
    data = make_dataset(TORUS, 200_000, seed=31, val_split=0.0)
    z = data.points_train
    c = TORUS.charts(z)
    inside = np.flatnonzero((c[:, 0] == CHART[0]) & (c[:, 1] == CHART[1]))
    zi = z[inside]
    margin = np.minimum(np.abs(zi[:, 1]) - np.abs(zi[:, 2]), 1 - np.abs(zi[:, 1]))
    deep = np.flatnonzero(margin > 0.09)[:4]
    rest = np.setdiff1d(np.arange(len(inside)), deep)
    xe = data.X_train[inside[deep]]
    xq, wq = data.X_train[inside[rest]], data.weights_train[inside[rest]] / len(z)
    sig = (0.1, 0.05)
    mc = sigma_sweep(TORUS, xe, sig, chart=CHART, kappa=kappa, quadrature="mc", x_quad=xq, w_quad=wq, loss="squared")
    loc = sigma_sweep(TORUS, xe, sig, chart=CHART, kappa=kappa, loss="squared", n_nodes=1024, seed=4)
    gap = rel(mc["kernel"], loc["kernel"])
    assert gap[1] < 0.1, gap
    # over this bias-dominated range the fixed-sample error shrinks with sigma as well
    assert mc["rel_error"][1] < 0.6 * mc["rel_error"][0], mc["rel_error"]


def test_kernel_flow_velocity_is_the_discrete_flow(torus_eval):
    x, kappa = torus_eval
    xs = to_real(TORUS.sample_points(12, seed=40, chart=CHART))
    F = loss_gradient(TORUS, xs, CHART, loss="squared", kappa=kappa)
    c = np.linspace(0.5, 1.5, len(xs))
    k = ManifoldGaussianKernel(0.3, TORUS, CHART, rescaling="riemannian")
    np.testing.assert_allclose(kernel_flow_velocity(k, x, xs, F, c), -(k(x, xs) * c) @ F, rtol=1e-12)
    np.testing.assert_allclose(local_flow_velocity(F, 2.0), -2.0 * F)


def test_loss_gradient_matches_closed_form(torus_eval):
    """d/dg of (1 - det g/(kappa|Omega|^2))^2 at the FS metric; on the torus g is 1x1 (one component)."""
    _, kappa = torus_eval
    z = TORUS.sample_points(6, seed=41, chart=CHART)
    geo = TORUS.geometry(z, j_elim=np.full(6, CHART[1]))
    g = np.real(geo["fs_metric_pb"][:, 0, 0])
    eta = g / (kappa * geo["omega_sq"])
    F = loss_gradient(TORUS, to_real(z), CHART, loss="squared", kappa=kappa)
    np.testing.assert_allclose(F[:, 0], -2 * (1 - eta) / (kappa * geo["omega_sq"]), rtol=1e-10)
    Fs = loss_gradient(TORUS, to_real(z), CHART, loss="sigma", kappa=kappa)
    np.testing.assert_allclose(Fs[:, 0], -np.sign(1 - eta) / (kappa * geo["omega_sq"]), rtol=1e-10)


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors(torus_eval):
    x, kappa = torus_eval
    with pytest.raises(ValueError, match="chart"):
        ManifoldGaussianKernel(0.1, TORUS, (0, 0))
    with pytest.raises(ValueError, match="space"):
        ManifoldGaussianKernel(0.1, TORUS, CHART, space="ambient")
    with pytest.raises(ValueError, match="rescaling"):
        ManifoldGaussianKernel(0.1, TORUS, CHART, rescaling="flat")
    with pytest.raises(ValueError, match="sigma"):
        ManifoldGaussianKernel(-1.0, TORUS, CHART)
    with pytest.raises(TypeError, match="manifold"):
        ManifoldGaussianKernel(0.1, "cubic", CHART)
    with pytest.raises(ValueError, match="sigmas"):
        sigma_sweep(TORUS, x, [0.1, 0.0], chart=CHART, kappa=kappa)
    with pytest.raises(ValueError, match="quadrature"):
        sigma_sweep(TORUS, x, [0.1], chart=CHART, kappa=kappa, quadrature="grid")
    with pytest.raises(ValueError, match="x_quad"):
        sigma_sweep(TORUS, x, [0.1], chart=CHART, kappa=kappa, quadrature="mc")
    other = to_real(TORUS.sample_points(3, seed=1, chart=(1, 0)))
    with pytest.raises(ValueError, match=r"chart \(0, 1\)"):
        sigma_sweep(TORUS, other, [0.1], chart=CHART, kappa=kappa)
    with pytest.raises(ValueError, match="patch"):
        measure_density(TORUS, other, CHART)
    with pytest.raises(ValueError, match="z_k = 1"):
        ManifoldGaussianKernel(0.1, TORUS, CHART)(other, x)
    with pytest.raises(ValueError, match="loss"):
        loss_gradient(TORUS, x, CHART, loss="hinge", kappa=kappa)
    with pytest.raises(ValueError, match=r"`u` must .* \(P, 2\)"):
        points_from_chart(TORUS, np.zeros((3, 4)), CHART, to_complex(x[:3]))
    with pytest.raises(ValueError, match="z_start"):
        points_from_chart(TORUS, np.zeros((3, 2)), CHART, to_complex(x[:2]))
    with pytest.raises(ValueError, match="quad_weights"):
        kernel_flow_velocity(ManifoldGaussianKernel(0.1, TORUS, CHART), x, x, np.zeros((5, 1)), np.ones(4))
    with pytest.raises(ValueError, match="omega_bar"):
        local_flow_velocity(np.zeros((5, 1)), np.ones(3))


# ----------------------------------------------------------------------------- experiment
def test_run_localflow_tiny_and_plot():
    from cyntk.experiments.localflow import plot_localflow, run_localflow

    sig = (0.2, 0.1, 0.05)
    factors = (0.5, 5.0)
    r = run_localflow(
        n_points=3000, n_eval=3, sigmas=sig, n_nodes=128, n_flow=8, n_steps=10, dt_factors=factors, log=lambda *a: None
    )
    keys = [
        "squared-local-input-riemannian",
        "squared-local-input-none",
        "squared-local-chart-riemannian",
        "sigma-local-input-riemannian",
        "squared-mc-input-riemannian",
        "flat-vs-riemannian-limit",
    ]
    for k in keys:
        v = np.asarray(r[f"sweep/{k}"])
        assert v.shape == (len(sig),) and np.all(np.isfinite(v)) and np.all(v >= 0), k
    assert np.all(np.diff(r["sweep/squared-local-input-riemannian"]) < 0)
    assert r["omega_bar_plain"].shape == (3,) and np.all(r["omega_bar_plain"] > 0)
    for k in ("dts", "euler", "euler_error", "dopri", "bdf", "dopri_bdf_gap", "n_rhs_dopri", "n_rhs_bdf"):
        assert np.shape(r[f"step/{k}"]) == (len(factors),), k
    np.testing.assert_allclose(r["step/dts"], np.asarray(factors) * r["step/dt_max"])
    for k in ("dopri", "bdf", "dopri_bdf_gap"):
        assert np.all(np.isfinite(r[f"step/{k}"])), k
    assert np.isfinite(r["step/euler"][0]) and r["step/euler_error"][0] < 1e-2
    assert r["step/dt_max"] == pytest.approx(2 / r["step/lambda_max"])
    fig = plot_localflow(r)
    assert len(fig.axes) == 3
    import matplotlib.pyplot as plt

    plt.close(fig)
    fig = plot_localflow({k: v for k, v in r.items() if not k.startswith("step/")})
    assert len(fig.axes) == 1
    plt.close(fig)
