"""Geodesic distance on a product of projective spaces.

On A = P^{n_1} x ... x P^{n_m} with the Kaehler metric ``g = sum_F t_F g_F`` (g_F
the Fubini-Study metric of factor F, normalised so that the geodesic distance
in P^{n_F} is ``d_F(z, z') = arccos(|<z_F, z'_F>| / (|z_F| |z'_F|))`` in
[0, pi/2], the distance of paper eq. 3.2), the geodesic distance is

    d(z, z') = sqrt( sum_F t_F d_F(z_F, z'_F)^2 ),

because a geodesic of a Riemannian product is a product of geodesics traversed
at constant speeds, whose length is the l2 combination of the factor lengths.
For one factor and t = 1 it is the FS distance of :func:`cyntk.geometry.fs_distance`.
Pairs of one factor closer than the float noise floor get ``d_F = 0``
(:func:`cyntk.geometry.default_distance_threshold`), as for one factor.
"""

from __future__ import annotations

import numpy as np

from cyntk._validation import as_points
from cyntk.geometry.projective import default_distance_threshold, fs_distance, fs_distance_matrix

__all__ = ["product_fs_distance", "product_fs_distance_matrix"]


def _slices_and_t(factor_slices, t, n):
    sl = np.asarray(factor_slices, dtype=np.int64).reshape(-1, 2)
    if (
        len(sl) == 0
        or sl[0, 0] != 0
        or sl[-1, 1] != n
        or np.any(sl[1:, 0] != sl[:-1, 1])
        or np.any(sl[:, 1] - sl[:, 0] < 2)
    ):
        raise ValueError(
            f"`factor_slices` must tile [0, {n}) with consecutive [start, end) blocks of at least "
            f"2 coordinates; received {sl.tolist()}."
        )
    t = np.ones(len(sl)) if t is None else np.asarray(t, dtype=np.float64).reshape(-1)
    if t.shape != (len(sl),) or np.any(~(t > 0)):
        raise ValueError(f"`t` must hold {len(sl)} positive weights (one per factor); received {t!r}.")
    return sl, t


def product_fs_distance(z1, z2, factor_slices, t=None, *, threshold: float | None = None) -> np.ndarray:
    """Geodesic distance of ``sum_F t_F g_F`` between corresponding points, float64 (P,).

    Args:
        z1, z2: complex (P, n) homogeneous coordinates, factor by factor.
        factor_slices: int (m, 2) [start, end) of every factor (``CompleteIntersection.factor_slices``).
        t: positive weights (m,) (Kaehler parameters; default ones).
        threshold: per-factor noise floor on ``1 - cos^2 d_F`` (default float64's).
    """
    z1, z2 = as_points(z1, "z1"), as_points(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"`z1` and `z2` must have the same shape; received {z1.shape} and {z2.shape}.")
    sl, t = _slices_and_t(factor_slices, t, z1.shape[1])
    thr = default_distance_threshold() if threshold is None else float(threshold)
    d2 = np.zeros(len(z1))
    for (s, e), tf in zip(sl, t):
        d2 += tf * fs_distance(z1[:, s:e], z2[:, s:e], threshold=thr) ** 2
    return np.sqrt(d2)


def product_fs_distance_matrix(
    z1, z2=None, factor_slices=None, t=None, *, threshold: float | None = None
) -> np.ndarray:
    """All pairwise product distances, float64 (P1, P2) (``z2 = z1`` when None).

    Args:
        z1: complex (P1, n); z2: complex (P2, n) or None.
        factor_slices: int (m, 2) [start, end) of every factor.
        t: positive weights (m,), default ones.
        threshold: per-factor noise floor.
    """
    z1 = as_points(z1, "z1")
    z2 = z1 if z2 is None else as_points(z2, "z2")
    if factor_slices is None:
        raise ValueError("`factor_slices` is required: the [start, end) of every projective factor.")
    if z1.shape[1] != z2.shape[1]:
        raise ValueError(
            f"`z1` and `z2` must have the same number of coordinates; received {z1.shape[1]} and {z2.shape[1]}."
        )
    sl, t = _slices_and_t(factor_slices, t, z1.shape[1])
    thr = default_distance_threshold() if threshold is None else float(threshold)
    d2 = np.zeros((len(z1), len(z2)))
    for (s, e), tf in zip(sl, t):
        d2 += tf * fs_distance_matrix(z1[:, s:e], z2[:, s:e], threshold=thr) ** 2
    return np.sqrt(d2)
