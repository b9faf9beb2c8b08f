"""Projective space: real/complex layouts, Fubini-Study metric, FS geodesic distance.

Conventions (cymetric, conventions §2.6 and 4.2):

* A point of P^{N-1} is a complex vector z of shape (N,); a batch has shape
  (P, N). The real network input is ``X = [Re z_0..Re z_{N-1}, Im z_0..Im z_{N-1}]``
  of shape (P, 2N) (real block then imaginary block, not interleaved).
* Fubini-Study metric with Kaehler parameter t (row index holomorphic, column
  index anti-holomorphic)::

      g_ij = (t / pi) * (delta_ij / |z|^2 - conj(z_i) z_j / |z|^4)

* FS geodesic distance (paper eq. 3.2, the distance of the metric with t = 1
  up to normalisation)::

      d(z, z') = arccos sqrt(|z^dagger z'|^2 / (|z|^2 |z'|^2))   in [0, pi/2]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from cyntk._validation import as_points, positive_int

__all__ = [
    "to_real",
    "to_complex",
    "patch_normalise",
    "fubini_study_metric",
    "fs_distance",
    "fs_distance_matrix",
    "fs_nearest",
    "default_distance_threshold",
]


def to_real(z: ArrayLike) -> np.ndarray:
    """Complex points (P, N) -> real network inputs (P, 2N) = [Re z, Im z] (float64)."""
    z = np.asarray(z)
    if not np.iscomplexobj(z) or z.ndim != 2:
        raise ValueError(f"`z` must be a complex array of shape (P, N); received dtype {z.dtype}, shape {z.shape}.")
    return np.concatenate([z.real, z.imag], axis=1)


def to_complex(x: ArrayLike) -> np.ndarray:
    """Real network inputs (P, 2N) = [Re z, Im z] -> complex points (P, N) (complex128)."""
    x = np.asarray(x)
    if np.iscomplexobj(x) or x.ndim != 2 or x.shape[1] % 2:
        raise ValueError(f"`x` must be a real array of shape (P, 2N); received dtype {x.dtype}, shape {x.shape}.")
    n = x.shape[1] // 2
    return x[:, :n].astype(np.float64) + 1j * x[:, n:].astype(np.float64)


def patch_normalise(z: ArrayLike) -> np.ndarray:
    """Divide each point by its coordinate of largest modulus (cymetric's patch choice).

    Args:
        z: complex array (P, N).

    Returns:
        complex128 (P, N) with the largest coordinate equal to 1 (up to
        rounding) and every other coordinate of modulus <= 1.
    """
    z = as_points(z, "z")
    k = np.argmax(np.abs(z), axis=1)
    return z / z[np.arange(len(z)), k][:, None]


def fubini_study_metric(z: ArrayLike, t: float = 1.0) -> np.ndarray:
    """Ambient Fubini-Study metric of P^{N-1} at homogeneous points.

    ``g_ij = (t/pi) (delta_ij/|z|^2 - conj(z_i) z_j/|z|^4)`` (1/pi convention).

    Args:
        z: complex array (P, N).
        t: Kaehler parameter (> 0).

    Returns:
        complex128 array (P, N, N), hermitian, rank N-1 (z is a null vector).
    """
    z = as_points(z, "z")
    t = float(t)
    if not t > 0:
        raise ValueError(f"`t` (Kaehler parameter) must be > 0; received {t}.")
    n2 = np.sum(np.abs(z) ** 2, axis=1)
    eye = np.eye(z.shape[1])
    g = eye[None] / n2[:, None, None] - np.conj(z)[:, :, None] * z[:, None, :] / (n2**2)[:, None, None]
    return (t / np.pi) * g


def default_distance_threshold(dtype: DTypeLike = np.float64) -> float:
    """Threshold on ``1 - cos^2 d`` below which the FS distance is set to 0.

    ``arccos`` near 1 turns a rounding error eps of the cosine into a distance
    ~ sqrt(2 eps) (paper eq. 3.4: eps ~ 1e-7 gives ~3e-4). Points closer than
    the noise floor cannot be resolved, so any pair with ``1 - c^2 < threshold``
    gets distance exactly 0. The default is ``64 * machine epsilon`` of the
    working dtype: 1.4e-14 in float64 (distances below ~1.2e-7 are reported as
    0) and 7.6e-6 in float32 (below ~2.8e-3).
    """
    return float(64 * np.finfo(dtype).eps)


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _overlap2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_p^dagger b_q|^2 for all pairs, with two real GEMMs (no complex temporaries)."""
    ar, ai, br, bi = a.real, a.imag, b.real, b.imag
    A = np.concatenate([ar, ai], axis=1)
    re = A @ np.concatenate([br, bi], axis=1).T  # Re(conj(a).b) = ar.br + ai.bi
    im = A @ np.concatenate([bi, -br], axis=1).T  # Im(conj(a).b) = ar.bi - ai.br
    re *= re
    im *= im
    re += im
    return re


def _distance_from_overlap(c2: np.ndarray, threshold: float) -> np.ndarray:
    c2 = np.clip(c2, 0.0, 1.0)
    d = np.arccos(np.sqrt(c2))
    d[(1.0 - c2) < threshold] = 0.0
    return d


def fs_distance(z1: ArrayLike, z2: ArrayLike, *, threshold: float | None = None) -> np.ndarray:
    """FS geodesic distance between corresponding points of two batches (paper eq. 3.2).

    Args:
        z1, z2: complex arrays (P, N) (or real (P, 2N) in [Re z, Im z] layout
            is NOT accepted here: convert with :func:`to_complex`).
        threshold: pairs with ``1 - cos^2 d`` below it get distance 0; default
            :func:`default_distance_threshold` of float64.

    Returns:
        float64 array (P,) with values in [0, pi/2].
    """
    z1 = as_points(z1, "z1")
    z2 = as_points(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"`z1` and `z2` must have the same shape; received {z1.shape} and {z2.shape}.")
    thr = default_distance_threshold() if threshold is None else float(threshold)
    c2 = np.abs(np.sum(np.conj(_unit(z1)) * _unit(z2), axis=1)) ** 2
    return _distance_from_overlap(c2, thr)


#: bytes of complex overlaps per chunk when ``chunk_size`` is None
CHUNK_BYTES = 128 * 2**20


def _rows_per_chunk(chunk_size: int | None, n_cols: int) -> int:
    if chunk_size is None:
        return max(1, int(CHUNK_BYTES // (16 * max(n_cols, 1))))
    return positive_int(chunk_size, "chunk_size")


def fs_distance_matrix(
    z1: ArrayLike,
    z2: ArrayLike | None = None,
    *,
    chunk_size: int | None = None,
    threshold: float | None = None,
    dtype: DTypeLike = np.float64,
) -> np.ndarray:
    """All-pairs FS geodesic distances, computed in row chunks.

    Memory besides the (P1, P2) result is O(chunk_size * P2).

    Args:
        z1: complex array (P1, N).
        z2: complex array (P2, N); ``None`` means ``z1`` (the diagonal is then 0).
        chunk_size: rows of ``z1`` per chunk (> 0); default: as many as fit
            in 128 MiB of intermediate overlaps.
        threshold: see :func:`default_distance_threshold`.
        dtype: dtype of the result (float64 or float32).

    Returns:
        array (P1, P2) of distances in [0, pi/2].
    """
    z1 = as_points(z1, "z1")
    same = z2 is None
    z2 = z1 if z2 is None else as_points(z2, "z2")
    if z1.shape[1] != z2.shape[1]:
        raise ValueError(
            f"`z1` and `z2` must have the same number of coordinates; received {z1.shape[1]} and {z2.shape[1]}."
        )
    chunk_size = _rows_per_chunk(chunk_size, len(z2))
    thr = default_distance_threshold() if threshold is None else float(threshold)
    u1, u2 = _unit(z1), _unit(z2)
    out = np.empty((len(u1), len(u2)), dtype=dtype)
    for s in range(0, len(u1), chunk_size):
        # |u1^dagger u2|^2 = |conj(u1) . u2|^2 = |u1 . conj(u2)|^2
        c2 = _overlap2(u1[s : s + chunk_size], u2)
        out[s : s + chunk_size] = _distance_from_overlap(c2, thr)
    if same:
        np.fill_diagonal(out, 0.0)
    return out


def fs_nearest(
    z_query: ArrayLike,
    z_ref: ArrayLike | None = None,
    *,
    k: int = 1,
    exclude_self: bool | None = None,
    chunk_size: int | None = None,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest reference points of each query point in FS distance.

    Never forms the full distance matrix: memory is O(chunk_size * P_ref).

    Args:
        z_query: complex (Q, N).
        z_ref: complex (R, N); ``None`` means ``z_query``.
        k: number of neighbours (1 <= k <= R, or R-1 when excluding self).
        exclude_self: skip the query point itself (index i for query i). Only
            meaningful when ``z_ref`` is ``None``; defaults to ``z_ref is None``.
        chunk_size: query rows per chunk; default: 128 MiB of overlaps per chunk.
        threshold: see :func:`default_distance_threshold`.

    Returns:
        ``(distances, indices)``: float64 (Q, k) sorted ascending, int64 (Q, k).
    """
    zq = as_points(z_query, "z_query")
    same = z_ref is None
    zr = zq if z_ref is None else as_points(z_ref, "z_ref")
    if exclude_self is None:
        exclude_self = same
    if exclude_self and not same:
        raise ValueError("`exclude_self=True` needs `z_ref=None` (query and reference sets identical).")
    k = positive_int(k, "k")
    kmax = len(zr) - (1 if exclude_self else 0)
    if k > kmax:
        raise ValueError(f"`k` must be at most {kmax} (reference points available); received {k}.")
    chunk_size = _rows_per_chunk(chunk_size, len(zr))
    thr = default_distance_threshold() if threshold is None else float(threshold)
    uq, ur = _unit(zq), _unit(zr)
    dist = np.empty((len(uq), k))
    idx = np.empty((len(uq), k), dtype=np.int64)
    for s in range(0, len(uq), chunk_size):
        c2 = _overlap2(uq[s : s + chunk_size], ur)
        if exclude_self:
            rows = np.arange(c2.shape[0])
            c2[rows, s + rows] = -np.inf  # never the nearest (largest overlap = nearest)
        # nearest = largest overlap; select on overlap (monotone in distance)
        if k == 1:
            part = np.argmax(c2, axis=1)[:, None]
        elif k < c2.shape[1]:
            part = np.argpartition(-c2, k - 1, axis=1)[:, :k]
        else:
            part = np.argsort(-c2, axis=1)
        sel = np.take_along_axis(c2, part, axis=1)
        order = np.argsort(-sel, axis=1, kind="stable")
        part = np.take_along_axis(part, order, axis=1)
        sel = np.take_along_axis(sel, order, axis=1)
        dist[s : s + chunk_size] = _distance_from_overlap(sel, thr)
        idx[s : s + chunk_size] = part
    return dist, idx
