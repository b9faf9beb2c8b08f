"""Callbacks that watch the metric neural tangent kernel evolve during training.

:class:`MetricNTKTracker` computes and records the empirical metric-NTK on
fixed points whenever asked (from any training loop, no Keras callbacks
needed), :class:`MetricNTKWriter` writes its records to TensorBoard, and
:class:`MetricNTKCallback` is a drop-in ``keras.callbacks.Callback`` over the two that
computes the empirical metric-NTK of any cymetric-style metric model (or any
regression network) on fixed train and test points at the start of training and
every few epochs, and records its spectra and how far they move (Wasserstein
distance, relative Frobenius change, kernel distance, alignment) in ``logs``,
an in-memory :class:`MetricNTKHistory`, TensorBoard and npz/JSON files;
:func:`plot_figure4` draws Figure 4 of Halverson & Ruehle (arXiv:2310.19870)
from a history.
"""

from cyntk.callbacks.history import HISTORY_FORMAT, MetricNTKHistory
from cyntk.callbacks.metric_ntk import BLOCKS, MetricNTKCallback
from cyntk.callbacks.options import MeasureOptions, OutputOptions
from cyntk.callbacks.plotting import figure_to_rgba, plot_figure4, plot_spectrum_histograms, plot_wasserstein
from cyntk.callbacks.spectra import (
    SPECTRUM_KINDS,
    block_eigenvalues,
    full_spectrum,
    kernel_distance,
    kernel_matrix,
    kernel_target_alignment,
    log_spectrum,
    pooled_block_spectrum,
    relative_frobenius_change,
    wasserstein,
)
from cyntk.callbacks.tensorboard import MetricNTKWriter
from cyntk.callbacks.tracker import MetricNTKTracker, NTKRecord

__all__ = [
    # the callback, the tracker and writer it drives, their options and record
    "MetricNTKCallback",
    "MetricNTKTracker",
    "MetricNTKWriter",
    "MeasureOptions",
    "OutputOptions",
    "NTKRecord",
    "MetricNTKHistory",
    "BLOCKS",
    "HISTORY_FORMAT",
    # spectra and evolution measures
    "SPECTRUM_KINDS",
    "kernel_matrix",
    "block_eigenvalues",
    "pooled_block_spectrum",
    "full_spectrum",
    "wasserstein",
    "log_spectrum",
    "relative_frobenius_change",
    "kernel_distance",
    "kernel_target_alignment",
    # Figure 4
    "plot_figure4",
    "plot_spectrum_histograms",
    "plot_wasserstein",
    "figure_to_rgba",
]
