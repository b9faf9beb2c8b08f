"""Geometry of a Kähler potential by autodiff: eta, Laplacians, gradients, curvature.

:class:`KahlerPotentialGeometry` evaluates, for a φ model's potential
``K = (t/pi) ln|z|^2 + phi`` on a hypersurface, the quantities the flows of
:mod:`cyntk.flows.kahler` need (``eta = det g/(kappa |Omega|^2)``, ``|d eta|^2``,
``Delta ln eta``, the scalar curvature) through the bordered Hessian described
in :mod:`cyntk.flows.kahler`, with no chart, pullback or Omega.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import tensorflow as tf

from cyntk.models._spec import manifold_spec

if TYPE_CHECKING:
    from tensorflow.types.experimental import TensorLike

    from cyntk.models._spec import ManifoldLike
    from cyntk.models.models import PhiModel

__all__ = ["KahlerPotentialGeometry", "QUANTITIES"]


_QUANTITY_ORDER = {
    "phi": 0,
    "eta": 2,
    "log_eta": 2,
    "det_g_over_omega_sq": 2,
    "ma_energy": 2,
    "grad_eta_sq": 3,
    "grad_log_eta_sq": 3,
    "laplacian_log_eta": 4,
    "ricci_scalar": 4,
}
QUANTITIES = tuple(_QUANTITY_ORDER)


# ------------------------------------------------------------------------ geometry core
class KahlerPotentialGeometry:
    """eta, Laplacians, gradients and curvature of ``g = G + J d dbar phi J^H`` by autodiff.

    Uses the bordered Hessian of the module docstring: no chart elimination,
    pullback or Omega enter, and the derivatives of eta are reverse-mode
    autodiff through ``phi`` and ``Q`` (checked against finite differences in
    the tests).

    Args:
        manifold: the hypersurface (``Hypersurface``, ``CYDataset``, basis dict,
            ``ManifoldSpec``) or a :class:`~cyntk.models.PhiModel` (then
            ``potential`` defaults to ``model.potential``, kappa and dtype to
            the model's).
        potential: callable ``phi(x) -> (B,)`` on real points x (B, 2N), or
            ``phi(x, params) -> (B,)`` when ``params`` are passed to the methods
            (see :class:`PhiFlow`); ``None`` for the Fubini--Study metric (phi = 0)
            or a PhiModel's potential.
        kappa: ``Vol_K/Vol_CY`` of the data; default from the manifold/model.
        dtype: ``"float64"`` (default) or ``"float32"``.

    All methods take patch-normalised real points ``x`` (B, 2N) on X (the
    largest coordinate equal to 1, as cymetric's data) and work inside
    ``tf.function``.
    """

    def __init__(
        self,
        manifold: ManifoldLike | PhiModel,
        potential: Callable[..., TensorLike] | None = None,
        *,
        kappa: float | None = None,
        dtype: str | tf.DType | None = None,
    ) -> None:
        model = cast("PhiModel", manifold) if hasattr(manifold, "potential") and hasattr(manifold, "spec") else None
        if model is not None:
            spec = model.spec if kappa is None else model.spec.with_kappa(float(kappa))
            if potential is None:
                potential = model.potential
            dtype = model.compute_dtype if dtype is None else dtype
        else:
            spec = manifold_spec(manifold, kappa)
        if spec.kappa is None:
            raise ValueError(
                "`kappa` is unknown: pass kappa=... or a CYDataset / basis dict with KAPPA "
                "(eta = det g / (kappa |Omega|^2) needs it)."
            )
        dtype = "float64" if dtype is None else getattr(dtype, "name", dtype)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"`dtype` must be 'float32' or 'float64'; received {dtype!r}.")
        if potential is not None and not callable(potential):
            raise TypeError(
                f"`potential` must be callable phi(x) -> (B,) or None; received {type(potential).__name__}."
            )
        self.spec = spec
        self.kappa = float(spec.kappa)
        self.t = float(spec.kmoduli[0])
        self.ncoords = spec.ncoords
        self.nfold = spec.nfold
        self.dtype = tf.as_dtype(dtype)
        self.cdtype = tf.complex128 if self.dtype == tf.float64 else tf.complex64
        self.potential = potential
        # hypersurfaces only: a CICYSpec has no derivative_basis (AttributeError, as before typing)
        E, F = spec.derivative_basis()  # type: ignore[union-attr]
        self._dq_terms = [
            [(complex(F[i, s]), [int(e) for e in E[i, s]]) for s in range(E.shape[1]) if F[i, s] != 0]
            for i in range(self.ncoords)
        ]
        self._maxpow = int(max(1, E.max()))
        self._eye = np.eye(2 * self.ncoords)

    # ------------------------------------------------------------------ basics
    def _phi(self, x: TensorLike, params: Any) -> tf.Tensor:
        if self.potential is None:
            return tf.zeros_like(x[:, 0])
        out = self.potential(x) if params is None else self.potential(x, params)
        out = tf.cast(out, self.dtype)
        return tf.reshape(out, [-1])

    def kahler_potential(self, x: TensorLike, params: Any = None, scale: float | tf.Tensor = 1.0) -> tf.Tensor:
        """``K = (t/pi) ln|z|^2 + scale * phi(x)`` (B,) (the affine-chart potential at z_k = 1)."""
        x = tf.cast(x, self.dtype)
        zz = tf.reduce_sum(x * x, axis=1)
        return tf.constant(self.t / math.pi, self.dtype) * tf.math.log(zz) + scale * self._phi(x, params)

    def dQdz(self, z: tf.Tensor) -> tf.Tensor:
        """``q_i = dQ/dz_i`` (B, N) complex, by repeated multiplication (differentiable, exact)."""
        pw = [tf.ones_like(z), z]
        for _ in range(2, self._maxpow + 1):
            pw.append(pw[-1] * z)
        cols = []
        for terms in self._dq_terms:
            acc = tf.zeros_like(z[:, 0])
            for coef, expo in terms:
                term = tf.fill(tf.shape(z[:, :1]), tf.constant(coef, z.dtype))[:, 0]
                for l, e in enumerate(expo):
                    if e:
                        term = term * pw[e][:, l]
                acc = acc + term
            cols.append(acc)
        return tf.stack(cols, axis=1)

    def _complex(self, x: tf.Tensor) -> tf.Tensor:
        N = self.ncoords
        return tf.complex(x[:, :N], x[:, N:])

    def patch_mask(self, x: TensorLike) -> tf.Tensor:
        """One-hot (B, N) of the patch coordinate (largest modulus); no gradient."""
        x = tf.stop_gradient(tf.cast(x, self.dtype))
        N = self.ncoords
        k = tf.argmax(x[:, :N] ** 2 + x[:, N:] ** 2, axis=1)
        return tf.one_hot(k, N, dtype=self.dtype)

    # ------------------------------------------------------------- derivatives
    def complex_hessian(self, fn: Callable[[tf.Tensor], tf.Tensor], x: TensorLike) -> tuple[tf.Tensor, tf.Tensor]:
        """``A_ij = d^2 f / dz_i dzbar_j`` (B, N, N) complex and f (B,).

        ``fn`` maps real points (B', 2N) to (B',) real, row by row. Reverse
        over reverse mode on the batch tiled once per real coordinate.
        """
        x = tf.cast(x, self.dtype)
        N, D = self.ncoords, 2 * self.ncoords
        xt = tf.repeat(x, D, axis=0)
        u = tf.tile(tf.constant(self._eye, self.dtype), [tf.shape(x)[0], 1])
        with tf.GradientTape() as outer:
            outer.watch(xt)
            with tf.GradientTape() as inner:
                inner.watch(xt)
                f = fn(xt)
            grad = inner.gradient(f, xt, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            s = tf.reduce_sum(grad * u)
        H = outer.gradient(s, xt, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        H = tf.reshape(H, [-1, D, D])
        hxx, hxy, hyx, hyy = H[:, :N, :N], H[:, :N, N:], H[:, N:, :N], H[:, N:, N:]
        A = tf.complex(hxx + hyy, hxy - hyx) * tf.constant(0.25, self.cdtype)
        return tf.reshape(f, [-1, D])[:, 0], A

    def complex_gradient(self, fn: Callable[[tf.Tensor], tf.Tensor], x: TensorLike) -> tuple[tf.Tensor, tf.Tensor]:
        """``d f / dz_i = (f_{x_i} - i f_{y_i}) / 2`` (B, N) complex and f (B,)."""
        x = tf.cast(x, self.dtype)
        N = self.ncoords
        with tf.GradientTape() as tape:
            tape.watch(x)
            f = fn(x)
        g = tape.gradient(f, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return f, tf.complex(g[:, :N], -g[:, N:]) * tf.constant(0.5, self.cdtype)

    # ------------------------------------------------------------ bordered form
    def bordered(
        self, x: TensorLike, params: Any = None, scale: float | tf.Tensor = 1.0
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The bordered Hessian ``B = [[H, q], [q^H, 0]]`` (B, N+1, N+1) and the patch mask.

        The patch coordinate's row and column of H are replaced by the unit
        vector (and q_k by 0), so ``det B`` equals the determinant of the
        reduced (N-1)-coordinate bordered matrix.
        """
        x = tf.cast(x, self.dtype)
        _, H = self.complex_hessian(lambda xx: self.kahler_potential(xx, params, scale), x)
        return self._border(x, H)

    def _border(self, x: tf.Tensor, H: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        m = self.patch_mask(x)
        e = tf.complex(m, tf.zeros_like(m))
        keep = 1.0 - e
        Hm = H * keep[:, :, None] * keep[:, None, :] + tf.linalg.diag(e)
        q = self.dQdz(self._complex(x)) * keep
        top = tf.concat([Hm, q[:, :, None]], axis=2)
        bottom = tf.concat([tf.math.conj(q)[:, None, :], tf.zeros_like(q[:, :1])[:, :, None]], axis=2)
        return tf.concat([top, bottom], axis=1), e

    def eta(self, x: TensorLike, params: Any = None, scale: float | tf.Tensor = 1.0) -> tf.Tensor:
        """``eta = det g/(kappa |Omega|^2) = -det B / kappa`` (B,) real."""
        B, _ = self.bordered(x, params, scale)
        return -tf.math.real(tf.linalg.det(B)) / tf.constant(self.kappa, self.dtype)

    def inverse_metric(self, x: TensorLike, params: Any = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``P = J^H g^{-1} J`` (B, N, N) (top-left block of B^{-1}, patch row/column zeroed) and eta."""
        B, e = self.bordered(x, params)
        return self._projector(B, e), -tf.math.real(tf.linalg.det(B)) / tf.constant(self.kappa, self.dtype)

    def _projector(self, B: tf.Tensor, e: tf.Tensor) -> tf.Tensor:
        N = self.ncoords
        keep = 1.0 - e
        P = tf.linalg.inv(B)[:, :N, :N]
        return P * keep[:, :, None] * keep[:, None, :]

    def metric(self, x: TensorLike, J: TensorLike, params: Any = None) -> tf.Tensor:
        """The metric ``g = J H J^H`` (B, n, n) in a chart with pullbacks J (B, n, N)."""
        _, H = self.complex_hessian(lambda xx: self.kahler_potential(xx, params), x)
        J = tf.cast(J, self.cdtype)
        return tf.matmul(tf.matmul(J, H), J, adjoint_b=True)

    # --------------------------------------------------------------- quantities
    def quantities(self, x: TensorLike, names: Iterable[str], params: Any = None) -> dict[str, tf.Tensor]:
        """Pointwise quantities at x (B, 2N), computed only as needed.

        Args:
            x: real points (B, 2N).
            names: iterable among ``"phi"``, ``"eta"``, ``"log_eta"``,
                ``"det_g_over_omega_sq"`` (= kappa eta, cymetric's eta),
                ``"ma_energy"`` (``int_0^1 phi eta[s phi] ds`` per point),
                ``"grad_eta_sq"`` (|d eta|^2_g), ``"grad_log_eta_sq"``,
                ``"laplacian_log_eta"`` (Delta ln eta), ``"ricci_scalar"``
                (R = -Delta ln eta).
            params: optional parameters passed to the potential.

        Returns:
            dict name -> (B,) real tensor (plus ``"eta"`` always).
        """
        names = tuple(names)
        bad = [k for k in names if k not in _QUANTITY_ORDER]
        if bad:
            raise ValueError(f"`names` must be among {QUANTITIES}; received {bad}.")
        x = tf.cast(x, self.dtype)
        kap = tf.constant(self.kappa, self.dtype)
        out: dict[str, tf.Tensor] = {}
        need3 = any(k in names for k in ("grad_eta_sq", "grad_log_eta_sq"))
        need4 = any(k in names for k in ("laplacian_log_eta", "ricci_scalar"))
        B, e = self.bordered(x, params)
        eta = -tf.math.real(tf.linalg.det(B)) / kap
        out["eta"] = eta
        if "phi" in names or "ma_energy" in names:
            out["phi"] = self._phi(x, params)
        if "log_eta" in names:
            out["log_eta"] = tf.math.log(eta)
        if "det_g_over_omega_sq" in names:
            out["det_g_over_omega_sq"] = kap * eta
        if "ma_energy" in names:
            out["ma_energy"] = self._ma_energy(x, out["phi"], params)
        if need3 or need4:
            P = self._projector(B, e)

            def log_eta_fn(xx: tf.Tensor) -> tf.Tensor:
                return tf.math.log(self.eta(xx, params))

            if need3:
                if "grad_eta_sq" in names:
                    _, d = self.complex_gradient(lambda xx: self.eta(xx, params), x)
                    out["grad_eta_sq"] = self._norm_sq(P, d)
                if "grad_log_eta_sq" in names:
                    _, d = self.complex_gradient(log_eta_fn, x)
                    out["grad_log_eta_sq"] = self._norm_sq(P, d)
            if need4:
                _, A = self.complex_hessian(log_eta_fn, x)
                lap = tf.math.real(tf.linalg.trace(tf.matmul(P, A)))
                if "laplacian_log_eta" in names:
                    out["laplacian_log_eta"] = lap
                if "ricci_scalar" in names:
                    out["ricci_scalar"] = -lap
        return out

    @staticmethod
    def _norm_sq(P: tf.Tensor, d: tf.Tensor) -> tf.Tensor:
        """``|df|^2 = (df)^H P (df)`` (B,) real."""
        return tf.math.real(tf.einsum("bi,bij,bj->b", tf.math.conj(d), P, d))

    def _ma_energy(self, x: tf.Tensor, phi: tf.Tensor, params: Any) -> tf.Tensor:
        """``int_0^1 eta[s phi] ds`` times phi, per point (Gauss-Legendre, exact for deg n)."""
        nodes, weights = np.polynomial.legendre.leggauss(self.nfold + 1)
        s_nodes = 0.5 * (nodes + 1.0)
        acc = tf.zeros_like(phi)
        for s, wq in zip(s_nodes, 0.5 * weights):
            acc = acc + float(wq) * self.eta(x, params, scale=float(s))
        return phi * acc
