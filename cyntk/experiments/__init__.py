"""The paper's experiments as functions returning plain data, with plot functions.

Each ``run_*`` returns a dict of NumPy arrays and floats; each ``plot_*`` takes
that dict and returns a matplotlib figure.
"""

from cyntk.experiments._io import load_json, save_figure, save_json, to_jsonable
from cyntk.experiments.clustering import plot_fig2, run_fig2
from cyntk.experiments.distances import fit_power_law, plot_fig3_distances, run_fig3_distances

__all__ = [
    "run_fig2",
    "plot_fig2",
    "run_fig3_distances",
    "plot_fig3_distances",
    "fit_power_law",
    "save_json",
    "load_json",
    "save_figure",
    "to_jsonable",
]
