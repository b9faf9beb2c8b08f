"""kappa = Vol_K / Vol_CY as a Monte-Carlo ratio, shared by hypersurfaces and complete intersections."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["kappa_from_geometry"]


def kappa_from_geometry(geo: Mapping[str, np.ndarray], weights: ArrayLike | None = None) -> float:
    """``kappa = mean(w det G / |Omega|^2) / mean(w)`` over the points of ``geo``.

    Args:
        geo: a ``geometry(z)`` dict with ``points`` (P, N), ``weights``, ``det_fs`` (det of the
            pulled-back FS metric in the Kähler class) and ``omega_sq`` (P,).
        weights: optional (P,) weights replacing ``geo["weights"]``.
    """
    w = geo["weights"] if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != len(geo["points"]):
        raise ValueError(f"`weights` must have one entry per point ({len(geo['points'])}); received {w.shape[0]}.")
    return float(np.mean(w * geo["det_fs"] / geo["omega_sq"]) / np.mean(w))
