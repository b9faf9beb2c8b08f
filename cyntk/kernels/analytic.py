"""Analytic infinite-width kernels of fully connected networks (NTK parameterisation).

The network is neural-tangents' ``stax.serial(Dense(w), phi, ..., Dense(w), phi,
Dense(out))`` with ``depth`` hidden layers, every Dense in the 'ntk'
parameterisation::

    layer(h) = (W_std / sqrt(fan_in)) h @ W + b_std b,    W_ij, b_i ~ N(0, 1).

In the infinite-width limit the output components are independent Gaussian
processes with covariance (NNGP) ``K`` and the neural tangent kernel is
``Theta_IJ = delta_IJ Theta``, computed by the recursion (d = input width)::

    K_0(x, x')   = W_std^2 x.x'/d + b_std^2,             Theta_0 = K_0
    K_{l+1}      = W_std^2 E[phi(u) phi(v)] + b_std^2
    Theta_{l+1}  = K_{l+1} + W_std^2 E[phi'(u) phi'(v)] Theta_l

with ``(u, v) ~ N(0, [[K_l(x, x), K_l(x, x')], [K_l(x, x'), K_l(x', x')]])``. The
kernels do not depend on the hidden width. Closed forms, with
``q = K_l(x, x)``, ``q' = K_l(x', x')``, ``k = K_l(x, x')``:

* ReLU (arc-cosine kernel of degree 1 and 0, Cho & Saul 2009), with
  ``cos t = k / sqrt(q q')``::

      E[phi(u) phi(v)]   = sqrt(q q') (sin t + (pi - t) cos t) / (2 pi)
      E[phi'(u) phi'(v)] = (pi - t) / (2 pi)

* erf (Williams 1997)::

      E[phi(u) phi(v)]   = (2/pi) arcsin(2k / sqrt((1 + 2q)(1 + 2q')))
      E[phi'(u) phi'(v)] = (4/pi) / sqrt((1 + 2q)(1 + 2q') - 4k^2)

For ``x2 = None`` the angle on the diagonal is exactly 0 (neural-tangents
computes it with ``arctan2`` and gets ~1e-8 there, see
``reference/ntk/README.txt``).

Evaluation (float64, exact up to rounding; agrees with neural-tangents to
~1e-15 relative): the ReLU terms are computed in place with NumPy's SIMD ufuncs,
with ``sin t = sqrt((1 - c)(1 + c))`` (as accurate as ``sin(arccos c)`` and
much cheaper) and, for depth 1 (the paper's kernel), the layer-0 cosines from
one GEMM of per-point unit vectors and the factored form
``Theta = sqrt(q q') (W_std^2 / 2 pi) (sin t + 2 (pi - t) cos t) + b_std^2``,
whose rank-one factor and shift the tiled kernel products of
:mod:`cyntk.kernels._flow` apply to the vectors (``InfiniteWidthKernel.tile_matvec``).

The module also provides :class:`NTKDense`, the Keras layer in this
parameterisation, and :func:`ntk_mlp`, which builds the finite network whose
empirical NTK converges to these kernels.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from cyntk.kernels._checks import (
    as_real_points,
    matching_widths,
    nonnegative_float,
    one_of,
    positive_int,
)
from cyntk.kernels.base import Kernel

__all__ = [
    "ACTIVATIONS",
    "infinite_width_kernel",
    "InfiniteWidthKernel",
    "NTKDense",
    "ntk_mlp",
]

#: Activations with closed-form infinite-width kernels.
ACTIVATIONS = ("relu", "erf")
_KINDS = ("ntk", "nngp", "both")


def _erf_expectations(q1, q2, k, same):
    """E[erf(u) erf(v)] and E[erf'(u) erf'(v)] (arrays (P1, P2))."""
    a = np.outer(1.0 + 2.0 * q1, 1.0 + 2.0 * q2)
    arg = np.clip(2.0 * k / np.sqrt(a), -1.0, 1.0)
    e_phi = (2.0 / np.pi) * np.arcsin(arg)
    det = a - 4.0 * k ** 2
    if same:
        # exact on the diagonal: (1 + 2q)^2 - 4q^2 = 1 + 4q
        np.fill_diagonal(det, 1.0 + 4.0 * q1)
    e_dphi = (4.0 / np.pi) / np.sqrt(np.maximum(det, np.finfo(np.float64).tiny))
    return e_phi, e_dphi


def _relu_diag(q):
    return q / 2.0


def _erf_diag(q):
    return (2.0 / np.pi) * np.arcsin(2.0 * q / (1.0 + 2.0 * q))


#: (cross expectations, diagonal map) per activation; ReLU's cross terms are evaluated in place by
#: :func:`_relu1_core` (depth 1) and :func:`_relu_layer` (deeper networks)
_EXPECTATIONS = {"relu": (None, _relu_diag), "erf": (_erf_expectations, _erf_diag)}


def _rsqrt(q):
    """1/sqrt(q), 0 where q = 0 (then the angle's cosine is 0, as in the reference form)."""
    out = np.zeros_like(q)
    np.divide(1.0, np.sqrt(q), out=out, where=q > 0)
    return out


def _relu_layer(k, theta, q1, q2, same, w2, b2):
    """One ReLU layer of the recursion, in place: ``K_l -> K_{l+1}``, ``Theta_l -> Theta_{l+1}``.

    With ``c = cos t = K_l / sqrt(q q')`` (clipped to [-1, 1], exactly 1 on the
    diagonal of a set with itself) and ``p = pi - t``::

        K_{l+1}     = (W_std^2 / 2 pi) sqrt(q q') (sin t + p c) + b_std^2
        Theta_{l+1} = K_{l+1} + (W_std^2 / 2 pi) p Theta_l

    with ``sin t = sqrt((1 - c)(1 + c))`` (``1 - c`` and ``1 + c`` are exact
    where they are small, so this is as accurate as ``sin(arccos c)`` and
    avoids NumPy's slow float64 ``sin``). Every operation is an elementwise
    NumPy ufunc on (P1, P2) arrays, written into ``out=`` buffers: four arrays
    of the tile's size exist at once (``k``, ``theta`` and two scratch).

    Args:
        k: float64 (P1, P2) ``K_l``; overwritten (scratch).
        theta: float64 (P1, P2) ``Theta_l`` or None (NNGP only); updated in
            place to ``Theta_{l+1}``. May be ``k`` itself (layer 0, where
            ``Theta_0 = K_0``).
        q1, q2: float64 (P1,), (P2,) ``K_l(x, x)`` of the two point sets.
        same: the tile is a point set with itself.

    Returns:
        ``(K_{l+1}, Theta_{l+1})`` arrays (P1, P2) (``Theta`` None when not asked).
    """
    r1 = _rsqrt(q1)
    r2 = r1 if same else _rsqrt(q2)
    c = np.multiply.outer(r1, r2)          # symmetric for same (the product commutes)
    c *= k
    np.clip(c, -1.0, 1.0, out=c)
    if same:
        np.fill_diagonal(c, 1.0)
    scratch = k if theta is not k else np.empty_like(k)
    p = np.arccos(c, out=scratch)          # t
    np.subtract(np.pi, p, out=p)            # p = pi - t
    if theta is not None:
        theta *= p                          # p Theta_l (Theta_l itself is not needed again)
    s = np.subtract(1.0, c)                 # sin t = sqrt((1 - c)(1 + c))
    c_plus = np.add(1.0, c)
    s *= c_plus
    np.sqrt(s, out=s)
    c *= p                                  # p cos t
    c += s
    a = w2 / (2.0 * np.pi)
    sq1 = np.sqrt(a * q1)                   # the same factor on both sides keeps it symmetric
    np.multiply.outer(sq1, sq1 if same else np.sqrt(a * q2), out=c_plus)   # a sqrt(q q')
    c *= c_plus
    c += b2                                 # K_{l+1}
    if theta is not None:
        theta *= a
        theta += c                          # Theta_{l+1}
    return c, theta


def _iw_state(x, activation, w2, b2, depth):
    """Per-point state of float64 points (P, d) for the recursion.

    ``(x, h, q_0, ..., q_depth)``: ``q_l = K_l(x, x)`` (every layer's variance)
    and ``h = [W_std x / sqrt(d), b_std] / sqrt(q_0)``, the unit vectors whose
    inner products are the layer-0 cosines ``K_0(x, x') / sqrt(q_0 q_0')``
    (rows with ``q_0 = 0`` are 0, so that cosine is 0 as in the reference
    form). Every entry has the points on its first axis.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    d = x.shape[1]
    q = w2 * np.sum(x * x, axis=1) / d + b2
    h = np.empty((len(x), d + 1))
    h[:, :d] = x * math.sqrt(w2 / d)
    h[:, d] = math.sqrt(b2)
    h *= _rsqrt(q)[:, None]
    qs = [q]
    diag = _EXPECTATIONS[activation][1]
    for _ in range(int(depth)):
        q = w2 * diag(q) + b2
        qs.append(q)
    return (x, h, *qs)


def _relu1_core(st1, st2, kind, w2):
    """Depth-1 ReLU kernel in factored form ``Theta = (l l'^T) * T + b_std^2``.

    With ``c = cos t`` the layer-0 cosine (one GEMM of the unit vectors of
    :func:`_iw_state`), ``p = pi - t``, ``s = sin t = sqrt((1 - c)(1 + c))`` and
    ``l = sqrt(W_std^2 q_0 / 2 pi)``::

        NNGP  K_1     = l l' (s + p c) + b_std^2
        NTK   Theta_1 = K_1 + (W_std^2 / 2 pi) p K_0 = l l' (s + 2 p c) + b_std^2

    (``K_0 = sqrt(q_0 q_0') c``). The rank-one factor ``l l'^T`` and the shift
    are left to the caller, which can apply them to the vectors of a kernel
    product instead of the (P1, P2) block.

    Returns:
        ``(l1, T, l2)``: float64 (P1,), (P1, P2), (P2,); for ``kind='both'``
        ``T`` is the pair ``(T_ntk, T_nngp)``.
    """
    same = st2 is None
    h1 = st1[1]
    c = h1 @ (h1 if same else st2[1]).T         # symmetric rank-k update for a set with itself
    np.clip(c, -1.0, 1.0, out=c)
    if same:
        np.fill_diagonal(c, 1.0)
    p = np.arccos(c)
    np.subtract(np.pi, p, out=p)                # p = pi - t
    s = np.subtract(1.0, c)                     # sin t = sqrt((1 - c)(1 + c)), accurate near |c| = 1
    tmp = np.add(1.0, c)
    s *= tmp
    np.sqrt(s, out=s)
    c *= p
    if kind == "both":
        t = (np.add(c, c, out=tmp) + s, c + s)    # (NTK, NNGP)
    else:
        if kind == "ntk":
            c += c
        c += s
        t = c
    a = w2 / (2.0 * np.pi)
    l1 = np.sqrt(a * st1[2])
    return l1, t, (l1 if same else np.sqrt(a * st2[2]))


def _iw_block(st1, st2, activation, w2, b2, depth, kind):
    """The recursion on one block of points (``st2 = None``: the set ``st1`` with itself).

    Args:
        st1, st2: states of :func:`_iw_state` (``st2`` None for the set with itself).

    Returns:
        the NNGP, the NTK or both (``kind``), float64 (P1, P2).
    """
    same = st2 is None
    x1, qs1 = st1[0], st1[2:]
    x2, qs2 = (None, None) if same else (st2[0], st2[2:])
    if activation == "relu" and depth == 1:
        l1, t, l2 = _relu1_core(st1, st2, kind, w2)
        scale = np.multiply.outer(l1, l2)       # the same vector on both sides keeps it symmetric
        out = []
        for knd, blk in (zip(("ntk", "nngp"), t) if kind == "both" else ((kind, t),)):
            blk *= scale
            blk += b2
            if same and knd == "nngp":
                np.fill_diagonal(blk, qs1[1])
            out.append(blk)
        return out[0] if kind != "both" else (out[1], out[0])
    # K_0; x1 @ x1.T is computed by a symmetric rank-k update (exactly symmetric)
    k = x1 @ (x1 if same else x2).T
    k *= w2 / x1.shape[1]
    k += b2
    if same:
        np.fill_diagonal(k, qs1[0])
    need_ntk = kind != "nngp"
    if int(depth) == 0:
        return {"ntk": k, "nngp": k, "both": (k, k.copy())}[kind]
    if activation == "relu":
        theta = k if (need_ntk and kind == "ntk") else (k.copy() if need_ntk else None)
        for layer in range(int(depth)):
            k, theta = _relu_layer(k, theta, qs1[layer], qs1[layer] if same else qs2[layer],
                                   same, w2, b2)
            if same:
                np.fill_diagonal(k, qs1[layer + 1])
    else:
        cross, _ = _EXPECTATIONS[activation]
        theta = k.copy() if need_ntk else None
        for layer in range(int(depth)):
            q1 = qs1[layer]
            q2 = q1 if same else qs2[layer]
            e_phi, e_dphi = cross(q1, q2, k, same)
            k_new = w2 * e_phi + b2
            if need_ntk:
                theta = k_new + w2 * e_dphi * theta
            k = k_new
            if same:
                np.fill_diagonal(k, qs1[layer + 1])
    if kind == "ntk":
        return theta
    if kind == "nngp":
        return k
    return k, theta


def _iw_params(activation, W_std, b_std, depth, kind, kinds=_KINDS):
    activation = one_of(activation, "activation", ACTIVATIONS)
    kind = one_of(kind, "kind", kinds)
    w_std = nonnegative_float(W_std, "W_std")
    b_std = nonnegative_float(b_std, "b_std")
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"`depth` must be a non-negative integer (number of hidden layers); "
                         f"received {depth!r}.")
    return activation, w_std, b_std, int(depth), kind


def infinite_width_kernel(x1, x2=None, *, activation: str = "relu", W_std: float = 1.0,
                          b_std: float = 0.0, depth: int = 1, kind: str = "ntk"):
    """Infinite-width NNGP / NTK of a fully connected network (NTK parameterisation).

    See the module docstring for the architecture and the recursion; the result
    equals neural-tangents' ``stax`` ``kernel_fn(x1, x2, kind)`` for
    ``serial(*[Dense(w, W_std, b_std), phi] * depth, Dense(1, W_std, b_std))``.

    Args:
        x1: real array (P1, d).
        x2: real array (P2, d); ``None`` means ``x1`` (then the diagonal uses
            the exact angle 0).
        activation: ``'relu'`` or ``'erf'``.
        W_std: weight standard deviation (>= 0).
        b_std: bias standard deviation (>= 0).
        depth: number of hidden (nonlinear) layers (>= 0; 0 is a linear model).
        kind: ``'ntk'``, ``'nngp'`` or ``'both'`` (returns ``(nngp, ntk)``).

    Returns:
        float64 array (P1, P2) (or a tuple of two for ``kind='both'``); the
        kernel of each output component (``Theta_IJ = delta_IJ Theta``).
    """
    activation, w_std, b_std, depth, kind = _iw_params(activation, W_std, b_std, depth, kind)
    w2, b2 = w_std ** 2, b_std ** 2
    x1 = as_real_points(x1, "x1")
    same = x2 is None
    if not same:
        x2 = as_real_points(x2, "x2")
        matching_widths(x1, x2)
    st1 = _iw_state(x1, activation, w2, b2, depth)
    st2 = None if same else _iw_state(x2, activation, w2, b2, depth)
    return _iw_block(st1, st2, activation, w2, b2, depth, kind)


class InfiniteWidthKernel(Kernel):
    """Infinite-width NTK (or NNGP) of a fully connected network, as a kernel.

    ``Theta_IJ(x, x') = delta_IJ Theta(x, x')`` with ``Theta`` from
    :func:`infinite_width_kernel` (recursion and closed forms in
    :mod:`cyntk.kernels.analytic`): the network has ``depth`` hidden layers of
    activation ``activation``, weights ``W_std / sqrt(fan_in) * N(0, 1)`` and
    biases ``b_std * N(0, 1)``. The paper's "ReLU NTK" is
    ``InfiniteWidthKernel('relu', W_std=80.52, b_std=5.716, depth=1)``.

    Args:
        activation: ``'relu'`` or ``'erf'``.
        W_std: weight standard deviation.
        b_std: bias standard deviation.
        depth: number of hidden layers.
        kind: ``'ntk'`` or ``'nngp'``.
    """

    component_diagonal = True

    def __init__(self, activation: str = "relu", *, W_std: float = 1.0, b_std: float = 0.0,
                 depth: int = 1, kind: str = "ntk"):
        (self.activation, self.W_std, self.b_std, self.depth,
         self.kind) = _iw_params(activation, W_std, b_std, depth, kind, kinds=("ntk", "nngp"))

    def get_config(self) -> dict:
        return {"activation": self.activation, "W_std": self.W_std, "b_std": self.b_std,
                "depth": self.depth, "kind": self.kind}

    def _block(self, x1, x2):
        return self.tile_block(self.tile_state(x1), None if x2 is None else self.tile_state(x2))

    # tiled evaluation (cyntk.kernels._flow.KernelProduct): per-point state computed once
    def tile_state(self, x) -> tuple:
        """Per-point state of validated float64 points (P, d), computed once per point set.

        ``(x, unit vectors of the layer-0 cosines, K_0(x, x), ..., K_depth(x, x))``;
        every entry has the points on its first axis, so a tile's state is
        ``tuple(a[rows] for a in state)``.
        """
        return _iw_state(x, self.activation, self.W_std ** 2, self.b_std ** 2, self.depth)

    def tile_block(self, state1, state2=None) -> np.ndarray:
        """Block (P1, P2) between two (sliced) states of :meth:`tile_state`; ``state2=None``: same set."""
        return _iw_block(state1, state2, self.activation, self.W_std ** 2, self.b_std ** 2,
                         self.depth, self.kind)

    def tile_matvec(self, state1, state2, v2, v1=None):
        """``(Theta v2, Theta^T v1)`` of one tile without forming more than its core.

        Args:
            state1, state2: sliced states of :meth:`tile_state` (``state2=None``:
                the set ``state1`` with itself; then ``v1`` must be None).
            v2: float64 (P2, m); v1: float64 (P1, m) or None.

        Returns:
            ``(u1 (P1, m), u2 (P2, m) or None)``. For the depth-1 ReLU kernel
            (the paper's) the rank-one factor and shift of :func:`_relu1_core`
            are applied to the vectors: ``Theta v = l * (T (l' * v)) + b^2 sum(v)``.
        """
        if not (self.activation == "relu" and self.depth == 1):
            blk = self.tile_block(state1, state2)
            _check_finite(blk, self)
            return blk @ v2, (None if v1 is None else blk.T @ v1)
        w2, b2 = self.W_std ** 2, self.b_std ** 2
        l1, t, l2 = _relu1_core(state1, state2, self.kind, w2)
        _check_finite(t, self)
        u1 = t @ (l2[:, None] * v2)
        u1 *= l1[:, None]
        if state2 is None and self.kind == "nngp":
            # the NNGP's diagonal is K_1(x, x) exactly (as in tile_block)
            u1 += (state1[3] - (l1 * l1 * t.diagonal() + b2))[:, None] * v2
        u1 += b2 * v2.sum(axis=0)
        if v1 is None:
            return u1, None
        u2 = t.T @ (l1[:, None] * v1)
        u2 *= l2[:, None]
        u2 += b2 * v1.sum(axis=0)
        return u1, u2


def _check_finite(block, kernel):
    if not np.isfinite(block).all():
        raise ValueError(f"kernel {type(kernel).__name__} returned non-finite entries for "
                         f"{block.shape[0]} x {block.shape[1]} points.")


# ---------------------------------------------------------------------------- Keras side


@keras.saving.register_keras_serializable(package="cyntk")
class NTKDense(keras.layers.Layer):
    """Dense layer in the NTK parameterisation.

    ``y = activation((W_std / sqrt(fan_in)) x @ W + b_std b)`` with trainable
    ``W`` (fan_in, units) and ``b`` (units,) initialised from N(0, 1), as in
    neural-tangents' ``stax.Dense(units, W_std, b_std, parameterization='ntk')``.
    The metric-NTK engine's fast path recognises it (kernel scale
    ``W_std/sqrt(fan_in)``, bias scale ``b_std``).

    Args:
        units: output width.
        W_std: weight scale (>= 0).
        b_std: bias scale (>= 0).
        activation: Keras activation (name or callable) applied after the
            affine map; ``None`` for linear.
        use_bias: whether the layer has a bias.
        seed: seed of the N(0, 1) initialisers.
    """

    def __init__(self, units, *, W_std=1.0, b_std=0.0, activation=None, use_bias=True, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = positive_int(units, "units")
        self.W_std = nonnegative_float(W_std, "W_std")
        self.b_std = nonnegative_float(b_std, "b_std")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.seed = seed

    def build(self, input_shape):
        fan_in = input_shape[-1]
        if fan_in is None:
            raise ValueError("NTKDense needs a known input width (last axis of the input shape); "
                             f"received input shape {input_shape}.")
        seed = self.seed
        self.kernel = self.add_weight(
            name="kernel", shape=(fan_in, self.units),
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed))
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,),
                initializer=keras.initializers.RandomNormal(
                    0.0, 1.0, seed=None if seed is None else seed + 1))

    @property
    def kernel_scale(self) -> float:
        """``W_std / sqrt(fan_in)``, the factor in front of ``x @ W``."""
        return self.W_std / math.sqrt(self.kernel.shape[0])

    @property
    def bias_scale(self) -> float:
        """``b_std``, the factor in front of ``b``."""
        return self.b_std

    def call(self, inputs):
        y = tf.matmul(inputs, self.kernel) * tf.constant(self.kernel_scale, self.compute_dtype)
        if self.bias is not None:
            y = y + tf.constant(self.b_std, self.compute_dtype) * self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, W_std=self.W_std, b_std=self.b_std,
                      activation=keras.activations.serialize(self.activation),
                      use_bias=self.use_bias, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="cyntk")
def erf(x):
    """The erf activation (serializable), ``tf.math.erf``."""
    return tf.math.erf(x)


def _activation_fn(activation):
    if activation == "erf":
        return erf
    return keras.activations.get(activation)


def ntk_mlp(input_dim: int, width: int, depth: int, *, activation: str = "relu",
            W_std: float = 1.0, b_std: float = 0.0, n_outputs: int = 1, dtype: str = "float64",
            seed: int | None = None) -> keras.Sequential:
    """Fully connected network in the NTK parameterisation.

    ``depth`` hidden :class:`NTKDense` layers of ``width`` units with
    ``activation`` and a linear :class:`NTKDense` readout of ``n_outputs`` units:
    the finite-width counterpart of :func:`infinite_width_kernel`. Its empirical
    NTK converges to the analytic one as ``width`` grows (fluctuations
    ~ 1/sqrt(width)).

    Args:
        input_dim: input width d.
        width: hidden width.
        depth: number of hidden layers (>= 0).
        activation: ``'relu'``, ``'erf'`` or any Keras activation.
        W_std: weight scale.
        b_std: bias scale.
        n_outputs: output width.
        dtype: Keras dtype of the variables and computation.
        seed: base seed (layer l uses ``seed + 2 l``).

    Returns:
        a built ``keras.Sequential`` mapping (B, input_dim) to (B, n_outputs).
    """
    input_dim = positive_int(input_dim, "input_dim")
    width = positive_int(width, "width")
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"`depth` must be a non-negative integer; received {depth!r}.")
    act = _activation_fn(activation)
    layers = [keras.Input((input_dim,), dtype=dtype)]
    for i in range(int(depth)):
        layers.append(NTKDense(width, W_std=W_std, b_std=b_std, activation=act, dtype=dtype,
                               seed=None if seed is None else seed + 2 * i))
    layers.append(NTKDense(n_outputs, W_std=W_std, b_std=b_std, dtype=dtype,
                           seed=None if seed is None else seed + 2 * int(depth)))
    return keras.Sequential(layers)
