"""Dual activations: Gaussian expectations of an activation, closed form or Gauss-Hermite.

For a pre-activation pair ``(u, v) ~ N(0, [[q, k], [k, q']])`` the infinite-width
recursion of :mod:`cyntk.kernels.analytic` needs, per activation ``phi``::

    E[phi(u) phi(v)]      (the NNGP map),
    E[phi'(u) phi'(v)]    (the NTK's derivative map),
    E[phi(u)^2]           (the variance map, u ~ N(0, q)).

A :class:`DualActivation` provides the three maps. Closed forms (float64, exact
up to rounding), with ``c = cos t = k / sqrt(q q')``, ``s = sin t``,
``a = 1 + q``, ``b = 1 + q'``, ``D = a b - k^2``:

* ``abrelu(a-, a+)``: ``phi(u) = a- min(u, 0) + a+ max(u, 0)`` (Cho & Saul's
  arc-cosine kernels, with ``p = pi - t``)::

      E[phi phi]   = sqrt(q q') ((a+ - a-)^2 s + ((a-^2 + a+^2) p + 2 a- a+ t) c) / 2 pi
      E[phi' phi'] = ((a-^2 + a+^2) p + 2 a- a+ t) / 2 pi,      E[phi^2] = (a-^2 + a+^2) q / 2

  ``relu`` = abrelu(0, 1), ``leaky_relu`` = abrelu(0.2, 1) (Keras' default
  slope), ``abs`` = abrelu(-1, 1).
* ``erf`` (Williams 1997)::

      E[phi phi]   = (2/pi) arcsin(2k / sqrt((1 + 2q)(1 + 2q')))
      E[phi' phi'] = (4/pi) / sqrt((1 + 2q)(1 + 2q') - 4k^2)

* ``gelu`` (exact, ``phi(u) = u Phi(u)``), derived by Gaussian integration by
  parts (Stein's lemma) with ``T = arctan2(k, sqrt(D)) = arcsin(k / sqrt(a b))``::

      E[phi phi]   = k/4 + k T / 2 pi + (k^2 + q q' D) / (2 pi a b sqrt(D))
      E[phi' phi'] = 1/4 + T / 2 pi + k (1/a + 1/b + 1/D) / (2 pi sqrt(D))
      E[phi^2]     = q/4 + q arcsin(q / (1 + q)) / 2 pi + q^2 / (pi (1 + q) sqrt(1 + 2q))

  (the orthant probability ``E[Phi(u) Phi(v)] = 1/4 + T / 2 pi`` and
  ``E[N(u) N(v)] = 1 / (2 pi sqrt(D))`` for the standard normal density ``N``).
* ``sin`` and ``cos``, with ``m = (q + q')/2``::

      E[sin u sin v] = exp(-m) sinh(k),   E[cos u cos v] = exp(-m) cosh(k)

* ``identity``: ``E[u v] = k``, ``E[1] = 1``.

Every other activation (``tanh``, ``sigmoid``, ``softplus``, ``silu``, ``elu``
or any :func:`numerical` one) uses Gauss-Hermite quadrature with ``deg``
nodes ``x_i`` and weights ``w_i`` per axis, the Cholesky factorisation on ``u``::

    E[f(u) g(v)] = (1/pi) sum_ij w_i w_j f(sqrt(2q) x_i) g(sqrt(2) (k/sqrt(q)) x_i + sqrt(2 (q' - k^2/q)) y_j)

(exact for polynomials of degree < 2 deg). For an activation analytic in the
strip ``|Im z| < c`` (``tanh``: ``c = pi/2``; ``sigmoid``, ``softplus``,
``silu``: ``c = pi``) the error falls like ``exp(-2 tau sqrt(2 deg))`` with
``tau = c / sqrt(2 q)``: the default ``deg = 64`` gives ~1e-14 for tanh at
``q ~ 1`` but only ~1e-7 at ``q ~ 2.5`` (1e-12 there needs ``deg ~ 200``), and
large variances (``W_std`` of order 10 and more) are out of reach of any
practical ``deg``; ``elu`` is only C^1, so its error falls algebraically
(~1e-4 relative at 64 nodes). neural-tangents' ``ElementwiseNumerical`` uses the
same rule, so at equal ``deg`` both agree to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import expit, roots_hermite

__all__ = [
    "CLOSED_FORMS",
    "QUADRATURE",
    "DualActivation",
    "abrelu",
    "dual_activation",
    "numerical",
]

_TWO_PI = 2.0 * math.pi


def _rsqrt(q):
    out = np.zeros_like(q, dtype=np.float64)
    np.divide(1.0, np.sqrt(q), out=out, where=q > 0)
    return out


def _cosine(q1, q2, k, same):
    """``c = k / sqrt(q q')`` clipped to [-1, 1]; exactly 1 on the diagonal of a set with itself."""
    c = np.multiply.outer(_rsqrt(q1), _rsqrt(q2)) * k
    np.clip(c, -1.0, 1.0, out=c)
    if same:
        np.fill_diagonal(c, 1.0)
    return c


@dataclass(frozen=True)
class DualActivation:
    """An activation with its Gaussian expectation maps.

    Attributes:
        name: the activation's name (``'relu'``, ``'gelu'``, ...; a custom one
            for :func:`numerical`).
        fn: NumPy ``phi`` (elementwise, float64).
        dfn: NumPy ``phi'``.
        cross: closed-form ``(q (P1,), q' (P2,), k (P1, P2), same) -> (E[phi phi],
            E[phi' phi'])`` or None (quadrature).
        diag: closed-form ``q -> E[phi(u)^2]`` or None (quadrature).
        deg: Gauss-Hermite nodes per axis when there is no closed form.
        keras_name: the Keras activation of the finite network
            (:func:`cyntk.kernels.ntk_networks.ntk_mlp`).
    """

    name: str
    fn: Callable = field(repr=False)
    dfn: Callable = field(repr=False)
    cross: Callable | None = field(default=None, repr=False)
    diag: Callable | None = field(default=None, repr=False)
    deg: int = 64
    keras_name: str | None = None

    @property
    def closed_form(self) -> bool:
        """True when both maps are closed forms (exact up to rounding)."""
        return self.cross is not None and self.diag is not None

    def expectations(
        self, q1: np.ndarray, q2: np.ndarray, k: np.ndarray, same: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])``, float64 (P1, P2).

        Args:
            q1: float64 (P1,) variances ``K(x, x)``.
            q2: float64 (P2,) variances ``K(x', x')``.
            k: float64 (P1, P2) covariances ``K(x, x')``.
            same: the block is a point set with itself (exact diagonal).
        """
        if self.cross is not None:
            return self.cross(q1, q2, k, same)
        return gauss_hermite_2d(self.fn, self.dfn, q1, q2, k, self.deg, same)

    def variance(self, q: np.ndarray) -> np.ndarray:
        """``E[phi(u)^2]`` for ``u ~ N(0, q)``, float64 (P,)."""
        if self.diag is not None:
            return self.diag(q)
        x, w = roots_hermite(self.deg)
        u = np.sqrt(2.0 * np.asarray(q, np.float64))[:, None] * x
        return (self.fn(u) ** 2) @ w / math.sqrt(math.pi)


def gauss_hermite_2d(f, df, q1, q2, k, deg, same=False, max_entries=1 << 22):
    """``(E[f(u) f(v)], E[df(u) df(v)])`` by ``deg x deg`` Gauss-Hermite quadrature (module docstring).

    Evaluated in row chunks so that at most ``max_entries`` values of ``v``
    exist at once; for a set with itself (``same``) the result is symmetrised.
    """
    x, w = roots_hermite(int(deg))
    q1 = np.asarray(q1, np.float64)
    q2 = np.asarray(q2, np.float64)
    k = np.asarray(k, np.float64)
    p1, p2 = k.shape
    e_f = np.empty((p1, p2))
    e_df = np.empty((p1, p2))
    rows = max(1, max_entries // max(1, p2 * len(x)))
    for s in range(0, p1, rows):
        sl = slice(s, s + rows)
        qa, kb = q1[sl][:, None], k[sl]
        ra = _rsqrt(qa)
        slope = math.sqrt(2.0) * kb * ra  # v = slope x_i + spread y_j
        cond = q2[None, :] - kb * kb * ra * ra
        if same:
            idx = np.arange(s, min(s + rows, p1))
            cond[idx - s, idx] = 0.0
        spread = np.sqrt(2.0 * np.maximum(cond, 0.0))[..., None] * x  # (r, P2, deg)
        acc_f = np.zeros(kb.shape)
        acc_df = np.zeros(kb.shape)
        for xi, wi in zip(x, w):
            u = math.sqrt(2.0) * np.sqrt(qa) * xi  # (r, 1)
            v = spread + (slope * xi)[..., None]
            acc_f += (wi * f(u)) * (f(v) @ w)
            acc_df += (wi * df(u)) * (df(v) @ w)
        e_f[sl] = acc_f / math.pi
        e_df[sl] = acc_df / math.pi
    if same:
        # the Cholesky map is not symmetric in (u, v): average the rounding away
        e_f = (e_f + e_f.T) / 2.0
        e_df = (e_df + e_df.T) / 2.0
    return e_f, e_df


# ----------------------------------------------------------------------------- closed forms
def abrelu(a_minus: float, a_plus: float = 1.0, name: str | None = None) -> DualActivation:
    """``phi(u) = a_minus min(u, 0) + a_plus max(u, 0)`` with its closed-form maps (module docstring)."""
    am, ap = float(a_minus), float(a_plus)
    sq = am * am + ap * ap

    def cross(q1, q2, k, same):
        c = _cosine(q1, q2, k, same)
        t = np.arccos(c)
        s = np.sqrt((1.0 - c) * (1.0 + c))
        e_dphi = (sq * (math.pi - t) + 2.0 * am * ap * t) / _TWO_PI
        norm = np.multiply.outer(np.sqrt(q1), np.sqrt(q2))
        e_phi = norm * ((ap - am) ** 2 * s + _TWO_PI * e_dphi * c) / _TWO_PI
        return e_phi, e_dphi

    def fn(u):
        return np.where(u > 0, ap * u, am * u)

    def dfn(u):
        return np.where(u > 0, ap, am) + 0.0 * u

    return DualActivation(name or f"abrelu({am}, {ap})", fn, dfn, cross, lambda q: sq * np.asarray(q, np.float64) / 2.0)


def _erf_cross(q1, q2, k, same):
    a = np.outer(1.0 + 2.0 * q1, 1.0 + 2.0 * q2)
    e_phi = (2.0 / math.pi) * np.arcsin(np.clip(2.0 * k / np.sqrt(a), -1.0, 1.0))
    det = a - 4.0 * k**2
    if same:
        np.fill_diagonal(det, 1.0 + 4.0 * q1)  # (1 + 2q)^2 - 4q^2, exactly
    e_dphi = (4.0 / math.pi) / np.sqrt(np.maximum(det, np.finfo(np.float64).tiny))
    return e_phi, e_dphi


def _erf_diag(q):
    return (2.0 / math.pi) * np.arcsin(2.0 * q / (1.0 + 2.0 * q))


def _gelu_cross(q1, q2, k, same):
    a = (1.0 + q1)[:, None]
    b = (1.0 + q2)[None, :]
    gram = np.multiply.outer(q1, q2) - k * k  # q q' - k^2 >= 0
    if same:
        np.fill_diagonal(gram, 0.0)
    det = a + b - 1.0 + np.maximum(gram, 0.0)  # D = a b - k^2 = 1 + q + q' + (q q' - k^2)
    root = np.sqrt(det)
    angle = np.arctan2(k, root)
    ab = np.multiply.outer(1.0 + q1, 1.0 + q2)  # a b (one product: exactly symmetric)
    e_phi = k / 4.0 + k * angle / _TWO_PI + (k * k + np.multiply.outer(q1, q2) * det) / (_TWO_PI * ab * root)
    e_dphi = 0.25 + angle / _TWO_PI + k * (1.0 / a + 1.0 / b + 1.0 / det) / (_TWO_PI * root)
    return e_phi, e_dphi


def _gelu_diag(q):
    q = np.asarray(q, np.float64)
    return q / 4.0 + q * np.arcsin(q / (1.0 + q)) / _TWO_PI + q * q / (math.pi * (1.0 + q) * np.sqrt(1.0 + 2.0 * q))


def _trig_parts(q1, q2, k):
    """``(exp(|k| - m) / 2, exp(-2|k|), sign k)`` with ``m = (q + q')/2`` (no overflow)."""
    m = np.add.outer(q1, q2) / 2.0
    ak = np.abs(k)
    return 0.5 * np.exp(ak - m), ak, np.sign(k)


def _sin_cross(q1, q2, k, same):
    half, ak, sign = _trig_parts(q1, q2, k)
    sinh = -sign * half * np.expm1(-2.0 * ak)  # exp(-m) sinh(k)
    cosh = half * (1.0 + np.exp(-2.0 * ak))  # exp(-m) cosh(k)
    return sinh, cosh


def _cos_cross(q1, q2, k, same):
    sinh, cosh = _sin_cross(q1, q2, k, same)
    return cosh, sinh


def _sin_diag(q):
    return -0.5 * np.expm1(-2.0 * np.asarray(q, np.float64))


def _cos_diag(q):
    return 0.5 * (1.0 + np.exp(-2.0 * np.asarray(q, np.float64)))


def _identity_cross(q1, q2, k, same):
    return np.array(k, dtype=np.float64, copy=True), np.ones_like(k, dtype=np.float64)


def _np_erf(u):
    from scipy.special import erf

    return erf(u)


def _gelu_np(u):
    from scipy.special import ndtr

    return u * ndtr(u)


def _dgelu_np(u):
    from scipy.special import ndtr

    return ndtr(u) + u * np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)


_relu = abrelu(0.0, 1.0, "relu")
_relu = DualActivation("relu", _relu.fn, _relu.dfn, _relu.cross, _relu.diag, keras_name="relu")
_leaky = abrelu(0.2, 1.0, "leaky_relu")
_abs = abrelu(-1.0, 1.0, "abs")

#: activations with closed-form maps (name -> DualActivation)
CLOSED_FORMS = {
    "relu": _relu,
    "leaky_relu": DualActivation(
        "leaky_relu", _leaky.fn, _leaky.dfn, _leaky.cross, _leaky.diag, keras_name="leaky_relu"
    ),
    "abs": DualActivation("abs", _abs.fn, _abs.dfn, _abs.cross, _abs.diag, keras_name="abs"),
    "erf": DualActivation(
        "erf", _np_erf, lambda u: 2.0 / math.sqrt(math.pi) * np.exp(-u * u), _erf_cross, _erf_diag, keras_name="erf"
    ),
    "gelu": DualActivation("gelu", _gelu_np, _dgelu_np, _gelu_cross, _gelu_diag, keras_name="gelu_exact"),
    "sin": DualActivation("sin", np.sin, np.cos, _sin_cross, _sin_diag, keras_name="sin"),
    "cos": DualActivation("cos", np.cos, lambda u: -np.sin(u), _cos_cross, _cos_diag, keras_name="cos"),
    "identity": DualActivation(
        "identity",
        lambda u: u,
        lambda u: np.ones_like(u),
        _identity_cross,
        lambda q: np.asarray(q, np.float64),
        keras_name="linear",
    ),
}


def _softplus(u):
    return np.logaddexp(0.0, u)


def _silu(u):
    return u * expit(u)


def _dsilu(u):
    s = expit(u)
    return s * (1.0 + u * (1.0 - s))


def _elu(u):
    return np.where(u > 0, u, np.expm1(np.minimum(u, 0.0)))


def _delu(u):
    return np.where(u > 0, 1.0, np.exp(np.minimum(u, 0.0)))


#: activations evaluated by Gauss-Hermite quadrature (name -> (phi, phi'))
QUADRATURE = {
    "tanh": (np.tanh, lambda u: 1.0 - np.tanh(u) ** 2),
    "sigmoid": (expit, lambda u: expit(u) * (1.0 - expit(u))),
    "softplus": (_softplus, expit),
    "silu": (_silu, _dsilu),
    "elu": (_elu, _delu),
}


def numerical(name: str, fn: Callable, dfn: Callable, deg: int = 64, keras_name: str | None = None) -> DualActivation:
    """An activation evaluated by ``deg x deg`` Gauss-Hermite quadrature.

    Args:
        name: a label.
        fn: NumPy ``phi`` (elementwise on float64 arrays).
        dfn: NumPy ``phi'``.
        deg: nodes per axis (>= 1); the error decays exponentially in ``deg``
            for analytic ``phi`` (module docstring).
        keras_name: Keras activation of the finite network, if any.
    """
    if isinstance(deg, bool) or not isinstance(deg, (int, np.integer)) or deg < 1:
        raise ValueError(f"`deg` (Gauss-Hermite nodes per axis) must be a positive integer; received {deg!r}.")
    if not (callable(fn) and callable(dfn)):
        raise ValueError(
            f"`fn` and `dfn` must be callables (phi and its derivative); received "
            f"{type(fn).__name__} and {type(dfn).__name__}."
        )
    return DualActivation(str(name), fn, dfn, None, None, int(deg), keras_name)


def dual_activation(activation: str | DualActivation, deg: int = 64) -> DualActivation:
    """The :class:`DualActivation` of a name (or the object itself).

    Args:
        activation: one of :data:`CLOSED_FORMS` (closed form), one of
            :data:`QUADRATURE` (Gauss-Hermite with ``deg`` nodes per axis), or a
            :class:`DualActivation`.
        deg: Gauss-Hermite nodes per axis for the quadrature activations.
    """
    if isinstance(activation, DualActivation):
        return activation
    if isinstance(activation, str):
        if activation in CLOSED_FORMS:
            return CLOSED_FORMS[activation]
        if activation in QUADRATURE:
            fn, dfn = QUADRATURE[activation]
            return numerical(activation, fn, dfn, deg, keras_name=activation)
    raise ValueError(
        f"`activation` must be one of {sorted(CLOSED_FORMS)} (closed form), "
        f"{sorted(QUADRATURE)} (Gauss-Hermite) or a DualActivation; "
        f"received {activation!r}."
    )
