"""``cyntk demo``: a small end-to-end study on the Fermat quintic in a few minutes on 2 CPU cores.

Steps (each prints a progress line):

1. sample points on the quintic and write a cymetric dataset directory;
2. train cyntk's multiplicative model (3 x 64 gelu, Adam) for a few epochs with
   :class:`~cyntk.callbacks.MetricNTKCallback` (10 + 10 fixed points) and
   Keras' TensorBoard callback, logging ``sigma_val`` per epoch;
3. run frozen-kernel flows (Gaussian-FS, Delta, infinite-width ReLU NTK) on
   chart-fixed points and measure train/test gains of the sigma loss;
4. cluster points by FS distance (batched and full) and score them;
5. nearest-neighbour distances vs number of points with a power-law fit.

Outputs in the output directory: ``figures/*.png``, ``tensorboard/`` (open with
``tensorboard --logdir``), ``data/`` (dataset.npz + basis.pickle),
``results.json`` (every number) and ``summary.md``. ``manifest.json`` says
"incomplete" while the demo runs and lists the size and SHA-256 of
``results.json``, ``summary.md`` and the figures once it has finished.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

from cyntk.experiments._io import save_figure, save_json
from cyntk.geometry import atomic_write, begin_file_set, fermat_quintic, finish_file_set, make_dataset

__all__ = ["DEMO_SCALES", "DEMO_FLOW_HYPERPARAMETERS", "run_demo"]


class _DemoScale(TypedDict):
    n_points: int
    epochs: int
    hidden: tuple[int, ...]
    n_flow: tuple[int, int]
    flow_steps: int
    n_cluster: int
    nn_sizes: tuple[int, ...]


#: Sizes of the demo ('default' ~ a few minutes on 2 cores; 'tiny' for tests).
DEMO_SCALES: dict[str, _DemoScale] = {
    "default": dict(
        n_points=20_000,
        epochs=5,
        hidden=(64, 64, 64),
        n_flow=(400, 200),
        flow_steps=50,
        n_cluster=600,
        nn_sizes=(100, 300, 1000, 3000, 10_000),
    ),
    "tiny": dict(
        n_points=1500, epochs=2, hidden=(16, 16), n_flow=(60, 30), flow_steps=5, n_cluster=80, nn_sizes=(50, 100, 200)
    ),
}

#: Flow hyperparameters of the demo: step sizes that keep the metric positive-definite with
#: eq. 3.5 summed over the train points (the paper's Table 1 step sizes, read as a sum, lose
#: positivity within a few steps in cymetric's normalisation of g: cyntk.experiments.table1 runs
#: them both ways), decaying geometrically because fixed steps on the non-smooth |1 - eta| oscillate.
DEMO_FLOW_HYPERPARAMETERS = {
    "gaussian": {"learning_rate": 1e-3, "decay_rate": 0.85, "sigma": 0.02},
    "delta": {"learning_rate": 1e-3, "decay_rate": 0.85},
    "relu": {"learning_rate": 1e-9, "W_std": 6.69, "b_std": 5.716},
}


def run_demo(
    output: str | os.PathLike[str] = "cyntk-demo",
    *,
    scale: Literal["default", "tiny"] = "default",
    seed: int = 0,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Run the demo and write its files; returns all numbers as a dict."""
    import keras

    from cyntk.callbacks import MetricNTKCallback, plot_figure4
    from cyntk.experiments.clustering import plot_fig2, run_fig2
    from cyntk.experiments.distances import plot_fig3_distances, run_fig3_distances
    from cyntk.experiments.kernel_flows import gains_table, plot_kernel_gains, run_kernel_gains
    from cyntk.experiments.networks import train_multiplicative

    if scale not in DEMO_SCALES:
        raise ValueError(f"`scale` must be one of {sorted(DEMO_SCALES)}; received {scale!r}.")
    cfg = DEMO_SCALES[scale]
    out = Path(output)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    begin_file_set(out / "manifest.json", {"demo_scale": scale, "seed": seed})
    results: dict[str, Any] = {"scale": scale, "seed": seed}
    t_start = time.perf_counter()

    def step(msg: str) -> None:
        log(f"[{time.perf_counter() - t_start:6.1f} s] {msg}")

    # 1. data
    step(f"1/5 sampling {cfg['n_points']} points on the Fermat quintic")
    M = fermat_quintic()
    ds = make_dataset(M, cfg["n_points"], seed=seed)
    ds.save(out / "data")
    results["data"] = {"n_train": ds.n_train, "n_val": ds.n_val, "kappa": ds.kappa, "vol_cy": ds.vol_cy}

    # 2. network with the metric-NTK callback
    step(
        f"2/5 training the multiplicative model {cfg['hidden']} gelu for {cfg['epochs']} epochs "
        f"with MetricNTKCallback (10 + 10 points)"
    )
    tb_dir = out / "tensorboard"
    ntk_cb = MetricNTKCallback(10, 10, data=ds, seed=seed, log_dir=str(tb_dir))
    tb = keras.callbacks.TensorBoard(log_dir=str(tb_dir), histogram_freq=0, write_graph=False)
    model, hist, meas = train_multiplicative(
        ds, hidden=cfg["hidden"], activation="gelu", epochs=cfg["epochs"], seed=seed, callbacks=[ntk_cb, tb], verbose=2
    )
    h = ntk_cb.history
    results["network"] = {
        "sigma_val_initial": cast("dict[str, float]", meas.initial)["sigma_val"],
        "sigma_val": list(meas.history["sigma_val"]),
        "sigma_gain": cast("dict[str, float]", meas.initial)["sigma_val"] / meas.history["sigma_val"][-1],
        "ntk_epochs": list(h.epochs),
        "ntk_wasserstein": h.scalar("ntk_wasserstein_train_test").tolist(),
        "ntk_frobenius": h.scalar("ntk_frobenius_train_test").tolist(),
        "train_loss": hist.history["loss"],
    }
    save_figure(plot_figure4(h), figs / "fig4_metric_ntk.png")

    # 3. kernel flows
    step("3/5 frozen-kernel flows (Gaussian-FS, Delta, ReLU NTK) on chart-fixed points")
    hyper = {k: dict(v, n_points=cfg["n_flow"][0]) for k, v in DEMO_FLOW_HYPERPARAMETERS.items()}
    flows = run_kernel_gains(
        hyperparameters=hyper,
        steps=cfg["flow_steps"],
        n_test=cfg["n_flow"][1],
        noise_levels=(1e-3, 1e-2, 1e-1),
        seed=seed,
    )
    results["kernel_flows"] = {
        k: {kk: vv for kk, vv in v.items() if kk != "loss_history"} for k, v in flows["kernels"].items()
    }
    save_figure(plot_kernel_gains(flows), figs / "fig3_left_kernel_gains.png")

    # 4. clustering
    step(f"4/5 FS clustering of {cfg['n_cluster']} points (batched vs full vs Birch)")
    fig2 = run_fig2(
        n_points=cfg["n_cluster"],
        n_clusters=10 if cfg["n_cluster"] >= 200 else 4,
        n_batches=5 if cfg["n_cluster"] >= 200 else 2,
        seed=seed,
    )
    results["clustering"] = {"silhouette": fig2["silhouette"], "paper_silhouette": fig2["paper_silhouette"]}
    save_figure(plot_fig2(fig2), figs / "fig2_clustering.png")

    # 5. nearest-neighbour distances
    step("5/5 nearest-neighbour FS distances vs number of points")
    fig3 = run_fig3_distances(sizes=cfg["nn_sizes"], seed=seed)
    results["nearest_neighbour"] = {k: fig3[k] for k in ("sizes", "mean", "min", "max", "a", "b", "b_theory")}
    save_figure(plot_fig3_distances(fig3), figs / "fig3_right_distances.png")

    results["wall_seconds"] = time.perf_counter() - t_start
    save_json(results, out / "results.json")
    summary = _summary(results, gains_table(flows))
    atomic_write(out / "summary.md", lambda fh: fh.write(summary), "w")
    members = ["results.json", "summary.md"] + sorted(f"figures/{p.name}" for p in figs.glob("*.png"))
    finish_file_set(out / "manifest.json", members, {"demo_scale": scale, "seed": seed})
    step(f"done: wrote {out}/summary.md, results.json, figures/, tensorboard/, data/")
    return results


