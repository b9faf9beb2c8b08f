"""Structure-exploiting ("fast path") metric-NTK computations.

The building blocks of the fast paths of :func:`cyntk.kernels.metric_ntk`; they
give the same numbers as the generic per-variable Jacobian contraction.

**Dense chains.** A model that is a chain of ``keras.layers.Dense`` /
:class:`~cyntk.kernels.ntk_networks.NTKDense` layers separated by elementwise maps
(activations, weightless elementwise layers), possibly nested in
``keras.Sequential`` / functional models. For layer l with input ``h_l(x)``
(width w_in), pre-activation ``z_l = c_l h_l W_l + beta_l b_l`` (c = beta = 1 for
Keras Dense, ``c = W_std/sqrt(fan_in)``, ``beta = b_std`` for NTKDense) and
back-propagated cotangent ``delta_l[I] = d f_I / d z_l`` (width w_out),
``d f_I / d W_l[i, j] = c_l h_l[i] delta_l[I, j]`` and
``d f_I / d b_l[j] = beta_l delta_l[I, j]``, so the layer's share of the NTK is
a Hadamard product of two Gram matrices, with no per-parameter Jacobian::

    Theta_IJ(x, x') = sum_l (c_l^2 h_l(x).h_l(x') + beta_l^2) (delta_l[I](x) . delta_l[J](x'))

(the first term only for a trainable kernel, the second only for a trainable
bias). The cotangents follow ``delta_L[I, j] = [I = j] s_L(z_L)_j`` and
``delta_l = (delta_{l+1} (c_{l+1} W_{l+1})^T) * s_l(z_l)``, with ``s_l`` the
derivative of the elementwise map after layer l. Cost per pair of chunks:
O(B1 B2 m^2 w) per layer.

**Multiplicative metric models** ``g = G + G * H(o(x))``: the components are
affine in the network output ``o``, ``c(g) = c(G) + M(x) o`` with the real
(m, m) matrix ``M(x)[I, J] = c(G(x) * H(e_J))[I]`` (:func:`multiplicative_map`;
one nonzero per row on the diagonal of g, two elsewhere), hence
``Theta_g(x, x') = M(x) Theta_o(x, x') M(x')^T``. Which models have this form
(and the other forms) is found by what they compute, in
:mod:`cyntk.kernels.recognise`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from cyntk.kernels.ntk_networks import NTKDense
from cyntk.models.hermitian import components_from_hermitian_tf, hermitian_from_components_tf

if TYPE_CHECKING:
    from tensorflow.types.experimental import TensorLike

__all__ = ["multiplicative_map"]


class Traceable:
    """Callable wrapper: each plan's function is its own tf.function (traced once),
    so TensorFlow's frequent-retracing detector does not lump plans together."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


def relaxed_function(fn):
    """``tf.function`` of ``fn`` traced once for any number of points.

    The input signature is taken from the first call with every leading
    (point) axis set to ``None``, so chunks of different sizes share one trace.
    """
    traced = []

    def call(*args):
        if not traced:
            sig = tf.nest.map_structure(lambda t: tf.TensorSpec([None] + list(t.shape[1:]), t.dtype), list(args))
            traced.append(tf.function(Traceable(fn), input_signature=sig, autograph=False))
        return traced[0](*args)

    return call


# ----------------------------------------------------------------------------- helpers
def _is_elementwise(fn, dtype) -> bool:
    """Numerical probe: does ``fn`` act entry by entry (layout- and order-independent)?"""
    rng = np.random.default_rng(7)
    z = tf.constant(2.0 * rng.standard_normal((3, 5)), dtype)
    try:
        with warnings.catch_warnings():  # e.g. Keras warns about softmax on (15, 1)
            warnings.simplefilter("ignore")
            y = fn(z)
            y_col = tf.reshape(fn(tf.reshape(z, (-1, 1))), (3, 5))
            y_rev = tf.reverse(fn(tf.reverse(z, axis=[1])), axis=[1])
        y = np.asarray(y)
        if y.shape != (3, 5):
            return False
        tol = 1e-5 if np.dtype(dtype.as_numpy_dtype) == np.float32 else 1e-12
        return bool(
            np.allclose(np.asarray(y_col), y, rtol=tol, atol=tol)
            and np.allclose(np.asarray(y_rev), y, rtol=tol, atol=tol)
        )
    except Exception:  # noqa: BLE001 - any failure means "not a simple elementwise map"
        return False


def _flatten_layers(model):
    layers = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            layers.extend(_flatten_layers(layer))
        else:
            layers.append(layer)
    return layers


def _same_ids(a, b) -> bool:
    return sorted(id(v) for v in a) == sorted(id(v) for v in b)


