"""Flows of the Kähler potential (paper appendix B) for the φ model.

Conventions (cymetric's, CONVENTIONS.md 4, 6.2): on a hypersurface X ⊂ P^{N-1}
of complex dimension n = N - 2 the metric of the φ model is

    g_{a bbar} = d_a dbar_b K,   K = (t/pi) ln|z|^2 + phi,                    (B.1, B.6)

i.e. ``g = G + J (d dbar phi) J^H`` with no 1/pi or i/2 on phi, and

    eta = det g / (kappa |Omega|^2),   mu_CY = |Omega|^2 (Monte Carlo: weights w),   (B.10, B.11)

so the Ricci-flat metric has eta = 1. Integrals over X are cymetric's Monte-Carlo
sums ``int_X f mu_CY ~ mean_p(w_p f_p)`` (then ``int_X mu_CY = Vol_CY``) and
``mu_g = det g/|Omega|^2 mu_CY = kappa eta mu_CY``. Curvature: ``Ric_{a bbar} =
-d_a dbar_b ln det g = -d_a dbar_b ln eta`` (B.3; ``d dbar ln|Omega|^2 = 0``), the
scalar curvature ``R = g^{a bbar} Ric_{a bbar} = -Delta ln eta`` with the complex
Laplacian ``Delta f = g^{a bbar} d_a dbar_b f``, and ``|df|^2 = g^{a bbar} d_a f
dbar_b f``. cymetric's "Ricci scalar" (:func:`cyntk.models.losses.ricci_scalar`)
is ``-R``.

**Bordered Hessian (how everything is computed).** With the patch coordinate
z_k = 1 fixed, let ``H_ij = d_i dbar_j K`` (i, j != k) be the complex Hessian of
the potential in the N - 1 affine coordinates and ``q_i = dQ/dz_i``. The local
coordinates' pullback J (rows ``e_{g_a} - (q_{g_a}/q_j) e_j``) spans ker(q^T), so
with ``B = [[H, q], [q^H, 0]]`` ::

    det g = det(J H J^H) = -det B / |q_j|^2   =>   eta = -det B / kappa,
    J^H g^{-1} J = P := top-left (N-1)x(N-1) block of B^{-1},

hence ``Delta f = tr(P A_f)`` and ``|df|^2 = (df)^H P (df)`` for the ambient
complex Hessian ``A_f`` and gradient ``df_i = d f/dz_i`` of any extension of f
(for functions on X, ``d_a dbar_b f = (J A_f J^H)_{ab}`` does not depend on the
extension). No local chart j, no pullback and no Omega are needed, and
derivatives of eta of any order are plain autodiff through the potential and
the polynomial: the complex Hessians are reverse-over-reverse derivatives along
the 2N real coordinate directions (``d_i dbar_j f = (f_{x_i x_j} + f_{y_i y_j} +
i (f_{x_i y_j} - f_{y_i x_j}))/4``), the complex gradient ``d_i f = (f_{x_i} - i
f_{y_i})/2``. eta needs 2 derivatives of phi, ``|d eta|^2`` 3, R 4.

**Flows** (``d phi/dt = V[phi]``, so ``d g/dt = d dbar V``; constants in V do not
change g). Signs are those for which the flow is parabolic (well-posed) with
``g = G + d dbar phi``; the paper's printed signs differ in two places:

* ``"kahler_ricci"`` (B.4): ``dg/dt = d dbar ln det g = -Ric``, i.e. ``V = ln eta``.
  Fixed point: eta = 1.
* ``"ultralocal"`` (B.21, sign corrected): ``V = 2 (eta - 1)``. The paper prints
  ``-2(eta - 1)``; with ``g = G + d dbar phi`` (or the paper's B.6, a positive
  multiple of d dbar phi) that flow is a backward heat equation (at a maximum of
  eta, ``d dbar eta < 0`` and the paper's flow *raises* g there) and it increases
  ``E_ultra``; it is kept as ``"ultralocal_paper"`` to show this. ``V = 2(eta - 1)``
  is the L^2(mu_CY) gradient flow of the convex functional ``2 E_MA``
  (``"monge_ampere"`` below), and ``E_ultra`` is a Lyapunov function of it.
* ``"two_derivative"`` (B.19-B.20): ``V = 1 - eta^(-1/2)`` (the paper's
  ``-eta^(-1/2)`` plus 1, which does not change g and makes V vanish at the fixed
  point eta = 1).
* ``"calabi"`` (B.8): ``dg/dt = d dbar R``, ``V = R = -Delta ln eta``. The paper's
  B.8 writes ``R = g^{a bbar} d_a dbar_b ln g``, which by its own B.3 is ``-R``,
  and B.9 then reads ``d phi/dt = Delta ln det g = -R``: the *backward* Calabi flow
  (``~ +Delta^2 phi``, ill-posed). We implement the Calabi flow ``V = R`` (Chen's
  convention), 4th order in phi. Fixed point: R constant, on a CY R = 0, eta = 1.

Every flow leaves the Kähler class fixed (``g - G = d dbar phi`` is exact), so
``Vol_K = int mu_g`` is constant (up to Monte-Carlo error).

**Functionals** (``int = `` Monte-Carlo ``mean(w ...)``):

* ``"ultralocal"`` (B.12, B.14): ``E = int (eta - 1)^2 mu_CY``. Non-increasing along
  every ``V = h(eta)`` with h increasing: ``dE/dt = -(1/kappa) int F''(eta) h'(eta)
  |d eta|^2 mu_g``.
* ``"entropy"`` (B.12 with F = eta ln eta): ``M = int (eta ln eta - eta + 1) mu_CY``
  (>= 0, = 0 at eta = 1; the ``-eta + 1`` is constant in the Kähler class and
  removes the Monte-Carlo offset), the Mabuchi K-energy of a CY up to a
  constant; ``dM/dphi = -(1/kappa) R mu_g``, so the Calabi flow is its
  L^2(mu_g/kappa) gradient flow (paper, below B.14) and it is non-increasing
  along the Kähler-Ricci flow too.
* ``"monge_ampere"``: ``E_MA = int phi mu_CY - int_0^1 ds int phi eta[s phi] mu_CY``
  (Aubin-Yau energy; ``det`` is a degree-n polynomial in s, integrated exactly by
  Gauss-Legendre). Convex, ``dE_MA/dphi = (1 - eta) mu_CY``, minimum at eta = 1.
* ``"two_derivative"`` (B.15): ``E_2 = int |d eta|^2 mu_CY``.
* ``"calabi_energy"`` (B.7): ``Ca = int R^2 mu_g = int kappa eta R^2 mu_CY``.
* ``"einstein_hilbert"`` (B.17): ``-1/2 int R mu_CY``.
* ``"perelman"`` (B.18): ``F = -int (R + |d ln eta|^2) mu_CY``. Integrating by parts
  (``int Delta f mu_CY = int <d ln eta, d f> mu_CY``) it vanishes for *every*
  Kähler potential, not only at the CY metric: with the dilaton ln eta, Perelman's
  functional gives no loss for phi-flows, and the (1,1) part of its metric
  gradient, ``Ric + d dbar ln eta = -d dbar ln(kappa |Omega|^2) = 0``, vanishes too.
  Kähler-Ricci flow is therefore realised with the velocity-matching loss below.

**Losses and neural-network flows.** For a network phi_theta trained by gradient
descent on ``L(theta)`` the potential flows as ``d phi(x)/dt = -sum_x' Theta(x, x')
dL/dphi(x')`` (paper eq. 2.12 for phi). :func:`flow_loss` gives, for a flow V, the
velocity-matching loss ``L = -mean_p(w_p stop_gradient(V_p) phi_p) / Omega_bar``
whose gradient is ``-w V / (P Omega_bar)``: with a local NTK
``Theta = delta_{mu_CY}(x - x') Omega_bar`` (paper 2.13-2.14, 2.42) its flow is
``d phi/dt = V`` exactly; with any other NTK it is the kernel-smoothed flow. For
the gradient flows (``"ultralocal"`` of ``"monge_ampere"``, ``"calabi"`` of
``"entropy"``) :func:`functional_value` can be used as the loss itself.
:class:`PhiFlow` integrates these flows for a PhiModel whose potential is linear in
its weights (e.g. :func:`linear_phi_model`: :class:`HermitianMonomials` + a linear
layer) as the Galerkin flow ``dc/dt = argmin_c' ||phi[c'] - V||_{L^2(w)}``, the
frozen-kernel flow with the projection kernel of the basis, which tends to the
local flow as the basis grows. :func:`network_flow` runs a network's own NTK flow
(gradient descent on the velocity-matching loss).
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from cyntk.models import losses as L
from cyntk.models._spec import manifold_spec

__all__ = [
    "FLOWS",
    "FUNCTIONALS",
    "FlowSpec",
    "KahlerPotentialGeometry",
    "HermitianMonomials",
    "PhiFlow",
    "linear_phi_model",
    "LinearPotential",
    "flow_velocity",
    "flow_loss",
    "functional_value",
    "kahler_measures",
    "integrate_ode",
    "ODE_METHODS",
    "network_flow",
    "ricci_form",
    "metric_flow_loss",
]


# --------------------------------------------------------------------------- flow table
class FlowSpec:
    """A Kähler-potential flow ``d phi/dt = V[phi]``: its formula, order and Lyapunov functionals."""

    def __init__(self, name, formula, equation, order, lyapunov, needs, fn, note="", well_posed=True):
        self.name = name
        self.formula = formula
        self.equation = equation
        self.order = int(order)
        self.lyapunov = tuple(lyapunov)
        self.needs = tuple(needs)
        self._fn = fn
        self.note = note
        self.well_posed = bool(well_posed)

    def velocity(self, q: dict):
        """V from the quantities dict of :meth:`KahlerPotentialGeometry.quantities`."""
        return self._fn(q)

    def __repr__(self):
        return f"FlowSpec({self.name!r}: d phi/dt = {self.formula}, {self.equation})"


#: The flows of appendix B (see the module docstring for signs and fixed points).
FLOWS = {
    "kahler_ricci": FlowSpec(
        "kahler_ricci", "ln eta", "B.4: dg/dt = d dbar ln det g = -Ric", 2,
        ("entropy", "ultralocal"), ("log_eta",), lambda q: q["log_eta"]),
    "ultralocal": FlowSpec(
        "ultralocal", "2 (eta - 1)", "B.21 with the parabolic sign; L2 gradient flow of 2 E_MA", 2,
        ("ultralocal", "monge_ampere"), ("eta",), lambda q: 2.0 * (q["eta"] - 1.0)),
    "ultralocal_paper": FlowSpec(
        "ultralocal_paper", "-2 (eta - 1)", "B.21 as printed (backward-parabolic)", 2,
        (), ("eta",), lambda q: -2.0 * (q["eta"] - 1.0),
        note="ill-posed: increases E_ultra and E_MA", well_posed=False),
    "monge_ampere": FlowSpec(
        "monge_ampere", "eta - 1", "L2(mu_CY) gradient flow of E_MA", 2,
        ("monge_ampere", "ultralocal"), ("eta",), lambda q: q["eta"] - 1.0),
    "two_derivative": FlowSpec(
        "two_derivative", "1 - eta^(-1/2)", "B.19-B.20 (+1: no change of g)", 2,
        ("two_derivative", "ultralocal"), ("eta",), lambda q: 1.0 - q["eta"] ** -0.5),
    "calabi": FlowSpec(
        "calabi", "R = -Delta ln eta", "B.8 (Calabi flow; B.9 as printed is its time reverse)", 4,
        ("entropy", "calabi_energy"), ("ricci_scalar",), lambda q: q["ricci_scalar"]),
}

#: Functionals (name -> (formula, quantities needed, derivative order)).
FUNCTIONALS = {
    "ultralocal": ("int (eta-1)^2 mu_CY  (B.12, B.14)", ("eta",), 2),
    "entropy": ("int (eta ln eta - eta + 1) mu_CY  (B.12, F = eta ln eta; Mabuchi on a CY)",
                ("eta", "log_eta"), 2),
    "monge_ampere": ("int phi mu_CY - int_0^1 ds int phi eta[s phi] mu_CY", ("phi", "ma_energy"), 2),
    "two_derivative": ("int |d eta|^2_g mu_CY  (B.15)", ("grad_eta_sq",), 3),
    "calabi_energy": ("int R^2 mu_g  (B.7)", ("eta", "ricci_scalar"), 4),
    "einstein_hilbert": ("-1/2 int R mu_CY  (B.17)", ("ricci_scalar",), 4),
    "perelman": ("-int (R + |d ln eta|^2) mu_CY  (B.18; identically 0)",
                 ("ricci_scalar", "grad_log_eta_sq"), 4),
}

_FAST_FUNCTIONALS = ("ultralocal", "entropy", "monge_ampere")     # closed form in PhiFlow

_QUANTITY_ORDER = {"phi": 0, "eta": 2, "log_eta": 2, "det_g_over_omega_sq": 2, "ma_energy": 2,
                   "grad_eta_sq": 3, "grad_log_eta_sq": 3, "laplacian_log_eta": 4,
                   "ricci_scalar": 4}
QUANTITIES = tuple(_QUANTITY_ORDER)


def _check_name(name, table, what):
    if name not in table:
        raise ValueError(f"`{what}` must be one of {sorted(table)}; received {name!r}.")
    return table[name]


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

    def __init__(self, manifold, potential=None, *, kappa=None, dtype=None):
        model = manifold if hasattr(manifold, "potential") and hasattr(manifold, "spec") else None
        if model is not None:
            spec = model.spec if kappa is None else model.spec.with_kappa(float(kappa))
            if potential is None:
                potential = model.potential
            dtype = model.compute_dtype if dtype is None else dtype
        else:
            spec = manifold_spec(manifold, kappa)
        if spec.kappa is None:
            raise ValueError("`kappa` is unknown: pass kappa=... or a CYDataset / basis dict with KAPPA "
                             "(eta = det g / (kappa |Omega|^2) needs it).")
        dtype = "float64" if dtype is None else getattr(dtype, "name", dtype)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"`dtype` must be 'float32' or 'float64'; received {dtype!r}.")
        if potential is not None and not callable(potential):
            raise TypeError(f"`potential` must be callable phi(x) -> (B,) or None; received "
                            f"{type(potential).__name__}.")
        self.spec = spec
        self.kappa = float(spec.kappa)
        self.t = float(spec.kmoduli[0])
        self.ncoords = spec.ncoords
        self.nfold = spec.nfold
        self.dtype = tf.as_dtype(dtype)
        self.cdtype = tf.complex128 if self.dtype == tf.float64 else tf.complex64
        self.potential = potential
        E, F = spec.derivative_basis()
        self._dq_terms = [[(complex(F[i, s]), [int(e) for e in E[i, s]])
                           for s in range(E.shape[1]) if F[i, s] != 0] for i in range(self.ncoords)]
        self._maxpow = int(max(1, E.max()))
        self._eye = np.eye(2 * self.ncoords)

    # ------------------------------------------------------------------ basics
    def _phi(self, x, params):
        if self.potential is None:
            return tf.zeros_like(x[:, 0])
        out = self.potential(x) if params is None else self.potential(x, params)
        out = tf.cast(out, self.dtype)
        return tf.reshape(out, [-1])

    def kahler_potential(self, x, params=None, scale=1.0):
        """``K = (t/pi) ln|z|^2 + scale * phi(x)`` (B,) (the affine-chart potential at z_k = 1)."""
        x = tf.cast(x, self.dtype)
        zz = tf.reduce_sum(x * x, axis=1)
        return tf.constant(self.t / math.pi, self.dtype) * tf.math.log(zz) + scale * self._phi(x, params)

    def dQdz(self, z):
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

    def _complex(self, x):
        N = self.ncoords
        return tf.complex(x[:, :N], x[:, N:])

    def patch_mask(self, x):
        """One-hot (B, N) of the patch coordinate (largest modulus); no gradient."""
        x = tf.stop_gradient(tf.cast(x, self.dtype))
        N = self.ncoords
        k = tf.argmax(x[:, :N] ** 2 + x[:, N:] ** 2, axis=1)
        return tf.one_hot(k, N, dtype=self.dtype)

    # ------------------------------------------------------------- derivatives
    def complex_hessian(self, fn, x):
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

    def complex_gradient(self, fn, x):
        """``d f / dz_i = (f_{x_i} - i f_{y_i}) / 2`` (B, N) complex and f (B,)."""
        x = tf.cast(x, self.dtype)
        N = self.ncoords
        with tf.GradientTape() as tape:
            tape.watch(x)
            f = fn(x)
        g = tape.gradient(f, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return f, tf.complex(g[:, :N], -g[:, N:]) * tf.constant(0.5, self.cdtype)

    # ------------------------------------------------------------ bordered form
    def bordered(self, x, params=None, scale=1.0):
        """The bordered Hessian ``B = [[H, q], [q^H, 0]]`` (B, N+1, N+1) and the patch mask.

        The patch coordinate's row and column of H are replaced by the unit
        vector (and q_k by 0), so ``det B`` equals the determinant of the
        reduced (N-1)-coordinate bordered matrix.
        """
        x = tf.cast(x, self.dtype)
        _, H = self.complex_hessian(lambda xx: self.kahler_potential(xx, params, scale), x)
        return self._border(x, H)

    def _border(self, x, H):
        m = self.patch_mask(x)
        e = tf.complex(m, tf.zeros_like(m))
        keep = 1.0 - e
        Hm = H * keep[:, :, None] * keep[:, None, :] + tf.linalg.diag(e)
        q = self.dQdz(self._complex(x)) * keep
        top = tf.concat([Hm, q[:, :, None]], axis=2)
        bottom = tf.concat([tf.math.conj(q)[:, None, :], tf.zeros_like(q[:, :1])[:, :, None]], axis=2)
        return tf.concat([top, bottom], axis=1), e

    def eta(self, x, params=None, scale=1.0):
        """``eta = det g/(kappa |Omega|^2) = -det B / kappa`` (B,) real."""
        B, _ = self.bordered(x, params, scale)
        return -tf.math.real(tf.linalg.det(B)) / tf.constant(self.kappa, self.dtype)

    def inverse_metric(self, x, params=None):
        """``P = J^H g^{-1} J`` (B, N, N) (top-left block of B^{-1}, patch row/column zeroed) and eta."""
        B, e = self.bordered(x, params)
        return self._projector(B, e), -tf.math.real(tf.linalg.det(B)) / tf.constant(self.kappa, self.dtype)

    def _projector(self, B, e):
        N = self.ncoords
        keep = 1.0 - e
        P = tf.linalg.inv(B)[:, :N, :N]
        return P * keep[:, :, None] * keep[:, None, :]

    def metric(self, x, J, params=None):
        """The metric ``g = J H J^H`` (B, n, n) in a chart with pullbacks J (B, n, N)."""
        _, H = self.complex_hessian(lambda xx: self.kahler_potential(xx, params), x)
        J = tf.cast(J, self.cdtype)
        return tf.matmul(tf.matmul(J, H), J, adjoint_b=True)

    # --------------------------------------------------------------- quantities
    def quantities(self, x, names, params=None):
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
        out = {}
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

            def log_eta_fn(xx):
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
    def _norm_sq(P, d):
        """``|df|^2 = (df)^H P (df)`` (B,) real."""
        return tf.math.real(tf.einsum("bi,bij,bj->b", tf.math.conj(d), P, d))

    def _ma_energy(self, x, phi, params):
        """``int_0^1 eta[s phi] ds`` times phi, per point (Gauss-Legendre, exact for deg n)."""
        nodes, weights = np.polynomial.legendre.leggauss(self.nfold + 1)
        s_nodes = 0.5 * (nodes + 1.0)
        acc = tf.zeros_like(phi)
        for s, wq in zip(s_nodes, 0.5 * weights):
            acc = acc + float(wq) * self.eta(x, params, scale=float(s))
        return phi * acc


# ------------------------------------------------------------------------- features
@keras.saving.register_keras_serializable(package="cyntk")
class HermitianMonomials(keras.layers.Layer):
    """Real basis of degree-k bihomogeneous functions on P^{N-1}.

    Maps ``x = [Re z, Im z]`` (B, 2N) to ``Re`` and ``Im`` of
    ``s_alpha(z) conj(s_beta(z)) / |z|^{2k}`` for the degree-k monomials
    ``s_alpha`` (M = C(N+k-1, k) of them): the M diagonal entries, then
    ``Re`` and ``Im`` of the M(M-1)/2 entries alpha < beta -- M^2 real functions,
    invariant under ``z -> lambda z``, hence globally defined on P^{N-1}. Their
    span contains every lower degree (``|z|^2 = sum |z_i|^2``) and the
    constants, and is the space of Kähler potentials of Donaldson's
    "balanced" metrics of level k. A ``Dense(1, use_bias=False)`` on top gives a
    potential linear in its weights.

    Args:
        degree: k >= 1.

    Input shape: (B, 2N). Output shape: (B, M^2).
    """

    def __init__(self, degree=2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(degree, bool) or not isinstance(degree, numbers.Integral) or degree < 1:
            raise ValueError(f"`degree` must be an integer >= 1; received {degree!r}.")
        self.degree = int(degree)

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None or width % 2:
            raise ValueError(f"HermitianMonomials expects inputs of even width 2N; received input "
                             f"shape {tuple(input_shape)}.")
        N = width // 2
        self._N = N
        self._exps = _monomial_exponents(N, self.degree)
        M = len(self._exps)
        iu, ju = np.triu_indices(M, 1)
        self._iu, self._ju = iu, ju
        self.n_features = M * M
        self.built = True

    def call(self, x):
        N, k = self._N, self.degree
        x = tf.cast(x, self.compute_dtype)
        cd = tf.complex128 if self.compute_dtype == "float64" else tf.complex64
        z = tf.complex(x[:, :N], x[:, N:])
        zz = tf.reduce_sum(x * x, axis=1)
        pw = [tf.ones_like(z), z]
        for _ in range(2, k + 1):
            pw.append(pw[-1] * z)
        mons = []
        for e in self._exps:
            m = tf.ones_like(z[:, 0])
            for l, p in enumerate(e):
                if p:
                    m = m * pw[p][:, l]
            mons.append(m)
        s = tf.stack(mons, axis=1)                                    # (B, M)
        norm = tf.complex(zz ** k, tf.zeros_like(zz))[:, None]
        diag = tf.math.real(s * tf.math.conj(s) / norm)
        si, sj = tf.gather(s, self._iu, axis=1), tf.gather(s, self._ju, axis=1)
        off = si * tf.math.conj(sj) / norm
        return tf.concat([diag, tf.math.real(off), tf.math.imag(off)], axis=1)

    def complex_hessians(self, x) -> np.ndarray:
        """Closed-form complex Hessians ``d_i dbar_j f_K`` of all features, (B, K, N, N) complex128.

        With ``rho = |z|^2``, ``a_{alpha i} = d_i s_alpha`` and
        ``f = s_alpha conj(s_beta) rho^{-k}``::

            d_i dbar_j f = rho^{-k} [a_{alpha i} conj(a_{beta j})
                           - (k/rho)(zbar_i s_alpha conj(a_{beta j}) + z_j a_{alpha i} conj(s_beta))
                           - k s_alpha conj(s_beta) (delta_ij/rho - (k+1) zbar_i z_j / rho^2)]

        and ``Hess Re f = (A + A^H)/2``, ``Hess Im f = (A - A^H)/(2i)``. Used by
        :class:`PhiFlow` (checked against autodiff in the tests).

        Args:
            x: real (B, 2N) (float64 recommended).
        """
        if not self.built:
            self.build(np.shape(x))
        x = np.asarray(x, dtype=np.float64)
        N, k = self._N, self.degree
        z = x[:, :N] + 1j * x[:, N:]
        rho = np.sum(np.abs(z) ** 2, axis=1)                                     # (B,)
        E = np.asarray(self._exps)                                               # (M, N)
        s = np.prod(z[:, None, :] ** E[None], axis=-1)                          # (B, M)
        a = np.zeros(s.shape + (N,), dtype=np.complex128)                       # (B, M, N)
        for i in range(N):
            Ei = E.copy()
            Ei[:, i] = np.maximum(Ei[:, i] - 1, 0)
            a[:, :, i] = E[None, :, i] * np.prod(z[:, None, :] ** Ei[None], axis=-1)
        r = rho[:, None, None, None, None]
        sa = s[:, :, None, None, None]
        sb = np.conj(s)[:, None, :, None, None]
        aa = a[:, :, None, :, None]                                              # a_{alpha i}
        ab = np.conj(a)[:, None, :, None, :]                                     # conj(a_{beta j})
        zi = np.conj(z)[:, None, None, :, None]
        zj = z[:, None, None, None, :]
        eye = np.eye(N)[None, None, None]
        A = (aa * ab - (k / r) * (zi * sa * ab + zj * aa * sb)
             - k * sa * sb * (eye / r - (k + 1) * zi * zj / r ** 2)) * r ** (-k)  # (B, M, M, N, N)
        M = len(self._exps)
        d = np.arange(M)
        diag = A[:, d, d]
        off = A[:, self._iu, self._ju]
        offH = np.conj(np.swapaxes(off, -1, -2))
        return np.concatenate([0.5 * (diag + np.conj(np.swapaxes(diag, -1, -2))),
                               0.5 * (off + offH), (off - offH) / 2j], axis=1)

    def compute_output_shape(self, input_shape):
        N = input_shape[-1] // 2
        M = math.comb(N + self.degree - 1, self.degree)
        return tuple(input_shape[:-1]) + (M * M,)

    def get_config(self):
        return {**super().get_config(), "degree": self.degree}


def _monomial_exponents(N, k):
    out = []

    def rec(prefix, left, i):
        if i == N - 1:
            out.append(prefix + [left])
            return
        for p in range(left, -1, -1):
            rec(prefix + [p], left - p, i + 1)

    rec([], k, 0)
    return [tuple(e) for e in out]


@keras.saving.register_keras_serializable(package="cyntk")
class LinearPotential(keras.Model):
    """A Kähler potential linear in its weights: ``phi(x) = sum_k c_k f_k(x)``.

    ``f = HermitianMonomials(degree)(x)`` (K = M^2 functions), ``c``
    (K,) trainable, initialised to 0 (the Fubini--Study metric). Use it as the
    network of a :class:`~cyntk.models.PhiModel` (:func:`linear_phi_model`).

    Args:
        degree: k of the basis.
        dtype: "float64" (default) or "float32".

    Call: x (B, 2N) real -> phi (B, 1).
    """

    def __init__(self, degree=2, dtype="float64", **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.degree = int(degree)
        self.features = HermitianMonomials(degree, dtype=dtype, name="hermitian_monomials")

    def build(self, input_shape):
        self.features.build(input_shape)
        self.coefficients = self.add_weight(shape=(self.features.n_features, 1), initializer="zeros",
                                            trainable=True, name="coefficients", dtype=self.dtype)
        self.built = True

    @property
    def n_basis(self) -> int:
        """K, the number of basis functions."""
        return int(self.features.n_features)

    def call(self, x):
        x = tf.cast(x, self.compute_dtype)
        return tf.matmul(self.features(x), tf.cast(self.coefficients, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        return {**super().get_config(), "degree": self.degree, "dtype": self.dtype}


def linear_phi_model(manifold, degree, *, kappa=None, dtype="float64", name="linear_phi"):
    """A :class:`~cyntk.models.PhiModel` whose potential is a :class:`LinearPotential`.

    ``phi(x) = c . HermitianMonomials(degree)(x)`` with c = 0 initially (the
    Fubini--Study metric). phi is a global function on P^{N-1}, so the metric is
    globally defined and its transition loss vanishes.

    Args:
        manifold: ``Hypersurface``, ``CYDataset``, basis dict.
        degree: k of :class:`HermitianMonomials`.
        kappa, dtype, name: forwarded to PhiModel.
    """
    from cyntk.models.models import PhiModel

    spec = manifold_spec(manifold, kappa)
    net = LinearPotential(degree, dtype=dtype, name=f"{name}_potential")
    net.build((None, 2 * spec.ncoords))
    return PhiModel(net, manifold if kappa is None else spec, dtype=dtype, name=name)


# --------------------------------------------------------------- flows and functionals
def flow_velocity(geometry, x, flow, params=None):
    """``V = d phi/dt`` of a flow at points x (B, 2N) -> (B,) (see :data:`FLOWS`)."""
    spec = _check_name(flow, FLOWS, "flow")
    q = geometry.quantities(x, spec.needs, params)
    return spec.velocity(q)


def _check_points(x, weights, ncoords):
    """x (P, 2N) finite float64 and weights (P,) as arrays, or a ValueError naming the argument."""
    xa = np.asarray(x, dtype=np.float64)
    if xa.ndim != 2 or xa.shape[1] != 2 * ncoords or xa.shape[0] < 1:
        raise ValueError(f"`x` must be real points of shape (P, {2 * ncoords}) = [Re z, Im z]; received "
                         f"shape {xa.shape}.")
    if not np.all(np.isfinite(xa)):
        raise ValueError("`x` must be finite.")
    wa = np.asarray(weights, dtype=np.float64).reshape(-1) if np.ndim(weights) <= 1 else None
    if wa is None or wa.shape[0] != xa.shape[0]:
        raise ValueError(f"`weights` must be (P,) = ({xa.shape[0]},), one per point; received shape "
                         f"{np.shape(weights)}.")
    if not np.all(np.isfinite(wa)) or np.any(wa < 0):
        raise ValueError("`weights` must be finite and non-negative.")
    return xa, wa


def _integral(w, f):
    """Monte-Carlo ``int_X f mu_CY = mean(w f)``."""
    return tf.reduce_mean(tf.cast(w, f.dtype) * f)


def functional_value(geometry, x, weights, functional, params=None, q=None):
    """A functional of :data:`FUNCTIONALS` by Monte Carlo over points x with weights w.

    Differentiable with respect to the potential's parameters, so it can be
    used as a training loss.

    Args:
        geometry: :class:`KahlerPotentialGeometry`.
        x: (P, 2N) real points.
        weights: (P,) cymetric weights (``mean(w f) ~ int f mu_CY``).
        functional: name.
        params: potential parameters (see :class:`KahlerPotentialGeometry`).
        q: precomputed quantities (optional).

    Returns:
        scalar tensor.
    """
    formula, needs, _ = _check_name(functional, FUNCTIONALS, "functional")
    if q is None or any(k not in q for k in needs):
        q = geometry.quantities(x, needs, params)
    w = tf.cast(weights, geometry.dtype)
    kap = tf.constant(geometry.kappa, geometry.dtype)
    if functional == "ultralocal":
        return _integral(w, (q["eta"] - 1.0) ** 2)
    if functional == "entropy":
        return _integral(w, q["eta"] * q["log_eta"] - q["eta"] + 1.0)
    if functional == "monge_ampere":
        return _integral(w, q["phi"]) - _integral(w, q["ma_energy"])
    if functional == "two_derivative":
        return _integral(w, q["grad_eta_sq"])
    if functional == "calabi_energy":
        return _integral(w, kap * q["eta"] * q["ricci_scalar"] ** 2)
    if functional == "einstein_hilbert":
        return -0.5 * _integral(w, q["ricci_scalar"])
    return -_integral(w, q["ricci_scalar"] + q["grad_log_eta_sq"])       # perelman


def flow_loss(geometry, x, weights, flow, params=None, omega_bar=1.0):
    """Velocity-matching loss ``L = -mean_p(w_p sg(V_p) phi_p) / Omega_bar`` of a flow.

    ``dL/dphi(x_p) = -w_p V_p / (P Omega_bar)``: gradient descent with an NTK
    Theta moves phi by ``dphi(x)/dt = sum_p Theta(x, x_p) w_p V_p / (P Omega_bar)``,
    the Monte-Carlo form of ``int Theta(x, x') V(x') mu_CY(x') / Omega_bar``; for
    the local NTK ``Theta = Omega_bar delta_{mu_CY}`` this is ``d phi/dt = V``
    (paper eqs. 2.13-2.14 and 2.42 with the flow's velocity in place of
    Perelman's gradient). The value of L is not a functional of phi (V is held
    fixed); only its gradient matters.

    Returns:
        scalar tensor.
    """
    spec = _check_name(flow, FLOWS, "flow")
    q = geometry.quantities(x, spec.needs + ("phi",), params)
    V = tf.stop_gradient(spec.velocity(q))
    w = tf.cast(weights, geometry.dtype)
    return -_integral(w, V * q["phi"]) / tf.constant(float(omega_bar), geometry.dtype)


def kahler_measures(geometry, x, weights, omega_sq, params=None, *, ricci=False):
    """cymetric's validation measures of the φ metric from eta (CONVENTIONS.md 8).

    Args:
        geometry: :class:`KahlerPotentialGeometry`.
        x: (P, 2N) points; weights, omega_sq: (P,).
        params: potential parameters.
        ricci: also the Ricci measure (4th derivatives).

    Returns:
        dict of floats: ``sigma`` (sigma measure), ``volk`` (``Vol_K =
        mean(w det g/|Omega|^2)``), ``eta_l1`` (``mean(w |eta - 1|)/mean(w)``
        with the data's kappa), ``eta_max_dev`` (``max |eta - 1|``) and, with
        ``ricci=True``, ``ricci`` (cymetric's Ricci measure).
    """
    names = ("eta", "ricci_scalar") if ricci else ("eta",)
    q = geometry.quantities(x, names, params)
    w = np.asarray(weights, dtype=np.float64)
    om = np.asarray(omega_sq, dtype=np.float64)
    eta = q["eta"].numpy().astype(np.float64)
    det = geometry.kappa * eta * om
    out = {"sigma": float(L.sigma_measure(det, w, om)), "volk": float(L.volk_measure(det, w, om)),
           "eta_l1": float(np.mean(w * np.abs(eta - 1.0)) / np.mean(w)),
           "eta_max_dev": float(np.max(np.abs(eta - 1.0)))}
    if ricci:
        R = q["ricci_scalar"].numpy().astype(np.float64)
        out["ricci"] = float(L.ricci_measure(-R, det, w, om, geometry.nfold))
    return out


# ----------------------------------------------------------------------------- ODEs
#: Time integrators of :func:`integrate_ode`.
ODE_METHODS = ("euler", "rk4", "dopri", "bdf")


def integrate_ode(rhs, y0, times, *, method="dopri", dt=None, rtol=1e-6, atol=1e-9,
                  jacobian=None, max_num_steps=None, callback=None, stop=None):
    """Integrate ``dy/dt = rhs(t, y)`` and return y at the requested times.

    Args:
        rhs: callable ``rhs(t, y) -> dy/dt`` on float64 tensors (y of any fixed
            shape). For ``"euler"``/``"rk4"`` it may also return NumPy arrays.
        y0: initial state (array).
        times: increasing output times (T,), ``times[0] >= 0``; the flow starts
            at t = 0.
        method: ``"euler"`` (explicit Euler with step ``dt``: gradient descent
            with learning rate dt, paper eq. 3.5), ``"rk4"`` (classical
            Runge-Kutta, step ``dt``), ``"dopri"`` (adaptive Dormand-Prince 5(4),
            ``tfp.math.ode.DormandPrince``) or ``"bdf"`` (adaptive implicit
            BDF for stiff problems, ``tfp.math.ode.BDF``; the Jacobian comes from
            ``jacobian(t, y)`` if given, else from autodiff of ``rhs``).
        dt: step of the fixed-step methods (required for them). Output times
            must be multiples of dt (to 1e-9 relative).
        rtol, atol: tolerances of the adaptive methods.
        jacobian: optional ``jacobian(t, y) -> d rhs/d y`` (size(y), size(y)) for BDF.
        max_num_steps: cap on the adaptive solvers' steps.
        callback: optional ``callback(t, y)`` called at every output time
            (fixed-step methods) -- for logging.
        stop: optional ``stop(t, y) -> bool`` checked at every output time of
            the fixed-step methods; when True the integration ends there (the
            result then holds fewer states than ``times``; ``stopped`` is True).

    Returns:
        dict with ``times`` (T,), ``states`` (T, *y.shape) float64,
        ``n_rhs`` (evaluations of rhs), ``n_steps`` and ``method``.

    Raises:
        FloatingPointError: the state became non-finite (a blown-up explicit
            flow); the states computed so far are in the exception's
            ``partial`` attribute.
    """
    if method not in ODE_METHODS:
        raise ValueError(f"`method` must be one of {ODE_METHODS}; received {method!r}.")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if len(times) == 0 or not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0) or times[0] < 0:
        raise ValueError(f"`times` must be a non-empty increasing sequence of times >= 0; received "
                         f"{times.tolist()[:5]}.")
    y0 = np.asarray(y0, dtype=np.float64)
    counter = {"n": 0}
    if not callable(rhs):
        raise TypeError(f"`rhs` must be callable rhs(t, y); received {type(rhs).__name__}.")
    if method in ("euler", "rk4"):
        if dt is None or not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"`dt` must be a positive step for method={method!r}; received {dt!r}.")
        return _fixed_step(rhs, y0, times, method, float(dt), callback, counter, stop)
    import tensorflow_probability as tfp

    shape = y0.shape

    def ode_fn(t, y):
        counter["n"] += 1
        return tf.reshape(tf.cast(rhs(t, tf.reshape(y, shape)), tf.float64), [-1])

    kwargs = dict(rtol=rtol, atol=atol, first_step_size=_initial_step(ode_fn, y0.reshape(-1), rtol, atol, 5))
    if max_num_steps is not None:
        kwargs["max_num_steps"] = int(max_num_steps)
    if method == "dopri":
        solver = tfp.math.ode.DormandPrince(**kwargs)
        jac = None
    else:
        solver = tfp.math.ode.BDF(**kwargs)
        jac = None if jacobian is None else (
            lambda t, y: tf.cast(jacobian(t, tf.reshape(y, shape)), tf.float64))
    out_times = times[times > 0]
    states = [y0] * int(np.sum(times == 0))
    n_steps = 0
    if len(out_times):
        y0_t = tf.constant(y0.reshape(-1))

        @tf.function
        def solve():        # one graph for the whole solve: no per-step Python overhead
            r = solver.solve(ode_fn, 0.0, y0_t, solution_times=out_times, jacobian_fn=jac)
            return r.states, r.diagnostics.num_ode_fn_evaluations

        try:
            res_states, res_nfev = solve()
        except tf.errors.InvalidArgumentError as err:
            if "max_num_steps" in str(err):
                raise RuntimeError(
                    f"the {method} solver needed more than max_num_steps={max_num_steps} steps to reach "
                    f"t = {out_times[-1]:g}: the flow is too stiff for it or not smooth (e.g. the sigma loss "
                    "|1 - eta| switches sign where eta = 1, so adaptive steps collapse). Use method='bdf', "
                    "a smooth loss, or a fixed-step method.") from err
            raise
        sol = res_states.numpy().reshape((-1,) + shape)
        states.extend(list(sol))
        n_steps = int(res_nfev.numpy())
        counter["n"] = max(counter["n"], n_steps)
    states = np.asarray(states)
    if not np.all(np.isfinite(states)):
        err = FloatingPointError(f"the {method} solution became non-finite.")
        err.partial = {"times": times, "states": states}
        raise err
    return {"times": times, "states": states, "n_rhs": int(counter["n"]), "n_steps": n_steps,
            "method": method, "stopped": False}


def _initial_step(ode_fn, y0, rtol, atol, order):
    """Hairer-Norsett-Wanner's starting step (Solving ODEs I, II.4).

    TFP's default first step (1e-3) can land a stiff flow on a non-positive
    metric (NaN), from which its step control does not recover.
    """
    f0 = np.asarray(ode_fn(tf.constant(0.0, tf.float64), tf.constant(y0)))
    sc = atol + rtol * np.abs(y0)
    d0 = np.sqrt(np.mean((y0 / sc) ** 2))
    d1 = np.sqrt(np.mean((f0 / sc) ** 2))
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    f1 = np.asarray(ode_fn(tf.constant(h0, tf.float64), tf.constant(y0 + h0 * f0)))
    d2 = np.sqrt(np.mean(((f1 - f0) / sc) ** 2)) / h0
    m = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if m <= 1e-15 else (0.01 / m) ** (1.0 / (order + 1))
    h = min(100 * h0, h1)
    if not np.isfinite(h) or h <= 0:
        h = 1e-6
    return float(h)


def _fixed_step(rhs, y0, times, method, dt, callback, counter, stop=None):
    def f(t, y):
        counter["n"] += 1
        out = rhs(tf.constant(t, tf.float64), tf.constant(y))
        return np.asarray(out.numpy() if hasattr(out, "numpy") else out, dtype=np.float64).reshape(y.shape)

    steps = np.rint(times / dt).astype(np.int64)
    if np.any(np.abs(steps * dt - times) > 1e-9 * np.maximum(1.0, np.abs(times))):
        raise ValueError(f"with method={method!r} the output `times` must be multiples of dt={dt}; "
                         f"received {times.tolist()[:5]}.")
    y = y0.copy()
    t = 0.0
    k = 0
    states = []
    for target in steps:
        while k < target:
            if method == "euler":
                y = y + dt * f(t, y)
            else:
                k1 = f(t, y)
                k2 = f(t + dt / 2, y + dt / 2 * k1)
                k3 = f(t + dt / 2, y + dt / 2 * k2)
                k4 = f(t + dt, y + dt * k3)
                y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            k += 1
            t = k * dt
            if not np.all(np.isfinite(y)):
                err = FloatingPointError(f"the {method} solution became non-finite at t = {t:g} "
                                         f"(step {k}, dt = {dt:g}).")
                err.partial = {"times": times[:len(states)], "states": np.asarray(states)}
                raise err
        states.append(y.copy())
        if callback is not None:
            callback(t, y)
        if stop is not None and stop(t, y):
            return {"times": times[:len(states)], "states": np.asarray(states), "n_rhs": int(counter["n"]),
                    "n_steps": int(k), "method": method, "stopped": True}
    return {"times": times, "states": np.asarray(states), "n_rhs": int(counter["n"]),
            "n_steps": int(steps[-1]), "method": method, "stopped": False}


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

    def __init__(self, model, x, weights, *, projection="mu_cy", rcond=1e-10, chunk_size=512):
        if projection not in ("mu_cy", "mu_g"):
            raise ValueError(f"`projection` must be 'mu_cy' or 'mu_g'; received {projection!r}.")
        self.projection = projection
        net = getattr(model, "network", None)
        if not isinstance(net, LinearPotential):
            raise TypeError("PhiFlow needs a PhiModel whose network is a LinearPotential (phi linear in its "
                            "weights), e.g. cyntk.models.kahler_flows.linear_phi_model(M, k); received "
                            f"network {type(net).__name__}.")
        self.model = model
        self.features = net.features
        self.potential_network = net
        self.dtype = model.compute_dtype
        self.geometry = KahlerPotentialGeometry(model, self._potential)
        x = np.asarray(x, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if x.ndim != 2 or x.shape[1] != 2 * self.geometry.ncoords or len(w) != len(x):
            raise ValueError(f"`x` must be (P, {2 * self.geometry.ncoords}) and `weights` (P,); received "
                             f"{x.shape} and {w.shape}.")
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
        self._proj = (Vt[keep].T / S[keep]) @ (U[:, keep].T * sw[None, :])   # (K, P)
        self.rank = int(keep.sum())
        self._range = Vt[keep].T                                               # (K, r) kept directions
        self._state = self.precompute(x)
        self._fns = {}

    # --------------------------------------------------------------- basics
    def _potential(self, x, params):
        f = tf.cast(self.features(x), self.geometry.dtype)
        return tf.linalg.matvec(f, tf.cast(params, f.dtype))

    def _features_np(self, x):
        out = [self.features(tf.constant(x[s:s + 4096], self.dtype)).numpy()
               for s in range(0, len(x), 4096)]
        return np.concatenate(out).astype(np.float64)

    @property
    def coefficients(self) -> np.ndarray:
        """The model's current coefficients c (K,)."""
        return np.asarray(self.potential_network.coefficients.numpy(), dtype=np.float64)[:, 0]

    def set_coefficients(self, c):
        """Write coefficients c (K,) into the model."""
        c = np.asarray(c, dtype=np.float64).reshape(-1, 1)
        self.potential_network.coefficients.assign(c.astype(self.potential_network.coefficients.dtype))

    def precompute(self, x):
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
            xb = x[s:s + self.chunk_size]
            B0, e = geo.bordered(tf.constant(xb, geo.dtype), params=tf.zeros([K], geo.dtype))
            keep = 1.0 - np.real(e.numpy())
            Ak = self.features.complex_hessians(xb)                             # (B, K, N, N)
            Ak = Ak * keep[:, None, :, None] * keep[:, None, None, :]
            pk = np.concatenate([Ak[:, :, d, d].real, Ak[:, :, iu, ju].real, Ak[:, :, iu, ju].imag], axis=2)
            B0s.append(B0.numpy())
            packs.append(np.ascontiguousarray(np.swapaxes(pk, 1, 2)))           # (B, N^2, K)
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
        D_re = np.zeros((N * N, N * N))                    # (flattened Binv block) -> packed slot
        D_im = np.zeros((N * N, N * N))
        D_re[d * N + d, d] = 1.0
        D_re[iu * N + ju, N + np.arange(n_off)] = 1.0
        D_re[ju * N + iu, N + np.arange(n_off)] = 1.0
        D_im[iu * N + ju, N + n_off + np.arange(n_off)] = 1.0
        D_im[ju * N + iu, N + n_off + np.arange(n_off)] = -1.0
        dt = geo.dtype
        return {"B0": tf.constant(np.concatenate(B0s), geo.cdtype),
                "packed": tf.constant(np.concatenate(packs), dt),
                "U_re": tf.constant(U_re, dt), "U_im": tf.constant(U_im, dt),
                "D_re": tf.constant(D_re, dt), "D_im": tf.constant(D_im, dt)}

    # ----------------------------------------------------------- 2nd-order fast path
    def _eta_from(self, c, state, scale=1.0):
        geo = self.geometry
        N = geo.ncoords
        c = tf.cast(c, geo.dtype) * scale
        S = tf.linalg.matvec(state["packed"], c)                                   # (P, N^2)
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

    def eta(self, c, x=None):
        """eta at the collocation points (or at other points x, computed afresh) for coefficients c."""
        if x is None:
            return self._eta_from(tf.constant(c, self.geometry.dtype), self._state)[0].numpy()
        return self.geometry.eta(tf.constant(x, self.geometry.dtype),
                                 params=tf.constant(c, self.geometry.dtype)).numpy()

    def velocity(self, c, flow):
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
            fn = tf.function(lambda cc: flow_velocity(self.geometry, xs, flow, params=cc),
                             input_signature=[tf.TensorSpec([self.n_basis], tf.float64)])
            self._fns[("velocity", flow)] = fn
        return fn(c)

    def rhs(self, flow):
        """``rhs(t, c) -> dc/dt`` (a ``tf.function``; closed form for 2nd-order flows)."""
        key = ("rhs", flow)
        if key in self._fns:
            return self._fns[key]
        dt = self.geometry.dtype
        proj = tf.constant(self._proj, dt)
        spec = _check_name(flow, FLOWS, "flow")
        sig = [tf.TensorSpec([], tf.float64), tf.TensorSpec([self.n_basis], tf.float64)]
        if self.projection == "mu_g":
            Fr = tf.constant(self._F @ self._range, dt)                         # (P, r)
            R = tf.constant(self._range, dt)
            w = tf.constant(self.weights / len(self.weights), dt)

            def project(V, eta):            # argmin_v sum_p w_p eta_p (f(x_p) v - V_p)^2 within the kept range
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

    def jacobian(self, flow):
        """``jac(t, c) -> d(dc/dt)/dc`` (K, K) for the 2nd-order flows (closed form, ``tf.function``).

        ``d eta_p/dc_k = eta_p tr(B_p^{-1} B_{p,k})`` (Jacobi's formula) and V
        depends on eta pointwise.
        """
        spec = _check_name(flow, FLOWS, "flow")
        if spec.order > 2 or self.projection != "mu_cy":
            raise ValueError(f"closed-form Jacobians exist for the 2nd-order flows with projection='mu_cy' "
                             f"only; {flow!r} has order {spec.order}, projection {self.projection!r}.")
        key = ("jac", flow)
        if key in self._fns:
            return self._fns[key]
        proj = tf.constant(self._proj, self.geometry.dtype)

        @tf.function(input_signature=[tf.TensorSpec([], tf.float64),
                                      tf.TensorSpec([self.n_basis], tf.float64)])
        def jac(t, c):
            with tf.GradientTape() as tape:
                eta, B = self._eta_from(c, self._state)
                tape.watch(eta)
                V = spec.velocity({"eta": eta, "log_eta": tf.math.log(eta)})
            dV_deta = tape.gradient(V, eta)                                    # elementwise (P,)
            return tf.matmul(proj, dV_deta[:, None] * self._deta_dc(eta, B, self._state))
        self._fns[key] = jac
        return jac

    # ------------------------------------------------------------------ running
    def integrate(self, flow, times, *, method="rk4", dt=None, c0=None, **kwargs):
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

    def functionals(self, c, names, x=None, weights=None):
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
                raise ValueError(f"`x` must be (P, {self.x.shape[1]}) and `weights` (P,); received "
                                 f"{xa.shape} and {wa.shape}.")
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


def ricci_form(model, x, training=False):
    """``rho_{a bbar} = d_a dbar_b ln det g = -Ric_{a bbar}`` (B, n, n) of any cyntk metric model.

    Complex Hessian of ``ln det g`` along the local coordinates by autodiff
    through the model (forward-over-reverse, :func:`~cyntk.models._tfgeometry.local_ddbar`),
    in each point's own chart. ``d g/dt = rho`` is Kähler-Ricci flow (B.4).

    Args:
        model: a :class:`~cyntk.models.MetricModel` (FS, multiplicative, phi).
        x: (B, 2N) real points.

    Returns:
        ``(rho, g)``: (B, n, n) complex each.
    """
    from cyntk.models._tfgeometry import local_ddbar

    x = tf.cast(x, model.compute_dtype)
    patch, j = model.geometry.charts(x)
    frame = model.geometry.local_frame(x, patch, j)

    def logdet(xx, pp, jj):
        return tf.math.log(tf.math.real(L.determinant(model.metric_in_chart(xx, pp, jj, training))))

    _, rho = local_ddbar(logdet, x, frame["J"], aux=(patch, j))
    g = model.metric_in_chart(x, patch, j, training)
    return rho, g


def metric_flow_loss(model, x, weights, *, omega_bar=1.0, training=True):
    """Velocity-matching loss of Kähler-Ricci flow in metric components (paper 2.14, 2.42).

    ``L = -mean_p(w_p sum_I stop_gradient(rho_I(x_p)) g_I(x_p)) / Omega_bar`` over the n^2
    real components I (cyntk's order) of ``rho = d dbar ln det g`` and g, so
    ``dL/dg_I(x_p) = -w_p rho_I / (P Omega_bar)``: with the local component-diagonal
    NTK ``Theta_IJ = delta_IJ Omega_bar delta_{mu_CY}`` gradient descent is
    ``dg/dt = rho = -Ric`` (B.4) exactly; a finite network's NTK smooths and mixes it
    (and need not keep the Kähler class). Works for any metric model.

    Returns:
        scalar tensor (only its gradient is meaningful).
    """
    from cyntk.models.hermitian import components_from_hermitian_tf

    rho, g = ricci_form(model, x, training=training)
    r = tf.stop_gradient(components_from_hermitian_tf(rho))
    gc = components_from_hermitian_tf(g)
    w = tf.cast(weights, gc.dtype)
    return -tf.reduce_mean(w * tf.reduce_sum(r * gc, axis=1)) / tf.constant(float(omega_bar), gc.dtype)


def network_flow(model, x, weights, target, *, steps, learning_rate, omega_bar=1.0, every=1,
                 callback=None):
    """A neural-network metric flow: plain gradient descent on a flow's loss.

    Each step is ``theta <- theta - lr dL/dtheta``, so the metric (or potential)
    moves by the network's NTK (paper eqs. 2.8, 2.12), flow time ``t = lr * steps``.
    ``L`` is

    * for a PhiModel and ``target`` in :data:`FLOWS`: the velocity-matching
      loss :func:`flow_loss` (local-NTK limit ``d phi/dt = V``);
    * for a PhiModel and ``target`` in :data:`FUNCTIONALS`: that functional;
    * for any metric model and ``target="kahler_ricci_metric"``:
      :func:`metric_flow_loss` (local-NTK limit ``dg/dt = -Ric``).

    Args:
        model: a cyntk metric model.
        x: (P, 2N) real points; weights: (P,) cymetric weights.
        target: see above.
        steps: number of steps; learning_rate: lr (= dt).
        omega_bar: Omega_bar of the velocity-matching losses.
        every: call ``callback(step, t)`` every this many steps (and at 0).
        callback: optional callable.

    Returns:
        list of the loss values per step (float).
    """
    if not isinstance(target, str) or not (target in FLOWS or target in FUNCTIONALS
                                           or target == "kahler_ricci_metric"):
        raise ValueError(f"`target` must be a flow {sorted(FLOWS)}, a functional {sorted(FUNCTIONALS)} "
                         f"or 'kahler_ricci_metric'; received {target!r}.")
    lr = float(learning_rate) if isinstance(learning_rate, numbers.Real) else float("nan")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"`learning_rate` must be a positive number; received {learning_rate!r}.")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative integer; received {steps!r}.")
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"`every` must be a positive integer; received {every!r}.")
    if not (hasattr(model, "ncoords") and hasattr(model, "geometry")):
        raise TypeError(f"`model` must be a cyntk metric model (FSModel, MultiplicativeModel, PhiModel, ...); "
                        f"received {type(model).__name__}.")
    if not (isinstance(omega_bar, numbers.Real) and np.isfinite(omega_bar) and omega_bar > 0):
        raise ValueError(f"`omega_bar` must be a positive number; received {omega_bar!r}.")
    xa, wa = _check_points(x, weights, model.ncoords)
    xs = tf.constant(xa, model.compute_dtype)
    ws = tf.constant(wa, model.compute_dtype)
    if target == "kahler_ricci_metric":
        def loss_fn():
            return metric_flow_loss(model, xs, ws, omega_bar=omega_bar)
    else:
        if not hasattr(model, "potential"):
            raise ValueError(f"`target` {target!r} needs a PhiModel; for other metric models use "
                             "target='kahler_ricci_metric'.")
        geo = KahlerPotentialGeometry(model)
        if target in FLOWS:
            def loss_fn():
                return flow_loss(geo, xs, ws, target, omega_bar=omega_bar)
        else:
            def loss_fn():
                return functional_value(geo, xs, ws, target)
    variables = model.trainable_variables

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads):
            if g is not None:
                v.assign_sub(tf.cast(lr, v.dtype) * tf.cast(g, v.dtype))
        return loss

    out = []
    if callback is not None:
        callback(0, 0.0)
    for k in range(1, int(steps) + 1):
        out.append(float(step().numpy()))
        if not np.isfinite(out[-1]):
            raise FloatingPointError(f"the network flow's loss became non-finite at step {k} "
                                     f"(learning rate {lr:g}).")
        if callback is not None and (k % every == 0 or k == steps):
            callback(k, k * lr)
    return out
