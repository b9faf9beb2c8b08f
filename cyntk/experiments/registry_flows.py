"""Registration of the local-flow and Kähler-flow experiments for ``cyntk reproduce``.

Imported by :mod:`cyntk.experiments.registry`; each experiment has a 'quick'
scale (a few minutes on 2 CPU cores) and a 'paper' scale.
"""

from __future__ import annotations

import numpy as np

from cyntk.experiments.kahlerflows import plot_kahlerflows, run_kahlerflows
from cyntk.experiments.localflow import plot_localflow, run_localflow
from cyntk.experiments.runner import Experiment, register


def _local_summary(r):
    e = r["sweep/squared-local-input-riemannian"]
    text = f"sigma {r['sigmas'][0]:g} -> {r['sigmas'][-1]:g}: relative error vs local flow {e[0]:.3g} -> {e[-1]:.3g}"
    if "step/dt_max" in r:
        eu = np.asarray(r["step/euler"], dtype=float)
        f = np.asarray(r["step/dts"], dtype=float) / float(r["step/dt_max"])
        bad = f[~np.isfinite(eu)]
        ode_ok = bool(np.all(np.isfinite(r["step/dopri"])) and np.all(np.isfinite(r["step/bdf"])))
        text += (
            f"; Euler linear stability limit dt_max = {float(r['step/dt_max']):.3g}, Euler diverged for "
            f"{len(bad)}/{len(eu)} steps"
            + (f" (dt >= {bad.min():g} dt_max)" if len(bad) else "")
            + f", dopri/bdf {'finite for all' if ode_ok else 'NOT finite for all'}"
        )
    return text


def _kahler_summary(r):
    parts = []
    for man in r["manifolds"]:
        for fl in ("kahler_ricci", "ultralocal", "calabi", "mult_adam"):
            s = r.get(f"{man}/{fl}/sigma")
            if s is not None and len(s):
                parts.append(f"{man} {fl} {s[0]:.3g}->{s[-1]:.3g}")
    return "; ".join(parts)


register(
    Experiment(
        name="localflow",
        run=run_localflow,
        plot=plot_localflow,
        description="Gaussian-kernel flows -> local flow as sigma -> 0 (2.24-2.37); Euler vs adaptive/stiff "
        "ODE integration of kernel flows (2.12 vs 3.5)",
        scales={
            "quick": dict(
                n_points=30_000,
                n_eval=8,
                sigmas=(0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625),
                n_nodes=2048,
                n_flow=60,
                dt_factors=(0.5, 0.9, 1.1, 1.5, 3.0, 5.0, 10.0, 30.0),
            ),
            "paper": dict(
                n_points=600_000,
                n_eval=32,
                sigmas=(0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125),
                n_nodes=8192,
                n_flow=300,
                dt_factors=(0.25, 0.5, 0.9, 1.1, 1.5, 3.0, 10.0, 30.0),
            ),
        },
        uses_store=True,
        summary=_local_summary,
    )
)

register(
    Experiment(
        name="kahlerflows",
        run=run_kahlerflows,
        plot=plot_kahlerflows,
        description="Appendix-B Kähler-potential flows (KRF, ultra-local, two-derivative, Monge-Ampère, Calabi) "
        "and Kähler-Ricci flow as network flows, torus and quintic",
        scales={
            "quick": dict(
                n_points={"cubic": 1500, "quintic": 1200},
                degrees={"cubic": 3, "quintic": 2},
                times=(0.0, 0.02, 0.05, 0.1, 0.2, 0.5),
                calabi_points=250,
                calabi_dt={"cubic": 5e-4, "quintic": 1e-4},
                calabi_times={"cubic": (0.0, 0.002, 0.004, 0.006), "quintic": (0.0, 5e-4, 1e-3, 1.5e-3, 2e-3)},
                calabi_degrees={"cubic": 2, "quintic": 1},
                net_cfg={
                    "epochs": 20,
                    "batch_size": 32,
                    "flow_points": 400,
                    "flow_steps": 60,
                    "flow_lr_phi": {"cubic": 15.0, "quintic": 0.2},
                    "flow_lr_mult": {"cubic": 0.5, "quintic": 0.1},
                    "width": 32,
                },
            ),
            "paper": dict(
                n_points={"cubic": 10_000, "quintic": 8_000},
                degrees={"cubic": 4, "quintic": 2},
                times=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
                calabi_points=1500,
                calabi_dt={"cubic": 2e-4, "quintic": 5e-5},
                calabi_times={"cubic": tuple(np.arange(11) * 1e-3), "quintic": tuple(np.arange(11) * 5e-4)},
                calabi_degrees={"cubic": 3, "quintic": 1},
                net_cfg={
                    "epochs": 50,
                    "flow_points": 5000,
                    "flow_steps": 2000,
                    "flow_lr_phi": {"cubic": 15.0, "quintic": 0.2},
                    "flow_lr_mult": {"cubic": 0.5, "quintic": 0.1},
                },
            ),
        },
        uses_store=True,
        summary=_kahler_summary,
    )
)