def relative_mismatch(a, b) -> float:
    """``max|a - b| / max(max|b|, tiny)`` of two tensors/arrays."""
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, np.finfo(np.float64).tiny)
    return float(np.max(np.abs(a - b))) / scale if b.size else 0.0


def verification_tolerance(dtype) -> float:
    """Relative tolerance for 'the reconstruction equals the model output'."""
    return 1e3 * float(np.finfo(tf.as_dtype(dtype).real_dtype.as_numpy_dtype).eps)


# ----------------------------------------------------------------------------- Dense chains
@dataclass
class _Stage:
    kernel: object
    bias: object
    kernel_scale: float | None  # None: exactly Keras Dense (no multiplication)
    bias_scale: float | None
    acts: list = field(default_factory=list)
    kernel_trainable: bool = False
    bias_trainable: bool = False

    @property
    def trainable(self):
        return self.kernel_trainable or self.bias_trainable


class DenseChainPlan:
    """Metric-NTK of a Dense chain by Gram-matrix Hadamard products (module docstring).

    Features of a chunk of B points: for every trainable layer, the scaled layer
    input (B, w_in) and the cotangents (B, m, w_out).
    """

    cache_features = True
    name = "structured"

    def __init__(self, pre_acts, stages, dtype):
        self.pre_acts = pre_acts
        self.stages = stages
        self.dtype = dtype
        self.m = int(stages[-1].kernel.shape[-1])
        self.trainable = [i for i, s in enumerate(stages) if s.trainable]
        self.first = min(self.trainable)
        self.features = relaxed_function(self._features)
        self.block = relaxed_function(self._block)

    # forward pass exactly as Keras computes it
    def _affine(self, st, h):
        z = tf.matmul(h, st.kernel)
        if st.kernel_scale is not None:
            z = z * tf.constant(st.kernel_scale, z.dtype)
        if st.bias is not None:
            b = st.bias if st.bias_scale is None else tf.constant(st.bias_scale, z.dtype) * st.bias
            z = z + b
        return z

    @staticmethod
    def _act_and_derivative(z, acts):
        if not acts:
            return z, None
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = z
            for f in acts:
                y = f(y)
        return y, tape.gradient(y, z)

    def forward(self, x):
        """Model output (B, m) recomputed from the chain (used to verify the structure)."""
        h = tf.cast(x, self.dtype)
        for f in self.pre_acts:
            h = f(h)
        for st in self.stages:
            h = self._affine(st, h)
            for f in st.acts:
                h = f(h)
        return h

    def _features(self, x):
        h = tf.cast(x, self.dtype)
        for f in self.pre_acts:
            h = f(h)
        inputs, slopes = [], []
        for st in self.stages:
            inputs.append(h)
            h, s = self._act_and_derivative(self._affine(st, h), st.acts)
            slopes.append(s)
        batch = tf.shape(x)[0]
        m = self.m
        eye = tf.eye(m, dtype=self.dtype)
        delta = tf.broadcast_to(eye[None], tf.stack([batch, m, m]))
        if slopes[-1] is not None:
            delta = delta * slopes[-1][:, None, :]
        deltas = [None] * len(self.stages)
        deltas[-1] = delta
        for l in range(len(self.stages) - 2, self.first - 1, -1):
            st_next = self.stages[l + 1]
            w = st_next.kernel
            if st_next.kernel_scale is not None:
                w = w * tf.constant(st_next.kernel_scale, self.dtype)
            w_out = w.shape[0]
            delta = tf.reshape(
                tf.matmul(tf.reshape(delta, (-1, w.shape[1])), w, transpose_b=True), tf.stack([batch, m, w_out])
            )
            if slopes[l] is not None:
                delta = delta * slopes[l][:, None, :]
            deltas[l] = delta
        feats = []
        for l in self.trainable:
            st = self.stages[l]
            h_l = inputs[l]
            if st.kernel_scale is not None:
                h_l = h_l * tf.constant(st.kernel_scale, self.dtype)
            feats.append((h_l, deltas[l]))
        return feats

    def _block(self, f1, f2):
        acc = None
        m = self.m
        for l, (h1, d1), (h2, d2) in zip(self.trainable, f1, f2):
            st = self.stages[l]
            b1, b2 = tf.shape(d1)[0], tf.shape(d2)[0]
            w = d1.shape[-1]
            dd = tf.matmul(tf.reshape(d1, (-1, w)), tf.reshape(d2, (-1, w)), transpose_b=True)
            dd = tf.reshape(dd, tf.stack([b1, m, b2, m]))
            bias_const = 0.0
            if st.bias_trainable:
                bias_const = 1.0 if st.bias_scale is None else float(st.bias_scale) ** 2
            if st.kernel_trainable:
                kh = tf.matmul(h1, h2, transpose_b=True)
                if st.bias_trainable:
                    kh = kh + tf.constant(bias_const, self.dtype)
                term = kh[:, None, :, None] * dd
            else:
                term = tf.constant(bias_const, self.dtype) * dd
            acc = term if acc is None else acc + term
        return tf.transpose(acc, (0, 2, 1, 3))