def _summary(r: dict[str, Any], table: str) -> str:
    net = r["network"]
    nn = r["nearest_neighbour"]
    sil = r["clustering"]["silhouette"]
    return "\n".join(
        [
            "# cyntk demo: Fermat quintic",
            "",
            f"- points: {r['data']['n_train']} train + {r['data']['n_val']} validation, "
            f"kappa = {r['data']['kappa']:.6g}",
            f"- multiplicative model: sigma_val {net['sigma_val_initial']:.4f} -> {net['sigma_val'][-1]:.4f} "
            f"(gain {net['sigma_gain']:.2f}) in {len(net['sigma_val'])} epochs",
            f"- metric-NTK (10 train x 10 test points): W1 of the pooled spectrum to epoch 0 at the last epoch "
            f"= {net['ntk_wasserstein'][-1]:.4g}, relative Frobenius change {net['ntk_frobenius'][-1]:.4g}",
            f"- FS clustering silhouettes: batched {sil['batched']:.3f}, full {sil['full']:.3f}, "
            f"Euclidean Birch {sil['birch']:.3f} (paper .016 / -.011 / -.032)",
            f"- nearest-neighbour distance: mu = {nn['a']:.3f} N^{nn['b']:.3f} (paper .968 N^-.184, theory N^-1/6)",
            "",
            "## Frozen-kernel flows (gain = sigma loss before / after)",
            "",
            table,
            "",
            "Figures: `figures/`; TensorBoard: `tensorboard --logdir tensorboard`; all numbers: `results.json`.",
            f"Wall time: {r['wall_seconds']:.0f} s.",
            "",
        ]
    )
