"""Appendix-B Kähler-potential flows and Kähler-Ricci flow as network flows, on the torus and the quintic.

For each manifold (the Fermat cubic torus, whose Ricci-flat metric is known,
``g = kappa |Omega|^2`` in the 1-d local coordinate, and the Fermat quintic):

1. **Local (Galerkin) phi-flows** of :mod:`cyntk.flows.kahler`: the
   potential ``phi = sum_k c_k f_k`` in the degree-k basis of
   :class:`~cyntk.models.layers.HermitianMonomials` flows by
   ``d phi/dt = V`` projected on the basis (the frozen-kernel flow with the
   basis' projection kernel; L2(mu_g)-projected for Calabi), integrated in time
   with Dormand-Prince (or BDF,
   ``method=``; the 2nd-order flows) or RK4 (the 4th-order Calabi flow, and the
   ill-posed B.21-as-printed flow, run until it blows up). Flows:
   Kähler-Ricci (B.4), ultra-local (B.21, sign corrected), B.21 as printed,
   two-derivative (B.19-B.20), Monge-Ampère, Calabi (B.8).
   Tracked: cymetric's sigma measure, ``Vol_K`` (Kähler class) and
   ``mean|eta - 1|`` on validation points, the flows' Lyapunov functionals on the
   collocation points, and (torus) ``max |eta - 1|``.
2. **Network flows** of :mod:`cyntk.models`: the multiplicative model
   (cymetric's ``g = G + G ⊙ H(nn)``, 3x64 gelu) trained with Adam on its
   standard losses (sigma, Kähler, transition, volk), and Kähler-Ricci flow
   realised by gradient descent on the velocity-matching losses (metric
   components for the multiplicative model, the potential for a PhiModel with a
   gelu network), flow time ``t = lr * steps``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cyntk.geometry import get_manifold, make_dataset

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cyntk.experiments.runner import ResultStore

__all__ = ["run_kahlerflows", "plot_kahlerflows", "DEFAULT_FLOWS"]

#: The flows run by default (names of cyntk.flows.kahler.FLOWS).
DEFAULT_FLOWS = ("kahler_ricci", "ultralocal", "ultralocal_paper", "two_derivative", "monge_ampere", "calabi")

_LYAPUNOV_CHEAP = ("ultralocal", "entropy", "monge_ampere")


def _measures(pf, x, w, om, c):
    import tensorflow as tf

    from cyntk.flows.kahler import kahler_measures

    geo = pf.geometry
    return kahler_measures(geo, tf.constant(x, geo.dtype), w, om, params=tf.constant(c, geo.dtype))


def _ill_posed_stop(pf, c0, factor=10.0):
    """Stop an ill-posed flow once the metric degenerates (eta <= 0) or ``max |eta - 1|`` has grown
    ``factor`` times beyond its initial value (it only blows up from there)."""
    limit = factor * (1.0 + float(np.max(np.abs(pf.eta(c0) - 1.0))))

    def stop(t, c):
        eta = pf.eta(c)
        return bool(not np.all(np.isfinite(eta)) or np.min(eta) <= 0 or np.max(np.abs(eta - 1.0)) > limit)

    return stop


def _fixed_step_run(runner, flow, times, dt):
    """RK4 with step dt, checked for blow-up after every step; states at the requested times reached
    (and the last one before a blow-up). Returns ``(times, states, status)``."""
    times = np.asarray(times, dtype=np.float64)
    want = np.rint(times / dt).astype(np.int64)
    grid = dt * np.arange(int(want[-1]) + 1)
    try:
        res = runner.integrate(flow, grid, method="rk4", dt=dt, stop=_ill_posed_stop(runner, runner.coefficients))
        states, status = res["states"], ("blew up" if res["stopped"] else "ok")
    except FloatingPointError as err:
        states, status = err.partial["states"], "blew up"
    n = len(states)
    idx = [int(i) for i in want if i < n]
    if n and status != "ok" and (not idx or idx[-1] != n - 1):
        idx.append(n - 1)
    return grid[idx], np.asarray(states)[idx], status


def _run_phi_flows(
    M,
    ds,
    degree,
    flows,
    times,
    calabi_times,
    calabi_points,
    calabi_dt,
    log,
    store,
    key,
    method="dopri",
    ill_posed_dt=1e-3,
    calabi_degree=2,
):
    from cyntk.flows.kahler import FLOWS
    from cyntk.flows.phi_flow import PhiFlow
    from cyntk.models.layers import linear_phi_model

    out = {}
    model = linear_phi_model(ds, degree)
    pf = PhiFlow(model, ds.X_train, ds.weights_train)
    out["rank"] = pf.rank
    out["n_basis"] = pf.n_basis
    xv, wv, omv = ds.X_val, ds.weights_val, ds.omega_sq_val
    for flow in flows:
        k = f"{key}/{flow}"
        got = store.get(k) if store is not None else None
        if got is not None:
            out.update({f"{flow}/{kk}": v for kk, v in got.items()})
            continue
        t0 = time.perf_counter()
        spec = FLOWS[flow]
        if spec.order > 2:
            sub = min(calabi_points, ds.n_train)
            # L2(mu_g) projection: the projected Calabi flow stays a gradient flow of the entropy far from eta = 1
            pfc = PhiFlow(
                linear_phi_model(ds, min(degree, calabi_degree)),
                ds.X_train[:sub],
                ds.weights_train[:sub],
                projection="mu_g",
            )
            tt, states, status = _fixed_step_run(pfc, flow, calabi_times, calabi_dt)
            runner, lyap = pfc, ("entropy", "calabi_energy")
        elif not spec.well_posed:
            # backward-parabolic: adaptive solvers only shrink their steps; fixed RK4 steps until it blows up
            tt = np.asarray(times, dtype=np.float64)
            dt = min(ill_posed_dt, float(np.min(np.diff(tt))))
            tt, states, status = _fixed_step_run(pf, flow, tt, dt)
            runner = pf
            lyap = ("ultralocal", "monge_ampere")
        else:
            tt = np.asarray(times, dtype=np.float64)
            try:
                res = pf.integrate(flow, tt, method=method, rtol=1e-6, atol=1e-9, max_num_steps=5000)
                states, status = res["states"], "ok"
            except (FloatingPointError, RuntimeError) as err:
                states = getattr(err, "partial", {"states": np.zeros((0, pf.n_basis))})["states"]
                status = "failed"
            runner = pf
            lyap = tuple(dict.fromkeys(spec.lyapunov))
        rec = {"times": tt[: len(states)], "status": status}
        cols = {"sigma": [], "volk": [], "eta_l1": [], "eta_max_dev": []}
        fun = {nm: [] for nm in lyap}
        for c in states:
            if not np.all(np.isfinite(c)):
                break
            m = _measures(runner, xv, wv, omv, c)
            if not np.isfinite(m["sigma"]):
                break
            for kk in cols:
                cols[kk].append(m[kk])
            vals = runner.functionals(c, lyap) if lyap else {}
            for nm in lyap:
                fun[nm].append(vals[nm])
        n_ok = len(cols["sigma"])
        if n_ok < len(states) and status == "ok":
            rec["status"] = "degenerate"
        rec["times"] = rec["times"][:n_ok]
        for kk, v in cols.items():
            rec[kk] = np.asarray(v)
        for nm, v in fun.items():
            rec[f"F_{nm}"] = np.asarray(v)
        rec["seconds"] = time.perf_counter() - t0
        if store is not None:
            store.put(k, {kk: (np.asarray(v) if not isinstance(v, str) else np.asarray(v)) for kk, v in rec.items()})
        log(
            f"  {key} {flow:17s} sigma {cols['sigma'][0] if n_ok else np.nan:.4g} -> "
            f"{cols['sigma'][-1] if n_ok else np.nan:.4g} at t = {rec['times'][-1] if n_ok else 0:g} "
            f"[{rec['status']}, {rec['seconds']:.1f} s]"
        )
        out.update({f"{flow}/{kk}": v for kk, v in rec.items()})
    return out


def _gelu_net(N, width, depth, out, seed, dtype, projective=False):
    import keras

    from cyntk.models import ProjectiveFeatures

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((2 * N,), dtype=dtype)]
    if projective:
        layers.append(ProjectiveFeatures(dtype=dtype))
    layers += [keras.layers.Dense(width, activation="gelu", dtype=dtype) for _ in range(depth)]
    layers.append(
        keras.layers.Dense(
            out, use_bias=False, dtype=dtype, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3, seed=seed)
        )
    )
    return keras.Sequential(layers)


def _run_networks(M, ds, net_cfg, log, store, key):
    """Multiplicative network (Adam, cymetric losses) and KRF as gradient descent (SGD)."""
    import keras

    from cyntk.flows.kahler import kahler_measures
    from cyntk.flows.network import network_flow
    from cyntk.models import MultiplicativeModel, PhiModel
    from cyntk.models.kahler_potential import KahlerPotentialGeometry

    out = {}
    n, N = M.nfold, M.ncoords
    dtype = "float64"
    xv, yv = ds.X_val, ds.y_val
    width, depth, seed = net_cfg["width"], net_cfg["depth"], net_cfg["seed"]
    # (a) cymetric-style multiplicative network, Adam on sigma + kaehler + transition
    k = f"{key}/mult_adam"
    got = store.get(k) if store is not None else None
    if got is None:
        t0 = time.perf_counter()
        # cymetric's batch-64 loss set (volk off); projective input features; cosine-decayed Adam
        model = MultiplicativeModel(
            _gelu_net(N, width, depth, n * n, seed, dtype, projective=True), ds, dtype=dtype, volk=0.0
        )
        total = max(1, net_cfg["epochs"] * int(np.ceil(ds.n_train / net_cfg["batch_size"])))
        model.compile(
            optimizer=keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(net_cfg["adam_lr"], total, alpha=0.01)
            )
        )
        sig, vol = [], []
        m0 = model.measures(xv, yv, which=("sigma", "volk"))
        sig.append(m0["sigma"])
        vol.append(m0["volk"])
        for _ in range(net_cfg["epochs"]):
            model.fit(ds.X_train, ds.y_train, batch_size=net_cfg["batch_size"], epochs=1, verbose=0, shuffle=True)
            m1 = model.measures(xv, yv, which=("sigma", "volk"))
            sig.append(m1["sigma"])
            vol.append(m1["volk"])
        got = {
            "epochs": np.arange(len(sig)),
            "sigma": np.asarray(sig),
            "volk": np.asarray(vol),
            "seconds": time.perf_counter() - t0,
        }
        if store is not None:
            store.put(k, got)
        log(f"  {key} multiplicative (Adam, {net_cfg['epochs']} epochs): sigma {sig[0]:.4g} -> {sig[-1]:.4g}")
    out.update({f"mult_adam/{kk}": v for kk, v in got.items()})
    # (b) KRF velocity-matching loss, gradient descent: multiplicative model and phi network
    for name, builder, target, lr in (
        (
            "mult_krf",
            lambda: MultiplicativeModel(_gelu_net(N, width, depth, n * n, seed, dtype), ds, dtype=dtype),
            "kahler_ricci_metric",
            net_cfg["flow_lr_mult"],
        ),
        (
            "phi_krf",
            lambda: PhiModel(_gelu_net(N, width, depth, 1, seed, dtype, projective=True), ds, dtype=dtype),
            "kahler_ricci",
            net_cfg["flow_lr_phi"],
        ),
    ):
        k = f"{key}/{name}"
        got = store.get(k) if store is not None else None
        if got is None:
            t0 = time.perf_counter()
            model = builder()
            sub = min(net_cfg["flow_points"], ds.n_train)
            xs, ws = ds.X_train[:sub], ds.weights_train[:sub]
            rec = {"t": [], "sigma": [], "volk": []}
            geo = KahlerPotentialGeometry(model) if name == "phi_krf" else None
            import tensorflow as tf

            def cb(step, t):
                if geo is not None:
                    mm = kahler_measures(geo, tf.constant(xv), yv[:, 0], yv[:, 1])
                else:
                    mm = model.measures(xv, yv, which=("sigma", "volk"))
                rec["t"].append(t)
                rec["sigma"].append(mm["sigma"])
                rec["volk"].append(mm["volk"])

            status = "ok"
            try:
                # omega_bar = Vol_CY: the loss integrates against the probability measure mu_CY / Vol_CY,
                # so the learning rates mean the same on manifolds with very different Vol_CY
                network_flow(
                    model,
                    xs,
                    ws,
                    target,
                    steps=net_cfg["flow_steps"],
                    learning_rate=lr,
                    omega_bar=float(np.mean(ws)),
                    every=max(1, net_cfg["flow_steps"] // 10),
                    callback=cb,
                )
            except FloatingPointError:
                status = "diverged"
            got = {kk: np.asarray(v) for kk, v in rec.items()}
            got["status"] = np.asarray(status)
            got["seconds"] = time.perf_counter() - t0
            if store is not None:
                store.put(k, got)
            log(
                f"  {key} {name} (SGD lr {lr:g}, {net_cfg['flow_steps']} steps): sigma "
                f"{rec['sigma'][0]:.4g} -> {rec['sigma'][-1]:.4g} [{status}]"
            )
        out.update({f"{name}/{kk}": v for kk, v in got.items()})
    return out


def run_kahlerflows(
    *,
    manifolds: Sequence[str] = ("cubic", "quintic"),
    n_points: Mapping[str, int] | None = None,
    degrees: Mapping[str, int] | None = None,
    flows: Sequence[str] = DEFAULT_FLOWS,
    times: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    calabi_times: Sequence[float] | dict[str, Sequence[float]] | None = None,
    calabi_points: int = 400,
    calabi_dt: float | dict[str, float] = 2e-4,
    calabi_degrees: Mapping[str, int] | None = None,
    networks: bool = True,
    net_cfg: Mapping[str, Any] | None = None,
    seed: int = 2021,
    method: str = "dopri",
    store: ResultStore | None = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Run the appendix-B flows and the network flows on each manifold.

    Args:
        manifolds: names (``get_manifold``).
        n_points: dict manifold -> number of points (train + 10% validation).
        degrees: dict manifold -> basis degree k of the phi flows.
        flows: names of :data:`cyntk.flows.kahler.FLOWS`.
        times: output flow times of the 2nd-order flows.
        calabi_times: output times of the Calabi flow (4th order, faster and
            stiffer; default ``(0, 1, 2, 3, 4, 5) * 20 calabi_dt``), or a dict
            manifold -> times.
        calabi_points, calabi_dt: collocation points and RK4 step of the Calabi
            flow (``calabi_dt`` a float or a dict manifold -> step; it must be
            below the explicit stability limit, ~1e-4 on the quintic from FS).
        calabi_degrees: dict manifold -> basis degree of the Calabi flow (at most
            the manifold's degree; default 2 on the torus, 1 on the quintic: its
            right-hand side is 4th-order autodiff through the basis).
        networks: also run the network flows.
        net_cfg: dict with width, depth, epochs, batch_size, adam_lr (the
            multiplicative network: Adam with cosine decay from adam_lr, volk off,
            projective input features), flow_points, flow_steps,
            flow_lr_phi, flow_lr_mult (gradient-descent Kähler-Ricci flows,
            floats or dicts manifold -> rate, for the losses normalised by
            omega_bar = Vol_CY; the finite networks' NTK flows are stiff: larger
            rates blow up; a manifold missing from a dict gets its smallest
            rate) or one flow_lr for both, seed.
        seed: dataset seed.
        method: ODE method of the well-posed 2nd-order flows (``"dopri"``,
            ``"bdf"``, ...; see :func:`cyntk.flows.solvers.integrate_ode`).
            The ill-posed ``"ultralocal_paper"`` runs with fixed RK4 steps
            until it blows up (eta <= 0, or ``max |eta - 1|`` 10 times beyond
            its initial value + 1).
        store: optional ResultStore (per manifold and flow).
        log: progress printer.

    Returns:
        flat dict: ``"flows"``, ``"manifolds"`` (lists), ``"times"`` (T,), and per
        manifold m and phi-flow f the arrays ``"m/f/times"`` (T_f,) (T_f <= T
        when a flow stopped), ``"m/f/sigma"``, ``"m/f/volk"``, ``"m/f/eta_l1"``,
        ``"m/f/eta_max_dev"`` (validation points) and ``"m/f/F_<functional>"``
        (collocation points), all (T_f,), ``"m/f/status"`` and
        ``"m/f/seconds"``; per network run r in ``mult_adam`` (``epochs``,
        ``sigma``, ``volk``: (epochs + 1,)), ``mult_krf``/``phi_krf`` (``t``,
        ``sigma``, ``volk``); and ``"m/kappa"``, ``"m/rank"``, ``"m/n_basis"``,
        ``"m/fs_sigma"``.
    """
    from cyntk.flows.kahler import FLOWS
    from cyntk.flows.solvers import ODE_METHODS

    flows = tuple(flows)
    bad = [f for f in flows if f not in FLOWS]
    if bad or not flows:
        raise ValueError(f"`flows` must be a non-empty list of {sorted(FLOWS)}; received {list(flows)}.")
    if method not in ODE_METHODS or method in ("euler", "rk4"):
        raise ValueError(f"`method` must be an adaptive ODE method ('dopri' or 'bdf'); received {method!r}.")
    tarr = np.asarray(times, dtype=np.float64)
    if tarr.ndim != 1 or len(tarr) < 2 or tarr[0] != 0 or np.any(np.diff(tarr) <= 0):
        raise ValueError(f"`times` must be increasing flow times starting at 0; received {list(times)}.")
    for name in manifolds:
        get_manifold(name)
    n_points = {"cubic": 3000, "quintic": 3000, **(n_points or {})}
    degrees = {"cubic": 3, "quintic": 2, **(degrees or {})}
    cfg = {
        "width": 64,
        "depth": 3,
        "epochs": 10,
        "batch_size": 64,
        "adam_lr": 1e-2,
        "flow_points": 1000,
        "flow_steps": 200,
        "flow_lr_phi": {"cubic": 15.0, "quintic": 0.2},
        "flow_lr_mult": {"cubic": 0.5, "quintic": 0.1},
        "seed": 0,
        **(net_cfg or {}),
    }
    if "flow_lr" in cfg:  # one learning rate for both network flows
        cfg["flow_lr_phi"] = cfg["flow_lr_mult"] = cfg.pop("flow_lr")
    calabi_degrees = {"cubic": 2, "quintic": 1, **(calabi_degrees or {})}
    result = {"flows": list(flows), "times": np.asarray(times, dtype=np.float64)}
    for name in manifolds:
        M = get_manifold(name)
        ds = make_dataset(M, int(n_points.get(name, 3000)), seed=seed)
        log(
            f"[kahlerflows] {M.name}: {ds.n_train} train / {ds.n_val} val points, kappa {ds.kappa:.6g}, "
            f"basis degree {degrees[name]}"
        )
        c_dt = float(calabi_dt[name] if isinstance(calabi_dt, dict) else calabi_dt)
        c_times = calabi_times[name] if isinstance(calabi_times, dict) else calabi_times
        if c_times is None:
            c_times = tuple(np.arange(6) * 20 * c_dt)
        res = _run_phi_flows(
            M,
            ds,
            int(degrees[name]),
            flows,
            times,
            c_times,
            calabi_points,
            c_dt,
            log,
            store,
            name,
            method=method,
            calabi_degree=int(calabi_degrees.get(name, 2)),
        )
        if networks:
            cfg_m = dict(cfg)
            for kk in ("flow_lr_phi", "flow_lr_mult"):
                if isinstance(cfg_m[kk], dict):
                    cfg_m[kk] = float(cfg_m[kk].get(name, min(cfg_m[kk].values())))
            res.update(_run_networks(M, ds, cfg_m, log, store, name))
        result.update({f"{name}/{k}": v for k, v in res.items()})
        result[f"{name}/kappa"] = ds.kappa
        first = next((f for f in flows if f"{f}/sigma" in res and len(res[f"{f}/sigma"])), None)
        result[f"{name}/fs_sigma"] = float(res[f"{first}/sigma"][0]) if first else np.nan
    result["manifolds"] = list(manifolds)
    return result


