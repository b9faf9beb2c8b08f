"""Calabi-Yau hypersurfaces in one projective space, in cymetric's conventions.

A :class:`Hypersurface` is the zero locus X = {Q = 0} of a homogeneous
polynomial ``Q(z) = sum_m c_m prod_i z_i**M[m, i]`` in P^{N-1}. It is a
Calabi-Yau (n = N - 2)-fold when deg Q = N. It is the K = 1, m = 1 case of
:class:`~cyntk.geometry.cicy.CompleteIntersection` (one equation in one
projective factor): charts, pullbacks, Omega, the Fubini-Study metric, weights,
kappa, cymetric's basis and the sampling are computed by that class and by
:mod:`cyntk.geometry.cicy_sampling`; this subclass only keeps the single-equation
interface (``Q`` of shape (P,), ``dQdz`` (P, N), an eliminated coordinate
``j_elim`` instead of a chart matrix, an integer ``degree``). In the
conventions of CONVENTIONS.md sections 1-4:

* points are patch-normalised (largest coordinate = 1, the *patch* index k);
* the *eliminated* coordinate j maximises |dQ/dz_j| over the other coordinates;
* local coordinates are the remaining n coordinates in ascending order, and the
  pullback is ``J[a, g_a] = 1, J[a, j] = -Q_{g_a}/Q_j`` (shape (n, N));
* ``Omega = 1/Q_j`` and ``|Omega|^2 = 1/|Q_j|^2``;
* the pulled-back FS metric is ``G = J g_FS(t) J^dagger``;
* the point weights are ``w = vol_j_norm * |Omega|^2 / det G(t=1)``, the
  Shiffman-Zelditch density ratio normalised so that
  ``mean(w det G(t=1)/|Omega|^2) = vol_j_norm = deg Q``;
* ``kappa = Vol_K / Vol_CY = mean(w det G(t)/|Omega|^2) / mean(w)`` and the
  Ricci-flat metric satisfies ``det g = kappa |Omega|^2``.

Points are sampled by intersecting random lines ``p + t q`` (p, q uniform on
S^{2N-1}) with X (:func:`cyntk.geometry.cicy_sampling.sample_lines`): the d roots
of every line are found at once as eigenvalues of a batch of companion
matrices, then polished by one Newton step.
"""

from __future__ import annotations

import warnings

import numpy as np

from cyntk.geometry.cicy import CompleteIntersection

__all__ = [
    "Hypersurface",
    "fermat_quintic",
    "dwork_quintic",
    "fermat_quartic",
    "fermat_cubic",
    "get_manifold",
    "MANIFOLDS",
]

# numpy.isclose defaults, as cymetric uses them for patch detection
_ISCLOSE = dict(rtol=1e-5, atol=1e-8)


