"""Metric models recognised by what they compute, not by attribute names.

A metric model with parameters theta usually evaluates one network ``nn``
(a Keras sublayer holding *all* its trainable variables) and combines its
output with fixed geometry. Two families are recognised, each checked
numerically on probe points before a fast path is used:

* **Value models** (cymetric's ``FreeModel``, ``AddFSModel``, ``MultFSModel``,
  ``MatrixFSModel``; cyntk's ``MultiplicativeModel``): ``g = f(G, H(o))`` with
  ``o = nn(u(x))`` (B, n^2), ``H`` the hermitian map of the components and
  ``f`` one of ::

      free            g = H(o)
      additive        g = G + H(o)
      multiplicative  g = G + G * H(o)      (elementwise)
      matrix          g = G + G @ H(o)      (not hermitian)

  so the output components are affine in ``o``: ``c(g) = c(G) + M(x) o`` with
  ``M(x)[:, J] = c(f(G, H(e_J))) - c(f(G, 0))``, and the metric-NTK is
  ``M(x) Theta_nn(x, x') M(x')^T``.

* **Potential models** (cymetric's ``PhiFSModel``, cyntk's ``PhiModel``):
  ``g = G + P(x) (d dbar phi) P(x)^H`` with the scalar ``phi = nn(u(x))``. The
  components are linear in the N^2 real entries ``h(x)`` of the hermitian
  Hessian ``d dbar phi`` (the symmetric part of ``phi_xx + phi_yy`` and the
  antisymmetric part of ``phi_xy - phi_yx``): ``c(g) = c(G) + A(x) h(x)``, and
  the metric-NTK is ``A(x) Theta_h(x, x') A(x')^T``, the kernel of phi
  differentiated twice on each side.

``G(x)``, ``M(x)`` and ``A(x)`` depend on the points only. They are found by
evaluating the model with the last (linear) layer of ``nn`` temporarily set to
chosen values -- zero (``o = 0``, so ``g = G``), random matrices (to verify the
hypothesis independently of the current weights) and, for potential models,
K >= N^2 directions from which ``A(x)`` is solved by least squares. The
variables are restored bit for bit afterwards.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from cyntk.kernels.ntk_networks import NTKDense
from cyntk.kernels.structured import (
    _flatten_layers,
    _same_ids,
    multiplicative_map,
    patch_normalised_inputs,
    relative_mismatch,
    relaxed_function,
)
from cyntk.models.hermitian import components_from_hermitian_tf, hermitian_from_components_tf

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["VALUE_FORMS", "find_network", "recognise"]

#: The value-model combinations ``f(G, H)`` tried, in order.
VALUE_FORMS = ("multiplicative", "additive", "matrix", "free")

_CACHE_SIZE = 16


def _combine(form, G, H):
    if form == "multiplicative":
        return G + G * H
    if form == "additive":
        return G + H
    if form == "matrix":
        return G + tf.linalg.matmul(G, H)
    return H


def _identity(x):
    return x


def find_network(model: keras.Model) -> keras.layers.Layer | None:
    """The sublayer of ``model`` that holds exactly its trainable variables, or None."""
    trainable = list(getattr(model, "trainable_variables", []))
    if not trainable:
        return None
    stack = list(getattr(model, "layers", []) or [])
    seen = set()
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen or layer is model:
            continue
        seen.add(id(layer))
        if _same_ids(layer.trainable_variables, trainable) and callable(layer):
            return layer
    return None


def _last_linear(network):
    """(kernel, bias or None) of the final linear Dense of ``network``, or None."""
    layers = [l for l in _flatten_layers(network) if not isinstance(l, keras.layers.InputLayer)]
    if not layers:
        return None
    last = layers[-1]
    if not isinstance(last, (keras.layers.Dense, NTKDense)):
        return None
    act = last.activation
    if act is not None and act is not keras.activations.linear:
        return None
    return last.kernel, last.bias


@contextlib.contextmanager
def _assigned(pairs):
    """Temporarily assign values to variables; restored bit for bit."""
    saved = [(v, np.array(v.numpy())) for v, _ in pairs]
    try:
        for v, val in pairs:
            v.assign(
                np.asarray(
                    val,
                    dtype=v.dtype.as_numpy_dtype
                    if hasattr(v.dtype, "as_numpy_dtype")
                    else np.dtype(keras.backend.standardize_dtype(v.dtype)),
                )
            )
        yield
    finally:
        for v, val in saved:
            v.assign(val)


def hermitian_hessian_entries(D):
    """The N^2 real entries of ``d dbar phi`` from the real Hessian D (B, 2N, 2N).

    Upper triangle (with diagonal) of ``phi_xx + phi_yy`` followed by the strict
    upper triangle of ``phi_xy - phi_yx``; cymetric's ``d dbar phi`` is a
    quarter of ``S + i A`` with these blocks.
    """
    N = D.shape[-1] // 2
    S = D[:, :N, :N] + D[:, N:, N:]
    A = D[:, :N, N:] - D[:, N:, :N]
    iu, ju = np.triu_indices(N)
    ia, ja = np.triu_indices(N, 1)
    s = tf.gather_nd(tf.transpose(S, (1, 2, 0)), np.stack([iu, ju], 1))
    a = tf.gather_nd(tf.transpose(A, (1, 2, 0)), np.stack([ia, ja], 1))
    return tf.transpose(tf.concat([s, a], axis=0))


class PotentialJet:
    """Callable ``x -> h(x)`` (B, N^2): the hermitian-Hessian entries of ``nn(u(x))``.

    The Hessian is taken with respect to the network's own input at ``u(x)``.
    It exposes ``trainable_variables`` so that the generic Jacobian plan can
    differentiate it.
    """

    def __init__(self, network, input_map):
        self._network = weakref.ref(network)
        self.input_map = input_map
        self.trainable_variables = list(network.trainable_variables)

    def __call__(self, x, training=False):
        network = self._network()
        y = tf.convert_to_tensor(self.input_map(x))
        with tf.GradientTape() as outer:
            outer.watch(y)
            with tf.GradientTape() as inner:
                inner.watch(y)
                phi = tf.reduce_sum(network(y, training=False))
            grad = inner.gradient(phi, y)
        D = outer.batch_jacobian(grad, y)
        return hermitian_hessian_entries(D)


@dataclass
class Structure:
    """A recognised structure: ``kind`` ('value' or 'potential'), ``form`` and how to map points."""

    kind: str
    form: str
    network: object
    input_map: object
    jet: object = None

    @property
    def description(self) -> str:
        net = type(self.network).__name__
        if self.kind == "value":
            return f"{self.form} metric model g = f(G, H({net}(x)))"
        return f"potential model g = G + P (d dbar {net}(x)) P^H"


class StructureMaps:
    """Evaluates ``G``, ``M(x)`` / ``A(x)`` for a recognised model (cached per point set)."""

    def __init__(self, model, structure: Structure, components, dtype):
        self._model = weakref.ref(model)
        self.structure = structure
        self.components = components
        self.dtype = dtype
        self.last = _last_linear(structure.network)
        self._call = relaxed_function(lambda x: self._model()(x, training=False))
        net = structure.network
        self._net = relaxed_function(lambda x: net(structure.input_map(x), training=False))
        if structure.jet is not None:
            self._jet = relaxed_function(lambda x: structure.jet(x))
        self._cache = {}

    # ---------------------------------------------------------------- surgery
    def _with_last(self, kernel_value, fn, x):
        kernel, bias = self.last
        pairs = [(kernel, kernel_value)]
        if bias is not None:
            pairs.append((bias, np.zeros(bias.shape)))
        with _assigned(pairs):
            return fn(x)

    def base(self, x):
        """``G(x)`` (the model with the network's output set to zero)."""
        kernel, _ = self.last
        return self._with_last(np.zeros(kernel.shape), self._call, x)

    # ---------------------------------------------------------------- maps
    def value_map(self, G):
        """M(x) (B, m_out, m) for a value model from G (B, n, n)."""
        form = self.structure.form
        if form == "multiplicative":
            return tf.cast(multiplicative_map(G), self.dtype)
        n = G.shape[-1]
        m = n * n
        basis = tf.cast(hermitian_from_components_tf(tf.eye(m, dtype=G.dtype.real_dtype)), G.dtype)
        Gr = tf.repeat(G, m, axis=0)
        Hr = tf.tile(basis, [tf.shape(G)[0], 1, 1])
        diff = self.components(_combine(form, Gr, Hr)) - self.components(_combine(form, Gr, 0 * Hr))
        out = tf.reshape(diff, (-1, m, diff.shape[-1]))  # (B, m_J, m_out)
        return tf.cast(tf.transpose(out, (0, 2, 1)), self.dtype)

    def potential_map(self, x, G, n_dirs=None):
        """A(x) (B, m_out, N^2) for a potential model, by least squares over K surgeries.

        Raises:
            ValueError: the surgeries do not determine A (too few hidden units).
        """
        kernel, _ = self.last
        width = int(kernel.shape[0])
        N2 = (int(x.shape[-1]) // 2) ** 2
        K = n_dirs or min(width, N2 + 8)
        if width < N2:
            raise ValueError(f"the potential network's last hidden layer has {width} < N^2 = {N2} units")
        rng = np.random.default_rng(20231019)
        cG = self.components(G)
        rows_h, rows_c = [], []
        scale_g = float(tf.reduce_max(tf.abs(cG)))
        for _ in range(K):
            w = rng.standard_normal((width, 1))
            h = self._with_last(w, self._jet, x)
            s = scale_g / max(float(tf.reduce_max(tf.abs(h))), np.finfo(np.float64).tiny)
            w = w * s
            h = self._with_last(w, self._jet, x)
            c = self.components(self._with_last(w, self._call, x)) - cG
            rows_h.append(np.asarray(h, np.float64))
            rows_c.append(np.asarray(c, np.float64))
        H = np.stack(rows_h, 1)  # (B, K, N2)
        C = np.stack(rows_c, 1)  # (B, K, m_out)
        sv = np.linalg.svd(H, compute_uv=False)
        rcond = 1e-10 if np.dtype(self.dtype.as_numpy_dtype) == np.float64 else 1e-5
        if np.any(sv[:, -1] <= rcond * sv[:, 0]):
            raise ValueError("the Hessians of the hidden units do not span the N^2 directions")
        A = np.stack([np.linalg.lstsq(H[b], C[b], rcond=None)[0].T for b in range(len(H))])
        return tf.constant(A, self.dtype)

    def map(self, x):
        """The per-point linear map of this structure (B, m_out, m_inner), cached per point set."""
        xv = np.asarray(x)
        key = (xv.shape, xv.dtype.str, hash(xv.tobytes()))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        G = self.base(x)
        out = self.value_map(G) if self.structure.kind == "value" else self.potential_map(x, G)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = out
        return out


def _tolerance(dtype, kind):
    eps = float(np.finfo(tf.as_dtype(dtype).real_dtype.as_numpy_dtype).eps)
    return (1e3 if kind == "value" else 1e5) * eps


def _probe_maps(x_probe):
    maps = [_identity]
    if x_probe.shape[-1] % 2 == 0:
        maps.append(patch_normalised_inputs)
    return maps


def recognise(
    model: keras.Model, x_probe: tf.Tensor, components: Callable[[tf.Tensor], tf.Tensor], dtype: tf.DType
) -> tuple[StructureMaps | None, str]:
    """Recognise ``model`` on ``x_probe``.

    Args:
        model: Keras metric model.
        x_probe: tf tensor (B, d) of probe points.
        components: callable complex (B, n, n) -> real components (B, m_out).
        dtype: real dtype of the returned maps.

    Returns:
        ``(StructureMaps, "")`` or ``(None, reason)``.
    """
    network = find_network(model)
    if network is None:
        return None, "no sublayer of the model holds exactly its trainable variables"
    last = _last_linear(network)
    if last is None:
        return None, "the network does not end in a linear Dense layer"
    kernel, _ = last
    net_dtype = kernel.dtype
    rng = np.random.default_rng(7)
    call = lambda x: model(x, training=False)  # noqa: E731
    try:
        g = call(x_probe)
        o_dim = int(kernel.shape[-1])
    except Exception as exc:  # noqa: BLE001
        return None, f"evaluating the model failed ({type(exc).__name__}: {exc})"
    n = int(g.shape[-1])
    probes = [x_probe]
    if x_probe.shape[-1] % 2 == 0:
        half = x_probe.shape[-1] // 2
        lam = 1.3 * np.exp(0.4j)
        z = tf.complex(x_probe[:, :half], x_probe[:, half:]) * tf.cast(
            lam, tf.complex128 if x_probe.dtype == tf.float64 else tf.complex64
        )
        probes.append(tf.cast(tf.concat([tf.math.real(z), tf.math.imag(z)], -1), x_probe.dtype))
    R = rng.standard_normal(tuple(kernel.shape)) * 0.5
    reason = "the model output is none of the recognised forms"
    if o_dim == n * n:
        kinds = [("value", form) for form in VALUE_FORMS]
    elif o_dim == 1:
        kinds = [("potential", "potential")]
    else:
        return None, f"the network has {o_dim} outputs (neither n^2 = {n * n} nor 1)"
    for input_map in _probe_maps(x_probe):
        for kind, form in kinds:
            jet = PotentialJet(network, input_map) if kind == "potential" else None
            st = Structure(kind, form, network, input_map, jet)
            try:
                maps = StructureMaps(model, st, components, dtype)
                ok = True
                for xp in probes:
                    try:
                        gp = call(xp)
                    except Exception:  # noqa: BLE001 - rescaled points rejected: skip that probe
                        if xp is x_probe:
                            raise
                        continue
                    lin = maps.map(xp)
                    G = maps.base(xp)
                    for w in (None, R):
                        if w is None:
                            target = components(gp)
                            inner = _inner_values(maps, st, xp, net_dtype)
                        else:
                            target = components(maps._with_last(w, maps._call, xp))
                            inner = maps._with_last(w, lambda v: _inner_values(maps, st, v, net_dtype), xp)
                        recon = tf.cast(components(G), tf.float64) + tf.einsum(
                            "bij,bj->bi", tf.cast(lin, tf.float64), tf.cast(inner, tf.float64)
                        )
                        if relative_mismatch(recon, tf.cast(target, tf.float64)) > _tolerance(g.dtype, kind):
                            ok = False
                            break
                    if not ok:
                        break
                if ok:
                    return maps, ""
            except Exception as exc:  # noqa: BLE001 - a failed hypothesis is just not this structure
                reason = f"checking a {form} structure failed ({type(exc).__name__}: {exc})"
    return None, reason


def _inner_values(maps, st, x, net_dtype):
    if st.kind == "value":
        return tf.cast(st.network(st.input_map(tf.cast(x, net_dtype)), training=False), tf.float64)
    return tf.cast(st.jet(tf.cast(x, net_dtype)), tf.float64)


def output_components(kind):
    """Component map of an output kind: 'metric' (n^2) or 'complex' (2 n^2: Re then Im)."""
    if kind == "metric":
        return components_from_hermitian_tf

    def both(g):
        g = tf.convert_to_tensor(g)
        b = tf.shape(g)[0]
        return tf.concat([tf.reshape(tf.math.real(g), (b, -1)), tf.reshape(tf.math.imag(g), (b, -1))], 1)

    return both


class StructurePlan:
    """``Theta_g = L(x) Theta_inner(x, x') L(x')^T`` for a recognised model.

    ``inner`` is the plan of the network's output (value models, on ``u(x)``)
    or of the potential's Hessian entries (potential models, on ``x``), and
    ``L`` the per-point map of :class:`StructureMaps`.
    """

    name = "structured"

    def __init__(self, maps: StructureMaps, inner, dtype):
        self.maps = maps
        self.inner = inner
        self.dtype = dtype
        self.m = None
        self.cache_features = inner.cache_features
        st = maps.structure
        net_dtype = inner.dtype
        self._inputs = relaxed_function(
            (lambda x: tf.cast(st.input_map(x), net_dtype)) if st.kind == "value" else (lambda x: tf.cast(x, net_dtype))
        )
        self.block = relaxed_function(self._block)

    @property
    def path(self) -> str:
        inner = "Dense chain" if self.inner.name == "structured" else self.inner.path
        return f"structured ({self.maps.structure.description}; inner kernel: {inner})"

    def features(self, x):
        lin = self.maps.map(x)
        return list(self.inner.features(self._inputs(x))) + [tf.cast(lin, self.dtype)]

    def _block(self, f1, f2):
        theta = tf.cast(self.inner.block(f1[:-1], f2[:-1]), self.dtype)  # (B1, B2, k, k)
        return tf.einsum("aIK,abKL,bJL->abIJ", f1[-1], theta, f2[-1])
