"""Flows of the Kähler potential (paper appendix B): flow and functional tables, velocities, losses.

Conventions (cymetric's, conventions §4, 6.2): on a hypersurface X ⊂ P^{N-1}
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

from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from cyntk.models import losses as L

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from numpy.typing import ArrayLike
    from tensorflow.types.experimental import TensorLike

    from cyntk.models.kahler_potential import KahlerPotentialGeometry

__all__ = ["FLOWS", "FUNCTIONALS", "FlowSpec", "flow_velocity", "flow_loss", "functional_value", "kahler_measures"]


# --------------------------------------------------------------------------- flow table
class FlowSpec:
    """A Kähler-potential flow ``d phi/dt = V[phi]``: its formula, order and Lyapunov functionals."""

    def __init__(
        self,
        name: str,
        formula: str,
        equation: str,
        order: int,
        lyapunov: Iterable[str],
        needs: Iterable[str],
        fn: Callable[[Mapping[str, tf.Tensor]], tf.Tensor],
        note: str = "",
        well_posed: bool = True,
    ) -> None:
        self.name = name
        self.formula = formula
        self.equation = equation
        self.order = int(order)
        self.lyapunov = tuple(lyapunov)
        self.needs = tuple(needs)
        self._fn = fn
        self.note = note
        self.well_posed = bool(well_posed)

    def velocity(self, q: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """V from the quantities dict of :meth:`KahlerPotentialGeometry.quantities`."""
        return self._fn(q)

    def __repr__(self):
        return f"FlowSpec({self.name!r}: d phi/dt = {self.formula}, {self.equation})"


#: The flows of appendix B (see the module docstring for signs and fixed points).
FLOWS = {
    "kahler_ricci": FlowSpec(
        "kahler_ricci",
        "ln eta",
        "B.4: dg/dt = d dbar ln det g = -Ric",
        2,
        ("entropy", "ultralocal"),
        ("log_eta",),
        lambda q: q["log_eta"],
    ),
    "ultralocal": FlowSpec(
        "ultralocal",
        "2 (eta - 1)",
        "B.21 with the parabolic sign; L2 gradient flow of 2 E_MA",
        2,
        ("ultralocal", "monge_ampere"),
        ("eta",),
        lambda q: 2.0 * (q["eta"] - 1.0),
    ),
    "ultralocal_paper": FlowSpec(
        "ultralocal_paper",
        "-2 (eta - 1)",
        "B.21 as printed (backward-parabolic)",
        2,
        (),
        ("eta",),
        lambda q: -2.0 * (q["eta"] - 1.0),
        note="ill-posed: increases E_ultra and E_MA",
        well_posed=False,
    ),
    "monge_ampere": FlowSpec(
        "monge_ampere",
        "eta - 1",
        "L2(mu_CY) gradient flow of E_MA",
        2,
        ("monge_ampere", "ultralocal"),
        ("eta",),
        lambda q: q["eta"] - 1.0,
    ),
    "two_derivative": FlowSpec(
        "two_derivative",
        "1 - eta^(-1/2)",
        "B.19-B.20 (+1: no change of g)",
        2,
        ("two_derivative", "ultralocal"),
        ("eta",),
        lambda q: 1.0 - q["eta"] ** -0.5,
    ),
    "calabi": FlowSpec(
        "calabi",
        "R = -Delta ln eta",
        "B.8 (Calabi flow; B.9 as printed is its time reverse)",
        4,
        ("entropy", "calabi_energy"),
        ("ricci_scalar",),
        lambda q: q["ricci_scalar"],
    ),
}

#: Functionals (name -> (formula, quantities needed, derivative order)).
FUNCTIONALS = {
    "ultralocal": ("int (eta-1)^2 mu_CY  (B.12, B.14)", ("eta",), 2),
    "entropy": ("int (eta ln eta - eta + 1) mu_CY  (B.12, F = eta ln eta; Mabuchi on a CY)", ("eta", "log_eta"), 2),
    "monge_ampere": ("int phi mu_CY - int_0^1 ds int phi eta[s phi] mu_CY", ("phi", "ma_energy"), 2),
    "two_derivative": ("int |d eta|^2_g mu_CY  (B.15)", ("grad_eta_sq",), 3),
    "calabi_energy": ("int R^2 mu_g  (B.7)", ("eta", "ricci_scalar"), 4),
    "einstein_hilbert": ("-1/2 int R mu_CY  (B.17)", ("ricci_scalar",), 4),
    "perelman": ("-int (R + |d ln eta|^2) mu_CY  (B.18; identically 0)", ("ricci_scalar", "grad_log_eta_sq"), 4),
}

_FAST_FUNCTIONALS = ("ultralocal", "entropy", "monge_ampere")  # closed form in PhiFlow


def _check_name(name, table, what):
    if name not in table:
        raise ValueError(f"`{what}` must be one of {sorted(table)}; received {name!r}.")
    return table[name]


# --------------------------------------------------------------- flows and functionals
def flow_velocity(geometry: KahlerPotentialGeometry, x: TensorLike, flow: str, params: Any = None) -> tf.Tensor:
    """``V = d phi/dt`` of a flow at points x (B, 2N) -> (B,) (see :data:`FLOWS`)."""
    spec = _check_name(flow, FLOWS, "flow")
    q = geometry.quantities(x, spec.needs, params)
    return spec.velocity(q)


def _check_points(x, weights, ncoords):
    """x (P, 2N) finite float64 and weights (P,) as arrays, or a ValueError naming the argument."""
    xa = np.asarray(x, dtype=np.float64)
    if xa.ndim != 2 or xa.shape[1] != 2 * ncoords or xa.shape[0] < 1:
        raise ValueError(
            f"`x` must be real points of shape (P, {2 * ncoords}) = [Re z, Im z]; received shape {xa.shape}."
        )
    if not np.all(np.isfinite(xa)):
        raise ValueError("`x` must be finite.")
    wa = np.asarray(weights, dtype=np.float64).reshape(-1) if np.ndim(weights) <= 1 else None
    if wa is None or wa.shape[0] != xa.shape[0]:
        raise ValueError(
            f"`weights` must be (P,) = ({xa.shape[0]},), one per point; received shape {np.shape(weights)}."
        )
    if not np.all(np.isfinite(wa)) or np.any(wa < 0):
        raise ValueError("`weights` must be finite and non-negative.")
    return xa, wa


def _integral(w, f):
    """Monte-Carlo ``int_X f mu_CY = mean(w f)``."""
    return tf.reduce_mean(tf.cast(w, f.dtype) * f)


def functional_value(
    geometry: KahlerPotentialGeometry,
    x: TensorLike,
    weights: TensorLike,
    functional: str,
    params: Any = None,
    q: Mapping[str, tf.Tensor] | None = None,
) -> tf.Tensor:
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
    return -_integral(w, q["ricci_scalar"] + q["grad_log_eta_sq"])  # perelman


def flow_loss(
    geometry: KahlerPotentialGeometry,
    x: TensorLike,
    weights: TensorLike,
    flow: str,
    params: Any = None,
    omega_bar: float = 1.0,
) -> tf.Tensor:
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


def kahler_measures(
    geometry: KahlerPotentialGeometry,
    x: TensorLike,
    weights: ArrayLike,
    omega_sq: ArrayLike,
    params: Any = None,
    *,
    ricci: bool = False,
) -> dict[str, float]:
    """cymetric's validation measures of the φ metric from eta (conventions §8).

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
    out = {
        "sigma": float(L.sigma_measure(det, w, om)),
        "volk": float(L.volk_measure(det, w, om)),
        "eta_l1": float(np.mean(w * np.abs(eta - 1.0)) / np.mean(w)),
        "eta_max_dev": float(np.max(np.abs(eta - 1.0))),
    }
    if ricci:
        R = q["ricci_scalar"].numpy().astype(np.float64)
        out["ricci"] = float(L.ricci_measure(-R, det, w, om, geometry.nfold))
    return out
