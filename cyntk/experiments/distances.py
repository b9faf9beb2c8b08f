"""Figure 3 (right) of the paper: distance to the nearest other sample vs number of points.

For N points sampled on the quintic, every point's FS geodesic distance to its
nearest other sample is computed (chunked, never the full N x N matrix); the
mean mu(N), min and max are recorded, and ``mu = a N^b`` is fitted by least
squares in log-log space. The paper finds a = .968, b = -.184; for points
spread over a real 2n-dimensional manifold the nearest-neighbour distance
scales like N^(-1/(2n)) = N^(-1/6) on a threefold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from numpy.typing import ArrayLike

from cyntk.geometry import fs_nearest, get_manifold

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

    from cyntk.experiments.runner import ResultStore

__all__ = ["fit_power_law", "run_fig3_distances", "plot_fig3_distances"]


def fit_power_law(n: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """Least-squares fit ``y = a n^b`` in log-log space; returns ``(a, b)``.

    Args:
        n: positive array (K,), K >= 2.
        y: positive array (K,).
    """
    n = np.asarray(n, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if n.shape != y.shape or n.ndim != 1 or len(n) < 2:
        raise ValueError(
            f"`n` and `y` must be 1-D arrays of the same length >= 2; received shapes {n.shape} and {y.shape}."
        )
    if np.any(n <= 0) or np.any(y <= 0):
        raise ValueError("`n` and `y` must be positive for a power-law fit in log space.")
    b, log_a = np.polyfit(np.log(n), np.log(y), 1)
    return float(np.exp(log_a)), float(b)


def run_fig3_distances(
    *,
    sizes: Iterable[int] = (100, 300, 1000, 3000, 10_000, 30_000, 100_000),
    manifold: str = "quintic",
    seed: int = 0,
    progress: bool = False,
    store: ResultStore | None = None,
) -> dict[str, Any]:
    """Nearest-neighbour FS distances for growing point sets.

    Args:
        sizes: numbers of points (at least two).
        manifold: named manifold.
        seed: base seed (size k uses ``seed + k``).
        progress: progress bar over sizes.
        store: optional :class:`cyntk.experiments.runner.ResultStore`; finished
            sizes are saved there and skipped when the run is resumed.

    Returns:
        dict with ``sizes`` (K,), ``mean``, ``min``, ``max`` (K,), the fit
        ``a``, ``b``, the theory exponent ``b_theory = -1/(2n)`` and the paper's
        ``paper_a``, ``paper_b``.
    """
    M = get_manifold(manifold)
    sizes = np.asarray(sorted(int(s) for s in sizes))
    if len(sizes) < 2 or sizes[0] < 2:
        raise ValueError(f"`sizes` must hold at least two sizes >= 2; received {sizes.tolist()}.")
    it = sizes
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(sizes, desc="nearest-neighbour distances")
    mean, lo, hi = [], [], []
    for k, n in enumerate(it):
        key = f"n{int(n)}_seed{seed + k}"
        item = None if store is None else store.get(key)
        if item is None:
            z = M.sample_points(int(n), seed=seed + k)
            d, _ = fs_nearest(z, k=1)
            item = {"mean": d.mean(), "min": d.min(), "max": d.max()}
            if store is not None:
                store.put(key, item)
        mean.append(float(item["mean"]))
        lo.append(float(item["min"]))
        hi.append(float(item["max"]))
    a, b = fit_power_law(sizes, np.array(mean))
    return {
        "sizes": sizes,
        "mean": np.array(mean),
        "min": np.array(lo),
        "max": np.array(hi),
        "a": a,
        "b": b,
        "b_theory": -1.0 / (2 * M.nfold),
        "paper_a": 0.968,
        "paper_b": -0.184,
    }


@overload
def plot_fig3_distances(result: dict[str, Any], ax: None = None) -> Figure: ...
@overload
def plot_fig3_distances(result: dict[str, Any], ax: Axes) -> Figure | SubFigure: ...


def plot_fig3_distances(result: dict[str, Any], ax: Axes | None = None) -> Figure | SubFigure:
    """Mean (with min-max band) nearest-neighbour distance vs N, with the fitted power law."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4))
    n = result["sizes"]
    ax.fill_between(n, result["min"], result["max"], alpha=0.25, label="min-max")
    ax.loglog(n, result["mean"], "o", label="mean")
    grid = np.geomspace(n[0], n[-1], 100)
    ax.loglog(grid, result["a"] * grid ** result["b"], "-", label=f"fit {result['a']:.3f} N^{result['b']:.3f}")
    ax.loglog(
        grid,
        result["paper_a"] * grid ** result["paper_b"],
        ":",
        label=f"paper {result['paper_a']} N^{result['paper_b']}",
    )
    ax.set_xlabel("number of points N")
    ax.set_ylabel("FS distance to nearest other sample")
    ax.set_title("Figure 3 (right)")
    ax.legend(fontsize=8)
    return fig if fig is not None else ax.figure
