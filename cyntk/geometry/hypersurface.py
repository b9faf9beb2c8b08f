"""Calabi-Yau hypersurfaces in one projective space, in cymetric's conventions.

A :class:`Hypersurface` is the zero locus X = {Q = 0} of a homogeneous
polynomial ``Q(z) = sum_m c_m prod_i z_i**M[m, i]`` in P^{N-1}. It is a
Calabi-Yau (n = N - 2)-fold when deg Q = N. Everything follows
conventions §1-4 exactly:

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
S^{2N-1}) with X: the d roots of every line are found at once as eigenvalues of
a batch of companion matrices, then polished by one Newton step.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from cyntk._validation import as_points, check_memory, positive_int
from cyntk.geometry._kappa import kappa_from_geometry
from cyntk.geometry.cicy import derivative_tables
from cyntk.geometry.projective import fubini_study_metric
from cyntk.geometry.variety import check_on_variety

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
# points per internal generation chunk (bounds memory; progress bar ticks per chunk)
_CHUNK_POINTS = 50_000


class Hypersurface:
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
        self.monomials = mono
        self.coefficients = coef
        self.kmoduli = t
        self.name = str(name)
        self.ncoords = int(N)
        self.nfold = int(N - 2)
        self.degree = int(degrees[0])
        self.ambient = np.array([N - 1], dtype=np.int64)
        self.vol_j_norm = float(self.degree)
        self.intersection_number = float(self.degree * t[0] ** self.nfold)
        self._dexp, self._dcoef = self._derivative_tables()
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
    def is_calabi_yau(self) -> bool:
        """True when deg Q = N (vanishing first Chern class)."""
        return self.degree == self.ncoords

    @property
    def n_charts(self) -> int:
        """Number of (patch, eliminated) charts: N (N - 1)."""
        return self.ncoords * (self.ncoords - 1)

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

    def _derivative_tables(self):
        return derivative_tables(self.monomials, self.coefficients, self.ncoords)

    def derivative_basis(self):
        """dQ/dz_i as padded monomial lists (cymetric's DQDZB0/DQDZF0).

        Returns:
            ``(exponents, coefficients)``: int64 (N, T, N) and complex128 (N, T)
            with ``dQ/dz_i = sum_t coefficients[i, t] prod_l z_l**exponents[i, t, l]``;
            padding rows have exponent 0 and coefficient 0.
        """
        return self._dexp.copy(), self._dcoef.copy()

    # ------------------------------------------------------- polynomial values
    def _points(self, z, name="z"):
        return as_points(z, name, ncoords=self.ncoords)

    def Q(self, z) -> np.ndarray:
        """Q(z), complex128 (P,), for points (P, N) complex or (P, 2N) real."""
        z = self._points(z)
        return _eval_monomials(z, self.monomials[None], self.coefficients[None])[:, 0]

    def monomial_scale(self, z) -> np.ndarray:
        """sum_m |c_m z^{M_m}|: the size of the terms of Q, to judge |Q| against."""
        z = self._points(z)
        return _eval_monomials(np.abs(z), self.monomials[None], np.abs(self.coefficients)[None]).real[:, 0]

    def dQdz(self, z) -> np.ndarray:
        """Gradient dQ/dz_i, complex128 (P, N)."""
        z = self._points(z)
        return _eval_monomials(z, self._dexp, self._dcoef)

    # ---------------------------------------------------------------- charts
    def patch_index(self, z) -> np.ndarray:
        """Index of the coordinate equal to 1 (``numpy.isclose`` defaults), int64 (P,).

        Raises:
            ValueError: if a point has no or several coordinates equal to 1
                (not patch-normalised, or ambiguous).
        """
        z = self._points(z)
        return self._patch_index(z)

    @staticmethod
    def _patch_index(z):
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

    def elimination_index(self, z, patch=None) -> np.ndarray:
        """argmax_j |dQ/dz_j| over the coordinates other than the patch, int64 (P,)."""
        z = self._points(z)
        k = self._patch_index(z) if patch is None else np.asarray(patch, dtype=np.int64)
        dq = np.abs(self.dQdz(z))
        dq[np.arange(len(z)), k] = -np.inf
        return np.argmax(dq, axis=1).astype(np.int64)

    def charts(self, z) -> np.ndarray:
        """The chart of every point: int64 (P, 2) = [patch index k, eliminated index j]."""
        z = self._points(z)
        k = self._patch_index(z)
        return np.stack([k, self.elimination_index(z, k)], axis=1)

    def chart_id(self, charts) -> np.ndarray:
        """Flat chart label ``k * N + j`` from (P, 2) charts."""
        c = np.asarray(charts)
        return c[..., 0] * self.ncoords + c[..., 1]

    def good_coordinates(self, patch, elim) -> np.ndarray:
        """The n local coordinates (ascending) of each point, int64 (P, n)."""
        patch = np.asarray(patch).reshape(-1)
        elim = np.asarray(elim).reshape(-1)
        idx = np.arange(self.ncoords)[None, :].repeat(len(patch), 0)
        mask = (idx != patch[:, None]) & (idx != elim[:, None])
        return idx[mask].reshape(len(patch), self.nfold)

    # -------------------------------------------------------------- pullbacks
    def pullbacks(self, z, j_elim=None) -> np.ndarray:
        """Pullback matrices ``J[a, i] = dz_i/dx^a``, complex128 (P, n, N).

        Args:
            z: points (P, N) complex or (P, 2N) real, patch-normalised.
            j_elim: optional int array (P,) of eliminated coordinates; default
                argmax |dQ/dz| (cymetric's rule).
        """
        z = self._points(z)
        k = self._patch_index(z)
        dq = self.dQdz(z)
        j = self.elimination_index(z, k) if j_elim is None else np.asarray(j_elim, np.int64).reshape(-1)
        return self._pullbacks(z, k, j, dq)

    def _pullbacks(self, z, k, j, dq):
        P, N, n = len(z), self.ncoords, self.nfold
        good = self.good_coordinates(k, j)
        J = np.zeros((P, n, N), dtype=np.complex128)
        rows = np.arange(P)[:, None]
        a = np.arange(n)[None, :]
        J[rows, a, good] = 1.0
        qj = dq[np.arange(P), j]
        J[rows, a, j[:, None]] = -dq[rows, good] / qj[:, None]
        return J

    def omega(self, z, j_elim=None) -> np.ndarray:
        """The holomorphic (n,0)-form's coefficient ``Omega = 1/Q_j``, complex128 (P,)."""
        z = self._points(z)
        dq = self.dQdz(z)
        j = self.elimination_index(z) if j_elim is None else np.asarray(j_elim, np.int64).reshape(-1)
        return 1.0 / dq[np.arange(len(z)), j]

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
        J = self.pullbacks(z, j_elim)
        return _pullback_metric(J, fubini_study_metric(z, self.kmoduli[0] if t is None else t))

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
        if check_variety:
            check_on_variety(self, z, "z", tol)
        k = self._patch_index(z)
        dq = self.dQdz(z)
        if j_elim is None:
            a = np.abs(dq)
            a[np.arange(len(z)), k] = -np.inf
            j = np.argmax(a, axis=1).astype(np.int64)
        else:
            j = np.asarray(j_elim, np.int64).reshape(-1)
        J = self._pullbacks(z, k, j, dq)
        om = 1.0 / dq[np.arange(len(z)), j]
        om2 = np.abs(om) ** 2
        g1 = _pullback_metric(J, fubini_study_metric(z, 1.0))
        det1 = np.real(np.linalg.det(g1))
        t = self.kmoduli[0]
        gt = g1 * t
        dett = det1 * t**self.nfold
        return dict(
            points=z,
            charts=np.stack([k, j], 1),
            pullbacks=J,
            omega=om,
            omega_sq=om2,
            fs_metric_pb=gt,
            det_fs=dett,
            weights=self.vol_j_norm * om2 / det1,
        )

    def kappa(self, z, weights=None) -> float:
        """``kappa = Vol_K[G(kmoduli)] / Vol_CY = mean(w det G/|Omega|^2) / mean(w)`` over the points."""
        return kappa_from_geometry(self.geometry(z), weights)

    def basis(self, kappa: float = 1.0) -> dict:
        """cymetric's ``basis.pickle`` dictionary (conventions §5.2)."""
        E, F = self.derivative_basis()
        qf = self.coefficients
        if np.all(qf.imag == 0):
            qf = qf.real.astype(np.float64)
        return {
            "DQDZB0": E.astype(np.complex64),
            "DQDZF0": F.astype(np.complex64),
            "QB0": self.monomials.astype(np.int64),
            "QF0": qf,
            "NFOLD": np.int64(self.nfold),
            "AMBIENT": self.ambient.astype(np.int64),
            "KMODULI": self.kmoduli.astype(np.float64),
            "NHYPER": 1,
            "INTNUMS": np.full((1,) * self.nfold, self.degree, dtype=np.int64),
            "KAPPA": np.float64(kappa),
        }

    @classmethod
    def from_basis(cls, basis: dict, name: str = "from_basis") -> "Hypersurface":
        """Rebuild the hypersurface from a cymetric basis dict (values may be complex-cast)."""
        missing = [k for k in ("QB0", "QF0", "KMODULI", "AMBIENT") if k not in basis]
        if missing:
            raise KeyError(
                f"`basis` is missing key(s) {missing}; expected a cymetric basis dict "
                f"with QB0, QF0, KMODULI, AMBIENT (see docs/conventions.md §5.2 of cyntk)."
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
        return cls(mono, coef, kmod, name=name)

    def project(self, z, *, max_steps: int = 50, tol: float = 1e-13):
        """Project points onto X by Newton steps along the gradient direction.

        Each step moves ``z <- z - Q(z) conj(dQ/dz) / |dQ/dz|^2`` (the
        minimum-norm Newton step of the scalar equation Q = 0), then the
        result is patch-normalised. Used to put perturbed points back on the
        variety, so that they are valid test points at a controlled distance.

        Args:
            z: complex (P, N) points near X.
            max_steps: Newton steps at most.
            tol: stop when ``|Q| / sum_m |c_m z^m| < tol`` for every point.

        Returns:
            ``(points, converged)``: complex128 (P, N) patch-normalised and
            bool (P,) (False where the relative residual stayed above ``tol``).
        """
        z = as_points(z, "z", ncoords=self.ncoords).copy()
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        for _ in range(int(max_steps)):
            q = self.Q(z)
            res = np.abs(q) / self.monomial_scale(z)
            if np.all(res < tol):
                break
            dq = self.dQdz(z)
            step = (q / np.sum(np.abs(dq) ** 2, axis=1))[:, None] * np.conj(dq)
            z = np.where((res >= tol)[:, None], z - step, z)
            z /= np.linalg.norm(z, axis=1, keepdims=True)
        res = np.abs(self.Q(z)) / self.monomial_scale(z)
        k = np.argmax(np.abs(z), axis=1)
        z = z / z[np.arange(len(z)), k][:, None]
        z[np.arange(len(z)), k] = 1.0 + 0.0j
        return z, res < max(tol, 1e-12)

    # ---------------------------------------------------------------- sampling
    def sample_points(self, n_points, *, seed=None, chart=None, progress=None, newton_steps: int = 1):
        """Sample points on X by intersecting random lines with it.

        The d roots of every line ``p + t q`` (p, q uniform on S^{2N-1}) are the
        eigenvalues of the companion matrix of ``Q(p + t q)`` (coefficients from
        an FFT over d + 1 roots of unity), computed for all lines at once.
        Points are patch-normalised; points with several coordinates equal to 1
        (ambiguous patch) are dropped, as cymetric does. Roots of one line stay
        adjacent; nothing is shuffled. The resulting density is the
        Shiffman-Zelditch one that :meth:`weights` corrects for.

        Args:
            n_points: number of points (> 0).
            seed: int or ``numpy.random.Generator`` (reproducible for a fixed seed).
            chart: optional ``(patch, eliminated)`` pair: keep only points in that
                chart (rejection sampling with over-sampling, paper section 3.1).
            progress: show a tqdm progress bar (default: when n_points >= 200000).
            newton_steps: Newton polishing steps of each root along its line.

        Returns:
            complex128 array (n_points, N).
        """
        n_points = positive_int(n_points, "n_points")
        # the result, its concatenation copy and one chunk of lines with their companion matrices
        d, N = self.degree, self.ncoords
        chunk = min(n_points, _CHUNK_POINTS) * 16 * (6 * N + 2 * d + d + 8)
        check_memory(2 * 16 * N * n_points + chunk, "n_points", n_points, f"sampling on {self.name}")
        rng = _as_rng(seed)
        if chart is not None:
            chart = self._check_chart(chart)
        if progress is None:
            progress = n_points >= 200_000
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_points, desc=f"sampling {self.name}", unit="pt")
        out, have = [], 0
        accept = 1.0 if chart is None else 1.0 / self.n_charts
        tries = 0
        try:
            while have < n_points:
                want = n_points - have
                m = min(_CHUNK_POINTS, int(math.ceil(want / max(accept, 1e-6) * 1.05)) + self.degree)
                z = self._sample_chunk(m, rng, newton_steps)
                if chart is not None:
                    c = self.charts(z)
                    keep = (c[:, 0] == chart[0]) & (c[:, 1] == chart[1])
                    frac = keep.mean()
                    accept = 0.5 * accept + 0.5 * max(frac, 1e-4) if tries else max(frac, 1e-4)
                    z = z[keep]
                tries += 1
                if tries > 10_000:
                    raise RuntimeError(
                        f"sampling produced too few points in chart {chart}; acceptance rate ~{accept:.2e}."
                    )
                z = z[:want]
                out.append(z)
                have += len(z)
                if bar is not None:
                    bar.update(len(z))
        finally:  # also on Ctrl-C: the bar ends before any message
            if bar is not None:
                bar.close()
        return np.concatenate(out, axis=0)

    def _check_chart(self, chart):
        N = self.ncoords
        arr = np.asarray(chart, dtype=object).reshape(-1) if not isinstance(chart, str) else np.array([chart])
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in arr):
            raise ValueError(
                f"`chart` must be a pair (patch, eliminated) of distinct integer indices in "
                f"[0, {N}); received {chart!r}."
            )
        c = tuple(int(v) for v in arr)
        if len(c) != 2 or not (0 <= c[0] < N and 0 <= c[1] < N) or c[0] == c[1]:
            raise ValueError(
                f"`chart` must be a pair (patch, eliminated) of distinct indices in [0, {N}); received {chart!r}."
            )
        return c

    def _sample_chunk(self, n_points, rng, newton_steps):
        """About ``n_points`` patch-normalised, unambiguous points (one batch of lines)."""
        N, d = self.ncoords, self.degree
        n_lines = int(math.ceil(n_points / d)) + 1
        p = _sphere(rng, n_lines, N)
        q = _sphere(rng, n_lines, N)
        # coefficients a_0..a_d of Q(p + t q) from its values at the (d+1)-th roots of unity
        w = np.exp(2j * np.pi * np.arange(d + 1) / (d + 1))
        zs = p[:, None, :] + w[None, :, None] * q[:, None, :]
        vals = self.Q(zs.reshape(-1, N)).reshape(n_lines, d + 1)
        a = np.fft.fft(vals, axis=1) / (d + 1)
        lead = a[:, d]
        ok = np.abs(lead) > 1e-12 * np.max(np.abs(a), axis=1)
        a, p, q, lead = a[ok], p[ok], q[ok], lead[ok]
        comp = np.zeros((len(a), d, d), dtype=np.complex128)
        comp[:, 0, :] = -a[:, d - 1 :: -1] / lead[:, None]
        if d > 1:
            comp[:, np.arange(1, d), np.arange(d - 1)] = 1.0
        t = np.linalg.eigvals(comp)  # (L, d)
        z = p[:, None, :] + t[:, :, None] * q[:, None, :]  # (L, d, N)
        z = z.reshape(-1, N)
        qq = np.repeat(q, d, axis=0)
        tt = t.reshape(-1)
        for _ in range(int(newton_steps)):
            f = self.Q(z)
            df = np.sum(self.dQdz(z) * qq, axis=1)
            with np.errstate(all="ignore"):
                t_new = tt - f / df
            z_new = p.repeat(d, 0) + t_new[:, None] * qq
            better = np.isfinite(t_new) & (np.abs(self.Q(z_new) / _norm_pow(z_new, d)) < np.abs(f / _norm_pow(z, d)))
            z[better], tt[better] = z_new[better], t_new[better]
        z = z[np.all(np.isfinite(z), axis=1)]
        kmax = np.argmax(np.abs(z), axis=1)
        z = z / z[np.arange(len(z)), kmax][:, None]
        z[np.arange(len(z)), kmax] = 1.0 + 0.0j  # exact 1 (cymetric has ~1e-17 imaginary residue)
        unambiguous = np.isclose(z, 1.0 + 0.0j, **_ISCLOSE).sum(axis=1) == 1
        return z[unambiguous]


def _as_rng(seed):
    """A ``numpy.random.Generator`` from ``seed`` (None, a non-negative int or a Generator)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise (ValueError if isinstance(seed, (int, np.integer)) else TypeError)(
            f"`seed` must be None, a non-negative integer or a numpy.random.Generator; received {seed!r}."
        )
    return np.random.default_rng(seed)


def _norm_pow(z, d):
    return np.linalg.norm(z, axis=1) ** d


def _sphere(rng, m, N):
    """m points uniform on S^{2N-1} in C^N: 2N normals, normalised, read as (re, im) pairs."""
    v = rng.standard_normal((m, 2 * N))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v[:, 0::2] + 1j * v[:, 1::2]


def _eval_monomials(z, exps, coefs):
    """sum_t coefs[i, t] prod_l z_l**exps[i, t, l] for all points: (P, I)."""
    # integer powers of complex numbers: numpy uses repeated multiplication (exact 0**0 = 1)
    pw = np.power(z[:, None, None, :], exps[None])  # (P, I, T, N)
    return np.sum(np.prod(pw, axis=-1) * coefs[None], axis=-1)


def _pullback_metric(J, g):
    """``J g J^dagger`` for batches: (P, n, N), (P, N, N) -> (P, n, n)."""
    return J @ g @ np.conj(np.swapaxes(J, 1, 2))


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
