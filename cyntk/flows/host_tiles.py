"""Fused NumPy tiles for CPUs: the Gaussian-FS kernel's entries and contraction in few passes.

:class:`~cyntk.flows.tf_product.TFKernelProduct` evaluates a kernel product
tile by tile. On a CPU, for the Gaussian-FS kernel, its cheapest tile is not
an XLA computation (XLA's CPU code for the ``sqrt``/``arccos``/``exp`` chain and
the thin GEMMs measured 1.5-2x slower than NumPy's vectorised ufuncs and
OpenBLAS) but this NumPy one, which needs half the passes over the tile of the
kernel's own :meth:`~cyntk.kernels.fs.GaussianFSKernel.tile_block`:

* **one GEMM** gives ``x = 2 c2 - 1 = cos(2 d)`` directly. The squared overlap
  of unit vectors is the Frobenius product of their projectors,
  ``c2 = |u^dagger u'|^2 = <u u^dagger, u' u'^dagger>``, a real dot product of
  ``n^2`` features per point (``|u_i|^2``, ``Re``/``Im`` of ``u_i conj(u_j)``, i < j)
  computed once per point set; a constant feature folds in the ``- 1``;
* ``d = arccos(sqrt(c2)) = arccos(x) / 2`` (no ``sqrt`` pass: ``cos 2d = 2 cos^2 d - 1``),
  then ``exp(-d / (2 sigma))``: three ufunc passes in place;
* the clipping to ``[-1, 1]`` and the kernel's threshold (pairs with
  ``1 - c2 < threshold`` are at distance 0) touch the tile only when its
  largest or smallest entry needs it (a duplicate pair, the diagonal tiles);
* the two contractions ``K v2`` and ``K^T v1`` (BLAS).

On products of projective spaces (``factor_slices``) the same per factor, then
``exp(-sqrt(sum_F t_F d_F^2) / (2 sigma))``.

The entries agree with the kernel's ``tile_block`` to rounding (measured within
1e-14 relative; the GEMM sums different products than the kernel's two GEMMs).
Finite points give finite features, and finite features bounded by 1 give
finite entries, so the state is checked once per point set instead of every tile.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import numpy as np

from cyntk.geometry import default_distance_threshold, to_complex
from cyntk.kernels.fs import GaussianFSKernel, _overlap_limit

__all__ = ["HostTile", "host_tile", "projector_features"]


def projector_features(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(F, G)`` (P, n^2 + 1) of unit vectors ``u`` (P, n) with ``F G'^T = 2 |u^dagger u'|^2 - 1``.

    ``F = [|u_i|^2, 2 Re(u_i conj u_j), 2 Im(u_i conj u_j), 1]`` and
    ``G = [2 |u_i|^2, 2 Re(...), 2 Im(...), -1]`` (i < j): the Frobenius
    product of the projectors ``u u^dagger``, doubled, minus 1 (every scaling
    a power of two, exact).
    """
    u = np.asarray(u)
    i, j = np.triu_indices(u.shape[1], 1)
    p = u[:, i] * np.conj(u[:, j])
    diag = u.real**2 + u.imag**2
    one = np.ones((len(u), 1))
    f = np.concatenate([diag, 2.0 * p.real, 2.0 * p.imag, one], axis=1)
    g = np.concatenate([2.0 * diag, 2.0 * p.real, 2.0 * p.imag, -one], axis=1)
    return np.ascontiguousarray(f), np.ascontiguousarray(g)


@dataclasses.dataclass(frozen=True)
class HostTile:
    """A kernel's fused NumPy tile.

    Attributes:
        state: ``state(x)`` -> tuple of float64 arrays with the points on the
            first axis (computed once per point set; raises on non-finite points).
        matvec: ``matvec(state1, state2, v2, v1, diag)`` -> ``(K v2, K^T v1 or None)``
            of one tile (``diag``: a diagonal tile of a set with itself,
            ``state2 is state1``, exactly symmetric; ``v1`` None: ``u2`` not wanted).
    """

    state: Callable
    matvec: Callable


