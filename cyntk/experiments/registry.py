"""The experiments that ``cyntk reproduce`` knows, with their 'quick' and 'paper' scales."""

from __future__ import annotations

from cyntk.experiments.clustering import plot_fig2, run_fig2
from cyntk.experiments.distances import plot_fig3_distances, run_fig3_distances
from cyntk.experiments.kernel_flows import plot_table1, run_table1
from cyntk.experiments.networks import (
    plot_afterkernel,
    plot_fig4,
    run_afterkernel,  # noqa: E402
    run_baseline,
    run_fig4,
)
from cyntk.experiments.runner import Experiment, register

register(
    Experiment(
        name="fig2",
        run=run_fig2,
        plot=plot_fig2,
        description="FS distance matrices ordered by batched / full clustering; silhouettes (paper Fig. 2)",
        scales={
            "quick": dict(n_points=600, n_clusters=10, n_batches=5),
            "paper": dict(n_points=1000, n_clusters=10, n_batches=5),
        },
        summary=lambda r: (
            "silhouettes batched {batched:.3f} full {full:.3f} birch {birch:.3f} (paper .016 / -.011 / -.032)".format(
                **r["silhouette"]
            )
        ),
    )
)

register(
    Experiment(
        name="fig3",
        run=run_fig3_distances,
        plot=plot_fig3_distances,
        description="nearest-neighbour FS distance vs number of points, power-law fit (paper Fig. 3 right)",
        scales={
            "quick": dict(sizes=(100, 300, 1000, 3000, 10_000)),
            "paper": dict(sizes=(100, 300, 1000, 3000, 10_000, 30_000, 100_000), progress=True),
        },
        uses_store=True,
        summary=lambda r: f"mu = {r['a']:.3f} N^{r['b']:.3f} (paper .968 N^-.184, theory N^-1/6)",
    )
)

register(
    Experiment(
        name="table1",
        run=run_table1,
        plot=plot_table1,
        description="kernel-flow gains of the sigma loss vs distance to the train set, paper and searched "
        "hyperparameters (paper Table 1, Fig. 3 left)",
        scales={
            "quick": dict(points_scale=0.1, n_test=150, noise_levels=(1e-3, 1e-2, 1e-1), search_trials=(3, 4)),
            "paper": dict(points_scale=1.0, n_test=1000, search_trials=(6, 14)),
        },
        uses_store=True,
        summary=lambda r: r["table"].replace("\n", "\n    "),
    )
)


def _baseline_plot(r):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 4))
    e = np.arange(len(r["sigma_val"]) + 1)
    ax.semilogy(e, np.r_[r["sigma_val_initial"], r["sigma_val"]], "o-", label="3x64 ReLU multiplicative")
    ax.axhline(r["sigma_val_fs"], color="k", ls=":", label="Fubini-Study")
    ax.set_xlabel("epoch")
    ax.set_ylabel("sigma_val")
    ax.set_title(f"finite-network baseline: gain {r['gain_sigma_val']:.1f} (paper 10-100)")
    ax.legend()
    return fig


register(
    Experiment(
        name="baseline",
        run=run_baseline,
        plot=_baseline_plot,
        description="finite-network baseline: 3x64 ReLU multiplicative model, gain in sigma_val (paper: 10-100)",
        scales={"quick": dict(n_points=10_000, epochs=5), "paper": dict(n_points=100_000, epochs=50, verbose=2)},
        summary=lambda r: (
            f"sigma_val {r['sigma_val_initial']:.4f} -> {r['sigma_val'][-1]:.4f}: gain "
            f"{r['gain_sigma_val']:.2f} (paper 10-100)"
        ),
    )
)

register(
    Experiment(
        name="fig4",
        run=run_fig4,
        plot=plot_fig4,
        description="metric-NTK evolution of the 3x128 gelu multiplicative model on 10+10 points, "
        "with a lazy-regime control (paper Fig. 4)",
        scales={
            "quick": dict(n_points=10_000, epochs=5, lazy_width=1024),
            "paper": dict(n_points=100_000, epochs=50, verbose=2),
        },
        summary=lambda r: (
            f"W1 at the last epoch {r['w1_final']:.3g} (lazy control {r.get('lazy_w1_final', float('nan')):.3g}); "
            f"sigma_val gain {r['sigma_gain']:.2f} (lazy {r.get('lazy_sigma_gain', float('nan')):.2f})"
        ),
    )
)

