"""The empirical metric neural tangent kernel (paper eq. 2.7).

For a Keras model with parameters theta whose call maps real inputs (P, d) to a
metric, the metric-NTK is ::

    Theta[a, b, I, J] = sum_theta  d g_I(x1[a]) / d theta  *  d g_J(x2[b]) / d theta

where ``I, J`` run over the m = n^2 real components of the hermitian metric in
cyntk's order (:mod:`cyntk.geometry.components`), or over the m outputs of a
plain real network (P, m). The sum runs over the model's *trainable* variables.

Three ways of computing it, all giving the same numbers:

* ``implementation='generic'`` works for any model: per chunk of points, the
  per-point Jacobians of the m components with respect to each trainable
  variable (``tf.vectorized_map`` over points of a per-point
  ``GradientTape.jacobian``), contracted variable by variable with a matrix
  product and accumulated (never one concatenated parameter vector).
* ``implementation='structured'`` exploits structure (see
  :mod:`cyntk.kernels.structured`): Dense chains as Hadamard products of
  layer-input and cotangent Gram matrices; multiplicative metric models
  ``g = G + G * H(nn)`` as ``M(x) Theta_nn M(x')^T``.
* ``implementation='auto'`` (default) takes the structured path when the model
  is recognised (verified numerically on the first points) and the generic one
  otherwise.

Blocks are evaluated over chunks of points, so the memory besides the result is
bounded by ``chunk_size``; for x2 = None only the upper block triangle is
computed and the result is exactly symmetric. :func:`metric_ntk_vp` applies the
kernel to a vector without forming it (one VJP over the source points, one JVP
over the target points).

The traced functions are cached per model (through a weak reference, so the
model can still be garbage-collected) and per option set: calling
:func:`metric_ntk` on the same model every epoch does not re-trace, and the
structure detection runs once (again if the set of trainable variables changes).
The model is always called with ``training=False`` and its variables are never
written, so computing the NTK during training does not change training.

Inside ``strategy.scope()`` of a ``tf.distribute`` strategy (or with
``strategy=``) both functions split their rows across the strategy's replicas
and gather the result for the caller (:mod:`cyntk.kernels._replicas`).
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
import weakref
from typing import TYPE_CHECKING, Literal

import keras
import numpy as np
import tensorflow as tf

from cyntk._validation import as_real_points, matching_widths, one_of, optional_chunk_size
from cyntk.kernels._replicas import distribution_strategy, even_rows, run_rows, triangle_rows
from cyntk.kernels.recognise import StructurePlan, output_components, recognise
from cyntk.kernels.structured import (
    Traceable,
    dense_chain_plan,
    relaxed_function,
    verification_tolerance,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["IMPLEMENTATIONS", "OUTPUTS", "metric_ntk", "metric_ntk_vp", "metric_ntk_path"]

#: Accepted values of ``implementation``.
IMPLEMENTATIONS = ("auto", "generic", "structured")
#: Accepted values of ``output``.
OUTPUTS = ("auto", "metric", "vector", "complex")

_BLOCK_BYTES = 2**25  # one (B1, B2, m, m) block array (32 MiB)
_FEATURE_BYTES = 2**28  # per-chunk Jacobians of the generic path
_VP_CHUNK = 1024
_PROBE = 8


# ----------------------------------------------------------------------------- model outputs
def _variable_dtype(model, name="model"):
    if not hasattr(model, "trainable_variables") or not callable(model):
        raise TypeError(
            f"`{name}` must be a Keras model (callable with `trainable_variables`); received {type(model).__name__}."
        )
    variables = list(model.trainable_variables)
    if not variables:
        raise ValueError(
            f"`{name}` has no trainable variables, so its NTK is identically zero; "
            "build it first (call it once on a batch) and make sure some layers are "
            "trainable."
        )
    dtypes = {tf.as_dtype(v.dtype) for v in variables}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating:
        raise TypeError(
            f"`{name}` must have trainable variables of one floating dtype; received {sorted(d.name for d in dtypes)}."
        )
    return dtypes.pop()


class _Outputs:
    """Maps the model output to real components (B, m)."""

    def __init__(self, kind: str, m: int):
        self.kind = kind
        self.m = m

    def __call__(self, y):
        if self.kind in ("metric", "complex"):
            if not y.dtype.is_complex:
                y = tf.complex(y, tf.zeros_like(y))
            return output_components(self.kind)(y)
        return tf.reshape(y, (-1, self.m))


def _resolve_outputs(model, x_probe, output: str) -> _Outputs:
    y = model(x_probe, training=False)
    if isinstance(y, (list, tuple, dict)):
        raise TypeError(f"`model` must return a single tensor (P, n, n) or (P, m); received a {type(y).__name__}.")
    y = tf.convert_to_tensor(y)
    batch = int(x_probe.shape[0])
    if y.shape.rank is None or y.shape.rank < 2 or y.shape[0] != batch:
        raise ValueError(
            f"`model` must map inputs (P, d) to outputs (P, n, n) or (P, m); "
            f"received output shape {tuple(y.shape)} for input shape "
            f"{tuple(x_probe.shape)}."
        )
    if y.dtype.is_complex:
        if output == "vector":
            raise ValueError(
                "`output='vector'` needs a real model output (P, m); `model` returns "
                f"complex {tuple(y.shape)}. Use output='metric' (hermitian (P, n, n))."
            )
        kind = "metric"
    else:
        kind = "vector" if output == "auto" else output
    if kind == "vector":
        return _Outputs("vector", int(np.prod(y.shape[1:])))
    if y.shape.rank != 3 or y.shape[1] != y.shape[2]:
        raise ValueError(
            "`model` must return metrics of shape (P, n, n) when output='metric'; "
            f"received output shape {tuple(y.shape)}. Pass output='vector' for a "
            "real (P, m) network."
        )
    g = y.numpy()
    diff = float(np.max(np.abs(g - np.conj(np.swapaxes(g, -1, -2)))))
    scale = max(float(np.max(np.abs(g))), np.finfo(np.float64).tiny)
    if output == "complex":
        # any complex (P, n, n) output, e.g. cymetric's MatrixFSModel (g = G + G @ H is not
        # hermitian): Re then Im of every entry, 2 n^2 real components
        return _Outputs("complex", 2 * int(y.shape[1]) ** 2)
    if diff > verification_tolerance(y.dtype) * scale:
        raise ValueError(
            "`model` must return hermitian matrices (g = g^dagger) when output='metric'; received "
            f"max|g - g^dagger| = {diff:.3g} (max|g| = {scale:.3g}) on the first {batch} points. "
            "Build the metric with cyntk.models.hermitian_from_components_tf, pass "
            "output='complex' for a general complex (P, n, n) output (2 n^2 real components: Re then "
            "Im of every entry; e.g. cymetric's MatrixFSModel), or output='vector' for a real (P, m) "
            "network."
        )
    return _Outputs("metric", int(y.shape[1]) ** 2)


# ----------------------------------------------------------------------------- generic plan
class _GenericPlan:
    """Per-variable Jacobians of each chunk, contracted by matrix products.

    Two ways of forming the per-point Jacobians, same numbers:

    * ``vectorised=True``: ``tf.vectorized_map`` (pfor) of a per-point
      ``GradientTape.jacobian`` -- the fast way, but TensorFlow's pfor converter
      cannot convert every op (e.g. cymetric's pullbacks, which scatter with
      int64 indices);
    * ``vectorised=False``: a ``tf.map_fn`` loop over points of per-point
      Jacobians built with ``experimental_use_pfor=False`` (a ``while_loop``
      of backward passes), which works for any differentiable op.
    """

    cache_features = False
    name = "generic"

    def __init__(self, model, outputs: _Outputs, dtype, *, vectorised: bool = True):
        self._model = weakref.ref(model)
        self.outputs = outputs
        self.dtype = dtype
        self.m = outputs.m
        self.vectorised = bool(vectorised)
        self.variables = list(model.trainable_variables)
        n_params = sum(int(np.prod(v.shape)) for v in self.variables)
        self.bytes_per_point = self.m * n_params * dtype.size
        self.features = relaxed_function(self._features)
        self.block = relaxed_function(self._block)

    @property
    def path(self) -> str:
        return "generic (vectorised)" if self.vectorised else "generic (per-point loop)"

    def _features(self, x):
        m = self.m
        model = _alive(self._model)
        use_pfor = self.vectorised

        def per_point(xi):
            with tf.GradientTape() as tape:
                f = self.outputs(model(xi[None], training=False))[0]
            jac = tape.jacobian(
                f, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO, experimental_use_pfor=use_pfor
            )
            return [tf.reshape(tf.cast(j, self.dtype), (m, -1)) for j in jac]

        x = tf.cast(x, self.dtype)
        if use_pfor:
            return tf.vectorized_map(per_point, x, fallback_to_while_loop=True)
        sig = [tf.TensorSpec((m, int(np.prod(v.shape))), self.dtype) for v in self.variables]
        return tf.map_fn(per_point, x, fn_output_signature=sig)

    def _block(self, f1, f2):
        m = self.m
        b1, b2 = tf.shape(f1[0])[0], tf.shape(f2[0])[0]
        acc = None
        for j1, j2 in zip(f1, f2):
            p = j1.shape[-1]
            term = tf.matmul(tf.reshape(j1, (-1, p)), tf.reshape(j2, (-1, p)), transpose_b=True)
            acc = term if acc is None else acc + term
        return tf.transpose(tf.reshape(acc, tf.stack([b1, m, b2, m])), (0, 2, 1, 3))


# ----------------------------------------------------------------------------- engine
class _Engine:
    """Plan selection, chunking and assembly for one model (reused across calls)."""

    def __init__(self, model, *, output="auto", implementation="auto", chunk_size=None):
        self._model = weakref.ref(model)
        self.output = one_of(output, "output", OUTPUTS)
        self.implementation = one_of(implementation, "implementation", IMPLEMENTATIONS)
        self.chunk_size = optional_chunk_size(chunk_size)
        self.dtype = _variable_dtype(model)
        self.outputs = None
        self.plan = None
        self.reason = ""
        self.path = None
        self._key = None
        self._vjp = self._jvp = None
        self._lock = threading.RLock()

    @property
    def model(self):
        return _alive(self._model)

    # ---------------------------------------------------------------- preparation
    def prepare(self, x_probe: np.ndarray):
        key = tuple(id(v) for v in self.model.trainable_variables)
        if self.outputs is not None and key == self._key:
            return
        self.dtype = _variable_dtype(self.model)
        xp = tf.constant(x_probe[:_PROBE], self.dtype)
        self.outputs = _resolve_outputs(self.model, xp, self.output)
        self.plan, self.reason = None, ""
        self._vjp = self._jvp = None
        self._key = key
        self._xp = xp

    def _ensure_plan(self):
        if self.plan is None:
            self.plan = self._select_plan(self._xp)

    def _select_plan(self, xp):
        model, outputs = self.model, self.outputs
        generic_dtype = tf.as_dtype(self.dtype)
        plan, reason = None, "implementation='generic' was asked for"
        if self.implementation != "generic":
            if outputs.kind in ("metric", "complex"):
                plan, reason = self._structured(model, xp)
            else:
                plan, reason = dense_chain_plan(model, self.dtype, xp)
                if plan is not None:
                    plan.path = "structured (Dense chain)"
        if plan is None and self.implementation == "structured":
            raise ValueError(
                "`implementation='structured'` needs a chain of Dense/NTKDense layers with "
                "elementwise activations, or a metric model built on one network (free, additive, "
                "multiplicative or matrix combinations g = f(G, H(network(x))), or a potential "
                f"g = G + d dbar phi); received {type(model).__name__} ({reason}). Use "
                "implementation='auto' or 'generic'."
            )
        if plan is None:
            plan = self._generic(model, outputs, generic_dtype, xp, what=type(model).__name__)
        self.reason = reason
        self.path = plan.path
        return plan

    def _structured(self, model, xp):
        """A :class:`StructurePlan` if the model is recognised, else ``(None, reason)``."""
        maps, reason = recognise(model, xp, self.outputs, tf.as_dtype(self.dtype))
        if maps is None:
            return None, reason
        st = maps.structure
        net = st.network
        net_dtype = _variable_dtype(net, "the model's network")
        if st.kind == "value":
            xn = tf.cast(st.input_map(xp), net_dtype)
            inner, _ = dense_chain_plan(net, net_dtype, xn)
            if inner is None:
                inner = self._generic(
                    net, _Outputs("vector", int(net(xn).shape[-1])), net_dtype, xn, what=type(net).__name__
                )
        else:
            jet = st.jet
            n2 = int(jet(tf.cast(xp[:1], net_dtype)).shape[-1])
            inner = self._generic(
                jet, _Outputs("vector", n2), net_dtype, tf.cast(xp, net_dtype), what="the potential's Hessian"
            )
        plan = StructurePlan(maps, inner, tf.as_dtype(self.dtype))
        plan.m = self.outputs.m
        return plan, ""

    def _generic(self, model, outputs, dtype, xp, *, what):
        """The vectorised generic plan, or the per-point loop where pfor cannot convert the model."""
        plan = _GenericPlan(model, outputs, dtype)
        tf_logger = logging.getLogger("tensorflow")
        level = tf_logger.level
        tf_logger.setLevel(logging.CRITICAL)  # pfor logs its failure as an ERROR; we say it below
        try:
            plan.features(tf.cast(xp[:2], dtype))
            return plan
        except Exception as exc:  # noqa: BLE001 - any pfor conversion failure: use the loop
            first = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1].strip()[:200]}"
        finally:
            tf_logger.setLevel(level)
        plan = _GenericPlan(model, outputs, dtype, vectorised=False)
        try:
            plan.features(tf.cast(xp[:2], dtype))
        except Exception as exc:
            raise ValueError(
                f"the metric-NTK of {what} cannot be computed: per-point Jacobians fail "
                f"both vectorised ({first}) and as a loop ({type(exc).__name__}: {exc}). "
                "Is the model differentiable in its trainable variables?"
            ) from exc
        warnings.warn(
            f"metric_ntk: TensorFlow's vectorisation (pfor) cannot convert {what} ({first}); "
            "using a per-point Jacobian loop instead (same numbers, slower). This is said "
            "once per model.",
            RuntimeWarning,
            stacklevel=5,
        )
        return plan

    def _default_chunk(self, plan, n_points):
        if self.chunk_size is not None:
            return self.chunk_size
        itemsize = tf.as_dtype(plan.dtype).size
        chunk = int(math.sqrt(_BLOCK_BYTES / (plan.m**2 * itemsize)))
        per_point = getattr(plan, "bytes_per_point", 0) or getattr(getattr(plan, "inner", None), "bytes_per_point", 0)
        if per_point:
            chunk = min(chunk, _FEATURE_BYTES // per_point)
        return max(1, min(chunk, n_points))

    # ---------------------------------------------------------------- kernel
    def kernel(self, x1: np.ndarray, x2: np.ndarray | None) -> np.ndarray:
        with self._lock:
            self.prepare(x1)
            self._ensure_plan()
            plan = self.plan
        symmetric = x2 is None
        x2v = x1 if symmetric else x2
        chunk = self._default_chunk(plan, max(len(x1), len(x2v)))
        s1 = _balanced_slices(len(x1), chunk)
        s2 = s1 if symmetric else _balanced_slices(len(x2v), chunk)
        t1 = tf.constant(x1, self.dtype)
        t2 = t1 if symmetric else tf.constant(x2v, self.dtype)
        cached1 = cached2 = None
        if plan.cache_features:
            cached1 = [plan.features(t1[s]) for s in s1]
            cached2 = cached1 if symmetric else [plan.features(t2[s]) for s in s2]
        m = plan.m
        np_dtype = tf.as_dtype(plan.dtype).as_numpy_dtype
        out = None
        for i, si in enumerate(s1):
            f1 = cached1[i] if cached1 is not None else plan.features(t1[si])
            for j, sj in enumerate(s2):
                if symmetric and j < i:
                    continue
                if symmetric and j == i:
                    f2 = f1
                else:
                    f2 = cached2[j] if cached2 is not None else plan.features(t2[sj])
                blk = plan.block(f1, f2)
                if symmetric and i == j:
                    blk = _symmetrise(blk)
                if len(s1) == 1 and len(s2) == 1:
                    return _writable(np.asarray(blk))
                if out is None:
                    out = np.empty((len(x1), len(x2v), m, m), dtype=np_dtype)
                out[si, sj] = np.asarray(blk)
                if symmetric and j > i:
                    out[sj, si] = np.asarray(_swap(blk))
        return out

    # ---------------------------------------------------------------- matrix-free
    def _build_vp(self):
        ref, outputs = self._model, self.outputs  # weak reference: engines are cached per model
        variables = list(self.model.trainable_variables)

        def vjp(x, v):
            with tf.GradientTape() as tape:
                f = outputs(_alive(ref)(x, training=False))
            return tape.gradient(
                f, variables, output_gradients=tf.cast(v, f.dtype), unconnected_gradients=tf.UnconnectedGradients.ZERO
            )

        def jvp(x, tangents):
            primals = [getattr(v, "value", v) for v in variables]
            with tf.autodiff.ForwardAccumulator(primals, tangents) as acc:
                f = outputs(_alive(ref)(x, training=False))
            return acc.jvp(f, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        self._vjp = tf.function(Traceable(vjp), reduce_retracing=True)
        self._jvp = tf.function(Traceable(jvp), reduce_retracing=True)

    def _vp_functions(self, x_src: np.ndarray, v: np.ndarray):
        with self._lock:
            self.prepare(x_src)
            if self._vjp is None:
                self._build_vp()
            vjp_fn, jvp_fn = self._vjp, self._jvp
        m = self.outputs.m
        if v.shape != (len(x_src), m):
            raise ValueError(
                f"`v` must have shape (P_src, m) = ({len(x_src)}, {m}) (one value per "
                f"source point and metric component); received shape {v.shape}."
            )
        return vjp_fn, jvp_fn

    def _pullback(self, vjp_fn, x_src: np.ndarray, v: np.ndarray) -> list:
        """``J_src^T v`` per trainable variable, accumulated over chunks (zeros for no points)."""
        variables = self.model.trainable_variables
        chunk = self.chunk_size or _VP_CHUNK
        grads = None
        for s in range(0, len(x_src), chunk):
            g = vjp_fn(tf.constant(x_src[s : s + chunk], self.dtype), tf.constant(v[s : s + chunk]))
            grads = list(g) if grads is None else [a + b for a, b in zip(grads, g)]
        if grads is None:
            return [tf.zeros(var.shape, var.dtype) for var in variables]
        return [tf.cast(g, var.dtype) for g, var in zip(grads, variables)]

    def _push(self, jvp_fn, x_tgt: np.ndarray, grads) -> np.ndarray:
        """``J_tgt w`` at the target points, over chunks."""
        chunk = self.chunk_size or _VP_CHUNK
        out = [
            jvp_fn(tf.constant(x_tgt[s : s + chunk], self.dtype), grads).numpy() for s in range(0, len(x_tgt), chunk)
        ]
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.outputs.m), self.dtype.as_numpy_dtype)

    def vp(self, x_src: np.ndarray, v: np.ndarray, x_tgt: np.ndarray) -> np.ndarray:
        vjp_fn, jvp_fn = self._vp_functions(x_src, v)
        return self._push(jvp_fn, x_tgt, self._pullback(vjp_fn, x_src, v))

    # ---------------------------------------------------------------- across replicas
    def kernel_on_replicas(self, strategy, x1: np.ndarray, x2: np.ndarray | None) -> np.ndarray:
        """:meth:`kernel` with its rows split across the replicas of ``strategy``, gathered.

        ``x2 = None``: replica r computes the rows ``[a, b)`` of the upper
        triangle (its diagonal block, symmetric, and the block right of it),
        the row ranges chosen for equal areas; the gathered trapezoids fill the
        upper triangle and are mirrored, so the result is exactly symmetric.
        Otherwise replica r computes ``Theta(x1[rows_r], x2)`` for an even split.
        """
        n1 = len(x1)
        replicas = int(strategy.num_replicas_in_sync)
        symmetric = x2 is None
        rows = triangle_rows(n1, replicas) if symmetric else even_rows(n1, replicas)
        ms = []

        def block(r, n_replicas, ctx):
            with self._lock:
                self.prepare(x1)
                self._ensure_plan()
                m = self.plan.m
            ms.append(m)
            a, b = rows[r].start, rows[r].stop
            np_dtype = tf.as_dtype(self.plan.dtype).as_numpy_dtype
            if not symmetric:
                part = self.kernel(x1[a:b], x2) if b > a else np.zeros((0, len(x2), m, m), np_dtype)
                return part, (max(s.stop - s.start for s in rows), len(x2), m, m)
            size = max((s.stop - s.start) * (n1 - s.start) for s in rows) * m * m
            if b == a:
                return np.zeros(0, np_dtype), (size,)
            part = self.kernel(x1[a:b], None)
            if b < n1:
                part = np.concatenate([part, self.kernel(x1[a:b], x1[b:])], axis=1)
            return part.reshape(-1), (size,)

        gathered = run_rows(strategy, block)
        m = ms[0]
        if not symmetric:
            k = len(gathered) // replicas
            return np.concatenate([gathered[r * k : r * k + s.stop - s.start] for r, s in enumerate(rows)])
        size = len(gathered) // replicas
        out = np.empty((n1, n1, m, m), dtype=gathered.dtype)
        for r, s in enumerate(rows):
            a, b = s.start, s.stop
            if b == a:
                continue
            trapezoid = gathered[r * size : r * size + (b - a) * (n1 - a) * m * m].reshape(b - a, n1 - a, m, m)
            out[a:b, a:] = trapezoid
            out[b:, a:b] = np.transpose(trapezoid[:, b - a :], (1, 0, 3, 2))
        return out

    def vp_on_replicas(self, strategy, x_src: np.ndarray, v: np.ndarray, x_tgt: np.ndarray) -> np.ndarray:
        """:meth:`vp` across the replicas of ``strategy``.

        Replica r pulls back its share of the source points (``J_src^T v`` over
        its rows), an all-reduce sums the R pullbacks, and it pushes the sum
        forward at its share of the target points; the target rows are gathered.
        """
        replicas = int(strategy.num_replicas_in_sync)
        src, tgt = even_rows(len(x_src), replicas), even_rows(len(x_tgt), replicas)
        rows = max(s.stop - s.start for s in tgt)

        def block(r, n_replicas, ctx):
            vjp_fn, jvp_fn = self._vp_functions(x_src, v)
            grads = self._pullback(vjp_fn, x_src[src[r]], v[src[r]])
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            return self._push(jvp_fn, x_tgt[tgt[r]], grads), (rows, self.outputs.m)

        gathered = run_rows(strategy, block)
        return np.concatenate([gathered[r * rows : r * rows + s.stop - s.start] for r, s in enumerate(tgt)])


@tf.function(autograph=False, reduce_retracing=True)
def _symmetrise(blk):
    """``(Theta + Theta^T) / 2`` for a diagonal block (B, B, m, m)."""
    return 0.5 * (blk + tf.transpose(blk, (1, 0, 3, 2)))


@tf.function(autograph=False, reduce_retracing=True)
def _swap(blk):
    """The mirrored block ``Theta[b, a, J, I]``."""
    return tf.transpose(blk, (1, 0, 3, 2))


def _writable(arr: np.ndarray) -> np.ndarray:
    return arr if arr.flags.writeable else arr.copy()


def _balanced_slices(n, chunk):
    """Slices of at most ``chunk`` points covering range(n), of (nearly) equal size."""
    k = -(-n // chunk)
    size = -(-n // k)
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _alive(ref):
    model = ref()
    if model is None:
        raise RuntimeError("The model of this metric-NTK computation no longer exists.")
    return model


_ENGINES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _engine_for(model, **options) -> _Engine:
    """The cached engine of ``model`` for these options (traced functions are reused)."""
    key = tuple(sorted(options.items()))
    try:
        per_model = _ENGINES.setdefault(model, {})
    except TypeError:  # not weak-referenceable / hashable: no caching
        return _Engine(model, **options)
    engine = per_model.get(key)
    if engine is None:
        engine = per_model[key] = _Engine(model, **options)
    return engine


def _points_pair(x1, x2, name1="x1", name2="x2"):
    p1 = as_real_points(x1, name1)
    if x2 is None or x2 is x1:
        return p1, None
    p2 = as_real_points(x2, name2)
    matching_widths(p1, p2, name1, name2)
    return p1, p2


def metric_ntk(
    model: keras.Model,
    x1: ArrayLike,
    x2: ArrayLike | None = None,
    *,
    chunk_size: int | None = None,
    implementation: Literal["auto", "generic", "structured"] = "auto",
    output: Literal["auto", "metric", "vector", "complex"] = "auto",
    strategy: tf.distribute.Strategy | None = None,
) -> np.ndarray:
    """Empirical metric-NTK of a Keras model (paper eq. 2.7).

    ``Theta[a, b, I, J] = sum_theta d g_I(x1[a])/d theta * d g_J(x2[b])/d theta``
    over the trainable variables of ``model``, with I, J the real metric
    components in cyntk's order (or the outputs of a real network).

    Args:
        model: built Keras model; its call maps real (P, d) inputs to complex
            hermitian (P, n, n) metrics (cymetric/cyntk metric models) or to a
            real (P, m) output. It is called with ``training=False``.
        x1: real array (P1, d) (cymetric's layout [Re z, Im z] for points of
            projective space); cast to the dtype of the model's variables.
        x2: real array (P2, d); ``None`` (or ``x1`` itself) gives the symmetric
            kernel of ``x1`` with itself (half the work, exactly symmetric).
        chunk_size: points per chunk (> 0). Default: blocks of at most 32 MiB
            and, on the generic path, per-chunk Jacobians of at most 256 MiB.
        implementation: ``'auto'``, ``'structured'`` (error if the model has no
            recognised structure) or ``'generic'``.
        output: ``'metric'`` (model returns hermitian (P, n, n); m = n^2 real
            components; an error if it is not hermitian), ``'complex'`` (any complex
            (P, n, n), m = 2 n^2: Re then Im of every entry, row-major), ``'vector'`` (real
            (P, m), flattened if it has more axes) or ``'auto'`` (complex output ->
            metric, real -> vector).
        strategy: ``None`` (default): inside ``strategy.scope()`` the rows
            (``x1`` points) are split across the scope's replicas, outside any
            scope everything is computed here; or a ``tf.distribute.Strategy``
            to split across, e.g. ``model.distribute_strategy`` outside its
            scope. See the note below.

    Returns:
        NumPy array (P1, P2, m, m) in the model's real dtype (float32 or float64).

    Raises:
        ValueError / TypeError: bad points (empty, non-finite, complex, widths
            differ), bad ``chunk_size``/``implementation``/``output``/``strategy``,
            a model without trainable variables, or a non-hermitian metric output.

    Note:
        Called inside ``strategy.scope()`` (Keras' convention, as for
        :class:`~cyntk.flows.KernelModel`) or with ``strategy=``, each replica
        computes its block of rows on its own device (``strategy.run``) and
        ``strategy.gather`` joins them, so the caller -- under
        ``MultiWorkerMirroredStrategy``, the caller on every worker -- holds
        the whole kernel, equal to the one-device result to round-off. For
        ``x2 = None`` the replicas share the upper triangle (row ranges of
        equal area) and the result is exactly symmetric. This is also how the
        kernel of a model *built* inside the scope is computed there: its
        mirrored variables are read per replica. Every worker of a multi-worker
        strategy must make the same call with the same points (collectives). In
        a replica context (inside ``strategy.run``) each replica computes its
        own call; nothing is nested.
    """
    engine = _engine_for(model, output=output, implementation=implementation, chunk_size=chunk_size)
    dist = distribution_strategy(strategy)
    p1, p2 = _points_pair(x1, x2)
    if dist is not None:
        return engine.kernel_on_replicas(dist, p1, p2)
    return engine.kernel(p1, p2)


def metric_ntk_path(
    model: keras.Model,
    *,
    chunk_size: int | None = None,
    implementation: Literal["auto", "generic", "structured"] = "auto",
    output: Literal["auto", "metric", "vector", "complex"] = "auto",
) -> str | None:
    """How :func:`metric_ntk` computes the kernel of ``model`` with these options.

    E.g. ``"structured (multiplicative metric model ...; inner kernel: Dense chain)"``,
    ``"generic (vectorised)"`` or ``"generic (per-point loop)"`` (where TensorFlow's
    pfor cannot convert the model); ``None`` before the first call.
    """
    try:
        engine = _ENGINES.get(model, {}).get(
            tuple(sorted({"output": output, "implementation": implementation, "chunk_size": chunk_size}.items()))
        )
    except TypeError:
        return None
    return None if engine is None else engine.path


def metric_ntk_vp(
    model: keras.Model,
    x_src: ArrayLike,
    v: ArrayLike,
    x_tgt: ArrayLike | None = None,
    *,
    chunk_size: int | None = None,
    output: Literal["auto", "metric", "vector", "complex"] = "auto",
    strategy: tf.distribute.Strategy | None = None,
) -> np.ndarray:
    """Matrix-free kernel-vector product ``u = Theta(x_tgt, x_src) . v``.

    ``u[a, I] = sum_{b, J} Theta_IJ(x_tgt[a], x_src[b]) v[b, J] = J_tgt (J_src^T v)``:
    one vector-Jacobian product over the source points
    (``w = sum_b v[b] . d g(x_src[b]) / d theta``, accumulated over chunks) and
    one Jacobian-vector product (forward mode) of ``g`` at the target points in
    direction ``w``. Memory is O(#parameters + chunk activations), never
    O(P_tgt P_src).

    Args:
        model: Keras model as in :func:`metric_ntk`.
        x_src: real (P_src, d) source points.
        v: real (P_src, m) values per source point and component.
        x_tgt: real (P_tgt, d) target points; ``None`` means ``x_src``.
        chunk_size: points per forward/backward pass (default 1024).
        output: as in :func:`metric_ntk`.
        strategy: as in :func:`metric_ntk`: under a strategy, replica r pulls
            back its share of the source points, an all-reduce sums the
            pullbacks, and it pushes the sum forward at its share of the
            target points; the rows of ``u`` are gathered for the caller.

    Returns:
        NumPy array (P_tgt, m) in the model's real dtype.
    """
    engine = _engine_for(model, output=output, implementation="auto", chunk_size=chunk_size)
    dist = distribution_strategy(strategy)
    ps, pt = _points_pair(x_src, x_tgt, "x_src", "x_tgt")
    v = _vector(v, len(ps))
    if dist is not None:
        return engine.vp_on_replicas(dist, ps, v, ps if pt is None else pt)
    return engine.vp(ps, v, ps if pt is None else pt)


def _vector(v, n_src):
    if hasattr(v, "numpy") and not isinstance(v, np.ndarray):
        v = v.numpy()
    v = np.asarray(v)
    if v.dtype == object or not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
        raise TypeError(f"`v` must be a real array of shape (P_src, m); received dtype {v.dtype}.")
    if v.ndim != 2 or v.shape[0] != n_src:
        raise ValueError(f"`v` must have shape (P_src, m) with P_src = {n_src}; received shape {v.shape}.")
    if not np.all(np.isfinite(v)):
        raise ValueError("`v` must be finite; received NaN or inf entries.")
    return v
