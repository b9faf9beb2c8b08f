"""Finite networks in the NTK parameterisation: :class:`NTKDense` and :func:`ntk_mlp`.

Their empirical NTK converges, as the width grows, to the analytic kernels of
:mod:`cyntk.kernels.analytic` (same activations, ``W_std``, ``b_std``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np
import tensorflow as tf

from cyntk._validation import nonnegative_float, positive_int
from cyntk.kernels.analytic import ACTIVATIONS, _iw_params
from cyntk.kernels.dual import DualActivation, dual_activation

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tensorflow.types.experimental import TensorLike

__all__ = ["NTKDense", "ntk_mlp", "erf", "gelu_exact"]


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

    def __init__(
        self,
        units: int,
        *,
        W_std: float = 1.0,
        b_std: float = 0.0,
        activation: str | Callable[..., Any] | None = None,
        use_bias: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.units = positive_int(units, "units")
        self.W_std = nonnegative_float(W_std, "W_std")
        self.b_std = nonnegative_float(b_std, "b_std")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.seed = seed

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        fan_in = input_shape[-1]
        if fan_in is None:
            raise ValueError(
                "NTKDense needs a known input width (last axis of the input shape); "
                f"received input shape {input_shape}."
            )
        seed = self.seed
        self.kernel = self.add_weight(
            name="kernel", shape=(fan_in, self.units), initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed)
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=None if seed is None else seed + 1),
            )

    @property
    def kernel_scale(self) -> float:
        """``W_std / sqrt(fan_in)``, the factor in front of ``x @ W``."""
        return self.W_std / math.sqrt(self.kernel.shape[0])

    @property
    def bias_scale(self) -> float:
        """``b_std``, the factor in front of ``b``."""
        return self.b_std

    def call(self, inputs: TensorLike) -> tf.Tensor:
        y = tf.matmul(inputs, self.kernel) * tf.constant(self.kernel_scale, self.compute_dtype)
        if self.bias is not None:
            y = y + tf.constant(self.b_std, self.compute_dtype) * self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            units=self.units,
            W_std=self.W_std,
            b_std=self.b_std,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="cyntk")
def erf(x: TensorLike) -> tf.Tensor:
    """The erf activation (serializable), ``tf.math.erf``."""
    return tf.math.erf(x)


@keras.saving.register_keras_serializable(package="cyntk")
def gelu_exact(x: TensorLike) -> tf.Tensor:
    """Exact gelu ``x Phi(x) = x (1 + erf(x / sqrt 2)) / 2`` with the constant in the input's dtype.

    (Keras' ``'gelu'`` rounds ``1/sqrt 2`` to float32 first, ~5e-9 off in float64.)
    """
    x = tf.convert_to_tensor(x)
    return 0.5 * x * (1.0 + tf.math.erf(x * tf.constant(math.sqrt(0.5), x.dtype)))


_KERAS_ACTIVATIONS = {
    "erf": erf,
    "gelu_exact": gelu_exact,
    "sin": tf.math.sin,
    "cos": tf.math.cos,
    "abs": tf.math.abs,
    "linear": None,
}


def _activation_fn(activation):
    if isinstance(activation, DualActivation) or activation in ACTIVATIONS:
        dual = dual_activation(activation)
        if dual.keras_name is None:
            raise ValueError(
                f"activation {dual.name!r} has no Keras counterpart (`keras_name`); "
                "pass a Keras activation to ntk_mlp instead."
            )
        activation = dual.keras_name
    if isinstance(activation, str) and activation in _KERAS_ACTIVATIONS:
        return _KERAS_ACTIVATIONS[activation]
    if activation == "leaky_relu":
        return keras.activations.leaky_relu  # negative slope 0.2, as dual.CLOSED_FORMS
    return keras.activations.get(activation)


def ntk_mlp(
    input_dim: int,
    width: int | list[int] | tuple[int, ...],
    depth: int,
    *,
    activation: str | DualActivation | Callable[..., Any] = "relu",
    W_std: float | Sequence[float] = 1.0,
    b_std: float | Sequence[float | None] | None = 0.0,
    n_outputs: int = 1,
    dtype: str = "float64",
    seed: int | None = None,
    readout_W_std: float | None = None,
    readout_b_std: float | None = None,
    readout_bias: bool = True,
    parameterization: Literal["ntk", "standard"] = "ntk",
) -> keras.Sequential:
    """Fully connected network, the finite-width counterpart of :func:`infinite_width_kernel`.

    ``depth`` hidden layers of ``width`` units with ``activation`` and a linear
    readout of ``n_outputs`` units, with the architecture arguments of
    :func:`infinite_width_kernel`. In the 'ntk' parameterisation the layers are
    :class:`NTKDense` (``(W_std/sqrt(n)) h @ W + b_std b``, ``W, b ~ N(0, 1)``);
    in the 'standard' one Keras ``Dense`` with ``W ~ N(0, W_std^2/n)`` and
    ``b ~ N(0, b_std^2)``. Its empirical NTK converges to the analytic one as
    ``width`` grows (fluctuations ~ 1/sqrt(width); in the 'standard'
    parameterisation relative to the kernel, which grows with the width).

    Args:
        input_dim: input width d.
        width: hidden width (one for every hidden layer, or one per layer).
        depth: number of hidden layers (>= 0).
        activation: a name of :data:`ACTIVATIONS` ('gelu' is the exact gelu)
            or any Keras activation.
        W_std, b_std, readout_W_std, readout_b_std, readout_bias,
            parameterization: as in :func:`infinite_width_kernel`.
        n_outputs: output width.
        dtype: Keras dtype of the variables and computation.
        seed: base seed (layer l uses ``seed + 2 l``).

    Returns:
        a built ``keras.Sequential`` mapping (B, input_dim) to (B, n_outputs).
    """
    input_dim = positive_int(input_dim, "input_dim")
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"`depth` must be a non-negative integer; received {depth!r}.")
    given = list(width) if isinstance(width, (list, tuple)) else [width] * int(depth)
    widths = [positive_int(w, "width") for w in given]
    if len(widths) != int(depth):
        raise ValueError(
            f"`width` must be an integer or {depth} integers (one per hidden layer); received {len(widths)} values."
        )
    arch, _ = _iw_params(
        "identity",
        W_std,
        b_std,
        depth,
        "ntk",
        readout_W_std=readout_W_std,
        readout_b_std=readout_b_std,
        readout_bias=readout_bias,
        parameterization=parameterization,
        width=widths or None,
    )
    act = _activation_fn(activation)
    layers = [keras.Input((input_dim,), dtype=dtype)]
    fan_in = input_dim
    for i in range(int(depth) + 1):
        units = n_outputs if i == int(depth) else widths[i]
        layer_act = act if i < int(depth) else None
        w_std, b_std_l = math.sqrt(arch.w2[i]), math.sqrt(arch.b2[i])
        s = None if seed is None else seed + 2 * i
        if arch.parameterization == "ntk":
            layers.append(
                NTKDense(
                    units, W_std=w_std, b_std=b_std_l, activation=layer_act, use_bias=arch.bias[i], dtype=dtype, seed=s
                )
            )
        else:
            layers.append(
                keras.layers.Dense(
                    units,
                    activation=layer_act,
                    use_bias=arch.bias[i],
                    dtype=dtype,
                    kernel_initializer=keras.initializers.RandomNormal(0.0, w_std / math.sqrt(fan_in), seed=s),
                    bias_initializer=keras.initializers.RandomNormal(0.0, b_std_l, seed=None if s is None else s + 1),
                )
            )
        fan_in = units
    return keras.Sequential(layers)
