"""Fixed kernels on projective space built from the Fubini-Study geodesic distance.

Both kernels are component-diagonal and act on real points (P, 2N) in cymetric's
layout ``[Re z, Im z]``; they are the paper's "Gaussian" and "Delta" kernels
(section 3, eq. 3.6 and the nearest-neighbour kernel).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from cyntk._validation import matching_widths, nonnegative_float, optional_chunk_size, positive_float
from cyntk.geometry import default_distance_threshold, fs_distance_matrix, fs_nearest, to_complex
from cyntk.geometry.product_distance import _slices_and_t, product_fs_distance_matrix
from cyntk.kernels.base import Kernel

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["GaussianFSKernel", "DeltaKernel"]

_DEFAULT_CHUNK = 2048


@functools.lru_cache(maxsize=64)
def _overlap_limit(threshold: float) -> float:
    """The largest float ``c`` with ``1 - c >= threshold`` (for ``c >= 1/2``, ``1 - c`` is exact).

    So ``c2 > _overlap_limit(t)`` holds exactly where ``(1 - c2) < t`` for the
    squared overlaps ``c2`` in [1/2, 1] that can be affected by the threshold.
    """
    lim = 1.0 - threshold
    while lim > 0.5 and 1.0 - lim < threshold:
        lim = np.nextafter(lim, -np.inf)
    while lim < 1.0 and 1.0 - np.nextafter(lim, np.inf) >= threshold:
        lim = np.nextafter(lim, np.inf)
    return float(lim)


def _complex_points(x: np.ndarray, name: str) -> np.ndarray:
    if x.shape[1] % 2:
        raise ValueError(
            f"`{name}` must be real points of shape (P, 2N) in cymetric's layout "
            f"[Re z, Im z] (an even width); received shape {x.shape}."
        )
    return to_complex(x)


def _layout(
    name: str, factor_slices: Any, t: Any, manifold: Any
) -> tuple[tuple[tuple[int, int], ...] | None, tuple[float, ...] | None]:
    """Validated ``(factor_slices, t)`` of a kernel on a product of projective spaces (None, None: one P^n)."""
    if manifold is not None:
        if factor_slices is not None:
            raise ValueError(f"{name}: pass either `manifold` or `factor_slices`, not both.")
        factor_slices = getattr(manifold, "factor_slices", None)
        if factor_slices is None:
            raise TypeError(
                f"`manifold` must have `factor_slices` and `kmoduli` (a cyntk CompleteIntersection); "
                f"received {type(manifold).__name__}."
            )
        if t is None:
            t = np.asarray(manifold.kmoduli, dtype=np.float64)
    if factor_slices is None:
        if t is not None:
            raise ValueError(f"{name}: `t` needs the factor layout; pass `factor_slices` (or `manifold`) with it.")
        return None, None
    sl = np.asarray(factor_slices)
    if sl.ndim != 2 or sl.shape[1] != 2 or not np.issubdtype(sl.dtype, np.integer):
        raise ValueError(
            f"`factor_slices` must be an int array (m, 2) of [start, end) per factor; received {factor_slices!r}."
        )
    sl, tt = _slices_and_t(sl, t, int(sl[-1, 1]) if len(sl) else -1)
    if not np.all(np.isfinite(tt)):
        raise ValueError(f"`t` must be finite; received {t!r}.")
    return tuple((int(a), int(b)) for a, b in sl), tuple(float(v) for v in tt)


def _check_width(name: str, factor_slices: tuple[tuple[int, int], ...] | None, x: np.ndarray) -> None:
    if not factor_slices:
        return
    n = factor_slices[-1][1]
    if x.shape[1] != 2 * n:
        raise ValueError(
            f"{name}: the points must have width 2n = {2 * n} for factor_slices "
            f"{[list(p) for p in factor_slices]}; received shape {x.shape}."
        )


def _unit_state(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B) = ([Re u, Im u], [Im u, -Re u])`` of the unit vectors ``u = z / |z|``."""
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    return (
        np.ascontiguousarray(np.concatenate([u.real, u.imag], axis=1)),
        np.ascontiguousarray(np.concatenate([u.imag, -u.real], axis=1)),
    )