register(
    Experiment(
        name="afterkernel",
        run=run_afterkernel,
        plot=plot_afterkernel,
        description="frozen-kernel flows with the network's empirical NTK frozen at epochs 0, 5, 50 (after-kernels)",
        scales={
            "quick": dict(
                n_points=5000,
                checkpoints=(0, 2, 5),
                n_flow_train=200,
                n_flow_test=200,
                steps=20,
                learning_rates=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
            ),
            "paper": dict(n_points=100_000, checkpoints=(0, 5, 50), n_flow_train=2500, n_flow_test=1000, verbose=2),
        },
        summary=lambda r: (
            "train gains "
            + ", ".join(f"{g:.3g}" for g in r["train_gain"])
            + "; test gains "
            + ", ".join(f"{g:.3g}" for g in r["test_gain"])
            + " at epochs "
            + ", ".join(str(int(c)) for c in r["checkpoints"])
        ),
    )
)

from cyntk.experiments.beyond import plot_noclustering, plot_torus, run_noclustering, run_torus  # noqa: E402


def _torus_summary(r):
    parts = [f"FS {r['fs/test_error']:.3g}", f"network {r['network/test_error']:.3g}"]
    parts += [f"{k} {r[f'{k}/test_error'][-1]:.3g} (train {r[f'{k}/train_error'][-1]:.3g})" for k in r["kernels"]]
    return "mean |g - g_exact|/g_exact on test points: " + ", ".join(parts)


def _nocl_summary(r):
    out = []
    for k in r["kernels"]:
        for mode in ("exact", "clustered"):
            tr, te = r[f"{k}/{mode}/train_gain"], r[f"{k}/{mode}/test_gain"]
            out.append(
                f"{k} {mode}: " + ", ".join(f"N={n} {a:.3g}/{b:.3g}" for n, a, b in zip(r["sizes"], tr, te) if a == a)
            )
    return "train/test gains " + "; ".join(out)


register(
    Experiment(
        name="torus",
        run=run_torus,
        plot=plot_torus,
        description="cubic torus (exact metric kappa |Omega|^2 known): error of the multiplicative network "
        "and of Gaussian / Delta / ReLU-NTK kernel flows",
        scales={
            "quick": dict(n_points=20_000, epochs=10, n_flow=1000, n_test=500),
            "paper": dict(n_points=100_000, epochs=50, n_flow=2500, n_test=1000, verbose=2),
        },
        summary=_torus_summary,
    )
)

register(
    Experiment(
        name="noclustering",
        run=run_noclustering,
        plot=plot_noclustering,
        description="exact Gaussian / Delta kernel flows on 1e3..1e5 quintic points without clustering vs the "
        "paper's per-cluster flows (paper extrapolated from ~1e3)",
        scales={
            "quick": dict(sizes=(1000, 3000, 10_000), n_test=500, cluster_batch_size=2500),
            "paper": dict(sizes=(1000, 3000, 10_000, 30_000, 100_000), n_test=1000, cluster_batch_size=10_000),
        },
        uses_store=True,
        summary=_nocl_summary,
    )
)

from cyntk.experiments import registry_flows  # noqa: E402,F401  (localflow, kahlerflows)
from cyntk.experiments.widthlimit import plot_widthlimit, run_widthlimit  # noqa: E402


def _widthlimit_summary(r):
    parts = [
        f"metric-NTK distance to Theta_inf at init ~ width^{r['exponent']:.3f} (theory -1/2); "
        + ", ".join(f"{int(w)}: {d:.3g}" for w, d in zip(r["widths"], r["init_frobenius_mean"]))
    ]
    for w in r.get("train_widths", []):
        f = r[f"train/{w}/frobenius"]
        parts.append(
            f"width {int(w)} trained: distance {f[0]:.3g} -> {f[-1]:.3g}, moved "
            f"{r[f'train/{w}/moved'][-1]:.3g}, sigma_val {r[f'train/{w}/sigma_val'][0]:.3g} -> "
            f"{r[f'train/{w}/sigma_val'][-1]:.3g}"
        )
    return "\n    ".join(parts)


register(
    Experiment(
        name="widthlimit",
        run=run_widthlimit,
        plot=plot_widthlimit,
        description="distance of the Figure-4 network's empirical metric-NTK to its infinite-width limit vs width "
        "(fitted exponent, theory -1/2) and during training, with sigma_val",
        scales={
            "quick": dict(
                widths=(64, 128, 256, 512, 1024, 2048, 4096),
                n_seeds=3,
                n_track=10,
                train_widths=(64, 256, 1024),
                n_points=5000,
                epochs=3,
            ),
            "paper": dict(
                widths=(64, 128, 256, 512, 1024, 2048, 4096),
                n_seeds=5,
                n_track=10,
                train_widths=(64, 256, 1024, 4096),
                n_points=100_000,
                epochs=50,
                verbose=2,
            ),
        },
        summary=_widthlimit_summary,
    )
)
from cyntk.experiments import registry_cicy  # noqa: E402,F401  (cicyfig4)
