"""Fixed kernels on projective space built from the Fubini-Study geodesic distance.

Both kernels are component-diagonal and act on real points (P, 2N) in cymetric's
layout ``[Re z, Im z]``; they are the paper's "Gaussian" and "Delta" kernels
(section 3, eq. 3.6 and the nearest-neighbour kernel).
"""

from __future__ import annotations

import numpy as np

from cyntk.geometry import fs_distance_matrix, fs_nearest, to_complex
from cyntk.kernels._checks import (matching_widths, nonnegative_float, optional_chunk_size,
                                   positive_float)
from cyntk.kernels.base import Kernel

__all__ = ["GaussianFSKernel", "DeltaKernel"]

_DEFAULT_CHUNK = 2048


def _complex_points(x: np.ndarray, name: str) -> np.ndarray:
    if x.shape[1] % 2:
        raise ValueError(f"`{name}` must be real points of shape (P, 2N) in cymetric's layout "
                         f"[Re z, Im z] (an even width); received shape {x.shape}.")
    return to_complex(x)


class GaussianFSKernel(Kernel):
    """Exponential kernel in the Fubini-Study geodesic distance (paper eq. 3.6).

    ``Theta_IJ(x, x') = delta_IJ exp(-d(x, x') / (2 sigma))``, with
    ``d(z, z') = arccos sqrt(|z^dagger z'|^2 / (|z|^2 |z'|^2))`` the FS distance
    (paper eq. 3.2) of the complex points ``z = Re + i Im`` read from the real
    layout. Note the distance enters linearly (as printed in the paper), not
    squared. Distances below the noise floor of ``arccos`` are set to 0
    (:func:`cyntk.geometry.default_distance_threshold`, or ``threshold``).

    Args:
        sigma: width (> 0); the paper uses 30.
        threshold: optional threshold on ``1 - cos^2 d`` below which d = 0.
        chunk_size: rows per chunk of the distance computation.

    Example:
        >>> k = GaussianFSKernel(sigma=30.0)
        >>> k(x1, x2).shape     # x1 (P1, 2N), x2 (P2, 2N)
        (P1, P2)
    """

    component_diagonal = True

    def __init__(self, sigma: float = 30.0, *, threshold: float | None = None,
                 chunk_size: int | None = None):
        self.sigma = positive_float(sigma, "sigma")
        self.threshold = None if threshold is None else nonnegative_float(threshold, "threshold")
        self.chunk_size = optional_chunk_size(chunk_size)

    def get_config(self) -> dict:
        return {"sigma": self.sigma, "threshold": self.threshold, "chunk_size": self.chunk_size}

    def distance(self, x1, x2=None) -> np.ndarray:
        """FS geodesic distances (P1, P2) of real points, float64."""
        p1, _ = self._points(x1, "x1")
        p2 = None if x2 is None else self._points(x2, "x2")[0]
        if p2 is not None:
            matching_widths(p1, p2)
        return self._distance(p1, p2)

    def _distance(self, x1, x2):
        z1 = _complex_points(x1, "x1")
        z2 = None if x2 is None else _complex_points(x2, "x2")
        d = fs_distance_matrix(z1, z2, chunk_size=self.chunk_size or _DEFAULT_CHUNK,
                               threshold=self.threshold)
        if z2 is None:                      # exactly symmetric (the matrix product is not)
            d = 0.5 * (d + d.T)
        return d

    def _block(self, x1, x2):
        return np.exp(-self._distance(x1, x2) / (2.0 * self.sigma))


class DeltaKernel(Kernel):
    """Nearest-neighbour ("Delta") kernel in the Fubini-Study distance.

    ``Theta_IJ(x, x2[b]) = delta_IJ [b = argmin_c d(x, x2[c])]``: each point of
    ``x1`` takes the value of its nearest point of ``x2`` (FS geodesic distance,
    paper eq. 3.2), so ``kernel.matvec(x, x_train, v)`` copies the vector of the
    nearest training point. Every row of the block is one-hot; ties are broken by
    :func:`cyntk.geometry.fs_nearest`. With ``x2 = None`` (``x2 = x1``) every point
    is its own nearest neighbour and the block is the identity.

    Args:
        threshold: optional threshold on ``1 - cos^2 d`` below which d = 0.
        chunk_size: query rows per chunk of the neighbour search.
    """

    component_diagonal = True

    def __init__(self, *, threshold: float | None = None, chunk_size: int | None = None):
        self.threshold = None if threshold is None else nonnegative_float(threshold, "threshold")
        self.chunk_size = optional_chunk_size(chunk_size)

    def get_config(self) -> dict:
        return {"threshold": self.threshold, "chunk_size": self.chunk_size}

    def nearest(self, x1, x2) -> tuple[np.ndarray, np.ndarray]:
        """``(distances (P1,), indices (P1,))`` of the nearest point of ``x2``."""
        p1, _ = self._points(x1, "x1")
        p2, _ = self._points(x2, "x2")
        matching_widths(p1, p2)
        return self._nearest(p1, p2)

    def _nearest(self, x1, x2):
        d, idx = fs_nearest(_complex_points(x1, "x1"), _complex_points(x2, "x2"), k=1,
                            exclude_self=False, chunk_size=self.chunk_size or _DEFAULT_CHUNK,
                            threshold=self.threshold)
        return d[:, 0], idx[:, 0]

    def _block(self, x1, x2):
        if x2 is None:
            return np.eye(len(x1))
        _, idx = self._nearest(x1, x2)
        out = np.zeros((len(x1), len(x2)))
        out[np.arange(len(x1)), idx] = 1.0
        return out

    def matvec(self, x1, x2, v, *, chunk_size: int | None = None) -> np.ndarray:
        """``u[a] = v[nearest(x1[a])]`` without forming the (P1, P2) block.

        Args:
            x1: real (P1, 2N) target points.
            x2: real (P2, 2N) source points.
            v: (P2, m) or (P2,) values at the source points.
            chunk_size: ignored (the neighbour search is chunked by ``self.chunk_size``).

        Returns:
            float64 array (P1, m) or (P1,).
        """
        p1, _ = self._points(x1, "x1")
        p2, _ = self._points(x2, "x2")
        matching_widths(p1, p2)
        v = np.asarray(v, dtype=np.float64)
        if v.ndim not in (1, 2) or v.shape[0] != len(p2):
            raise ValueError(f"`v` must have shape (P2, m) = ({len(p2)}, m); received shape {v.shape}.")
        if not np.all(np.isfinite(v)):
            raise ValueError("`v` must be finite; received NaN or inf entries.")
        _, idx = self._nearest(p1, p2)
        return v[idx]
