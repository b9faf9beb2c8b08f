"""The experiments that ``cyntk reproduce`` knows, with their 'quick' and 'paper' scales."""

from __future__ import annotations

from cyntk.experiments.clustering import plot_fig2, run_fig2
from cyntk.experiments.distances import plot_fig3_distances, run_fig3_distances
from cyntk.experiments.kernel_flows import plot_table1, run_table1
from cyntk.experiments.runner import Experiment, register

register(Experiment(
    name="fig2",
    run=run_fig2,
    plot=plot_fig2,
    description="FS distance matrices ordered by batched / full clustering; silhouettes (paper Fig. 2)",
    scales={"quick": dict(n_points=600, n_clusters=10, n_batches=5),
            "paper": dict(n_points=1000, n_clusters=10, n_batches=5)},
    summary=lambda r: "silhouettes batched {batched:.3f} full {full:.3f} birch {birch:.3f} "
                      "(paper .016 / -.011 / -.032)".format(**r["silhouette"]),
))

register(Experiment(
    name="fig3",
    run=run_fig3_distances,
    plot=plot_fig3_distances,
    description="nearest-neighbour FS distance vs number of points, power-law fit (paper Fig. 3 right)",
    scales={"quick": dict(sizes=(100, 300, 1000, 3000, 10_000)),
            "paper": dict(sizes=(100, 300, 1000, 3000, 10_000, 30_000, 100_000), progress=True)},
    uses_store=True,
    summary=lambda r: f"mu = {r['a']:.3f} N^{r['b']:.3f} (paper .968 N^-.184, theory N^-1/6)",
))

register(Experiment(
    name="table1",
    run=run_table1,
    plot=plot_table1,
    description="kernel-flow gains of the sigma loss vs distance to the train set, paper and searched "
                "hyperparameters (paper Table 1, Fig. 3 left)",
    scales={"quick": dict(points_scale=0.1, n_test=150, noise_levels=(1e-3, 1e-2, 1e-1), search_trials=(3, 4)),
            "paper": dict(points_scale=1.0, n_test=1000, search_trials=(6, 14))},
    uses_store=True,
    summary=lambda r: r["table"].replace("\n", "\n    "),
))
