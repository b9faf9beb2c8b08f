"""The paper's experiments as functions returning plain data, with plot functions.

Each ``run_*`` returns a dict of NumPy arrays and floats; each ``plot_*`` takes
that dict and returns a matplotlib figure.
"""

from cyntk.experiments._io import load_json, save_figure, save_json, to_jsonable
from cyntk.experiments.beyond import plot_noclustering, plot_torus, run_noclustering, run_torus
from cyntk.experiments.cicy_study import plot_cicy_fig4, run_cicy_fig4
from cyntk.experiments.clustering import plot_fig2, run_fig2
from cyntk.experiments.demo import run_demo
from cyntk.experiments.distances import fit_power_law, plot_fig3_distances, run_fig3_distances
from cyntk.experiments.kahlerflows import plot_kahlerflows, run_kahlerflows
from cyntk.experiments.kernel_flows import plot_kernel_gains, run_kernel_gains
from cyntk.experiments.localflow import plot_localflow, run_localflow
from cyntk.experiments.networks import plot_afterkernel, plot_fig4, run_afterkernel, run_baseline, run_fig4
from cyntk.experiments.table1 import plot_table1, run_table1
from cyntk.experiments.widthlimit import plot_widthlimit, run_widthlimit

__all__ = [
    "run_fig2",
    "plot_fig2",
    "run_fig3_distances",
    "plot_fig3_distances",
    "fit_power_law",
    "run_table1",
    "plot_table1",
    "run_kernel_gains",
    "plot_kernel_gains",
    "run_baseline",
    "run_fig4",
    "plot_fig4",
    "run_afterkernel",
    "plot_afterkernel",
    "run_torus",
    "plot_torus",
    "run_noclustering",
    "plot_noclustering",
    "run_localflow",
    "plot_localflow",
    "run_kahlerflows",
    "plot_kahlerflows",
    "run_widthlimit",
    "plot_widthlimit",
    "run_cicy_fig4",
    "plot_cicy_fig4",
    "run_demo",
    "save_json",
    "load_json",
    "save_figure",
    "to_jsonable",
]
