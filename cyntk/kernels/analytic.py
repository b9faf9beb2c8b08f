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


def _relu_expectations(q1, q2, k, same):
    """E[relu(u) relu(v)] and E[relu'(u) relu'(v)] (arrays (P1, P2))."""
    norm = np.sqrt(np.outer(q1, q2))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norm > 0, k / np.where(norm > 0, norm, 1.0), 0.0)
    cos = np.clip(cos, -1.0, 1.0)
    if same:
        np.fill_diagonal(cos, 1.0)
    theta = np.arccos(cos)
    e_phi = norm * (np.sin(theta) + (np.pi - theta) * cos) / (2.0 * np.pi)
    e_dphi = (np.pi - theta) / (2.0 * np.pi)
    return e_phi, e_dphi


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


_EXPECTATIONS = {"relu": (_relu_expectations, _relu_diag), "erf": (_erf_expectations, _erf_diag)}


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
    activation = one_of(activation, "activation", ACTIVATIONS)
    kind = one_of(kind, "kind", _KINDS)
    w2 = nonnegative_float(W_std, "W_std") ** 2
    b2 = nonnegative_float(b_std, "b_std") ** 2
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"`depth` must be a non-negative integer (number of hidden layers); "
                         f"received {depth!r}.")
    x1 = as_real_points(x1, "x1")
    same = x2 is None
    x2 = x1 if same else as_real_points(x2, "x2")
    matching_widths(x1, x2)
    d = x1.shape[1]
    cross, diag = _EXPECTATIONS[activation]

    q1 = w2 * np.sum(x1 * x1, axis=1) / d + b2
    q2 = q1 if same else w2 * np.sum(x2 * x2, axis=1) / d + b2
    k = w2 * (x1 @ x2.T) / d + b2
    if same:
        np.fill_diagonal(k, q1)
    ntk = k.copy()
    for _ in range(int(depth)):
        e_phi, e_dphi = cross(q1, q2, k, same)
        k_new = w2 * e_phi + b2
        ntk = k_new + w2 * e_dphi * ntk
        q1 = w2 * diag(q1) + b2
        q2 = q1 if same else w2 * diag(q2) + b2
        k = k_new
        if same:
            np.fill_diagonal(k, q1)
    if kind == "ntk":
        return ntk
    if kind == "nngp":
        return k
    return k, ntk


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
        self.activation = one_of(activation, "activation", ACTIVATIONS)
        self.W_std = nonnegative_float(W_std, "W_std")
        self.b_std = nonnegative_float(b_std, "b_std")
        if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, (int, np.integer)) or depth < 0:
            raise ValueError(f"`depth` must be a non-negative integer; received {depth!r}.")
        self.depth = int(depth)
        self.kind = one_of(kind, "kind", ("ntk", "nngp"))

    def get_config(self) -> dict:
        return {"activation": self.activation, "W_std": self.W_std, "b_std": self.b_std,
                "depth": self.depth, "kind": self.kind}

    def _block(self, x1, x2):
        return infinite_width_kernel(x1, x2, activation=self.activation, W_std=self.W_std,
                                     b_std=self.b_std, depth=self.depth, kind=self.kind)


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
