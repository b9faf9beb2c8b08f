"""Galerkin flows of a linear φ model's Kähler potential (see :mod:`cyntk.flows.kahler`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import tensorflow as tf

from cyntk.flows.kahler import (
    _FAST_FUNCTIONALS,
    FLOWS,
    FUNCTIONALS,
    _check_name,
    _integral,
    flow_velocity,
    functional_value,
)
from cyntk.flows.solvers import integrate_ode
from cyntk.models.kahler_potential import KahlerPotentialGeometry
from cyntk.models.layers import LinearPotential

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from numpy.typing import ArrayLike

    from cyntk.models.models import PhiModel

__all__ = ["PhiFlow"]


# ------------------------------------------------------------------- Galerkin φ flows
class PhiFlow:
    """Flows of the Kähler potential of a linear φ model, projected on its basis.

    The model must be a :class:`~cyntk.models.PhiModel` whose network is
    ``features(x) -> Dense(1, use_bias=False)`` (e.g. :func:`linear_phi_model`),
    so ``phi(x) = sum_k c_k f_k(x)``. A flow ``d phi/dt = V[phi]`` becomes the
    ODE for the coefficients ::

        dc/dt = argmin_v  sum_p w_p (sum_k v_k f_k(x_p) - V_p)^2       (Galerkin / L2(mu_CY))

    (minimum-norm least squares; directions with relative singular value below
    ``rcond`` -- functions of the basis that vanish on X -- are dropped). This is
    the frozen-kernel flow ``d phi(x)/dt = sum_p Theta(x, x_p) w_p V_p / P`` with the
    projection kernel ``Theta = f(x)^T (F^T W F / P)^{-1} f(x')`` of the basis,
    the reproducing kernel of span{f_k} in L^2(mu_CY), which tends to the local
    kernel ``delta_{mu_CY}(x - x')`` as the basis grows (paper 2.13 with
    Omega_bar = 1).

    With ``projection="mu_g"`` the least squares are weighted by ``w eta``,
    i.e. ``L^2(mu_g)`` instead of ``L^2(mu_CY)``: then the projected Calabi
    flow is the gradient flow of the entropy (Mabuchi) functional restricted to
    the basis in the metric ``int . . mu_g / kappa``, so it decreases it even far
    from the CY metric, where the ``mu_CY`` projection need not (it is exact only
    when eta = 1). Costs a small least-squares solve per right-hand side.

    For the 2nd-order flows the complex Hessians of the basis functions at the
    points are computed once by autodiff, after which eta, V, the right-hand
    side and its Jacobian (for BDF) are cheap closed forms. Flows of order 4
    (Calabi) and 3rd/4th-order functionals are evaluated by autodiff through
    the potential (:class:`KahlerPotentialGeometry` with ``params = c``).

    Args:
        model: the linear PhiModel.
        x: (P, 2N) real train (collocation) points, patch-normalised, on X.
        weights: (P,) cymetric weights w.
        projection: ``"mu_cy"`` (default) or ``"mu_g"`` (see above).
        rcond: relative singular-value cutoff of the projection.
        chunk_size: points per autodiff chunk of the precomputation.
    """

    def __init__(
        self,
        model: PhiModel,
        x: ArrayLike,
        weights: ArrayLike,
        *,
        projection: Literal["mu_cy", "mu_g"] = "mu_cy",
        rcond: float = 1e-10,
        chunk_size: int = 512,
    ) -> None:
        if projection not in ("mu_cy", "mu_g"):
            raise ValueError(f"`projection` must be 'mu_cy' or 'mu_g'; received {projection!r}.")
        self.projection = projection
        net = getattr(model, "network", None)
        if not isinstance(net, LinearPotential):
            raise TypeError(
                "PhiFlow needs a PhiModel whose network is a LinearPotential (phi linear in its "
                "weights), e.g. cyntk.models.layers.linear_phi_model(M, k); received "
                f"network {type(net).__name__}."
            )
        self.model = model
        self.features = net.features
        self.potential_network = net
        self.dtype = model.compute_dtype
        self.geometry = KahlerPotentialGeometry(model, self._potential)
        x = np.asarray(x, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if x.ndim != 2 or x.shape[1] != 2 * self.geometry.ncoords or len(w) != len(x):
            raise ValueError(
                f"`x` must be (P, {2 * self.geometry.ncoords}) and `weights` (P,); received {x.shape} and {w.shape}."
            )
        self.x = x
        self.weights = w
        self.chunk_size = int(chunk_size)
        self.n_basis = net.n_basis
        F = self._features_np(x)
        self._F = F
        sw = np.sqrt(w / len(w))
        U, S, Vt = np.linalg.svd(F * sw[:, None], full_matrices=False)
        keep = S > rcond * S[0]
        # dc = pinv(diag(sw) F) diag(sw) V
        self._proj = (Vt[keep].T / S[keep]) @ (U[:, keep].T * sw[None, :])  # (K, P)
        self.rank = int(keep.sum())
        self._range = Vt[keep].T  # (K, r) kept directions
        self._state = self.precompute(x)
        self._fns = {}

    # --------------------------------------------------------------- basics
    def _potential(self, x, params):
        f = tf.cast(self.features(x), self.geometry.dtype)
        return tf.linalg.matvec(f, tf.cast(params, f.dtype))

    def _features_np(self, x):
        out = [self.features(tf.constant(x[s : s + 4096], self.dtype)).numpy() for s in range(0, len(x), 4096)]
        return np.concatenate(out).astype(np.float64)

    @property
    def coefficients(self) -> np.ndarray:
        """The model's current coefficients c (K,)."""
        return np.asarray(self.potential_network.coefficients.numpy(), dtype=np.float64)[:, 0]

    def set_coefficients(self, c: ArrayLike) -> None:
        """Write coefficients c (K,) into the model."""
        c = np.asarray(c, dtype=np.float64).reshape(-1, 1)
        self.potential_network.coefficients.assign(c.astype(self.potential_network.coefficients.dtype))

    def precompute(self, x: np.ndarray) -> dict[str, tf.Tensor]:
        """Bordered Hessian parts at points x: ``B(c) = B0 + sum_k c_k Bk``.

        ``Bk`` is the (Hermitian) complex Hessian of basis function k in the
        top-left N x N block (patch row and column zeroed), stored packed as N^2
        reals per point and function: ``Re`` of the diagonal, then ``Re`` and
        ``Im`` of the upper triangle.

        Returns:
            dict with ``B0`` (P, N+1, N+1) complex and ``packed`` (P, N^2, K)
            real tensors.
        """
        geo = self.geometry
        N, K = geo.ncoords, self.n_basis
        iu, ju = np.triu_indices(N, 1)
        d = np.arange(N)
        B0s, packs = [], []
        for s in range(0, len(x), self.chunk_size):
            xb = x[s : s + self.chunk_size]
            B0, e = geo.bordered(tf.constant(xb, geo.dtype), params=tf.zeros([K], geo.dtype))
            keep = 1.0 - np.real(e.numpy())
            Ak = self.features.complex_hessians(xb)  # (B, K, N, N)
            Ak = Ak * keep[:, None, :, None] * keep[:, None, None, :]
            pk = np.concatenate([Ak[:, :, d, d].real, Ak[:, :, iu, ju].real, Ak[:, :, iu, ju].imag], axis=2)
            B0s.append(B0.numpy())
            packs.append(np.ascontiguousarray(np.swapaxes(pk, 1, 2)))  # (B, N^2, K)
        # unpacking: Re H = S @ U_re, Im H = S @ U_im (S the packed (.., N^2) entries, H flattened N*N)
        n_off = len(iu)
        U_re = np.zeros((N * N, N * N))
        U_im = np.zeros((N * N, N * N))
        U_re[d, d * N + d] = 1.0
        U_re[N + np.arange(n_off), iu * N + ju] = 1.0
        U_re[N + np.arange(n_off), ju * N + iu] = 1.0
        U_im[N + n_off + np.arange(n_off), iu * N + ju] = 1.0
        U_im[N + n_off + np.arange(n_off), ju * N + iu] = -1.0
        # packed dual: Re tr(Binv Bk) = sum_ij Re(Binv_ij conj(Bk_ij)) = D(Binv) . packed_k
        D_re = np.zeros((N * N, N * N))  # (flattened Binv block) -> packed slot
        D_im = np.zeros((N * N, N * N))
        D_re[d * N + d, d] = 1.0
        D_re[iu * N + ju, N + np.arange(n_off)] = 1.0
        D_re[ju * N + iu, N + np.arange(n_off)] = 1.0
        D_im[iu * N + ju, N + n_off + np.arange(n_off)] = 1.0
        D_im[ju * N + iu, N + n_off + np.arange(n_off)] = -1.0
        dt = geo.dtype
        return {
            "B0": tf.constant(np.concatenate(B0s), geo.cdtype),
            "packed": tf.constant(np.concatenate(packs), dt),
            "U_re": tf.constant(U_re, dt),
            "U_im": tf.constant(U_im, dt),
            "D_re": tf.constant(D_re, dt),
            "D_im": tf.constant(D_im, dt),
        }

    # ----------------------------------------------------------- 2nd-order fast path
    def _eta_from(self, c, state, scale=1.0):
        geo = self.geometry
        N = geo.ncoords
        c = tf.cast(c, geo.dtype) * scale
        S = tf.linalg.matvec(state["packed"], c)  # (P, N^2)
        H = tf.complex(tf.matmul(S, state["U_re"]), tf.matmul(S, state["U_im"]))
        H = tf.reshape(H, [-1, N, N])
        H = tf.pad(H, [[0, 0], [0, 1], [0, 1]])
        B = state["B0"] + H
        return -tf.math.real(tf.linalg.det(B)) / tf.constant(geo.kappa, geo.dtype), B

    def _deta_dc(self, eta, B, state):
        """``d eta_p / d c_k = eta_p Re tr(B_p^{-1} B_{p,k})`` (P, K) (Jacobi's formula)."""
        N = self.geometry.ncoords
        Binv = tf.reshape(tf.linalg.inv(B)[:, :N, :N], [-1, N * N])
        dual = tf.matmul(tf.math.real(Binv), state["D_re"]) + tf.matmul(tf.math.imag(Binv), state["D_im"])
        return eta[:, None] * tf.einsum("pm,pmk->pk", dual, state["packed"])

    def eta(self, c: ArrayLike, x: ArrayLike | None = None) -> np.ndarray:
        """eta at the collocation points (or at other points x, computed afresh) for coefficients c."""
        if x is None:
            return self._eta_from(tf.constant(c, self.geometry.dtype), self._state)[0].numpy()
        return self.geometry.eta(
            tf.constant(x, self.geometry.dtype), params=tf.constant(c, self.geometry.dtype)
        ).numpy()

    def velocity(self, c: ArrayLike, flow: str) -> tf.Tensor:
        """V (P,) of a flow at the collocation points for coefficients c."""
        spec = _check_name(flow, FLOWS, "flow")
        c = tf.constant(np.asarray(c, dtype=np.float64), self.geometry.dtype)
        if spec.order <= 2:
            eta, _ = self._eta_from(c, self._state)
            q = {"eta": eta, "log_eta": tf.math.log(eta)}
            return spec.velocity(q)
        fn = self._fns.get(("velocity", flow))
        if fn is None:
            xs = tf.constant(self.x, self.geometry.dtype)
            fn = tf.function(
                lambda cc: flow_velocity(self.geometry, xs, flow, params=cc),
                input_signature=[tf.TensorSpec([self.n_basis], tf.float64)],
            )
            self._fns[("velocity", flow)] = fn
        return fn(c)

    def rhs(self, flow: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
        """``rhs(t, c) -> dc/dt`` (a ``tf.function``; closed form for 2nd-order flows)."""
        key = ("rhs", flow)
        if key in self._fns:
            return self._fns[key]
        dt = self.geometry.dtype
        proj = tf.constant(self._proj, dt)
        spec = _check_name(flow, FLOWS, "flow")
        sig = [tf.TensorSpec([], tf.float64), tf.TensorSpec([self.n_basis], tf.float64)]
        if self.projection == "mu_g":
            Fr = tf.constant(self._F @ self._range, dt)  # (P, r)
            R = tf.constant(self._range, dt)
            w = tf.constant(self.weights / len(self.weights), dt)

            def project(V, eta):  # argmin_v sum_p w_p eta_p (f(x_p) v - V_p)^2 within the kept range
                sw = tf.sqrt(w * eta)[:, None]
                a = tf.linalg.lstsq(sw * Fr, sw * V[:, None], fast=False)[:, 0]
                return tf.linalg.matvec(R, a)
        else:

            def project(V, eta):
                return tf.linalg.matvec(proj, V)

        if spec.order <= 2:

            @tf.function(input_signature=sig)
            def f(t, c):
                eta, _ = self._eta_from(c, self._state)
                V = spec.velocity({"eta": eta, "log_eta": tf.math.log(eta)})
                return project(V, eta)
        else:
            xs = tf.constant(self.x, dt)

            @tf.function(input_signature=sig)
            def f(t, c):
                q = self.geometry.quantities(xs, spec.needs, params=tf.cast(c, dt))
                return project(spec.velocity(q), q["eta"])

        self._fns[key] = f
        return f

    def jacobian(self, flow: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
        """``jac(t, c) -> d(dc/dt)/dc`` (K, K) for the 2nd-order flows (closed form, ``tf.function``).

        ``d eta_p/dc_k = eta_p tr(B_p^{-1} B_{p,k})`` (Jacobi's formula) and V
        depends on eta pointwise.
        """
        spec = _check_name(flow, FLOWS, "flow")
        if spec.order > 2 or self.projection != "mu_cy":
            raise ValueError(
                f"closed-form Jacobians exist for the 2nd-order flows with projection='mu_cy' "
                f"only; {flow!r} has order {spec.order}, projection {self.projection!r}."
            )
        key = ("jac", flow)
        if key in self._fns:
            return self._fns[key]
        proj = tf.constant(self._proj, self.geometry.dtype)

        @tf.function(input_signature=[tf.TensorSpec([], tf.float64), tf.TensorSpec([self.n_basis], tf.float64)])
        def jac(t, c):
            with tf.GradientTape() as tape:
                eta, B = self._eta_from(c, self._state)
                tape.watch(eta)
                V = spec.velocity({"eta": eta, "log_eta": tf.math.log(eta)})
            dV_deta = tape.gradient(V, eta)  # elementwise (P,)
            return tf.matmul(proj, dV_deta[:, None] * self._deta_dc(eta, B, self._state))

        self._fns[key] = jac
        return jac

    # ------------------------------------------------------------------ running
    def integrate(
        self,
        flow: str,
        times: ArrayLike,
        *,
        method: Literal["euler", "rk4", "dopri", "bdf"] = "rk4",
        dt: float | None = None,
        c0: ArrayLike | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Integrate a flow from coefficients ``c0`` (default: the model's) to the given times.

        Args:
            flow: a name of :data:`FLOWS`.
            times: output times (T,) (see :func:`integrate_ode`).
            method, dt, **kwargs: see :func:`integrate_ode`; BDF gets the
                closed-form Jacobian for 2nd-order flows.
            c0: initial coefficients (K,).

        Returns:
            the dict of :func:`integrate_ode` with ``states`` the coefficients
            (T, K). The model is left unchanged (use :meth:`set_coefficients`).
        """
        _check_name(flow, FLOWS, "flow")
        c0 = self.coefficients if c0 is None else np.asarray(c0, dtype=np.float64)
        jac = None
        if method == "bdf" and FLOWS[flow].order <= 2 and self.projection == "mu_cy":
            jac = self.jacobian(flow)
        return integrate_ode(self.rhs(flow), c0, times, method=method, dt=dt, jacobian=jac, **kwargs)

    def functionals(
        self, c: ArrayLike, names: Iterable[str], x: ArrayLike | None = None, weights: ArrayLike | None = None
    ) -> dict[str, float]:
        """Functionals of :data:`FUNCTIONALS` at coefficients c (on the collocation points by default).

        On the collocation points ``"ultralocal"``, ``"entropy"`` and
        ``"monge_ampere"`` use the precomputed Hessians (closed form); the
        others, and other points, go through autodiff.

        Returns:
            dict name -> float.
        """
        names = tuple(names)
        for nm in names:
            _check_name(nm, FUNCTIONALS, "names")
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        if c.shape != (self.n_basis,):
            raise ValueError(f"`c` must hold {self.n_basis} coefficients; received shape {c.shape}.")
        train = x is None
        cheap = tuple(nm for nm in names if train and nm in _FAST_FUNCTIONALS)
        slow = tuple(nm for nm in names if nm not in cheap)
        ct = tf.constant(c, self.geometry.dtype)
        out = {}
        if cheap:
            fn = self._fns.get(("fast_functionals", cheap))
            if fn is None:
                fn = tf.function(lambda cc: self._fast_functionals(cc, cheap))
                self._fns[("fast_functionals", cheap)] = fn
            out.update({k: float(v.numpy()) for k, v in fn(ct).items()})
        if slow:
            xa = self.x if train else np.asarray(x, dtype=np.float64)
            wa = self.weights if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
            if xa.ndim != 2 or xa.shape[1] != self.x.shape[1] or len(wa) != len(xa):
                raise ValueError(
                    f"`x` must be (P, {self.x.shape[1]}) and `weights` (P,); received {xa.shape} and {wa.shape}."
                )
            fn = self._fns.get(("functionals", slow)) if train else None
            if fn is None:
                xs = tf.constant(xa, self.geometry.dtype)
                ws = tf.constant(wa, self.geometry.dtype)
                needs = tuple(sorted({q for nm in slow for q in FUNCTIONALS[nm][1]}))

                def fn(cc):
                    q = self.geometry.quantities(xs, needs, params=cc)
                    return {nm: functional_value(self.geometry, xs, ws, nm, params=cc, q=q) for nm in slow}

                fn = tf.function(fn)
                if train:
                    self._fns[("functionals", slow)] = fn
            out.update({k: float(v.numpy()) for k, v in fn(ct).items()})
        return {nm: out[nm] for nm in names}

    def _fast_functionals(self, c, names):
        w = tf.constant(self.weights, self.geometry.dtype)
        eta, _ = self._eta_from(c, self._state)
        out = {}
        if "ultralocal" in names:
            out["ultralocal"] = _integral(w, (eta - 1.0) ** 2)
        if "entropy" in names:
            out["entropy"] = _integral(w, eta * tf.math.log(eta) - eta + 1.0)
        if "monge_ampere" in names:
            phi = tf.linalg.matvec(tf.constant(self._F, self.geometry.dtype), c)
            nodes, weights = np.polynomial.legendre.leggauss(self.geometry.nfold + 1)
            acc = tf.zeros_like(phi)
            for sn, wq in zip(0.5 * (nodes + 1.0), 0.5 * weights):
                acc = acc + float(wq) * self._eta_from(c, self._state, scale=float(sn))[0]
            out["monge_ampere"] = _integral(w, phi) - _integral(w, phi * acc)
        return out
