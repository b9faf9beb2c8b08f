"""Points of one chart out of a dataset that spreads its points over all charts.

cymetric's point generators return points in every chart (patch k = the
largest coordinate, eliminated coordinate j = argmax |dQ/dz_j|; 20 charts on
the quintic). Kernels that mix metric components of different points need
them in one chart (``KernelModel`` refuses mixed charts unless
``mixed_charts="separate"``), so a cymetric user picks one chart's points:

    counts = chart_counts(M, data["X_train"])          # {(k, j): count}
    x = select_chart(M, data["X_train"], max(counts, key=counts.get))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from cyntk.geometry.projective import to_complex

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cyntk.geometry.hypersurface import Hypersurface

__all__ = ["chart_counts", "select_chart"]


def _charts(manifold: Hypersurface, points: ArrayLike) -> np.ndarray:
    x = np.asarray(points)
    if np.iscomplexobj(x):
        z = x
    else:
        if x.ndim != 2 or x.shape[1] != 2 * manifold.ncoords:
            raise ValueError(
                f"`points` must be real (P, 2N) = (P, {2 * manifold.ncoords}) network inputs "
                f"[Re z, Im z] or complex (P, {manifold.ncoords}); received shape {x.shape}."
            )
        z = to_complex(x)
    if z.ndim != 2 or z.shape[1] != manifold.ncoords:
        raise ValueError(f"`points` must be complex (P, {manifold.ncoords}); received shape {z.shape}.")
    return manifold.charts(z)


def chart_counts(manifold: Hypersurface, points: ArrayLike) -> dict[tuple[int, int], int]:
    """How many points lie in each chart.

    Args:
        manifold: the hypersurface the points lie on (e.g. ``fermat_quintic()``).
        points: real (P, 2N) ``[Re z, Im z]`` (cymetric's ``X_train``) or complex
            (P, N) patch-normalised points.

    Returns:
        dict ``{(patch k, eliminated j): count}``, largest count first.
    """
    charts = _charts(manifold, points)
    keys, counts = np.unique(charts, axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {(int(keys[i, 0]), int(keys[i, 1])): int(counts[i]) for i in order}


@overload
def select_chart(
    manifold: Hypersurface, points: ArrayLike, chart: Sequence[int], *, return_index: Literal[False] = ...
) -> np.ndarray: ...
@overload
def select_chart(
    manifold: Hypersurface, points: ArrayLike, chart: Sequence[int], *, return_index: Literal[True]
) -> tuple[np.ndarray, np.ndarray]: ...


def select_chart(
    manifold: Hypersurface, points: ArrayLike, chart: Sequence[int], *, return_index: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The points of one chart, in their original order.

    Args:
        manifold: the hypersurface the points lie on.
        points: real (P, 2N) or complex (P, N) points (as in :func:`chart_counts`).
        chart: ``(k, j)``: patch index and eliminated coordinate.
        return_index: also return the indices of the selected rows.

    Returns:
        the selected rows of ``points`` (same layout), and their indices.

    Raises:
        ValueError: ``chart`` is not a pair of coordinate indices, or no point lies in it.
    """
    try:
        k, j = (int(c) for c in chart)
    except (TypeError, ValueError):
        raise ValueError(f"`chart` must be a pair (patch k, eliminated j); received {chart!r}.") from None
    n = manifold.ncoords
    if not (0 <= k < n and 0 <= j < n and k != j):
        raise ValueError(f"`chart` must be (k, j) with 0 <= k, j < {n} and k != j; received {chart!r}.")
    charts = _charts(manifold, points)
    idx = np.nonzero((charts[:, 0] == k) & (charts[:, 1] == j))[0]
    if len(idx) == 0:
        raise ValueError(
            f"no point of `points` lies in chart {(k, j)}; charts present: {chart_counts(manifold, points)}."
        )
    out = np.asarray(points)[idx]
    return (out, idx) if return_index else out
