"""Non-local -> local flows (paper 2.24-2.37) and continuous-time kernel flows (2.12 vs 3.5).

Part 1, **sigma -> 0**: at fixed evaluation points in one chart of the torus
(or any manifold), the velocity of the frozen-kernel flow (2.12) driven by the
normalised Gaussian kernel of the network input space (the cosine network's
infinite-width NTK, normalised on the manifold, :mod:`cyntk.flows.local`) is
compared with the local flow ``-Omega_bar dl/dg`` (2.14), for a decreasing
sequence of widths sigma:

* ``local`` quadrature (the continuum integral), Riemannian rescaling
  ``h = (dV/dmu_CY)^(1/2)`` (Omega_bar = 1) and no rescaling
  (Omega_bar = dmu_CY/dV), Gaussian in input space and in chart coordinates
  (paper 2.27-2.28 with ``h = g~^(-1/4)``);
* ``mc`` quadrature on a fixed sample (what a KernelModel computes):
  bias ~ sigma^2 against sampling error ~ (P sigma^m)^(-1/2);
* two losses: the smooth ``(1 - eta)^2`` and the paper's sigma loss
  ``|1 - eta|``, whose gradient jumps where eta = 1 (slower, non-uniform
  convergence there).

Part 2, **step-size sensitivity** of the Gaussian-kernel flow (paper: flows that
explode for unlucky step sizes): a KernelModel with the paper's Gaussian-FS
kernel on quintic points; explicit Euler (eq. 3.5, 50 steps) for step sizes
around the stability limit ``dt_max = 2/lambda_max(Hess K)`` against the
adaptive Dormand-Prince and implicit BDF solutions of (2.12) at the same flow
times (:mod:`cyntk.flows.ode`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cyntk._validation import positive_float, positive_int
from cyntk.geometry import get_manifold, make_dataset, to_real

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cyntk.experiments.runner import ResultStore

__all__ = ["run_localflow", "plot_localflow"]


def _positive_sequence(values, name):
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a sequence of positive numbers; received {values!r}.") from None
    if len(arr) == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"`{name}` must be a non-empty sequence of finite numbers > 0; received {arr.tolist()}.")
    return tuple(arr.tolist())


def _sweep(M, ds, x_eval, sigmas, chart, nodes, store, log):
    from cyntk.flows.local import sigma_sweep

    out = {}
    configs = [
        ("squared", "local", "input", "riemannian"),
        ("squared", "local", "input", "none"),
        ("squared", "local", "chart", "riemannian"),
        ("sigma", "local", "input", "riemannian"),
        ("squared", "mc", "input", "riemannian"),
    ]
    for loss, quad, space, resc in configs:
        key = f"{loss}-{quad}-{space}-{resc}"
        t0 = time.perf_counter()
        kw = {}
        if quad == "mc":
            kw = dict(x_quad=ds["x"], w_quad=ds["c"])
        r = sigma_sweep(
            M,
            x_eval,
            sigmas,
            chart=chart,
            kappa=ds["kappa"],
            quadrature=quad,
            space=space,
            rescaling=resc,
            loss=loss,
            n_nodes=nodes,
            store=store,
            key_prefix=key + "-",
            **kw,
        )
        out[f"sweep/{key}"] = r["rel_error"]
        if resc == "none" and quad == "local" and space == "input" and loss == "squared":
            out["omega_bar_plain"] = r["omega_bar"]
            # the flat kernel against the Riemannian limit -dl/dg: stays O(1) (a different limit)
            riem = -r["dl_dg"]
            out["sweep/flat-vs-riemannian-limit"] = np.sqrt(
                np.sum((r["kernel"] - riem[None]) ** 2, axis=(1, 2)) / np.sum(riem**2)
            )
        log(
            f"  sigma sweep {key:38s} rel. error {r['rel_error'][0]:.3g} -> {r['rel_error'][-1]:.3g} "
            f"[{time.perf_counter() - t0:.1f} s]"
        )
    return out


def _stepsize(manifold, n_flow, chart, n_steps, factors, kernel_sigma, seed, log):
    import tensorflow as tf

    from cyntk.flows.kernel_model import KernelModel
    from cyntk.flows.ode import integrate_flow, stability_limit
    from cyntk.flows.product import min_eigenvalues
    from cyntk.kernels import GaussianFSKernel
    from cyntk.models import losses as L

    M = get_manifold(manifold)
    x = to_real(M.sample_points(n_flow, seed=seed, chart=chart))
    y = KernelModel.targets(M, x)
    kappa = M.kappa(M.sample_points(max(5000, n_flow), seed=seed + 1))  # over all of X, not one chart

    def squared(g, yy):
        eta = tf.math.real(L.determinant(g)) / (kappa * yy[:, 1])
        return (1.0 - eta) ** 2

    def make():
        return KernelModel(GaussianFSKernel(kernel_sigma), x, M, loss=squared, kappa=kappa, on_non_positive="stop")

    st = stability_limit(make(), y)
    dt_max = st["dt_max"]
    log(f"  step size: lambda_max {st['lambda_max']:.4g}, dt_max = 2/lambda_max = {dt_max:.3g}")
    dts = np.asarray(factors, dtype=np.float64) * dt_max
    out = {
        "dts": dts,
        "dt_max": dt_max,
        "lambda_max": st["lambda_max"],
        "lambda_min": st["lambda_min"],
        "lambda_min_positive": st["lambda_min_positive"],
    }
    # one adaptive solve of each kind through all the flow times t = n_steps dt (the same trajectory)
    uniq, inverse = np.unique(n_steps * dts, return_inverse=True)
    t_sorted = np.concatenate([[0.0], uniq])
    rd = integrate_flow(make(), y, t_sorted, method="dopri", update_model=False, max_num_steps=100_000)
    rb = integrate_flow(make(), y, t_sorted, method="bdf", update_model=False, max_num_steps=100_000)
    at = inverse.reshape(-1) + 1
    log(f"    dopri: {rd['n_rhs']} evaluations, bdf: {rb['n_rhs']} evaluations up to t = {t_sorted[-1]:.3g}")
    euler, euler_err, dopri, bdf, ode_gap = [], [], [], [], []
    for dt, i in zip(dts, at):
        T = n_steps * dt
        g_ref = rd["g_train"][i]
        scale = np.max(np.abs(g_ref))
        try:
            e = integrate_flow(make(), y, [0.0, T], method="euler", dt=dt, update_model=False)
            g = e["g_train"][-1]
            ok = np.all(np.isfinite(g)) and min_eigenvalues(g, M.nfold).min() > 0
            euler.append(e["loss"][-1] if ok else np.inf)
            euler_err.append(np.max(np.abs(g - g_ref)) / scale if ok else np.inf)
        except FloatingPointError:
            euler.append(np.inf)
            euler_err.append(np.inf)
        dopri.append(rd["loss"][i])
        bdf.append(rb["loss"][i])
        ode_gap.append(np.max(np.abs(rb["g_train"][i] - g_ref)) / scale)
        log(
            f"    dt = {dt:.3g} ({dt / dt_max:.2f} dt_max), t = {T:.3g}: loss euler {euler[-1]:.4g} "
            f"(max rel. deviation from the ODE solution {euler_err[-1]:.2g}), dopri {dopri[-1]:.4g}, "
            f"bdf {bdf[-1]:.4g}"
        )
    nrhs_d, nrhs_b = [rd["n_rhs"]] * len(dts), [rb["n_rhs"]] * len(dts)
    out.update(
        euler=np.asarray(euler, dtype=np.float64),
        euler_error=np.asarray(euler_err, dtype=np.float64),
        dopri=np.asarray(dopri),
        bdf=np.asarray(bdf),
        dopri_bdf_gap=np.asarray(ode_gap),
        n_rhs_dopri=np.asarray(nrhs_d),
        n_rhs_bdf=np.asarray(nrhs_b),
        loss0=float(rd["loss"][0]),
    )
    return out


def run_localflow(
    *,
    manifold: str = "cubic",
    chart: Sequence[int] = (0, 1),
    n_points: int = 30_000,
    n_eval: int = 8,
    sigmas: Sequence[float] = (0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625),
    n_nodes: int = 2048,
    stepsize: bool = True,
    flow_manifold: str = "quintic",
    n_flow: int = 100,
    n_steps: int = 50,
    dt_factors: Sequence[float] = (0.25, 0.5, 0.9, 1.1, 1.5, 3.0),
    kernel_sigma: float = 30.0,
    seed: int = 0,
    store: ResultStore | None = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Run the sigma -> 0 sweep and the step-size experiment.

    Args:
        manifold: manifold of the sigma sweep (default the torus).
        chart: (k, j) chart of all points.
        n_points: points sampled in the chart (MC quadrature and evaluation points).
        n_eval: evaluation points.
        sigmas: widths, decreasing.
        n_nodes: nodes of the local quadrature.
        stepsize: run part 2.
        flow_manifold, n_flow, n_steps: the kernel flow of part 2 (points in ``chart``).
        dt_factors: Euler steps in units of the stability limit dt_max.
        kernel_sigma: width of the Gaussian-FS kernel (the paper's sigma = 30).
        seed: sampling seed.
        store: optional ResultStore (per sweep configuration and sigma).
        log: progress printer.

    Returns:
        dict with ``sigmas`` (S,); ``sweep/<loss>-<quadrature>-<space>-<rescaling>``
        (S,) relative L2 errors of the kernel velocity against its local limit
        (five configurations, see the module docstring);
        ``sweep/flat-vs-riemannian-limit`` (S,) the error of the unrescaled kernel
        velocity against the Riemannian limit ``-dl/dg`` (it does not go to 0);
        ``omega_bar_plain`` (n_eval,) the limit's ``Omega_bar = dmu_CY/dV`` without
        rescaling; ``manifold``, ``chart``, ``n_points``, ``n_chart_points``; and,
        with ``stepsize``, for the D = len(dt_factors) Euler steps: ``step/dts`` (D,),
        ``step/euler``, ``step/dopri``, ``step/bdf`` (D,) losses at t = n_steps dt
        (inf: Euler diverged or left the positive cone), ``step/euler_error`` (D,)
        max relative deviation of Euler's metric from the Dormand-Prince solution,
        ``step/dopri_bdf_gap`` (D,), ``step/n_rhs_dopri``, ``step/n_rhs_bdf`` (D,)
        (evaluations of the one adaptive solve through all the flow times),
        ``step/loss0``, ``step/dt_max``, ``step/lambda_max``, ``step/lambda_min_positive``,
        ``step/n_steps``, ``step/kernel_sigma``.
    """
    n_points = positive_int(n_points, "n_points")
    n_eval = positive_int(n_eval, "n_eval")
    n_nodes = positive_int(n_nodes, "n_nodes")
    sigmas = _positive_sequence(sigmas, "sigmas")
    if stepsize:
        n_flow = positive_int(n_flow, "n_flow")
        n_steps = positive_int(n_steps, "n_steps")
        dt_factors = _positive_sequence(dt_factors, "dt_factors")
        kernel_sigma = positive_float(kernel_sigma, "kernel_sigma")
    M = get_manifold(manifold)
    data = make_dataset(M, int(n_points), seed=seed, val_split=0.0)
    z = data.points_train
    charts = M.charts(z)
    inside = (charts[:, 0] == chart[0]) & (charts[:, 1] == chart[1])
    if inside.sum() < int(n_eval) + 10:
        raise ValueError(f"only {int(inside.sum())} of {len(z)} points lie in chart {tuple(chart)}; raise `n_points`.")
    idx = np.flatnonzero(inside)
    # MC measure of mu_CY restricted to the chart: c_p = w_p / P_total
    ds = {
        "x": data.X_train[idx[int(n_eval) :]],
        "c": data.weights_train[idx[int(n_eval) :]] / len(z),
        "kappa": data.kappa,
    }
    x_eval = data.X_train[idx[: int(n_eval)]]
    log(f"[localflow] {M.name}: {len(idx)} of {len(z)} points in chart {tuple(chart)}, {len(x_eval)} evaluation points")
    out = {
        "sigmas": np.asarray(sigmas, dtype=np.float64),
        "manifold": M.name,
        "chart": list(chart),
        "n_points": len(z),
        "n_chart_points": len(idx) - int(n_eval),
    }
    out.update(_sweep(M, ds, x_eval, sigmas, chart, n_nodes, store, log))
    if stepsize:
        st = _stepsize(flow_manifold, n_flow, chart, n_steps, dt_factors, kernel_sigma, seed, log)
        out.update({f"step/{k}": v for k, v in st.items()})
        out["step/n_steps"] = n_steps
        out["step/kernel_sigma"] = kernel_sigma
    return out


