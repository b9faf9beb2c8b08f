"""Complete intersections in products of projective spaces, in cymetric's conventions.

A :class:`CompleteIntersection` is X = {Q_1 = ... = Q_K = 0} in
A = P^{n_1} x ... x P^{n_m}, each Q_k multi-homogeneous of multidegree
``configuration[:, k]``. It is Calabi-Yau when ``sum_k configuration[F, k] =
n_F + 1`` for every factor F. Homogeneous coordinates are concatenated factor by
factor (factor F occupies ``factor_slices[F]``). A hypersurface in one P^n
(:class:`~cyntk.geometry.Hypersurface`) is the case K = 1, m = 1, computed by the
same code. Every convention follows cymetric 40efeba (see the reference data
sheets in ``shared/reference``):

* patch normalisation per factor: ``z_F <- z_F / z_F[argmax |z_F|]`` (one
  coordinate equal to 1 in each factor, the *one index* of that factor);
* eliminated coordinates, greedily equation by equation: ``j_k = argmax |dQ_k/dz_j|``
  over the coordinates that are neither a one index nor already eliminated;
* local coordinates: the remaining ``nfold`` coordinates in ascending order;
* pullback ``J[a, i] = dz_i/dx_a``: identity on the local coordinates, 0 on the
  one indices and ``J[a, j_l] = -(B^{-1} dQ/dx_a)_l`` with ``B[k, l] =
  dQ_k/dz_{j_l}`` (implicit differentiation of all equations);
* ``Omega = 1/det B``;
* Fubini-Study metric of the product: block diagonal, block F =
  ``(t_F/pi)(delta/|z_F|^2 - conj(z_F) z_F^T/|z_F|^4)``, pulled back by J;
* weights ``w = c |Omega|^2 / mean_m D_m`` with D_m the mixed determinant of the
  pulled-back unit FS metrics, factor F repeated ``n_F - t_m[F]`` times, for every
  free-parameter assignment ``t_m`` of :attr:`all_ts` (cymetric's rule), and
  ``c = nfold! * mean_m d_m`` where ``d_m = int_X prod_F J_F^{n_F - t_m[F]}`` is the
  expected number of points on a random plane of assignment m. For the sampling of
  :mod:`cyntk.geometry.cicy_sampling` (every assignment drawn with equal
  probability per plane, all intersection points kept) this makes
  ``mean(w h/|Omega|^2)`` an unbiased estimate of ``int_X h`` in the units
  ``int_X J_t^n = sum d_{abc..} t_a t_b t_c..``. Whenever the ratio
  ``det G(t=1) / mean_m D_m`` is constant on X (one factor, P^1 x ... x P^1,
  P^2 x P^2, ...) c equals cymetric's data-dependent normalisation exactly
  (12 for the tetraquadric, 54 for two cubics in P^5);
* ``kappa = mean(w det G(kmoduli)/|Omega|^2) / mean(w)``.

Numbers are float64/complex128 throughout; cymetric evaluates dQ/dz with
complex64-rounded factors (its ``DQDZF``), which limits agreement with its
derivative-based quantities to ~1e-7. :meth:`CompleteIntersection.from_basis`
with ``cymetric_derivatives=True`` reproduces its rounding exactly.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from cyntk._validation import as_points
from cyntk.geometry._kappa import kappa_from_geometry
from cyntk.geometry.intersection import intersection_number, intersection_tensor, mixed_determinant_counts
from cyntk.geometry.polynomials import (  # noqa: F401  (_gm: re-exported for cicy_manifolds)
    _gm,
    derivative_tables,
    eval_monomials,
    free_parameter_assignments,
    monomial_basis,
)

__all__ = ["CompleteIntersection", "monomial_basis", "free_parameter_assignments", "derivative_tables"]

_ISCLOSE = dict(rtol=1e-5, atol=1e-8)


class CompleteIntersection:
    """K multi-homogeneous equations in P^{n_1} x ... x P^{n_m}.

    Args:
        monomials: list of K int arrays (M_k, n) of exponents (n = sum(n_F + 1)
            homogeneous coordinates, factor by factor); a single array means K = 1.
        coefficients: list of K arrays (M_k,) of (complex) coefficients.
        ambient: int (m,) dimensions n_F of the factors (cymetric's AMBIENT).
        kmoduli: float (m,) Kaehler parameters t_F > 0 (default all 1).
        name: a label.

    Raises:
        ValueError: shapes, non-homogeneous equations, dimension < 1.

    Warns:
        UserWarning: when X is not Calabi-Yau (``sum_k q[F, k] != n_F + 1``).

    Attributes:
        ambient (m,), factor_slices (m, 2), configuration (m, K), nproj m,
        nhyper K, ncoords n, nfold, kmoduli (m,), intersection_numbers (m,)*nfold,
        vol_j_norm (``int_X J^nfold`` at t = 1), volume_k (at ``kmoduli``),
        all_ts (M, m), assignment_degrees (M,) = d_m.
    """

    def __init__(self, monomials, coefficients, ambient, kmoduli=None, *, name: str = "cicy"):
        if isinstance(monomials, np.ndarray) and monomials.ndim == 2:
            monomials, coefficients = [monomials], [coefficients]
        monomials = list(monomials)
        coefficients = list(coefficients)
        if len(monomials) == 0 or len(monomials) != len(coefficients):
            raise ValueError(
                f"`monomials` and `coefficients` must be lists of equal, non-zero length "
                f"(one entry per equation); received {len(monomials)} and {len(coefficients)}."
            )
        amb = np.asarray(ambient).reshape(-1)
        if amb.size == 0 or np.any(amb != np.round(amb)) or np.any(amb < 1):
            raise ValueError(
                f"`ambient` must list the dimensions n_F >= 1 of the projective factors; received {ambient!r}."
            )
        amb = amb.astype(np.int64)
        n = int(np.sum(amb + 1))
        starts = np.concatenate([[0], np.cumsum(amb + 1)])
        self.factor_slices = np.stack([starts[:-1], starts[1:]], axis=1).astype(np.int64)
        monos, coefs, conf = [], [], []
        for k, (mk, ck) in enumerate(zip(monomials, coefficients)):
            mk = np.asarray(mk)
            if mk.ndim != 2 or mk.shape[1] != n or mk.shape[0] == 0:
                raise ValueError(
                    f"`monomials[{k}]` must be an integer array (n_monomials, {n}) for ambient "
                    f"{amb.tolist()}; received shape {mk.shape}."
                )
            if not np.all(np.isfinite(mk)) or np.any(mk != np.round(mk)) or np.any(mk < 0):
                raise ValueError(f"`monomials[{k}]` must hold non-negative integer exponents.")
            mk = np.round(mk).astype(np.int64)
            ck = np.asarray(ck).astype(np.complex128).reshape(-1)
            if ck.shape[0] != mk.shape[0]:
                raise ValueError(
                    f"`coefficients[{k}]` must have one entry per monomial ({mk.shape[0]}); received {ck.shape[0]}."
                )
            if not np.all(np.isfinite(ck)) or not np.any(ck != 0):
                raise ValueError(f"`coefficients[{k}]` must be finite and not all zero.")
            deg = np.stack([mk[:, s:e].sum(axis=1) for s, e in self.factor_slices], axis=1)  # (M_k, m)
            if np.any(deg != deg[:1]):
                raise ValueError(
                    f"Equation {k} is not multi-homogeneous: the degrees of its monomials in the "
                    f"factors differ (received multidegrees {np.unique(deg, axis=0).tolist()}); "
                    f"every monomial must have the same degree in each projective factor."
                )
            monos.append(mk)
            coefs.append(ck)
            conf.append(deg[0])
        self._monos, self._coefs = monos, coefs  # what the computations use (subclasses may re-shape the public ones)
        self.monomials = monos
        self.coefficients = coefs
        self.configuration = np.stack(conf, axis=1).astype(np.int64)  # (m, K)
        self.ambient = amb
        self.nproj = int(len(amb))
        self.nhyper = int(len(monos))
        self.ncoords = n
        self.nfold = int(amb.sum() - self.nhyper)
        if self.nfold < 1:
            raise ValueError(
                f"The complete intersection has dimension sum(n_F) - K = {self.nfold} < 1 "
                f"(ambient {amb.tolist()}, K = {self.nhyper} equations)."
            )
        if np.any(self.configuration.sum(axis=0) == 0):
            raise ValueError("Every equation must have positive degree; received a constant equation.")
        t = np.ones(self.nproj) if kmoduli is None else np.asarray(kmoduli, dtype=np.float64).reshape(-1)
        if t.shape != (self.nproj,) or not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise ValueError(
                f"`kmoduli` must be {self.nproj} positive Kaehler parameters (one per factor); received {kmoduli!r}."
            )
        self.kmoduli = t
        self.name = str(name)
        if not self.is_calabi_yau:
            warnings.warn(
                f"{self.name}: configuration {self.configuration.tolist()} in ambient {amb.tolist()} "
                f"is not Calabi-Yau (row sums {self.configuration.sum(axis=1).tolist()} != n_F + 1 = "
                f"{(amb + 1).tolist()}); kappa and the Monge-Ampere equation det g = kappa |Omega|^2 "
                f"do not apply.",
                UserWarning,
                stacklevel=2,
            )
        self.intersection_numbers = intersection_tensor(amb, self.configuration)
        self.vol_j_norm = float(self.volume(np.ones(self.nproj)))
        self.volume_k = float(self.volume(t))
        self.all_ts = free_parameter_assignments(amb, self.configuration)
        self.assignment_degrees = np.array(
            [intersection_number(amb, self.configuration, amb - tm) for tm in self.all_ts], dtype=np.int64
        )
        self.weight_constant = float(math.factorial(self.nfold) * np.mean(self.assignment_degrees))
        self._dexp, self._dcoef = zip(*[derivative_tables(m_, c_, n) for m_, c_ in zip(monos, coefs)])
        self._dexp, self._dcoef = list(self._dexp), list(self._dcoef)

    # ------------------------------------------------------------------ basics
    def __repr__(self):
        return (
            f"CompleteIntersection(name={self.name!r}, ambient={self.ambient.tolist()}, "
            f"configuration={self.configuration.tolist()}, nfold={self.nfold}, "
            f"kmoduli={self.kmoduli.tolist()})"
        )

    @property
    def is_calabi_yau(self) -> bool:
        """True when ``sum_k q[F, k] = n_F + 1`` for every factor (c_1(X) = 0)."""
        return bool(np.all(self.configuration.sum(axis=1) == self.ambient + 1))

    @property
    def intersection_number(self) -> float:
        """``Vol_K = int_X J^nfold`` at ``kmoduli`` (the name :class:`Hypersurface` uses)."""
        return self.volume_k

    @property
    def degree(self):
        """Multidegrees, int64 (m, K) (the configuration matrix)."""
        return self.configuration

    def volume(self, t) -> float:
        """``Vol_K = int_X J_t^nfold = sum d_{a_1..a_n} t_a_1 ... t_a_n`` for Kaehler parameters t (m,)."""
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        if t.shape != (self.nproj,):
            raise ValueError(f"`t` must have {self.nproj} entries (one per factor); received shape {t.shape}.")
        v = self.intersection_numbers.astype(np.float64)
        for _ in range(self.nfold):
            v = v @ t
        return float(v)

    def with_kmoduli(self, kmoduli) -> "CompleteIntersection":
        """The same variety with other Kaehler parameters."""
        return CompleteIntersection(self._monos, self._coefs, self.ambient, kmoduli, name=self.name)

    def derivative_basis(self, k: int = 0):
        """dQ_k/dz_i as padded monomial lists (cymetric's DQDZB<k>/DQDZF<k>).

        Returns:
            ``(exponents, factors)``: int64 (n, T, n) and complex128 (n, T).
        """
        return self._dexp[k].copy(), self._dcoef[k].copy()

    # ------------------------------------------------------- polynomial values
    def _points(self, z, name="z"):
        return as_points(z, name, ncoords=self.ncoords)

    def _values(self, z, *, with_scale: bool = False):
        """Q_k at validated points (P, K), and ``sum_m |c_m z^m|`` (P, K) with ``with_scale``."""
        vals = [eval_monomials(z, m[None], c[None], with_scale=with_scale) for m, c in zip(self._monos, self._coefs)]
        if not with_scale:
            return np.concatenate(vals, axis=1)
        return np.concatenate([v[0] for v in vals], axis=1), np.concatenate([v[1] for v in vals], axis=1)

    def _gradients(self, z) -> np.ndarray:
        """dQ_k/dz_i at validated points, complex128 (P, K, n)."""
        return np.stack([eval_monomials(z, e, c) for e, c in zip(self._dexp, self._dcoef)], axis=1)

    def Q(self, z) -> np.ndarray:
        """The K polynomials at the points, complex128 (P, K)."""
        return self._values(self._points(z))

    def monomial_scale(self, z) -> np.ndarray:
        """``sum_m |c_m z^m|`` per equation, float64 (P, K): the size to judge |Q_k| against."""
        return self._values(self._points(z), with_scale=True)[1]

    def residual(self, z) -> np.ndarray:
        """``max_k |Q_k| / scale_k``, float64 (P,): how far points are from X (scale-free)."""
        q, scale = self._values(self._points(z), with_scale=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(scale > 0, np.abs(q) / np.where(scale > 0, scale, 1.0), np.where(q != 0, np.inf, 0.0))
        return np.max(r, axis=1)

    relative_residual = residual

    def dQdz(self, z) -> np.ndarray:
        """Gradients ``dQ_k/dz_i``, complex128 (P, K, n)."""
        return self._gradients(self._points(z))

    # ---------------------------------------------------------------- charts
    def patch_normalise(self, z) -> np.ndarray:
        """Rescale every factor so that its largest coordinate is exactly 1, complex128 (P, n)."""
        z = self._points(z).copy()
        r = np.arange(len(z))
        for s, e in self.factor_slices:
            k = s + np.argmax(np.abs(z[:, s:e]), axis=1)
            z[:, s:e] /= z[r, k][:, None]
            z[r, k] = 1.0
        return z

    def one_indices(self, z) -> np.ndarray:
        """Global index of the coordinate equal to 1 in each factor, int64 (P, m).

        Raises:
            ValueError: when a factor of a point has no or several coordinates
                ``numpy.isclose`` to 1 (not patch-normalised or ambiguous).
        """
        z = self._points(z)
        ones = np.isclose(z, 1.0 + 0.0j, **_ISCLOSE)
        out = np.empty((len(z), self.nproj), dtype=np.int64)
        for F, (s, e) in enumerate(self.factor_slices):
            cnt = ones[:, s:e].sum(axis=1)
            if np.any(cnt != 1):
                bad = np.nonzero(cnt != 1)[0]
                raise ValueError(
                    f"{len(bad)} point(s) of `z` do not have exactly one coordinate equal to 1 in "
                    f"factor {F} (e.g. point {bad[0]} has {cnt[bad[0]]}); points must be patch-"
                    f"normalised per factor (use CompleteIntersection.patch_normalise)."
                )
            out[:, F] = s + np.argmax(ones[:, s:e], axis=1)
        return out

    def elimination_indices(self, z, one_idx=None, dqdz=None) -> np.ndarray:
        """cymetric's eliminated coordinates, greedy equation by equation, int64 (P, K)."""
        z = self._points(z)
        one = self.one_indices(z) if one_idx is None else np.asarray(one_idx, dtype=np.int64)
        dq = self._gradients(z) if dqdz is None else dqdz
        return _greedy_elimination(np.abs(dq), one)

    def charts(self, z) -> np.ndarray:
        """The chart of every point: int64 (P, m + K) = [one index per factor, eliminated per equation]."""
        z = self._points(z)
        one = self.one_indices(z)
        return np.concatenate([one, self.elimination_indices(z, one)], axis=1)

    def good_coordinates(self, charts) -> np.ndarray:
        """The nfold local coordinates (ascending) of each point, int64 (P, nfold)."""
        return self._good_coordinates(charts)

    def _good_coordinates(self, charts) -> np.ndarray:
        c = np.asarray(charts, dtype=np.int64).reshape(-1, self.nproj + self.nhyper)
        mask = np.ones((len(c), self.ncoords), dtype=bool)
        np.put_along_axis(mask, c, False, axis=1)
        return np.nonzero(mask)[1].reshape(len(c), self.nfold).astype(np.int64)

    # ------------------------------------------------------ pullbacks and Omega
    def _local(self, z, charts, dq):
        elim = charts[:, self.nproj :]
        good = self._good_coordinates(charts)
        P, K, n = len(z), self.nhyper, self.ncoords
        B = np.take_along_axis(dq, np.broadcast_to(elim[:, None, :], (P, K, K)), axis=2)  # B[k, l]
        dQx = np.take_along_axis(dq, np.broadcast_to(good[:, None, :], (P, K, self.nfold)), axis=2)  # (P,K,nfold)
        if K == 1:  # one equation: B is the number dQ/dz_j, so divide (exact rounding, no LU)
            sol = -dQx / B
            det = B[:, 0, 0]
        else:
            sol = -np.linalg.solve(B, dQx)  # (P, K(l), nfold(a)) = dz_{j_l}/dx_a
            det = np.linalg.det(B)
        J = np.zeros((P, self.nfold, n), dtype=np.complex128)
        r = np.arange(P)[:, None]
        a = np.arange(self.nfold)[None, :]
        J[r, a, good] = 1.0
        for l in range(K):
            J[np.arange(P), :, elim[:, l]] = sol[:, l, :]
        return J, 1.0 / det

    def _prepare(self, z, charts=None):
        z = self._points(z)
        dq = self._gradients(z)
        if charts is None:
            one = self.one_indices(z)
            charts = np.concatenate([one, _greedy_elimination(np.abs(dq), one)], axis=1)
        else:
            charts = np.asarray(charts, dtype=np.int64).reshape(len(z), self.nproj + self.nhyper)
        return z, dq, charts

    def pullbacks(self, z, charts=None) -> np.ndarray:
        """``J[a, i] = dz_i/dx_a``, complex128 (P, nfold, n)."""
        z, dq, charts = self._prepare(z, charts)
        return self._local(z, charts, dq)[0]

    def omega(self, z, charts=None) -> np.ndarray:
        """``Omega = 1/det B``, complex128 (P,)."""
        z, dq, charts = self._prepare(z, charts)
        return self._local(z, charts, dq)[1]

    def omega_sq(self, z, charts=None) -> np.ndarray:
        """``|Omega|^2``, float64 (P,)."""
        z, dq, charts = self._prepare(z, charts)
        return np.abs(self._local(z, charts, dq)[1]) ** 2

    # ---------------------------------------------------------- FS metrics
    def fs_blocks(self, z) -> np.ndarray:
        """Unit FS metrics of the factors embedded in C^n, complex128 (m, P, n, n) (block F only)."""
        z = self._points(z)
        out = np.zeros((self.nproj, len(z), self.ncoords, self.ncoords), dtype=np.complex128)
        for F, (s, e) in enumerate(self.factor_slices):
            zf = z[:, s:e]
            n2 = np.sum(np.abs(zf) ** 2, axis=1)
            g = (
                np.eye(e - s)[None] / n2[:, None, None]
                - np.conj(zf)[:, :, None] * zf[:, None, :] / (n2**2)[:, None, None]
            )
            out[F, :, s:e, s:e] = g / np.pi
        return out

    def fs_metric_ambient(self, z, t=None) -> np.ndarray:
        """Block-diagonal ambient FS metric ``sum_F t_F g_F``, complex128 (P, n, n) (default t = kmoduli)."""
        t = self.kmoduli if t is None else np.asarray(t, dtype=np.float64).reshape(self.nproj)
        return np.einsum("f,fpij->pij", t.astype(np.complex128), self.fs_blocks(z))

    def fs_metric_pb(self, z, t=None, charts=None) -> np.ndarray:
        """Pulled-back FS metric ``J g_FS(t) J^dagger``, complex128 (P, nfold, nfold)."""
        z, dq, charts = self._prepare(z, charts)
        J = self._local(z, charts, dq)[0]
        return _pb(J, self.fs_metric_ambient(z, t))

    def pulled_back_blocks(self, z, J) -> np.ndarray:
        """``J g_F J^dagger`` for every factor, complex128 (m, P, nfold, nfold).

        Evaluated per factor as ``(J_F J_F^H/|z_F|^2 - v v^H/|z_F|^4)/pi``, ``v = J_F conj(z_F)``
        (no ambient n x n matrices).
        """
        z = self._points(z)
        out = np.empty((self.nproj, len(z), self.nfold, self.nfold), dtype=np.complex128)
        for F, (s, e) in enumerate(self.factor_slices):
            zf, Jf = z[:, s:e], J[:, :, s:e]
            n2 = np.sum(np.abs(zf) ** 2, axis=1)[:, None, None]
            v = np.einsum("pan,pn->pa", Jf, np.conj(zf))
            out[F] = (Jf @ np.conj(np.swapaxes(Jf, 1, 2)) / n2 - v[:, :, None] * np.conj(v)[:, None, :] / n2**2) / np.pi
        return out

    def mixed_dets(self, z, charts=None) -> np.ndarray:
        """cymetric's D_m for every assignment of :attr:`all_ts`, float64 (M, P)."""
        z, dq, charts = self._prepare(z, charts)
        J = self._local(z, charts, dq)[0]
        G = self.pulled_back_blocks(z, J)
        return np.stack([mixed_determinant_counts(G, self.ambient - tm) for tm in self.all_ts])

    # ------------------------------------------------------------- weights
    def geometry(self, z, charts=None, *, check_variety: bool = True, tol: float | None = None) -> dict:
        """Everything about points in one pass (what datasets store).

        Args:
            z: complex (P, n) patch-normalised points on X (or real (P, 2n)).
            charts: optional int (P, m + K) charts (default: cymetric's choice).
            check_variety: raise ``ValueError`` when a point is off X (relative
                residual ``max_k |Q_k|/sum_m |c_m z^m|`` above ``tol``; see
                :func:`cyntk.geometry.check_on_variety`); ``False`` skips it.
            tol: tolerance of that check (default ``cyntk.geometry.VARIETY_TOL`` = 1e-4).

        Returns:
            dict with ``points`` (P, n), ``charts`` (P, m + K), ``pullbacks``
            (P, nfold, n), ``omega`` (P,), ``omega_sq`` (P,), ``fs_metric_pb``
            (P, nfold, nfold) at ``kmoduli``, ``det_fs`` (P,), ``mixed_dets``
            (M, P), ``weights`` (P,) = ``weight_constant |Omega|^2 / mean_m D_m``.
        """
        if check_variety:
            from cyntk.geometry.variety import check_on_variety

            check_on_variety(self, self._points(z), "z", tol)
        z, dq, charts = self._prepare(z, charts)
        J, om = self._local(z, charts, dq)
        G = self.pulled_back_blocks(z, J)
        gt = np.einsum("f,fpab->pab", self.kmoduli.astype(np.complex128), G)
        D = np.stack([mixed_determinant_counts(G, self.ambient - tm) for tm in self.all_ts])
        om2 = np.abs(om) ** 2
        return dict(
            points=z,
            charts=charts,
            pullbacks=J,
            omega=om,
            omega_sq=om2,
            fs_metric_pb=gt,
            det_fs=np.real(np.linalg.det(gt)),
            mixed_dets=D,
            weights=self.weight_constant * om2 / np.mean(D, axis=0),
        )

    def weights(self, z, charts=None) -> np.ndarray:
        """Normalised point weights (module docstring), float64 (P,)."""
        return CompleteIntersection.geometry(self, z, charts)["weights"]

    def weight_normalisation(self, stored, fresh, rtol: float = 1e-6) -> float:
        """Factor ``c`` with ``stored = c * fresh`` when it is one constant (else 1.0).

        cymetric normalises its weights with a data-dependent constant (the mean of
        ``det G(t=1) / mean_m D_m`` over the generated set); where that ratio is not
        constant on X (e.g. P^1 x P^4) its weights differ from :meth:`weights` by one
        constant factor, which this recovers so stored files can be checked. In one
        projective space cymetric's constant is the degree exactly: nothing to recover (1.0).
        """
        if self.nproj == 1:
            return 1.0
        stored, fresh = np.asarray(stored, np.float64), np.asarray(fresh, np.float64)
        if stored.size == 0:
            return 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            r = stored / fresh
        c = float(np.median(r))
        if np.isfinite(c) and c > 0 and np.all(np.abs(r - c) <= rtol * c):
            return c
        return 1.0

    def kappa(self, z, weights=None) -> float:
        """``kappa = mean(w det G(kmoduli)/|Omega|^2) / mean(w)`` over the points."""
        return kappa_from_geometry(self.geometry(z), weights)

    # ----------------------------------------------------------- sampling
    def sample_points(
        self,
        n_points,
        *,
        seed=None,
        chart=None,
        progress=None,
        newton_steps: int = 1,
        return_planes: bool = False,
    ) -> np.ndarray:
        """Points on X, unbiased for :meth:`weights` (:func:`cyntk.geometry.cicy_sampling.sample_points`).

        Args:
            n_points: number of points (> 0).
            seed: int, ``None`` or ``numpy.random.Generator`` (reproducible for a fixed seed).
            chart: keep only points in this chart (rejection sampling, reproducible for a
                seed): a full row of :meth:`charts` (the one index of every factor, then the
                eliminated coordinate of every equation); ``(patch, eliminated)`` for one
                equation in one P^n.
            progress: show a tqdm bar (default: n_points >= 200000).
            newton_steps: one equation in one P^n only: Newton polishing steps of each root along its line.
            return_planes: also return the line/plane id of every point (int64 (P,)).

        Returns:
            complex128 (n_points, n) patch-normalised points, or ``(points, plane_ids)``.
        """
        from cyntk.geometry.cicy_sampling import sample_points

        return sample_points(
            self,
            n_points,
            seed=seed,
            chart=chart,
            progress=progress,
            newton_steps=newton_steps,
            return_planes=return_planes,
        )

    # ------------------------------------------------------------ projection
    def project(self, z, *, max_steps: int = 50, tol: float = 1e-13):
        """Project points onto X by Newton steps on all K equations.

        Each step is the minimum-norm Newton step ``dz = -J^+ Q = -J^H (J J^H)^{-1} Q``
        of every point (J the K x n Jacobian ``dQ_k/dz_i``; for K = 1 the step
        ``-Q conj(dQ)/|dQ|^2``), followed by normalising every factor to unit
        length; at the end the points are patch-normalised per factor. Points that
        already meet ``tol`` are not moved. For one equation in one P^n this is
        :meth:`Hypersurface.project <cyntk.geometry.Hypersurface.project>` exactly.

        Args:
            z: complex (P, n) points near X (or real (P, 2n)).
            max_steps: Newton steps at most.
            tol: stop when ``max_k |Q_k| / sum_m |c_m z^m| < tol`` for every point.

        Returns:
            ``(points, converged)``: complex128 (P, n) patch-normalised and bool (P,)
            (False where the relative residual stayed above ``tol``).
        """
        z = self._points(z).copy()

        def unit(z):
            for a, b in self.factor_slices:
                z[:, a:b] /= np.linalg.norm(z[:, a:b], axis=1, keepdims=True)
            return z

        def residual(z):
            q, scale = self._values(z, with_scale=True)
            return q, np.max(np.abs(q) / scale, axis=1)

        z = unit(z)
        for _ in range(int(max_steps)):
            q, res = residual(z)
            if np.all(res < tol):
                break
            dq = self._gradients(z)  # (P, K, n)
            if self.nhyper == 1:
                step = (q[:, 0] / np.sum(np.abs(dq[:, 0]) ** 2, axis=1))[:, None] * np.conj(dq[:, 0])
            else:
                jh = np.conj(np.swapaxes(dq, 1, 2))  # (P, n, K)
                with np.errstate(all="ignore"):
                    w = np.linalg.solve(dq @ jh, q[:, :, None])  # (J J^H) w = Q
                step = (jh @ w)[:, :, 0]
            move = (res >= tol) & np.all(np.isfinite(step), axis=1)
            z = np.where(move[:, None], z - step, z)
            z = unit(z)
        res = residual(z)[1]
        r = np.arange(len(z))
        for a, b in self.factor_slices:
            k = a + np.argmax(np.abs(z[:, a:b]), axis=1)
            z[:, a:b] = z[:, a:b] / z[r, k][:, None]
            z[r, k] = 1.0 + 0.0j
        return z, res < max(tol, 1e-12)

    # ------------------------------------------------------- cymetric basis
    def basis(self, kappa: float = 1.0) -> dict:
        """cymetric's ``basis.pickle`` dict (DQDZB<k>, DQDZF<k>, QB<k>, QF<k>, NFOLD, AMBIENT,
        KMODULI, NHYPER, INTNUMS, KAPPA)."""
        out = {}
        for k in range(self.nhyper):
            out[f"DQDZB{k}"] = self._dexp[k].astype(np.complex64)
            out[f"DQDZF{k}"] = self._dcoef[k].astype(np.complex64)
            out[f"QB{k}"] = self._monos[k].astype(np.int64)
            qf = self._coefs[k]
            out[f"QF{k}"] = qf.real.astype(np.float64) if np.all(qf.imag == 0) else qf
        out.update(
            NFOLD=np.int64(self.nfold),
            AMBIENT=self.ambient.astype(np.int64),
            KMODULI=self.kmoduli.astype(np.float64),
            NHYPER=int(self.nhyper),
            INTNUMS=self.intersection_numbers.astype(np.int64),
            KAPPA=np.float64(kappa),
        )
        return out

    @classmethod
    def from_basis(
        cls, basis: dict, name: str = "from_basis", *, cymetric_derivatives: bool = False
    ) -> "CompleteIntersection":
        """Rebuild from a cymetric basis dict (values may be complex64-cast as cymetric's prepare_basis does).

        Args:
            basis: the dict.
            name: label.
            cymetric_derivatives: evaluate dQ/dz with the basis' own (complex64)
                DQDZB/DQDZF tables, reproducing cymetric's rounding bit for bit
                (default: exact float64 derivatives of the QF coefficients).
        """
        nh = int(np.real(np.asarray(basis.get("NHYPER", 1))))
        need = [f"QB{k}" for k in range(nh)] + [f"QF{k}" for k in range(nh)] + ["AMBIENT", "KMODULI"]
        missing = [k for k in need if k not in basis]
        if missing:
            raise KeyError(
                f"`basis` is missing key(s) {missing}; expected a cymetric basis dict with "
                f"QB<k>, QF<k> (k < NHYPER = {nh}), AMBIENT and KMODULI."
            )
        amb = np.real(np.asarray(basis["AMBIENT"])).round().astype(np.int64).reshape(-1)
        monos = [np.real(np.asarray(basis[f"QB{k}"])).round().astype(np.int64) for k in range(nh)]
        coefs = [np.asarray(basis[f"QF{k}"]).astype(np.complex128) for k in range(nh)]
        kmod = np.real(np.asarray(basis["KMODULI"])).astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning) if cymetric_derivatives else None
            obj = cls(monos, coefs, amb, kmod, name=name)
        if cymetric_derivatives:
            obj._dexp = [np.real(np.asarray(basis[f"DQDZB{k}"])).round().astype(np.int64) for k in range(nh)]
            obj._dcoef = [np.asarray(basis[f"DQDZF{k}"]).astype(np.complex64).astype(np.complex128) for k in range(nh)]
        return obj


# ------------------------------------------------------------------ helpers
def _greedy_elimination(absdq, one):
    """argmax_j |dQ_k/dz_j| over available coordinates, equation by equation: int64 (P, K)."""
    P, K, n = absdq.shape
    avail = np.ones((P, n), dtype=bool)
    np.put_along_axis(avail, one, False, axis=1)
    out = np.empty((P, K), dtype=np.int64)
    r = np.arange(P)
    for k in range(K):
        out[:, k] = np.argmax(np.where(avail, absdq[:, k], -1.0), axis=1)
        avail[r, out[:, k]] = False
    return out


def _pb(J, g):
    return J @ g @ np.conj(np.swapaxes(J, -1, -2))