def summary_table(result: Mapping[str, Any]) -> list[tuple[str, str, float, float, float, float]]:
    """Rows ``(manifold, flow, t, sigma)`` of the final states (for reports)."""
    rows = []
    for man in result["manifolds"]:
        for fl in list(result["flows"]) + ["mult_adam", "mult_krf", "phi_krf"]:
            s = result.get(f"{man}/{fl}/sigma")
            if s is None or len(s) == 0:
                continue
            t = result.get(f"{man}/{fl}/times", result.get(f"{man}/{fl}/t", result.get(f"{man}/{fl}/epochs")))
            rows.append((man, fl, float(np.asarray(t)[len(s) - 1]), float(s[0]), float(np.min(s)), float(s[-1])))
    return rows


def plot_kahlerflows(result: Mapping[str, Any]) -> Figure:
    """Sigma measure vs flow time, Kähler class and Lyapunov functionals, per manifold."""
    import matplotlib.pyplot as plt

    mans = result["manifolds"]
    fig, axes = plt.subplots(len(mans), 3, figsize=(15, 4.2 * len(mans)), squeeze=False)
    for r, man in enumerate(mans):
        ax_s, ax_v, ax_f = axes[r]
        for fl in result["flows"]:
            s = result.get(f"{man}/{fl}/sigma")
            t = result.get(f"{man}/{fl}/times")
            if s is None or len(s) == 0:
                continue
            tt = np.maximum(np.asarray(t)[: len(s)], 1e-4)
            ax_s.plot(tt, s, "o-", ms=3, label=fl)
            ax_v.plot(tt, result[f"{man}/{fl}/volk"], "o-", ms=3, label=fl)
            for key in [k for k in result if k.startswith(f"{man}/{fl}/F_")]:
                v = np.asarray(result[key], dtype=np.float64)
                if len(v) and np.isfinite(v).all():
                    ref = np.max(np.abs(v)) or 1.0
                    ax_f.plot(tt[: len(v)], v / ref, "-", lw=1, label=f"{fl}: {key.split('/F_')[1]}")
        for name, tkey, style in (("mult_krf", "t", "k--"), ("phi_krf", "t", "k:")):
            s = result.get(f"{man}/{name}/sigma")
            if s is not None and len(s):
                tt = np.maximum(np.asarray(result[f"{man}/{name}/{tkey}"]), 1e-4)
                ax_s.plot(tt, s, style, label=f"{name} (network, t = lr steps)")
                ax_v.plot(tt, result[f"{man}/{name}/volk"], style, label=name)
        s = result.get(f"{man}/mult_adam/sigma")
        if s is not None and len(s):
            ax_s.axhline(s[-1], color="gray", lw=0.8, ls="-.", label=f"multiplicative, Adam, {len(s) - 1} epochs")
        ax_s.set_xscale("log")
        ax_s.set_yscale("log")
        ax_s.set_xlabel("flow time t")
        ax_s.set_ylabel("sigma measure (validation)")
        ax_s.set_title(f"{man}: sigma vs flow time")
        ax_s.legend(fontsize=7)
        ax_v.set_xscale("log")
        ax_v.set_xlabel("flow time t")
        ax_v.set_ylabel("Vol_K = mean(w det g/|Omega|^2)")
        ax_v.set_title(f"{man}: Kähler class (volume)")
        ax_f.set_xscale("log")
        ax_f.set_xlabel("flow time t")
        ax_f.set_ylabel("functional / max |functional|")
        ax_f.set_title(f"{man}: Lyapunov functionals (collocation points)")
        ax_f.legend(fontsize=6)
    fig.tight_layout()
    return fig
