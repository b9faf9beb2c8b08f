"""Figure 4 of Halverson & Ruehle (arXiv:2310.19870) from a metric-NTK history.

Figure 4 shows, for cymetric's multiplicative model (3 x 128 gelu) trained for
50 epochs on the Fermat quintic, (left) histograms of the pooled per-(I, J)
metric-NTK spectrum on 10 fixed train and 10 fixed test points at epoch 0 and
at the last epoch, and (right) the Wasserstein distance between the spectrum at
epoch 0 and at each epoch. :func:`plot_figure4` draws both panels from a
:class:`~cyntk.callbacks.MetricNTKHistory` (or the path of a saved one).

Matplotlib is used through its object-oriented API (``matplotlib.figure.Figure``
with the Agg canvas), so these functions work headless and never touch pyplot's
global state; pass ``ax=`` to draw into your own axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cyntk.callbacks.history import MetricNTKHistory
from cyntk.callbacks.spectra import log_spectrum

__all__ = ["plot_spectrum_histograms", "plot_wasserstein", "plot_figure4", "figure_to_rgba"]

_SPECTRUM_TYPES = ("pooled", "full")


def _history(history) -> MetricNTKHistory:
    if isinstance(history, MetricNTKHistory):
        out = history
    elif isinstance(history, (str, Path)):
        out = MetricNTKHistory.load(history)
    else:
        raise TypeError(
            "`history` must be a MetricNTKHistory or the path of a saved history (.npz); "
            f"received {type(history).__name__}."
        )
    if not out.epochs:
        raise ValueError("`history` is empty: nothing was recorded yet.")
    return out


def _spectrum_name(history: MetricNTKHistory, block: str, spectrum: str) -> str:
    if spectrum not in _SPECTRUM_TYPES:
        raise ValueError(f"`spectrum` must be one of {_SPECTRUM_TYPES}; received {spectrum!r}.")
    name = f"{spectrum}_{block}"
    if name not in history.spectra:
        available = sorted(history.spectra)
        raise ValueError(
            f"`block`={block!r} with `spectrum`={spectrum!r} is not in this history; available spectra: {available}."
        )
    return name


def _new_axes(ax, figsize, ncols=1):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def plot_spectrum_histograms(
    history,
    block: str = "train_test",
    *,
    epochs=None,
    spectrum: str = "pooled",
    bins: int = 40,
    scale: str = "linear",
    ax=None,
):
    """Histograms of one spectrum at several epochs (Figure 4, left).

    Args:
        history: :class:`MetricNTKHistory` or path of a saved one.
        block: ``"train_test"`` (the paper's Theta(x_train, x_test)),
            ``"train_train"`` or ``"test_test"``.
        epochs: tracked epochs to draw (default: the first and the last).
        spectrum: ``"pooled"`` (the paper's per-(I, J) statistic) or ``"full"``
            (eigenvalues of the (m P) x (m P) symmetric block; not for train_test).
        bins: number of common histogram bins.
        scale: ``"linear"`` (the values) or ``"log"`` (``log10 max(|value|,
            floor)``, floor = 1e-10 x the largest magnitude at the first epoch).
        ax: matplotlib Axes to draw into (default: a new Figure).

    Returns:
        the matplotlib ``Figure``.
    """
    h = _history(history)
    name = _spectrum_name(h, block, spectrum)
    if scale not in ("linear", "log"):
        raise ValueError(f"`scale` must be 'linear' or 'log'; received {scale!r}.")
    if epochs is None:
        epochs = [h.epochs[0]] if len(h.epochs) == 1 else [h.epochs[0], h.epochs[-1]]
    values = [h.spectrum(name, int(e)) for e in epochs]
    if scale == "log":
        floor = 1e-10 * max(float(np.max(np.abs(h.spectra[name][0]))), np.finfo(float).tiny)
        values = [log_spectrum(v, floor) for v in values]
    lo = min(float(np.min(v)) for v in values)
    hi = max(float(np.max(v)) for v in values)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, int(bins) + 1)
    fig, ax = _new_axes(ax, (5, 4))
    for e, v in zip(epochs, values):
        ax.hist(v, bins=edges, alpha=0.55, label=f"epoch {int(e)}")
    label = (
        "eigenvalue"
        if h.meta.get("spectrum_kinds", {}).get(block, "eigenvalues") == "eigenvalues"
        else "singular value"
    )
    if spectrum == "full":
        label = "eigenvalue (full kernel)"
    ax.set_xlabel(f"log10 |{label}|" if scale == "log" else label)
    ax.set_ylabel("count")
    ax.set_title(f"metric-NTK spectrum ({block.replace('_', '-')})")
    ax.legend()
    return fig


def plot_wasserstein(
    history, block: str = "train_test", *, spectrum: str = "pooled", step: bool = False, log: bool = False, ax=None
):
    """Wasserstein distance of the spectrum to epoch 0 vs epoch (Figure 4, right).

    Plots the recorded ``ntk_[full_][log_]wasserstein[_step]_<block>`` measure
    (``W_p``, not ``W_p**p``; p is in ``history.meta["wasserstein_p"]``).

    Args:
        history: :class:`MetricNTKHistory` or path of a saved one.
        block: ``"train_test"``, ``"train_train"`` or ``"test_test"``.
        spectrum: ``"pooled"`` or ``"full"``.
        step: plot the distance to the previous tracked epoch instead of epoch 0.
        log: plot the distance between log10 spectra (if it was recorded).
        ax: matplotlib Axes (default: a new Figure).

    Returns:
        the matplotlib ``Figure``.
    """
    h = _history(history)
    _spectrum_name(h, block, spectrum)
    key = (
        "ntk_"
        + ("full_" if spectrum == "full" else "")
        + ("log_" if log else "")
        + "wasserstein"
        + ("_step" if step else "")
        + f"_{block}"
    )
    y = h.scalar(key)
    fig, ax = _new_axes(ax, (5, 4))
    ax.plot(h.epochs, y, marker="o", ms=3)
    p = h.meta.get("wasserstein_p", 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"W_{p:g}" + (" (log10 spectra)" if log else "") + (" to previous" if step else " to epoch 0"))
    ax.set_title(f"spectrum evolution ({block.replace('_', '-')})")
    ax.set_ylim(bottom=0)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def plot_figure4(
    history, block: str = "train_test", *, spectrum: str = "pooled", bins: int = 40, scale: str = "log", figsize=(10, 4)
):
    """Figure 4: spectrum histograms at the first and last epoch, and W_p vs epoch.

    Args:
        history: :class:`MetricNTKHistory` or path of a saved one.
        block: which kernel block (default ``"train_test"``, the paper's
            Theta(x_train, x_test) on 10 + 10 points).
        spectrum: ``"pooled"`` (the paper's statistic) or ``"full"``.
        bins: histogram bins.
        scale: ``"log"`` (default: histogram of ``log10 |value|``; the pooled
            spectra span many decades, most of the m**2 P values of the
            off-diagonal component blocks being tiny) or ``"linear"``.
        figsize: figure size in inches.

    Returns:
        a matplotlib ``Figure`` with two axes.
    """
    h = _history(history)
    fig, (left, right) = _new_axes(None, figsize, ncols=2)
    plot_spectrum_histograms(h, block, spectrum=spectrum, bins=bins, scale=scale, ax=left)
    plot_wasserstein(h, block, spectrum=spectrum, ax=right)
    return fig


def figure_to_rgba(fig, dpi: int = 80) -> np.ndarray:
    """Render a Figure to a uint8 array (1, H, W, 4) (what ``tf.summary.image`` takes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[None].copy()
