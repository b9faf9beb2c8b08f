"""Checking that points lie on the variety where they enter cyntk.

Points off the variety do not raise by themselves: weights, |Omega|^2 and
kappa computed at them are simply wrong (random patch-normalised points give
weights of hundreds and kappa off by a factor 20). Every public entry point
that takes points therefore checks the *relative residual*

    r(z) = |Q(z)| / sum_m |c_m z^{M_m}|,

which is scale-free (invariant under z -> lambda z) and about 1e-16 for
points cyntk samples, about 1e-7 for the same points rounded to float32, and
of order 0.1-1 for points that are not on the variety.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from cyntk.geometry.cicy import CompleteIntersection
    from cyntk.geometry.hypersurface import Hypersurface

__all__ = ["VARIETY_TOL", "FILE_VARIETY_TOL", "relative_residual", "check_on_variety"]

#: Default tolerance on the relative residual at entry points (float32 points pass).
VARIETY_TOL = 1e-4
#: Tolerance for float64 points read from dataset files.
FILE_VARIETY_TOL = 1e-8


def relative_residual(manifold: Hypersurface | CompleteIntersection, z: ArrayLike) -> np.ndarray:
    """``|Q(z)| / sum_m |c_m z^m|`` (P,) float64 (the largest over the equations, if several).

    Args:
        manifold: a ``Hypersurface`` (``Q`` and ``monomial_scale``) or any
            object with a ``relative_residual(z)`` method.
        z: complex (P, N) points.
    """
    own = getattr(manifold, "relative_residual", None)
    if callable(own):
        return np.asarray(own(z), dtype=np.float64)
    mono, coef = getattr(manifold, "monomials", None), getattr(manifold, "coefficients", None)
    if (
        isinstance(mono, np.ndarray)
        and mono.ndim == 2
        and isinstance(coef, np.ndarray)
        and coef.ndim == 1
        and np.ndim(z) == 2
    ):
        # one pass over the terms c_m z^M_m gives both |Q| and the scale sum_m |c_m z^M_m|
        terms = _terms(np.asarray(z, dtype=np.complex128), np.asarray(mono, dtype=np.int64)) * coef
        q, scale = np.abs(terms.sum(axis=1)), np.abs(terms).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(scale > 0, q / np.where(scale > 0, scale, 1.0), np.where(q > 0, np.inf, 0.0))
    q = np.abs(np.asarray(manifold.Q(z)))
    scale = np.asarray(manifold.monomial_scale(z), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(scale > 0, q / np.where(scale > 0, scale, 1.0), np.where(q > 0, np.inf, 0.0))
    if r.ndim > 1:
        r = r.max(axis=tuple(range(1, r.ndim)))
    return r.astype(np.float64)


def check_on_variety(
    manifold: Hypersurface | CompleteIntersection, z: np.ndarray, name: str = "z", tol: float | None = None
) -> np.ndarray:
    """Raise unless every point of ``z`` lies on ``manifold``.

    Args:
        manifold: the variety (see :func:`relative_residual`).
        z: complex (P, N) points (already validated by ``as_points``).
        name: the argument's name, used in the message.
        tol: largest accepted relative residual (default :data:`VARIETY_TOL`).

    Returns:
        the relative residuals (P,).

    Raises:
        ValueError: naming ``name``, the tolerance, the worst residual, how
            many points fail, and the opt-out.
    """
    tol = VARIETY_TOL if tol is None else float(tol)
    if len(z) == 0:
        return np.zeros(0)
    r = relative_residual(manifold, z)
    bad = ~(r <= tol)
    if np.any(bad):
        label = getattr(manifold, "name", type(manifold).__name__)
        worst = float(np.max(np.where(np.isnan(r[bad]), np.inf, r[bad])))
        raise ValueError(
            f"`{name}`: {int(bad.sum())} of {len(r)} point(s) are not on the variety {label!r}: relative "
            f"residual |Q(z)|/sum_m|c_m z^m| up to {worst:.3g} "
            f"(first bad point at index {int(np.argmax(bad))}; tolerance {tol:g}). Geometry computed there "
            f"(weights, |Omega|^2, kappa) would be wrong. Sample points with `sample_points`, put "
            f"perturbed points back with `project`, or pass `check_variety=False` if you know what "
            f"you are doing."
        )
    return r


def _terms(z: np.ndarray, mono: np.ndarray) -> np.ndarray:
    """``prod_l z_l**mono[m, l]`` (P, M) from a table of powers (cheaper than complex ``np.power``)."""
    P, N = z.shape
    d = int(mono.max()) if mono.size else 0
    table = np.empty((d + 1, P, N), dtype=np.complex128)
    table[0] = 1.0
    for k in range(1, d + 1):
        table[k] = table[k - 1] * z
    terms = np.ones((P, len(mono)), dtype=np.complex128)
    for col in range(N):
        terms *= table[mono[:, col], :, col].T
    return terms