class Hypersurface(CompleteIntersection):
    """A hypersurface {Q = 0} in P^{N-1} given by monomials and coefficients.

    Args:
        monomials: int array (n_monomials, N) of exponents; every row must have
            the same sum (Q homogeneous) and that degree must be >= 1.
        coefficients: array (n_monomials,) of (complex) coefficients, not all 0.
        kmoduli: Kaehler parameter t of the ambient P^{N-1}, shape (1,) or a float.
        name: a label (used in files and plots).

    Attributes:
        ncoords: N, the number of homogeneous coordinates.
        nfold: n = N - 2, complex dimension of X.
        degree: d = deg Q.
        ambient: int64 array ``[N - 1]`` (cymetric's AMBIENT).
        kmoduli: float64 array (1,).
        vol_j_norm: ``d``, the volume int_X J^n at t = 1 (cymetric's vol_j_norm).
        intersection_number: ``d * t**n``, the Kaehler volume at ``kmoduli``.
    """

    def __init__(self, monomials, coefficients, kmoduli=1.0, *, name: str = "hypersurface"):
        mono = np.asarray(monomials)
        if mono.ndim != 2 or mono.size == 0:
            raise ValueError(
                f"`monomials` must be a non-empty 2-D integer array (n_monomials, N); received shape {mono.shape}."
            )
        if mono.dtype == object or not np.issubdtype(mono.dtype, np.number) or np.iscomplexobj(mono):
            raise TypeError(f"`monomials` must be an integer array of exponents; received dtype {mono.dtype}.")
        if not np.issubdtype(mono.dtype, np.integer):
            if not np.all(np.isfinite(mono)) or np.any(mono != np.round(mono)):
                raise TypeError("`monomials` must hold integer exponents; received non-integer values.")
            mono = np.round(mono)
        mono = mono.astype(np.int64)
        if np.any(mono < 0):
            raise ValueError("`monomials` must hold non-negative exponents; received a negative one.")
        try:
            coef = np.asarray(coefficients).astype(np.complex128).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"`coefficients` must be an array of (complex) numbers; received "
                f"{np.asarray(coefficients).dtype} ({exc})."
            ) from None
        if coef.shape[0] != mono.shape[0]:
            raise ValueError(
                f"`coefficients` must have one entry per monomial ({mono.shape[0]}); received {coef.shape[0]}."
            )
        if not np.all(np.isfinite(coef)):
            raise ValueError("`coefficients` must be finite; received NaN or inf.")
        keep = coef != 0
        if not np.any(keep):
            raise ValueError("`coefficients` are all zero: the zero polynomial defines no hypersurface.")
        mono, coef = mono[keep], coef[keep]
        degrees = mono.sum(axis=1)
        if np.any(degrees != degrees[0]):
            raise ValueError(
                f"The polynomial must be homogeneous: every row of `monomials` must have "
                f"the same degree; received degrees {sorted(set(degrees.tolist()))}."
            )
        N = mono.shape[1]
        if N - 2 <= 0:
            raise ValueError(
                f"`monomials`: a hypersurface in P^(N-1) needs N >= 3 coordinates (complex dimension "
                f"n = N - 2 >= 1); received N = {N} (n = {N - 2})."
            )
        if degrees[0] < 1:
            raise ValueError("`monomials`: the polynomial must have degree >= 1; received a constant.")
        t = np.asarray(kmoduli, dtype=np.float64).reshape(-1)
        if t.shape != (1,) or not t[0] > 0 or not np.isfinite(t[0]):
            raise ValueError(f"`kmoduli` must be one positive Kaehler parameter (shape (1,)); received {kmoduli!r}.")
        with warnings.catch_warnings():  # the Calabi-Yau warning below names the degree
            warnings.simplefilter("ignore", UserWarning)
            super().__init__([mono], [coef], [N - 1], t, name=name)
        self.monomials = mono  # one equation: (M, N) and (M,) rather than lists of them
        self.coefficients = coef
        if not self.is_calabi_yau:
            warnings.warn(
                f"{self.name}: degree {self.degree} in P^{N - 1} is not a Calabi-Yau "
                f"hypersurface (that needs degree N = {N}); Ricci-flat metrics, kappa and "
                f"the Monge-Ampere loss do not apply.",
                UserWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ basics
    def __repr__(self):
        return (
            f"Hypersurface(name={self.name!r}, ncoords={self.ncoords}, degree={self.degree}, "
            f"n_monomials={len(self.monomials)}, kmoduli={self.kmoduli.tolist()})"
        )

    @property
    def degree(self) -> int:
        """d = deg Q."""
        return int(self.configuration[0, 0])

    @property
    def intersection_number(self) -> float:
        """``d * t**n``, the Kaehler volume ``int_X J^n`` at ``kmoduli``."""
        return float(self.degree * self.kmoduli[0] ** self.nfold)

    @property
    def n_charts(self) -> int:
        """Number of (patch, eliminated) charts: N (N - 1)."""
        return self.ncoords * (self.ncoords - 1)

    def with_kmoduli(self, kmoduli) -> "Hypersurface":
        """The same hypersurface with another Kaehler parameter."""
        return Hypersurface(self.monomials, self.coefficients, kmoduli, name=self.name)

    def same_as(self, other: "Hypersurface", rtol: float = 1e-6) -> bool:
        """Whether ``other`` defines the same polynomial (up to monomial order) and kmoduli."""
        if self.ncoords != other.ncoords or self.degree != other.degree:
            return False

        def canon(h):
            key = {tuple(m): c for m, c in zip(h.monomials.tolist(), h.coefficients)}
            return key

        a, b = canon(self), canon(other)
        if a.keys() != b.keys():
            return False
        ca = np.array([a[k] for k in sorted(a)])
        cb = np.array([b[k] for k in sorted(a)])
        return bool(np.allclose(ca, cb, rtol=rtol, atol=0) and np.allclose(self.kmoduli, other.kmoduli, rtol=rtol))

    def derivative_basis(self, k: int = 0):
        """dQ/dz_i as padded monomial lists (cymetric's DQDZB0/DQDZF0).

        Returns:
            ``(exponents, coefficients)``: int64 (N, T, N) and complex128 (N, T)
            with ``dQ/dz_i = sum_t coefficients[i, t] prod_l z_l**exponents[i, t, l]``;
            padding rows have exponent 0 and coefficient 0.
        """
        return super().derivative_basis(k)

    # ------------------------------------------------------- polynomial values
    def Q(self, z) -> np.ndarray:
        """Q(z), complex128 (P,), for points (P, N) complex or (P, 2N) real."""
        return super().Q(z)[:, 0]

    def monomial_scale(self, z) -> np.ndarray:
        """sum_m |c_m z^{M_m}|: the size of the terms of Q, to judge |Q| against, float64 (P,)."""
        return super().monomial_scale(z)[:, 0]

    def dQdz(self, z) -> np.ndarray:
        """Gradient dQ/dz_i, complex128 (P, N)."""
        return super().dQdz(z)[:, 0]

    # ---------------------------------------------------------------- charts
    def patch_index(self, z) -> np.ndarray:
        """Index of the coordinate equal to 1 (``numpy.isclose`` defaults), int64 (P,).

        Raises:
            ValueError: if a point has no or several coordinates equal to 1
                (not patch-normalised, or ambiguous).
        """
        z = self._points(z)
        ones = np.isclose(z, 1.0 + 0.0j, **_ISCLOSE)
        count = ones.sum(axis=1)
        if np.any(count != 1):
            bad = np.nonzero(count != 1)[0]
            raise ValueError(
                f"{len(bad)} point(s) of `z` do not have exactly one coordinate equal to 1 "
                f"(e.g. point {bad[0]} has {count[bad[0]]}); points must be patch-normalised "
                f"(use cyntk.geometry.patch_normalise) and unambiguous."
            )
        return np.argmax(ones, axis=1).astype(np.int64)

    def one_indices(self, z) -> np.ndarray:
        """The patch index as :class:`CompleteIntersection`'s one-index matrix, int64 (P, 1)."""
        return self.patch_index(z)[:, None]

    def elimination_index(self, z, patch=None) -> np.ndarray:
        """argmax_j |dQ/dz_j| over the coordinates other than the patch, int64 (P,)."""
        z = self._points(z)
        k = self.patch_index(z) if patch is None else np.asarray(patch, dtype=np.int64).reshape(-1, 1)
        return self.elimination_indices(z, np.reshape(k, (-1, 1)))[:, 0]

    def chart_id(self, charts) -> np.ndarray:
        """Flat chart label ``k * N + j`` from (P, 2) charts."""
        c = np.asarray(charts)
        return c[..., 0] * self.ncoords + c[..., 1]

    def good_coordinates(self, patch, elim=None) -> np.ndarray:
        """The n local coordinates (ascending) of each point, int64 (P, n).

        Args:
            patch: patch indices (P,), or (P, 2) charts [patch, eliminated] when ``elim`` is None.
            elim: eliminated coordinates (P,).
        """
        if elim is None:
            return self._good_coordinates(patch)
        charts = np.stack([np.asarray(patch).reshape(-1), np.asarray(elim).reshape(-1)], axis=1)
        return self._good_coordinates(charts)

    # -------------------------------------------------------------- pullbacks
    def _charts_for(self, z, j_elim):
        """(P, 2) charts [patch, eliminated] of validated points (``j_elim`` None: cymetric's rule)."""
        if j_elim is None:
            return None
        k = self.patch_index(z)
        return np.stack([k, np.asarray(j_elim, np.int64).reshape(-1)], axis=1)

    def pullbacks(self, z, j_elim=None) -> np.ndarray:
        """Pullback matrices ``J[a, i] = dz_i/dx^a``, complex128 (P, n, N).

        Args:
            z: points (P, N) complex or (P, 2N) real, patch-normalised.
            j_elim: optional int array (P,) of eliminated coordinates; default
                argmax |dQ/dz| (cymetric's rule).
        """
        z = self._points(z)
        return super().pullbacks(z, self._charts_for(z, j_elim))

    def omega(self, z, j_elim=None) -> np.ndarray:
        """The holomorphic (n,0)-form's coefficient ``Omega = 1/Q_j``, complex128 (P,)."""
        z = self._points(z)
        return super().omega(z, self._charts_for(z, j_elim))

    def omega_sq(self, z, j_elim=None) -> np.ndarray:
        """``|Omega|^2 = 1/|Q_j|^2``, float64 (P,)."""
        return np.abs(self.omega(z, j_elim)) ** 2

    def fs_metric_pb(self, z, t=None, j_elim=None) -> np.ndarray:
        """Pulled-back Fubini-Study metric ``G = J g_FS(t) J^dagger``, complex128 (P, n, n).

        Args:
            z: points.
            t: Kaehler parameter; default ``kmoduli``.
            j_elim: optional eliminated coordinates (P,).
        """
        z = self._points(z)
        t = None if t is None else np.full(1, t, dtype=np.float64)
        return super().fs_metric_pb(z, t, self._charts_for(z, j_elim))

    def weights(self, z, j_elim=None) -> np.ndarray:
        """cymetric's normalised point weights ``w = vol_j_norm |Omega|^2 / det G(t=1)``, float64 (P,)."""
        return self.geometry(z, j_elim)["weights"]

    def geometry(self, z, j_elim=None, *, check_variety: bool = True, tol: float | None = None) -> dict:
        """Everything about points in one pass (what datasets store).

        Args:
            z: complex (P, N) or real (P, 2N) points on the variety.
            j_elim: optional eliminated coordinates (P,).
            check_variety: raise ``ValueError`` when a point's relative
                residual ``|Q(z)|/sum_m |c_m z^m|`` exceeds ``tol`` (see
                :func:`cyntk.geometry.check_on_variety`); ``False`` skips it.
            tol: tolerance of that check (default ``VARIETY_TOL`` = 1e-4).

        Returns:
            dict with ``points`` (P, N) complex128, ``charts`` (P, 2) int64,
            ``pullbacks`` (P, n, N), ``omega`` (P,) complex, ``omega_sq`` (P,),
            ``fs_metric_pb`` (P, n, n) at ``kmoduli``, ``det_fs`` (P,) = det G at
            ``kmoduli``, ``weights`` (P,).
        """
        z = self._points(z)
        geo = super().geometry(z, self._charts_for(z, j_elim), check_variety=check_variety, tol=tol)
        del geo["mixed_dets"]  # n! det G(t=1) for one factor: nothing beyond det_fs
        return geo

    @classmethod
    def from_basis(cls, basis: dict, name: str = "from_basis", *, cymetric_derivatives: bool = False) -> "Hypersurface":
        """Rebuild the hypersurface from a cymetric basis dict (values may be complex-cast).

        Args:
            basis: the dict.
            name: label.
            cymetric_derivatives: evaluate dQ/dz with the basis' own (complex64) DQDZB0/DQDZF0
                tables, reproducing cymetric's rounding (default: exact float64 derivatives).
        """
        missing = [k for k in ("QB0", "QF0", "KMODULI", "AMBIENT") if k not in basis]
        if missing:
            raise KeyError(
                f"`basis` is missing key(s) {missing}; expected a cymetric basis dict "
                f"with QB0, QF0, KMODULI, AMBIENT (see CONVENTIONS.md 5.2)."
            )
        nhyper = int(np.real(np.asarray(basis.get("NHYPER", 1))))
        amb = np.real(np.asarray(basis["AMBIENT"])).reshape(-1)
        if nhyper != 1 or amb.shape[0] != 1:
            raise ValueError(
                f"Only one hypersurface in one projective space is supported; received "
                f"NHYPER={nhyper}, AMBIENT={amb.tolist()}."
            )
        mono = np.real(np.asarray(basis["QB0"])).round().astype(np.int64)
        coef = np.asarray(basis["QF0"]).astype(np.complex128)
        kmod = np.real(np.asarray(basis["KMODULI"])).astype(np.float64)
        obj = cls(mono, coef, kmod, name=name)
        if cymetric_derivatives:
            obj._dexp = [np.real(np.asarray(basis["DQDZB0"])).round().astype(np.int64)]
            obj._dcoef = [np.asarray(basis["DQDZF0"]).astype(np.complex64).astype(np.complex128)]
        return obj

    def project(self, z, *, max_steps: int = 50, tol: float = 1e-13):
        """Project points onto X by Newton steps along the gradient direction.

        Each step moves ``z <- z - Q(z) conj(dQ/dz) / |dQ/dz|^2`` (the
        minimum-norm Newton step of the scalar equation Q = 0), then the
        result is patch-normalised. Used to put perturbed points back on the
        variety, so that they are valid test points at a controlled distance.
        The K = 1, m = 1 case of :meth:`CompleteIntersection.project`.

        Args:
            z: complex (P, N) points near X.
            max_steps: Newton steps at most.
            tol: stop when ``|Q| / sum_m |c_m z^m| < tol`` for every point.

        Returns:
            ``(points, converged)``: complex128 (P, N) patch-normalised and
            bool (P,) (False where the relative residual stayed above ``tol``).
        """
        return super().project(z, max_steps=max_steps, tol=tol)  # the K = 1 case, same numbers


# ------------------------------------------------------------ named manifolds
def _fermat(N, name, kmoduli=1.0):
    return Hypersurface(N * np.eye(N, dtype=np.int64), np.ones(N), kmoduli, name=name)


def fermat_quintic(kmoduli: float = 1.0) -> Hypersurface:
    """The Fermat quintic ``sum_i z_i^5 = 0`` in P^4 (a CY threefold; kappa ~ 0.0176)."""
    return _fermat(5, "fermat_quintic", kmoduli)


def dwork_quintic(psi: complex = 0.0, kmoduli: float = 1.0) -> Hypersurface:
    """The Dwork family ``sum_i z_i^5 - 5 psi prod_i z_i = 0`` in P^4 (psi = 0: Fermat).

    The member is singular at psi^5 = 1 (conifold points).
    """
    psi = complex(psi)
    if not np.isfinite(psi):
        raise ValueError(f"`psi` must be finite; received {psi}.")
    mono = np.vstack([5 * np.eye(5, dtype=np.int64), np.ones((1, 5), dtype=np.int64)])
    coef = np.concatenate([np.ones(5), [-5.0 * psi]])
    label = f"{psi.real:g}" if psi.imag == 0 else f"{psi:g}"
    if abs(psi**5 - 1) < 1e-8:
        warnings.warn(
            f"dwork_quintic: psi = {label} has psi^5 = 1, a conifold point: the hypersurface is "
            "singular (dQ = 0 at some points), so weights and |Omega|^2 blow up near the "
            "singularity and sampled quantities converge badly. Choose psi with psi^5 != 1.",
            UserWarning,
            stacklevel=2,
        )
    return Hypersurface(mono, coef, kmoduli, name=f"dwork_quintic(psi={label})")


def fermat_quartic(kmoduli: float = 1.0) -> Hypersurface:
    """The Fermat quartic K3 surface ``sum_i z_i^4 = 0`` in P^3."""
    return _fermat(4, "fermat_quartic", kmoduli)


def fermat_cubic(kmoduli: float = 1.0) -> Hypersurface:
    """The Fermat cubic ``z_0^3 + z_1^3 + z_2^3 = 0`` in P^2: an elliptic curve (the torus).

    Its Ricci-flat metric is known in closed form: in the 1-d local coordinate
    ``g = kappa |Omega|^2`` (a flat metric), which makes it the ground-truth test case.
    """
    return _fermat(3, "fermat_cubic", kmoduli)


#: Named manifolds accepted by :func:`get_manifold` and the CLI.
MANIFOLDS = {
    "quintic": fermat_quintic,
    "fermat_quintic": fermat_quintic,
    "dwork": dwork_quintic,
    "dwork_quintic": dwork_quintic,
    "quartic": fermat_quartic,
    "k3": fermat_quartic,
    "fermat_quartic": fermat_quartic,
    "cubic": fermat_cubic,
    "torus": fermat_cubic,
    "fermat_cubic": fermat_cubic,
}


def get_manifold(name: str, **kwargs) -> Hypersurface:
    """A named manifold: one of ``MANIFOLDS`` (``psi=`` for the Dwork family, ``kmoduli=``)."""
    key = str(name).lower().replace("-", "_")
    if key not in MANIFOLDS:
        raise ValueError(f"Unknown manifold name {name!r}; expected one of {sorted(set(MANIFOLDS))}.")
    factory = MANIFOLDS[key]
    if "psi" in kwargs and factory is not dwork_quintic:
        if kwargs["psi"] not in (None, 0, 0.0):
            raise ValueError(
                f"`psi` applies only to the Dwork quintic; received psi={kwargs['psi']} for manifold {name!r}."
            )
        kwargs.pop("psi")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return factory(**kwargs)
