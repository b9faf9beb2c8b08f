"""Real local coordinates of a chart, points from them, and densities of measures in them.

In the chart (patch k, eliminated j) of a hypersurface the real local
coordinates are ``u = [Re x^a, Im x^a]`` with ``x^a = z_{g_a}/z_k`` for the
coordinates other than k and j (cyntk's chart conventions, see the
documentation page *Conventions*). cymetric's Monte-Carlo measure is
``mu_CY = n! |Omega|^2 d^{2n}u`` there; the input space (the real network
inputs ``[Re z, Im z]``) induces the volume ``det(J J^H) d^{2n}u``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from cyntk._validation import as_real_points, one_of, positive_float, positive_int
from cyntk.geometry.hypersurface import Hypersurface
from cyntk.geometry.projective import to_complex, to_real

__all__ = ["chart_coordinates", "points_from_chart", "measure_density", "SPACES"]

#: Reference measures of :func:`measure_density` (and where a Gaussian's distance is measured).
SPACES = ("input", "chart")


def _complex_pts(x: ArrayLike, name: str = "x", ncoords: int | None = None) -> np.ndarray:
    arr = as_real_points(x, name)
    if arr.shape[1] % 2 or (ncoords is not None and arr.shape[1] != 2 * ncoords):
        want = "(P, 2N) with an even width" if ncoords is None else f"(P, 2N) = (P, {2 * ncoords})"
        raise ValueError(
            f"`{name}` must be real points of shape {want} in cymetric's layout "
            f"[Re z, Im z]; received shape {arr.shape}."
        )
    return to_complex(arr)


def _check_manifold(manifold: object) -> Hypersurface:
    if not isinstance(manifold, Hypersurface):
        raise TypeError(
            f"`manifold` must be a cyntk.geometry.Hypersurface (e.g. "
            f"cyntk.geometry.get_manifold('cubic')); received {type(manifold).__name__}."
        )
    return manifold


def _check_chart(chart: ArrayLike, ncoords: int) -> tuple[int, ...]:
    """``(k, j)``: two distinct coordinate indices in [0, N)."""
    try:
        c = tuple(int(v) for v in np.asarray(chart).reshape(-1))
        ok = np.asarray(chart).size == 2
    except (TypeError, ValueError):
        ok = False
    if not ok or not (0 <= c[0] < ncoords and 0 <= c[1] < ncoords) or c[0] == c[1]:
        raise ValueError(
            f"`chart` must be a pair (patch k, eliminated j) of distinct coordinate indices in "
            f"[0, {ncoords}); received {chart!r}."
        )
    return c


def _check_patch(manifold: Hypersurface, z: np.ndarray, chart: Sequence[int], name: str) -> None:
    """Raise unless every point has its patch coordinate (the one equal to 1) at chart[0]."""
    k = manifold.patch_index(z)
    if np.any(k != chart[0]):
        bad = int(np.flatnonzero(k != chart[0])[0])
        raise ValueError(
            f"`{name}` must be points of patch k = {chart[0]} (z_k = 1) to be written in chart "
            f"{tuple(chart)}; point {bad} has z_{int(k[bad])} = 1."
        )


def chart_coordinates(x: ArrayLike, chart: Sequence[int]) -> np.ndarray:
    """Real local coordinates ``u = [Re x^a, Im x^a]`` (P, 2n) of points in a chart.

    ``x^a = z_{g_a} / z_k`` for the n coordinates ``g_0 < ... < g_{n-1}`` other
    than the patch k and the eliminated j (conventions §3); real parts first,
    then imaginary parts.

    Args:
        x: (P, 2N) real points ``[Re z, Im z]`` (any scaling: the affine
            coordinates divide by z_k).
        chart: (patch k, eliminated j).

    Returns:
        float64 (P, 2n).
    """
    z = _complex_pts(x)
    N = z.shape[1]
    k, j = _check_chart(chart, N)
    good = [i for i in range(N) if i not in (k, j)]
    zk = z[:, k][:, None]
    xa = z[:, good] / zk
    return np.concatenate([xa.real, xa.imag], axis=1)


def points_from_chart(
    manifold: Hypersurface,
    u: ArrayLike,
    chart: Sequence[int],
    z_start: ArrayLike,
    *,
    newton_steps: int = 30,
    tol: float = 1e-13,
) -> tuple[np.ndarray, np.ndarray]:
    """Points of X with given local coordinates u in a chart (Newton on the eliminated coordinate).

    Args:
        manifold: the hypersurface.
        u: (P, 2n) real local coordinates.
        chart: (k, j).
        z_start: (P, N) complex starting points (their z_j starts Newton).
        newton_steps, tol: Newton iterations and relative tolerance on |Q|.

    Returns:
        ``(x, ok)``: real points (P, 2N) with z_k = 1 (the chart's affine
        coordinates; other coordinates may exceed 1 in modulus near the edge of
        the patch) and a bool mask of the points where Newton converged.
    """
    manifold = _check_manifold(manifold)
    newton_steps = positive_int(newton_steps, "newton_steps")
    tol = positive_float(tol, "tol")
    N, n = manifold.ncoords, manifold.nfold
    k, j = _check_chart(chart, N)
    u = as_real_points(u, "u")
    if u.shape[1] != 2 * n:
        raise ValueError(
            f"`u` must be real chart coordinates of shape (P, 2n) = (P, {2 * n}) "
            f"[Re x^a, Im x^a]; received shape {u.shape}."
        )
    z0 = np.asarray(z_start)
    if not np.iscomplexobj(z0) and z0.ndim == 2 and z0.shape[1] == 2 * N:
        z0 = to_complex(z0)
    z0 = z0.astype(np.complex128)
    if z0.shape != (len(u), N):
        raise ValueError(
            f"`z_start` must be complex starting points of shape (P, N) = ({len(u)}, {N}) (or "
            f"real (P, 2N)), one per row of `u`; received shape {np.shape(z_start)}."
        )
    if not np.all(np.isfinite(z0)) or np.any(z0[:, k] == 0):
        raise ValueError(f"`z_start` must be finite with z_k != 0 (k = {k}); received other values.")
    P = len(u)
    good = [i for i in range(N) if i not in (k, j)]
    z = np.zeros((P, N), dtype=np.complex128)
    z[:, k] = 1.0
    z[:, good] = u[:, :n] + 1j * u[:, n:]
    z[:, j] = z0[:, j] / z0[:, k]
    for _ in range(newton_steps):
        q = manifold.Q(z)
        dq = manifold.dQdz(z)[:, j]
        with np.errstate(all="ignore"):
            step = q / dq
        z[:, j] = z[:, j] - np.where(np.isfinite(step), step, 0.0)
        if np.all(np.abs(q) <= tol * np.maximum(manifold.monomial_scale(z), 1e-300)):
            break
    with np.errstate(all="ignore"):
        res = np.abs(manifold.Q(z)) / manifold.monomial_scale(z)
    ok = np.isfinite(res) & (res < 1e-10) & np.all(np.isfinite(z), axis=1)
    z[~ok] = np.where(np.isfinite(z[~ok]), z[~ok], 0.0)
    return to_real(z), ok


def measure_density(
    manifold: Hypersurface,
    x: ArrayLike,
    chart: Sequence[int] | None = None,
    *,
    measure: Literal["cy"] = "cy",
    reference: Literal["input", "chart"] = "input",
) -> np.ndarray:
    """Density of a measure with respect to a reference measure, at points x.

    Args:
        manifold: the hypersurface.
        x: (P, 2N) real points (patch-normalised).
        chart: optional (k, j) to evaluate in (default: each point's own chart).
        measure: ``"cy"`` (cymetric's mu_CY, ``n! |Omega|^2 d^{2n}u``).
        reference: ``"input"`` (volume induced by the input space, ``det(J J^H)
            d^{2n}u``) or ``"chart"`` (Lebesgue ``d^{2n}u``).

    Returns:
        float64 (P,) ``d measure / d reference``: ``n! |Omega|^2 / det(J J^H)``
        ("input") or ``n! |Omega|^2`` ("chart"), with Omega and J of the chart.
    """
    manifold = _check_manifold(manifold)
    one_of(measure, "measure", ("cy",))
    one_of(reference, "reference", SPACES)
    z = _complex_pts(x, ncoords=manifold.ncoords)
    j = None
    if chart is not None:
        chart = _check_chart(chart, manifold.ncoords)
        _check_patch(manifold, z, chart, "x")
        j = np.full(len(z), chart[1])
    geo = manifold.geometry(z, j_elim=j)
    n = manifold.nfold
    dens = math.factorial(n) * geo["omega_sq"]
    if reference == "input":
        J = geo["pullbacks"]
        h = J @ np.conj(np.swapaxes(J, 1, 2))
        dens = dens / np.real(np.linalg.det(h))
    return dens