def _gaussian_tile(kernel: GaussianFSKernel) -> HostTile:
    thr = default_distance_threshold() if kernel.threshold is None else float(kernel.threshold)
    # 1 - c2 < thr  <=>  x = 2 c2 - 1 > 1 - 2 thr; for thr <= 1/2 the kernel's exact limit c2 > lim
    # (2 lim - 1 is exact for lim in [1/2, 1])
    x_lim = 2.0 * _overlap_limit(thr) - 1.0 if thr <= 0.5 else 1.0 - 2.0 * thr
    slices = getattr(kernel, "factor_slices", None)
    weights = tuple(getattr(kernel, "t", None) or ()) if slices is not None else (1.0,)
    name = type(kernel).__name__
    if slices is None:
        scale = -0.25 / kernel.sigma  # exp(-d / (2 sigma)), d = arccos(x) / 2
    else:
        scale = -0.5 / kernel.sigma

    def state(x):
        z = to_complex(np.asarray(x, dtype=np.float64))
        if slices is not None:
            kernel._check_layout(np.asarray(x))
        out: list[np.ndarray] = []
        for s, e in slices if slices is not None else ((0, z.shape[1]),):
            zf = z[:, s:e]
            with np.errstate(invalid="ignore", divide="ignore"):  # zero vectors: checked below
                u = zf / np.linalg.norm(zf, axis=1, keepdims=True)
            out.extend(projector_features(u))
        if not all(np.all(np.isfinite(a)) for a in out):
            bad = int(np.flatnonzero(~np.all(np.isfinite(np.concatenate(out, axis=1)), axis=1))[0])
            raise ValueError(
                f"kernel {name} cannot evaluate point {bad}: it is not finite or has a zero "
                "(factor of its) complex coordinate vector."
            )
        return tuple(out)

    buffers = threading.local()

    def buffer(shape, slot):
        """This thread's reused (t1, t2) tile buffer: a fresh 512 KiB array per tile costs page faults
        (glibc hands such blocks back to the system), which doubled the tile's CPU time in worker processes."""
        cache = buffers.__dict__.setdefault("arrays", {})
        buf = cache.get((shape, slot))
        if buf is None:
            buf = cache[(shape, slot)] = np.empty(shape)
        return buf

    def cos2d(f, g, diag, slot=0):
        """``x = cos 2d`` of the tile, clipped to [-1, 1], 1 where the threshold sets d = 0."""
        x = np.matmul(f, g.T, out=buffer((len(f), len(g)), slot))
        if diag:  # exactly symmetric, 1 on the diagonal (GaussianFSKernel._symmetrise)
            x += x.T.copy()
            x *= 0.5
            np.fill_diagonal(x, 1.0)
        if x.max() > x_lim:  # rare off the diagonal: (near-)duplicate points
            x[x > x_lim] = 1.0
        if x.min() < -1.0:
            np.maximum(x, -1.0, out=x)
        return x

    if slices is None:

        def block(s1, s2, diag):
            x = cos2d(s1[0], s2[1], diag)
            np.arccos(x, out=x)  # 2d
            x *= scale
            return np.exp(x, out=x)

    else:

        def block(s1, s2, diag):
            d2 = None
            for f, w in enumerate(weights):
                x = cos2d(s1[2 * f], s2[2 * f + 1], diag, min(f, 1))
                np.arccos(x, out=x)  # 2 d_F
                np.multiply(x, x, out=x)
                x *= 0.25 * w  # t_F d_F^2
                if d2 is None:
                    d2 = x
                else:
                    d2 += x
            assert d2 is not None
            np.sqrt(d2, out=d2)
            d2 *= scale
            return np.exp(d2, out=d2)

    def matvec(s1, s2, v2, v1, diag):
        k = block(s1, s2, diag)  # this thread's buffer: contracted before the thread's next tile
        return k @ v2, None if v1 is None else k.T @ v1

    return HostTile(state, matvec)


def host_tile(kernel) -> HostTile | None:
    """The fused NumPy tile of a kernel, or None (the engine then uses the kernel's own tile API).

    Only Gaussian-FS kernels whose class declares its tiles (``has_tf_tile``
    and :attr:`~cyntk.kernels.base.Kernel.supports_tiles`: a subclass that
    replaces the block loses them) have one.
    """
    if (
        isinstance(kernel, GaussianFSKernel)
        and getattr(kernel, "has_tf_tile", False)
        and getattr(kernel, "supports_tiles", False)
    ):
        return _gaussian_tile(kernel)
    return None