@keras.saving.register_keras_serializable(package="cyntk")
class GaussianFSKernel(Kernel):
    """Exponential kernel in the Fubini-Study geodesic distance (paper eq. 3.6).

    Named "Gaussian" after the paper, but it computes ``exp(-d / (2 sigma))``:
    an *exponential* (Laplace-type) kernel of the FS distance ``d``, not
    ``exp(-d^2 / (2 sigma^2))``.

    ``Theta_IJ(x, x') = delta_IJ exp(-d(x, x') / (2 sigma))``, with
    ``d(z, z') = arccos sqrt(|z^dagger z'|^2 / (|z|^2 |z'|^2))`` the FS distance
    (paper eq. 3.2) of the complex points ``z = Re + i Im`` read from the real
    layout. Note the distance enters linearly (as printed in the paper), not
    squared. Distances below the noise floor of ``arccos`` are set to 0
    (:func:`cyntk.geometry.default_distance_threshold`, or ``threshold``).

    It does not promise to be positive semidefinite (``positive_semidefinite
    = False``): ``exp(-d)`` of a geodesic distance is positive definite on
    spheres and hyperbolic spaces, but no such theorem is known to us for the
    Fubini--Study distance of complex projective space, so flows with it rely
    on the positivity guard of :class:`~cyntk.flows.KernelModel`.

    **Products of projective spaces.** With ``factor_slices`` (or
    ``manifold=``, a :class:`~cyntk.geometry.CompleteIntersection`) the
    distance is the geodesic distance of the product metric ``sum_F t_F g_F``,
    ``d = sqrt(sum_F t_F d_F^2)`` with ``d_F`` the FS distance of factor F
    (:func:`cyntk.geometry.product_fs_distance_matrix`; the threshold applies
    to each factor). Without them the points are read as points of one
    projective space (the hypersurface case, unchanged). The tile API
    (``tile_state``/``tile_block``) and the XLA tile of
    :mod:`cyntk.flows.tf_tiles` compute the same product distance
    (``has_tf_tile`` stays True). :class:`~cyntk.flows.KernelModel` fills the
    layout from a product manifold when the kernel has none.

    Args:
        sigma: width (> 0); the paper uses 30.
        threshold: optional threshold on ``1 - cos^2 d`` below which d = 0.
        chunk_size: rows per chunk of the distance computation.
        factor_slices: optional int (m, 2) ``[start, end)`` of every projective
            factor (``CompleteIntersection.factor_slices``): use the product distance.
        t: positive weights (m,) of the factors (default: the manifold's
            ``kmoduli`` with ``manifold=``, else ones); needs ``factor_slices``.
        manifold: a :class:`~cyntk.geometry.CompleteIntersection` (anything with
            ``factor_slices`` and ``kmoduli``) instead of ``factor_slices``.

    Example:
        >>> k = GaussianFSKernel(sigma=30.0)
        >>> k(x1, x2).shape     # x1 (P1, 2N), x2 (P2, 2N)
        (P1, P2)
    """

    component_diagonal = True
    pairwise = True
    symmetric = True
    # exp(-lambda d) of a geodesic distance is positive definite only where d is
    # conditionally negative definite; not established here for CP^n.
    positive_semidefinite = False
    identity_on_same_points = False
    has_tile_api = True  # tile_state / tile_block give exactly _block
    has_tf_tile = True  # cyntk.flows.tf_tiles has _block as TensorFlow ops
    has_fused_tile_matvec = False
    has_matrix_free_matvec = False

    def __init__(
        self,
        sigma: float = 30.0,
        *,
        threshold: float | None = None,
        chunk_size: int | None = None,
        factor_slices: ArrayLike | None = None,
        t: ArrayLike | None = None,
        manifold: Any = None,
    ) -> None:
        self.sigma = positive_float(sigma, "sigma")
        self.threshold = None if threshold is None else nonnegative_float(threshold, "threshold")
        self.chunk_size = optional_chunk_size(chunk_size)
        self.factor_slices, self.t = _layout("GaussianFSKernel", factor_slices, t, manifold)

    @property
    def is_product(self) -> bool:
        """Whether the kernel uses the product distance (``factor_slices`` given)."""
        return self.factor_slices is not None

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"sigma": self.sigma, "threshold": self.threshold, "chunk_size": self.chunk_size}
        if self.factor_slices is not None:
            cfg["factor_slices"] = [list(p) for p in self.factor_slices]
            cfg["t"] = list(self.t or ())
        return cfg

    def _check_layout(self, x):
        _check_width("GaussianFSKernel", self.factor_slices, x)

    def distance(self, x1: ArrayLike, x2: ArrayLike | None = None) -> np.ndarray:
        """FS (product) geodesic distances (P1, P2) of real points, float64."""
        p1, _ = self._points(x1, "x1")
        p2 = None if x2 is None else self._points(x2, "x2")[0]
        if p2 is not None:
            matching_widths(p1, p2)
        return self._distance(p1, p2)

    def _distance(self, x1, x2):
        z1 = _complex_points(x1, "x1")
        z2 = None if x2 is None else _complex_points(x2, "x2")
        if self.factor_slices is not None:
            self._check_layout(x1)
            d = product_fs_distance_matrix(z1, z2, self.factor_slices, self.t, threshold=self.threshold)
        else:
            d = fs_distance_matrix(z1, z2, chunk_size=self.chunk_size or _DEFAULT_CHUNK, threshold=self.threshold)
        if z2 is None:  # exactly symmetric (the matrix product is not)
            d = 0.5 * (d + d.T)
        return d

    def _block(self, x1, x2):
        if self.factor_slices is not None:
            return self._product_block(x1, x2)
        s1 = self.tile_state(x1)
        s2 = None if x2 is None else self.tile_state(x2)
        rows = self.chunk_size or _DEFAULT_CHUNK
        n2 = len(x1) if x2 is None else len(x2)
        if x2 is None and len(x1) <= rows:
            return self.tile_block(s1)
        c2 = np.empty((len(x1), n2))
        for s in range(0, len(x1), rows):  # squared overlaps, row chunk by row chunk
            c2[s : s + rows] = self._overlap2(tuple(a[s : s + rows] for a in s1), s1 if s2 is None else s2)
        if x2 is None:
            self._symmetrise(c2)
        for s in range(0, len(x1), rows):
            self._from_overlap2(c2[s : s + rows])
        return c2

    # tiled evaluation (cyntk.flows.product.KernelProduct): per-point state computed once
    def tile_state(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-point state of real points (P, 2N): ``(A, B)`` with ``A = [Re u, Im u]`` and
        ``B = [Im u, -Re u]`` for the unit vectors ``u = z / |z|``, so that
        ``u^dagger u' = A A'^T + i A B'^T``; with ``factor_slices``, one such pair per
        factor (``(A_1, B_1, ..., A_m, B_m)``, unit vectors of every factor).
        """
        z = _complex_points(np.asarray(x, dtype=np.float64), "x")
        if self.factor_slices is not None:  # one (A, B) pair per factor
            self._check_layout(np.asarray(x))
            out: list[np.ndarray] = []
            for s, e in self.factor_slices:
                out.extend(_unit_state(z[:, s:e]))
            return tuple(out)
        return _unit_state(z)

    def tile_block(self, state1: tuple[np.ndarray, ...], state2: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        """Block (P1, P2) between two (sliced) states of :meth:`tile_state`; ``state2=None``: same set."""
        if self.factor_slices is not None:
            return self._product_tile(state1, state2)
        c2 = self._overlap2(state1, state1 if state2 is None else state2)
        if state2 is None:
            self._symmetrise(c2)
        return self._from_overlap2(c2)

    # products of projective spaces: d^2 = sum_F t_F d_F^2
    def _product_tile(self, state1, state2):
        """``exp(-sqrt(sum_F t_F d_F^2) / (2 sigma))`` from per-factor (A, B) states."""
        d2 = None
        for f, tf_ in enumerate(self.t or ()):
            a = state1[2 * f : 2 * f + 2]
            c2 = self._overlap2(a, a if state2 is None else state2[2 * f : 2 * f + 2])
            if state2 is None:
                self._symmetrise(c2)
            self._distance_from_overlap2(c2)  # d_F
            np.multiply(c2, c2, out=c2)
            c2 *= tf_
            if d2 is None:
                d2 = c2
            else:
                d2 += c2
        assert d2 is not None
        return self._from_distance2(d2)

    def _product_block(self, x1, x2):
        s1 = self.tile_state(x1)
        if x2 is None:
            return self._product_tile(s1, None)  # symmetric: whole per-factor matrices
        s2 = self.tile_state(x2)
        rows = self.chunk_size or _DEFAULT_CHUNK
        out = np.empty((len(x1), len(x2)))
        for s in range(0, len(x1), rows):
            out[s : s + rows] = self._product_tile(tuple(a[s : s + rows] for a in s1), s2)
        return out

    def _from_distance2(self, d2):
        """``exp(-sqrt(d2) / (2 sigma))`` in place."""
        np.sqrt(d2, out=d2)
        d2 *= -0.5 / self.sigma
        np.exp(d2, out=d2)
        return d2

    @staticmethod
    def _overlap2(state1, state2):
        """``|u1^dagger u2|^2`` (P1, P2) with two real GEMMs, into the first one's output."""
        a1, b2 = state1[0], state2[1]
        re = a1 @ state2[0].T
        im = a1 @ b2.T
        np.multiply(re, re, out=re)
        np.multiply(im, im, out=im)
        re += im
        return re

    @staticmethod
    def _symmetrise(c2):
        """Exactly symmetric squared overlaps of a set with itself, 1 on the diagonal."""
        c2 += c2.T.copy()
        c2 *= 0.5
        np.fill_diagonal(c2, 1.0)

    def _from_overlap2(self, c2):
        """``exp(-arccos(sqrt(c2)) / (2 sigma))`` in place (c2 clipped to [0, 1]; pairs with
        ``1 - c2 < threshold`` get distance 0, see :func:`cyntk.geometry.default_distance_threshold`)."""
        self._distance_from_overlap2(c2)
        c2 *= -0.5 / self.sigma
        np.exp(c2, out=c2)
        return c2

    def _distance_from_overlap2(self, c2):
        """``arccos(sqrt(c2))`` in place, with the clipping and threshold of :meth:`_from_overlap2`."""
        thr = default_distance_threshold() if self.threshold is None else self.threshold
        np.minimum(c2, 1.0, out=c2)  # c2 = re^2 + im^2 >= 0
        if thr > 0.5:
            close = (1.0 - c2) < thr
            c2[close] = 1.0
        elif c2.max(initial=0.0) > (lim := _overlap_limit(thr)):  # rare: (near-)duplicates
            c2[c2 > lim] = 1.0  # arccos(sqrt(1)) = 0 exactly
        np.sqrt(c2, out=c2)
        np.arccos(c2, out=c2)  # the FS distance d
        return c2


@keras.saving.register_keras_serializable(package="cyntk")
class DeltaKernel(Kernel):
    """Nearest-neighbour ("Delta") kernel in the Fubini-Study distance.

    ``Theta_IJ(x, x2[b]) = delta_IJ [b = argmin_c d(x, x2[c])]``: each point of
    ``x1`` takes the value of its nearest point of ``x2`` (FS geodesic distance,
    paper eq. 3.2), so ``kernel.matvec(x, x_train, v)`` copies the vector of the
    nearest training point. Every row of the block is one-hot; ties are broken by
    :func:`cyntk.geometry.fs_nearest`. With ``x2 = None`` (``x2 = x1``) every point
    is its own nearest neighbour and the block is the identity.

    With ``factor_slices`` (or ``manifold=``) "nearest" is in the product FS
    distance ``sqrt(sum_F t_F d_F^2)`` of a product of projective spaces (ties:
    the first index), as for :class:`GaussianFSKernel`.

    Args:
        threshold: optional threshold on ``1 - cos^2 d`` below which d = 0.
        chunk_size: query rows per chunk of the neighbour search.
        factor_slices: optional int (m, 2) ``[start, end)`` of every projective factor.
        t: positive weights (m,) of the factors (default: the manifold's ``kmoduli``, else ones).
        manifold: a :class:`~cyntk.geometry.CompleteIntersection` instead of ``factor_slices``.
    """

    component_diagonal = True
    pairwise = False  # a row's entry depends on all of x2 (its nearest point)
    symmetric = False  # nearest neighbours are not mutual
    positive_semidefinite = True  # kernel(x, None) is the identity
    identity_on_same_points = True
    has_tile_api = False
    has_fused_tile_matvec = False
    has_matrix_free_matvec = True  # matvec copies the nearest neighbour's vector
    has_tf_tile = False  # not pairwise: the engine calls matvec

    def __init__(
        self,
        *,
        threshold: float | None = None,
        chunk_size: int | None = None,
        factor_slices: ArrayLike | None = None,
        t: ArrayLike | None = None,
        manifold: Any = None,
    ) -> None:
        self.threshold = None if threshold is None else nonnegative_float(threshold, "threshold")
        self.chunk_size = optional_chunk_size(chunk_size)
        self.factor_slices, self.t = _layout("DeltaKernel", factor_slices, t, manifold)

    @property
    def is_product(self) -> bool:
        """Whether the kernel uses the product distance (``factor_slices`` given)."""
        return self.factor_slices is not None

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"threshold": self.threshold, "chunk_size": self.chunk_size}
        if self.factor_slices is not None:
            cfg["factor_slices"] = [list(p) for p in self.factor_slices]
            cfg["t"] = list(self.t or ())
        return cfg

    def nearest(self, x1: ArrayLike, x2: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(distances (P1,), indices (P1,))`` of the nearest point of ``x2``."""
        p1, _ = self._points(x1, "x1")
        p2, _ = self._points(x2, "x2")
        matching_widths(p1, p2)
        return self._nearest(p1, p2)

    def _nearest(self, x1, x2):
        if self.factor_slices is not None:
            _check_width("DeltaKernel", self.factor_slices, x1)
            z1, z2 = _complex_points(x1, "x1"), _complex_points(x2, "x2")
            rows = self.chunk_size or _DEFAULT_CHUNK
            dist, near = np.empty(len(z1)), np.empty(len(z1), dtype=np.int64)
            for s in range(0, len(z1), rows):
                d = product_fs_distance_matrix(
                    z1[s : s + rows], z2, self.factor_slices, self.t, threshold=self.threshold
                )
                near[s : s + rows] = np.argmin(d, axis=1)
                dist[s : s + rows] = d[np.arange(len(d)), near[s : s + rows]]
            return dist, near
        d, idx = fs_nearest(
            _complex_points(x1, "x1"),
            _complex_points(x2, "x2"),
            k=1,
            exclude_self=False,
            chunk_size=self.chunk_size or _DEFAULT_CHUNK,
            threshold=self.threshold,
        )
        return d[:, 0], idx[:, 0]

    def _block(self, x1, x2):
        if x2 is None:
            return np.eye(len(x1))
        _, idx = self._nearest(x1, x2)
        out = np.zeros((len(x1), len(x2)))
        out[np.arange(len(x1)), idx] = 1.0
        return out

    def matvec(self, x1: ArrayLike, x2: ArrayLike, v: ArrayLike, *, chunk_size: int | None = None) -> np.ndarray:
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