def dense_chain_plan(model, dtype, x_probe):
    """A :class:`DenseChainPlan` for ``model``, or ``(None, reason)``.

    Args:
        model: Keras model (B, d) -> (B, m) real.
        dtype: tf real dtype of the model's variables.
        x_probe: tf tensor (B, d) used to verify that the chain reproduces the
            model output.

    Returns:
        ``(plan, "")`` or ``(None, reason)``.
    """
    layers = _flatten_layers(model)
    if not layers:
        return None, f"{type(model).__name__} has no sublayers"
    pre_acts, stages = [], []
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, (keras.layers.Dense, NTKDense)):
            if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
                return None, f"layer {layer.name!r} uses LoRA or quantisation"
            act = layer.activation
            acts = [] if act is None or act is keras.activations.linear else [act]
            if acts and not _is_elementwise(act, dtype):
                return None, f"the activation of layer {layer.name!r} is not elementwise"
            if isinstance(layer, NTKDense):
                ks, bs = layer.kernel_scale, layer.bias_scale
            else:
                ks = bs = None
            stages.append(_Stage(layer.kernel, layer.bias, ks, bs, acts))
        elif not layer.weights:
            fn = (
                layer.activation
                if isinstance(layer, keras.layers.Activation)
                else (lambda h, _layer=layer: _layer(h, training=False))
            )
            if not _is_elementwise(fn, dtype):
                return None, f"layer {layer.name!r} ({type(layer).__name__}) is not elementwise"
            (stages[-1].acts if stages else pre_acts).append(fn)
        else:
            return None, f"layer {layer.name!r} ({type(layer).__name__}) is not Dense/NTKDense"
    if not stages:
        return None, "no Dense layers"
    trainable = list(model.trainable_variables)
    tids = {id(v) for v in trainable}
    for st in stages:
        st.kernel_trainable = id(st.kernel) in tids
        st.bias_trainable = st.bias is not None and id(st.bias) in tids
    covered = [v for st in stages for v, t in ((st.kernel, st.kernel_trainable), (st.bias, st.bias_trainable)) if t]
    if not _same_ids(covered, trainable):
        return None, "the model has trainable variables outside its Dense layers"
    if not any(st.trainable for st in stages):
        return None, "no trainable Dense layer"
    plan = DenseChainPlan(pre_acts, stages, dtype)
    try:
        recon = plan.forward(x_probe)
        out = model(x_probe, training=False)
    except Exception as exc:  # noqa: BLE001
        return None, f"re-running the layer chain failed ({type(exc).__name__}: {exc})"
    if tuple(recon.shape) != tuple(out.shape) or relative_mismatch(recon, out) > verification_tolerance(dtype):
        return None, "the layer chain does not reproduce the model output (not a plain chain)"
    return plan, ""


# ----------------------------------------------------------------------------- multiplicative
def multiplicative_map(G: TensorLike) -> tf.Tensor:
    """Per-point linear map of the multiplicative model, ``c(G * H(o)) = M o``.

    Args:
        G: complex tensor (B, n, n), hermitian (the Fubini-Study metric).

    Returns:
        real tensor (B, m, m), m = n^2, ``M[b, I, J] = c(G[b] * H(e_J))[I]`` in
        cyntk's component order (``c`` = :func:`components_from_hermitian_tf`).
    """
    G = tf.convert_to_tensor(G)
    n = G.shape[-1]
    m = n * n
    basis = hermitian_from_components_tf(tf.eye(m, dtype=G.dtype.real_dtype))  # (m, n, n)
    prod = G[:, None, :, :] * tf.cast(basis, G.dtype)[None]  # (B, m_J, n, n)
    comps = components_from_hermitian_tf(prod)  # (B, m_J, m_I)
    return tf.transpose(comps, (0, 2, 1))


def patch_normalised_inputs(x):
    """Real points (B, 2N) -> their patch-normalised form ``[Re z/z_k, Im z/z_k]``.

    ``k = argmax_i |z_i|`` (cymetric's patch); this is the network input of
    :class:`cyntk.models.MultiplicativeModel` for arbitrary representatives.
    """
    n = x.shape[-1] // 2
    z = tf.complex(x[:, :n], x[:, n:])
    patch = tf.argmax(tf.math.real(z) ** 2 + tf.math.imag(z) ** 2, axis=-1, output_type=tf.int32)
    zk = tf.gather(z, patch, axis=1, batch_dims=1)
    zn = z / zk[:, None]
    return tf.concat([tf.math.real(zn), tf.math.imag(zn)], axis=-1)
