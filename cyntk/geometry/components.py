"""The n*n real components of a hermitian n x n metric (cymetric's order).

cymetric turns n**2 real network outputs ``o`` into a hermitian matrix by
reshaping them row-major into a real matrix ``A[r, c] = o[n*r + c]`` and setting
(conventions §6.1)::

    H[r, r] = A[r, r]
    H[r, c] = A[r, c] - i A[c, r]    (r < c)
    H[r, c] = A[c, r] + i A[r, c]    (r > c)

The inverse, used everywhere in cyntk to index metric components with one
multi-index ``I = n*r + c``, is therefore::

    o[n*r + c] = Re H[r, c]   if r <= c
    o[n*r + c] = Im H[r, c]   if r >  c

For n = 3 the components are ``(Re g00, Re g01, Re g02, Im g10, Re g11, Re g12,
Im g20, Im g21, Re g22)``. Every kernel in cyntk is indexed ``Theta[a, b, I, J]``
with this ``I``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "hermitian_index_tables",
    "hermitian_from_components",
    "components_from_hermitian",
    "component_labels",
]


def hermitian_index_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gather tables that build ``H`` from the components.

    Args:
        n: matrix size (complex dimension of the manifold), ``n >= 1``.

    Returns:
        ``(re_index, im_index, im_sign)``, each an int64/float64 array of shape
        (n, n), such that ``H[r, c] = o[re_index[r, c]] + 1j * im_sign[r, c] *
        o[im_index[r, c]]`` (``im_sign`` is 0 on the diagonal).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"`n` must be a positive integer (matrix size); received n={n}.")
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    lo, hi = np.minimum(r, c), np.maximum(r, c)
    re_index = n * lo + hi  # A[min, max] is the real part
    im_index = n * hi + lo  # A[max, min] is the imaginary part of H[max, min]
    im_sign = np.sign(r - c).astype(np.float64)  # +1 below the diagonal, -1 above
    return re_index.astype(np.int64), im_index.astype(np.int64), im_sign


def hermitian_from_components(o: ArrayLike) -> np.ndarray:
    """Build hermitian matrices from their real components (NumPy).

    Args:
        o: real array of shape (..., n*n).

    Returns:
        complex128 array of shape (..., n, n).
    """
    o = np.asarray(o)
    m = o.shape[-1]
    n = int(round(np.sqrt(m)))
    if n * n != m:
        raise ValueError(f"`o` must have n*n components in its last axis; received last axis {m}.")
    re_i, im_i, sign = hermitian_index_tables(n)
    return o[..., re_i] + 1j * sign * o[..., im_i]


def components_from_hermitian(g: ArrayLike) -> np.ndarray:
    """Real components of hermitian matrices (NumPy), inverse of
    :func:`hermitian_from_components`.

    Args:
        g: complex array of shape (..., n, n). Only the upper triangle's real
            parts and the strict lower triangle's imaginary parts are read.

    Returns:
        real array of shape (..., n*n).
    """
    g = np.asarray(g)
    if g.ndim < 2 or g.shape[-1] != g.shape[-2]:
        raise ValueError(f"`g` must have shape (..., n, n); received shape {g.shape}.")
    n = g.shape[-1]
    lower = np.tril(np.ones((n, n), bool), -1)
    out = np.where(lower, g.imag, g.real)
    return out.reshape(g.shape[:-2] + (n * n,))


def component_labels(n: int) -> list[str]:
    """Human-readable names of the components, e.g. ``'Re g01'``, ``'Im g10'``."""
    return [f"{'Re' if r <= c else 'Im'} g{r}{c}" for r in range(n) for c in range(n)]
