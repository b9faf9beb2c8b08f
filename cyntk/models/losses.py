"""cymetric's losses and validation measures as plain TensorFlow functions.

These functions act on metric values, not on models, so they can be
differentiated with respect to ``g`` itself (the KernelModel of cyntk.kernels
does that) as well as with respect to network weights. Notation as in
conventions §7 and 8: ``g`` is (B, n, n) complex hermitian in each
point's local chart, ``omega_sq = |Omega|^2`` (B,), ``weights = w`` (B,) are
cymetric's Monte-Carlo weights, ``eta = det g / |Omega|^2``.

Per-point losses (all return a real (B,) tensor):

* :func:`sigma_loss`: ``|1 - det g / (kappa |Omega|^2)|`` (Monge--Ampère).
* :func:`kaehler_loss`: ``sum_{a,b,c} |d_c g_{a bbar} - d_a g_{c bbar}|^2``.
* :func:`transition_loss`: ``sum_{k'} sum_{a,b} |g' - T g T^H|^2 / (n_T n^2)``.
* :func:`volk_loss`: ``mean_r |mean_batch(w m_r / |Omega|^2) - mu_r|``, the same
  value for every point, with ``m_r = tr(adj(g) F_r) / n`` the mixed
  determinant (equal to cymetric's ``epsilon epsilon g^{n-1} F_r / n!``).
* :func:`ricci_loss`: ``|1 - exp(-R)|`` with ``R`` from :func:`ricci_scalar`.

Measures (scalars over a whole validation set, conventions §8):

* :func:`sigma_measure`: ``mean(w |1 - eta Vol_CY/Vol_K|) / Vol_CY``.
* :func:`ricci_measure`: ``Vol_K^(1/n) / Vol_CY * mean(w eta |R|)``.
* :func:`volk_measure`: ``Vol_K = mean(w eta)``.

with ``Vol_CY = mean(w)`` and ``Vol_K = mean(w eta)``.

The functions are registered with ``keras.saving.register_keras_serializable``
(package ``"cyntk"``), so they serialise by name inside Keras configs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from tensorflow.types.experimental import TensorLike

__all__ = [
    "determinant",
    "adjugate",
    "mixed_determinant",
    "sigma_loss",
    "kaehler_loss",
    "transition_loss",
    "volk_loss",
    "ricci_scalar",
    "ricci_loss",
    "sigma_measure",
    "ricci_measure",
    "volk_measure",
]


_register = keras.saving.register_keras_serializable(package="cyntk")


def _cast(value: TensorLike, dtype: tf.DType | str) -> tf.Tensor:
    """Cast to ``dtype`` without passing Python floats through float32."""
    if tf.is_tensor(value):
        return tf.cast(value, dtype)
    return tf.constant(np.asarray(value, dtype=tf.as_dtype(dtype).as_numpy_dtype), dtype)


def _as_matrix(g: TensorLike, name: str = "g") -> tf.Tensor:
    g = tf.convert_to_tensor(g)
    if g.shape.rank is None or g.shape.rank < 2 or g.shape[-1] != g.shape[-2] or g.shape[-1] is None:
        raise ValueError(f"`{name}` must have shape (..., n, n); received shape {g.shape}.")
    return g


@_register
def determinant(g: TensorLike) -> tf.Tensor:
    """Determinant of (..., n, n) matrices (explicit formulas for n <= 3).

    Args:
        g: (..., n, n) real or complex tensor.

    Returns:
        (...,) tensor of the same dtype as ``g``.
    """
    g = _as_matrix(g)
    n = g.shape[-1]
    if n == 1:
        return g[..., 0, 0]
    if n == 2:
        return g[..., 0, 0] * g[..., 1, 1] - g[..., 0, 1] * g[..., 1, 0]
    if n == 3:
        return (
            g[..., 0, 0] * (g[..., 1, 1] * g[..., 2, 2] - g[..., 1, 2] * g[..., 2, 1])
            - g[..., 0, 1] * (g[..., 1, 0] * g[..., 2, 2] - g[..., 1, 2] * g[..., 2, 0])
            + g[..., 0, 2] * (g[..., 1, 0] * g[..., 2, 1] - g[..., 1, 1] * g[..., 2, 0])
        )
    return tf.linalg.det(g)


@_register
def adjugate(g: TensorLike) -> tf.Tensor:
    """Adjugate ``adj(g)`` (so that ``adj(g) g = det(g) 1``) of (..., n, n) matrices."""
    g = _as_matrix(g)
    n = g.shape[-1]
    if n == 1:
        return tf.ones_like(g)
    if n == 2:
        return tf.stack([tf.stack([g[..., 1, 1], -g[..., 0, 1]], -1), tf.stack([-g[..., 1, 0], g[..., 0, 0]], -1)], -2)
    if n == 3:

        def c(r0: int, r1: int, c0: int, c1: int) -> tf.Tensor:
            return g[..., r0, c0] * g[..., r1, c1] - g[..., r0, c1] * g[..., r1, c0]

        rows = [
            [c(1, 2, 1, 2), -c(0, 2, 1, 2), c(0, 1, 1, 2)],
            [-c(1, 2, 0, 2), c(0, 2, 0, 2), -c(0, 1, 0, 2)],
            [c(1, 2, 0, 1), -c(0, 2, 0, 1), c(0, 1, 0, 1)],
        ]
        return tf.stack([tf.stack(r, -1) for r in rows], -2)
    det = tf.linalg.det(g)
    return det[..., None, None] * tf.linalg.inv(g)


def _real_det(g_or_det: TensorLike, name: str = "g") -> tf.Tensor:
    t = tf.convert_to_tensor(g_or_det)
    if t.shape.rank is not None and t.shape.rank >= 3:
        t = determinant(_as_matrix(t, name))
    if t.dtype.is_complex:
        t = tf.math.real(t)
    return t


@_register
def mixed_determinant(g: TensorLike, F: TensorLike) -> tf.Tensor:
    """``m = tr(adj(g) F) / n`` (real part), the mixed determinant D(g,...,g,F).

    For hermitian ``g``, ``F`` this equals cymetric's
    ``(1/n!) eps eps g^(n-1) F``; ``mixed_determinant(g, g) = det g``.

    Args:
        g: (..., n, n) complex.
        F: (..., n, n) complex, broadcastable against ``g``.

    Returns:
        (...,) real.
    """
    g = _as_matrix(g)
    n = g.shape[-1]
    return tf.math.real(tf.linalg.trace(tf.matmul(adjugate(g), F))) / n


@_register
def sigma_loss(g: TensorLike, omega_sq: TensorLike, kappa: float | tf.Tensor) -> tf.Tensor:
    """Monge--Ampère loss ``|1 - Re det g / (kappa |Omega|^2)|`` per point.

    Args:
        g: (B, n, n) complex metric in the local chart.
        omega_sq: (B,) real ``|Omega|^2`` (same chart convention as ``g``).
        kappa: positive scalar, ``Vol_K / Vol_CY`` of the data set.

    Returns:
        (B,) real, dtype of ``omega_sq`` promoted to that of ``Re g``.
    """
    det = _real_det(_as_matrix(g))
    omega_sq = _cast(omega_sq, det.dtype)
    return tf.abs(1.0 - det / (_cast(kappa, det.dtype) * omega_sq))


@_register
def kaehler_loss(dg: TensorLike) -> tf.Tensor:
    """Kähler loss ``sum_{a,b,c} |d_c g_{a bbar} - d_a g_{c bbar}|^2`` per point.

    Args:
        dg: (B, n, n, n) complex, ``dg[:, c, a, b] = d g_{a bbar} / d x^c``
            (holomorphic derivative along local coordinate c).

    Returns:
        (B,) real. Both orderings of (a, c) are counted, as in cymetric.
    """
    dg = tf.convert_to_tensor(dg)
    if dg.shape.rank != 4:
        raise ValueError(f"`dg` must have shape (B, n, n, n); received shape {dg.shape}.")
    diff = dg - tf.transpose(dg, [0, 2, 1, 3])
    return tf.reduce_sum(tf.math.real(diff) ** 2 + tf.math.imag(diff) ** 2, axis=[1, 2, 3])


@_register
def transition_loss(g_new: TensorLike, g_old: TensorLike, T: TensorLike, n_transitions: int | None = None) -> tf.Tensor:
    """Transition loss per point.

    ``sum_{k'} sum_{a,b} |g'_{k'} - T_{k'} g T_{k'}^H|^2 / (n_T n^2)``.

    Args:
        g_new: (m, B, n, n) complex, the metric at the points rescaled to each
            of m other patches, in the new charts.
        g_old: (B, n, n) complex, the metric in the original chart.
        T: (m, B, n, n) complex, ``T[a, b] = dx^b/dw^a`` (old x, new w).
        n_transitions: normaliser n_T; defaults to m. cymetric counts N - 1
            transitions per point on a hypersurface in P^{N-1} (the trivial
            same-patch transition included), which gives 36 = 4 * 9 for the
            quintic, and ``max_t prod_r (n_r + 1 - t_r)`` on a product of
            projective spaces (t spreading the equations over the factors:
            6 for the bicubic, 8 for the tetraquadric, 4 for two cubics in
            P^5), where some of the m compared patches may repeat.

    Returns:
        (B,) real.

    Note:
        The mismatch enters squared. This is cymetric's loss with
        ``norm[2] = 2``; cymetric's default exponent is ``norm[2] = 1``
        (``sum |.|``, conventions §7.3).
    """
    g_new = tf.convert_to_tensor(g_new)
    T = tf.convert_to_tensor(T)
    if g_new.shape.rank != 4 or T.shape.rank != 4:
        raise ValueError(f"`g_new` and `T` must have shape (m, B, n, n); received {g_new.shape} and {T.shape}.")
    n = g_new.shape[-1]
    m = g_new.shape[0]
    n_t = m if n_transitions is None else n_transitions
    pushed = tf.matmul(tf.matmul(T, g_old[None]), T, adjoint_b=True)
    diff = g_new - pushed
    s = tf.reduce_sum(tf.math.real(diff) ** 2 + tf.math.imag(diff) ** 2, axis=[0, 2, 3])
    return s / tf.cast(n_t * n * n, s.dtype)


@_register
def volk_loss(
    g: TensorLike, fs_unit: TensorLike, weights: TensorLike, omega_sq: TensorLike, target: TensorLike
) -> tf.Tensor:
    """Kähler-class (volume) loss, a batch Monte-Carlo estimate.

    ``V = mean_r |mean_batch(w m_r / |Omega|^2) - mu_r|`` with
    ``m_r = mixed_determinant(g, F_r)``, copied to every point.

    Args:
        g: (B, n, n) complex metric.
        fs_unit: (R, B, n, n) or (B, n, n) complex; ``F_r``, the pulled-back
            Fubini--Study metric of factor r at unit Kähler parameter.
        weights: (B,) real Monte-Carlo weights w.
        omega_sq: (B,) real.
        target: (R,) or scalar, ``mu_r = d_{r s ...} t^s ...`` (the quintic at
            t = 1: 5).

    Returns:
        (B,) real, all entries equal to V.
    """
    g = _as_matrix(g)
    F = tf.convert_to_tensor(fs_unit)
    if F.shape.rank == 3:
        F = F[None]
    m = mixed_determinant(g[None], F)  # (R, B)
    weights = _cast(weights, m.dtype)
    omega_sq = _cast(omega_sq, m.dtype)
    mu_hat = tf.reduce_mean(weights[None] * m / omega_sq[None], axis=1)  # (R,)
    target = tf.reshape(_cast(target, m.dtype), [-1])
    v = tf.reduce_mean(tf.abs(mu_hat - target))
    return tf.fill(tf.shape(weights), v)


@_register
def ricci_scalar(g: TensorLike, ddbar_logdet: TensorLike) -> tf.Tensor:
    """cymetric's Ricci scalar ``R = Re tr(g^{-1} M)``, M = d dbar ln det g.

    With ``Ric = -d dbar ln det g`` this is minus the trace of Ricci
    (conventions §7.4).

    Args:
        g: (B, n, n) complex metric.
        ddbar_logdet: (B, n, n) complex, ``M[a, b] = d_a dbar_b ln det g``.

    Returns:
        (B,) real.
    """
    g = _as_matrix(g)
    num = tf.linalg.trace(tf.matmul(adjugate(g), ddbar_logdet))
    return tf.math.real(num / determinant(g))


@_register
def ricci_loss(R: TensorLike) -> tf.Tensor:
    """``|1 - exp(-R)|`` per point (cymetric's Ricci loss)."""
    return tf.abs(1.0 - tf.exp(-tf.convert_to_tensor(R)))


def _eta(g_or_det: TensorLike, weights: TensorLike, omega_sq: TensorLike) -> tuple[tf.Tensor, tf.Tensor]:
    det = _real_det(g_or_det)
    w = _cast(weights, det.dtype)
    om = _cast(omega_sq, det.dtype)
    return det / om, w


@_register
def sigma_measure(g_or_det: TensorLike, weights: TensorLike, omega_sq: TensorLike) -> tf.Tensor:
    """Sigma measure over a validation set (scalar).

    ``sigma = mean(w |1 - eta Vol_CY / Vol_K|) / Vol_CY`` with
    ``Vol_CY = mean(w)``, ``Vol_K = mean(w eta)`` taken over the same points,
    so kappa is not used.

    Args:
        g_or_det: (P, n, n) complex metrics or (P,) real determinants.
        weights: (P,) real.
        omega_sq: (P,) real.
    """
    eta, w = _eta(g_or_det, weights, omega_sq)
    vol_cy = tf.reduce_mean(w)
    vol_k = tf.reduce_mean(w * eta)
    return tf.reduce_mean(w * tf.abs(1.0 - eta * vol_cy / vol_k)) / vol_cy


@_register
def ricci_measure(
    R: TensorLike, g_or_det: TensorLike, weights: TensorLike, omega_sq: TensorLike, nfold: int
) -> tf.Tensor:
    """Ricci measure ``Vol_K^(1/n) / Vol_CY * mean(w eta |R|)`` (scalar).

    Args:
        R: (P,) real Ricci scalars (:func:`ricci_scalar`).
        g_or_det: (P, n, n) complex metrics or (P,) determinants.
        weights, omega_sq: (P,) real.
        nfold: n.
    """
    eta, w = _eta(g_or_det, weights, omega_sq)
    R = _cast(R, eta.dtype)
    vol_cy = tf.reduce_mean(w)
    vol_k = tf.reduce_mean(w * eta)
    return vol_k ** (1.0 / nfold) / vol_cy * tf.reduce_mean(w * eta * tf.abs(R))


@_register
def volk_measure(g_or_det: TensorLike, weights: TensorLike, omega_sq: TensorLike) -> tf.Tensor:
    """``Vol_K = mean(w det g / |Omega|^2)`` (scalar; 5 for the quintic at t=1)."""
    eta, w = _eta(g_or_det, weights, omega_sq)
    return tf.reduce_mean(w * eta)