def plot_localflow(result: Mapping[str, Any]) -> Figure:
    """Error vs sigma (left); with part 2, final loss (middle) and Euler's deviation (right) vs step.

    Args:
        result: the dict of :func:`run_localflow` (or as loaded from disk).

    Returns:
        a matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    has_step = "step/dts" in result
    ncol = 3 if has_step else 1
    fig, axes = plt.subplots(1, ncol, figsize=(6.2 * ncol, 4.6), squeeze=False)
    ax = axes[0, 0]
    s = np.asarray(result["sigmas"], dtype=np.float64)
    labels = {
        "squared-local-input-riemannian": "(1-eta)^2, h = (dV/dmu)^1/2 -> Omega_bar = 1",
        "squared-local-input-none": "(1-eta)^2, no rescaling -> Omega_bar = dmu/dV",
        "squared-local-chart-riemannian": "(1-eta)^2, chart Gaussian, h = g~^-1/4 (2.28)",
        "sigma-local-input-riemannian": "|1-eta| (paper's sigma loss), h",
        "squared-mc-input-riemannian": "(1-eta)^2, h, fixed one-chart MC sample (KernelModel)",
    }
    for key, lab in labels.items():
        v = result.get(f"sweep/{key}")
        if v is not None:
            ax.loglog(s, v, "o-", ms=4, label=lab)
    v = result.get("sweep/flat-vs-riemannian-limit")
    if v is not None:
        ax.loglog(s, v, "x--", color="gray", label="no rescaling, measured against Omega_bar = 1")
    ref = result.get("sweep/squared-local-input-riemannian")
    if ref is not None:
        ax.loglog(s, (s / s[-1]) ** 2 * ref[-1], "k:", lw=0.8, label="~ sigma^2")
    ax.set_xticks(s)
    ax.set_xticklabels([f"{v:.3g}" for v in s], rotation=45, fontsize=7)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("Gaussian width sigma")
    ax.set_ylabel("relative L2 error vs local flow (2.14)")
    ax.set_title(f"{result.get('manifold', '')}: kernel flow -> local flow as sigma -> 0", fontsize=10)
    ax.legend(fontsize=6.5)
    if has_step:
        f = np.asarray(result["step/dts"], dtype=np.float64) / float(result["step/dt_max"])
        nst = int(result["step/n_steps"])
        e = np.asarray(result["step/euler"], dtype=np.float64)
        fin = np.isfinite(e)
        ax = axes[0, 1]
        ax.loglog(f[fin], e[fin], "o-", label=f"Euler (eq. 3.5), {nst} steps")
        d = np.asarray(result["step/dopri"], dtype=np.float64)
        if (~fin).any():
            top = np.nanmax(np.concatenate([e[fin], d, [float(result.get("step/loss0", np.nan))]])) * 1.5
            ax.loglog(f[~fin], np.full((~fin).sum(), top), "rx", ms=9, label="Euler: diverged / non-positive")
        ax.loglog(f, d, "s--", label="Dormand-Prince (adaptive)")
        ax.loglog(f, result["step/bdf"], "^:", label="BDF (implicit)")
        if "step/loss0" in result:
            ax.axhline(float(result["step/loss0"]), color="k", lw=0.6, ls=":", label="loss at t = 0")
        ax.axvline(1.0, color="gray", lw=0.8)
        ax.set_xlabel("step dt / dt_max   (dt_max = 2 / lambda_max(Hess K))")
        ax.set_ylabel(f"loss at t = {nst} dt")
        ax.set_title(
            f"Gaussian-FS kernel (sigma = {float(result['step/kernel_sigma']):g}): loss at equal flow time", fontsize=10
        )
        ax.legend(fontsize=7)
        ax = axes[0, 2]
        err = np.asarray(result.get("step/euler_error", np.full(len(f), np.nan)), dtype=np.float64)
        ok = np.isfinite(err)
        ax.loglog(f[ok], err[ok], "o-", label="Euler vs Dormand-Prince")
        if (~ok).any():
            top = (np.nanmax(err[ok]) if ok.any() else 1.0) * 3
            ax.loglog(f[~ok], np.full((~ok).sum(), top), "rx", ms=9, label="Euler diverged")
        gap = result.get("step/dopri_bdf_gap")
        if gap is not None:
            ax.loglog(f, np.maximum(np.asarray(gap, dtype=np.float64), 1e-16), "^:", label="BDF vs Dormand-Prince")
        ax.axvline(1.0, color="gray", lw=0.8)
        ax.set_xlabel("step dt / dt_max")
        ax.set_ylabel("max |g - g_ODE| / max |g_ODE| at the train points")
        ax.set_title("Deviation from the continuous-time flow (2.12)", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
