"""Frozen-kernel metric flows as a Keras model (paper eqs. 2.12 and 3.5).

A frozen kernel ``Theta`` turns gradient descent on a loss ``L = sum_x' l(x')``
into a flow of the metric itself (paper eq. 3.5)::

    g^{n+1}(x) = g^n(x) - dt sum_{x' in B} Theta(x, x') . dl(x')/dg^n(x')          (3.5)

with ``B`` the train points (full batch) or a mini-batch of them (stochastic
flow). :class:`KernelModel` writes the metric in *dual* form::

    g(x) = g0(x) - sum_{x' in train} Theta(x, x') . alpha(x')

with ``g0`` the base metric (pulled-back Fubini--Study, or any metric model at
its current weights), ``alpha`` (N_train, m) trainable dual coefficients
initialised to 0 and ``m = n^2`` real metric components (cyntk's component
order, :mod:`cyntk.geometry.components`). A training step

1. finds the train points of the batch (any order: Keras may shuffle),
2. reads their metric ``g_B = g0_B - (K alpha)_B`` (kept up to date, see
   below) and differentiates the loss with respect to ``g_B`` by autodiff,
3. hands the optimizer the gradient ``grad_alpha[x'] = -dL/dg(x')`` for
   ``x' in B`` (0 elsewhere).

With ``keras.optimizers.SGD(learning_rate=dt)`` the update is
``alpha <- alpha - dt * grad_alpha = alpha + dt dL/dg`` at the batch points, so
``g(x)`` changes by ``-dt sum_{x' in B} Theta(x, x') dL/dg(x')`` at *every*
point x: exactly (3.5). Note that ``grad_alpha`` is not the gradient of ``L``
with respect to ``alpha`` (that would be ``-K^T dL/dg``); it is the dual
representation of the kernel (functional) gradient. Any other Keras optimizer
(momentum, Adam, schedules) acts on ``alpha`` with this gradient.

**Loss and its reduction.** ``l`` is a per-point loss of the metric: the sigma
loss ``|1 - det g / (kappa |Omega|^2)|`` of :mod:`cyntk.models.losses` by
default; ``"volk"``, a weighted sum ``{"sigma": 1, "volk": 0.5}`` or any
callable ``fn(g, y) -> (B,)``. The objective differentiated is
``L = sum_{x' in B} s(x') l(x')`` (``reduction="sum"``, default, eq. 3.5
literally; ``s`` = Keras sample weights, 1 by default) or
``L = sum s l / sum s`` (``reduction="mean"``, i.e. dt divided by the batch
size). The logged ``loss`` is always the per-point mean
``sum s l / sum s`` over the epoch's points, so train and test values compare.

**State kept between steps.** ``u_train = K alpha`` (N_train, m) at the train
points is a non-trainable variable: after each optimizer step the change
``d_alpha`` is applied once, ``u_train += K d_alpha`` (one kernel product over
the columns where ``d_alpha != 0``), which also gives the new metric at every
train point for the positive-definiteness check. One full-batch step costs one
``N_train x N_train`` kernel product (half of it for symmetric pairwise
kernels); kernels are evaluated tile by tile (:mod:`cyntk.kernels._flow`) and
never stored.

**Primal form** (``form="primal"``, empirical NTK kernels only). The empirical
NTK ``Theta = J J^T`` (``J = dg/dtheta`` at the kernel's weight snapshot
``theta0``) belongs to the network linearised at ``theta0``::

    g_lin(x) = g(theta0, x) + J(x) (theta - theta0),

and ``theta - theta0 = -J^T alpha`` maps the dual coefficients to parameter
space. The primal model trains ``delta_theta = theta - theta0`` (trainable,
initialised to 0) with the true gradient ``J^T dL/dg`` (one vector-Jacobian
product) and evaluates ``J delta_theta`` with one Jacobian-vector product:
O(N) per step instead of O(N^2), and SGD gives the same metrics as the dual
form.

**Charts.** A kernel adds up metric components of different points, which is
meaningful only if they are written in the same local coordinates. All train
points must lie in one chart (patch, eliminated coordinate), as produced by
``M.sample_points(n, chart=(k, j))``; points in another chart raise an error.
``mixed_charts="separate"`` opts into a block-diagonal kernel over charts
instead: each chart's points flow on their own, and a prediction at a point
uses the train points of its chart only (an error if there are none).

**Clusters** (paper section 3.1). ``clusters=C`` clusters the train points by
FS distance (:class:`~cyntk.kernels.clustering.BatchedFSClustering`) and flows
every cluster separately: ``Theta_C(x, x') = Theta(x, x') [c(x) = c(x')]``
(block-diagonal kernel). A point that is not a train point belongs to the
cluster of its nearest train point (FS distance, within its chart).

**Positive-definiteness.** After every step the metric at the train points
(primal form: at the batch points) is checked; where its smallest eigenvalue is
not above ``eigenvalue_floor`` the step is not accepted as is:
``on_non_positive="raise"`` (default) discards the step's update and ``fit``
raises :class:`NonPositiveMetricError`; ``"stop"`` discards it, warns and
stops training (``model.stop_training``); ``"backoff"`` scales the step's update
``d_alpha`` (hence ``d_g`` everywhere) by ``backoff_factor**k`` with the
smallest ``k <= max_backoffs`` that keeps every checked metric
positive-definite (the optimizer's own state, e.g. momentum, is not rewound),
counts ``k`` in the logged metric ``backoffs`` and raises
:class:`NonPositiveMetricError` if no such ``k`` exists. An update that is not
finite (NaN targets, say) is always discarded and ``fit`` raises ``ValueError``.

**Precision and batches.** The state and the kernels are float64. Keras casts
float array inputs to ``keras.config.floatx()``; ``fit``, ``evaluate``,
``predict`` and ``train_on_batch`` of this model pass them through Keras as the
bit patterns of their float64 values and restore them inside the steps, so
nothing is rounded and no global setting (``floatx``) is changed. Keras also keeps an optimizer's learning rate in ``floatx()``, so dt
is rounded to float32 unless ``keras.config.set_floatx("float64")`` was set
before the optimizer was created (or dt is a float32 number such as 2**-12).
Kernel products are tiled internally: pass a large ``batch_size`` (e.g. all
points) to ``evaluate``/``predict``, since each batch costs a pass over all
train points.

Logged metrics: ``loss`` (per-point mean), ``<term>_loss`` for each named loss
term, ``min_eigenvalue`` (smallest eigenvalue of the metric over the epoch:
after each step at the checked points in training, at the evaluated points in
``evaluate``) and ``backoffs`` (policy ``"backoff"``).
"""

from __future__ import annotations

import contextlib
import importlib
import numbers
import warnings

import keras
import numpy as np
import tensorflow as tf

from cyntk.geometry import Hypersurface, check_on_variety, fs_nearest, to_complex, to_real
from cyntk.kernels._checks import as_real_points, one_of, positive_int
from cyntk.kernels._flow import KernelProduct, RowIndex, default_threads, min_eigenvalues
from cyntk.kernels.base import Kernel
from cyntk.kernels.clustering import BatchedFSClustering
from cyntk.kernels.ntk import EmpiricalNTKKernel
from cyntk.models import losses as L
from cyntk.models._spec import ManifoldSpec, manifold_spec
from cyntk.models.hermitian import components_from_hermitian_tf, hermitian_from_components_tf
from cyntk.models.models import FSModel

__all__ = ["KernelModel", "NonPositiveMetricError", "FORMS", "NON_POSITIVE_POLICIES",
           "MIXED_CHART_POLICIES", "REDUCTIONS", "LOSS_NAMES"]

#: Accepted values of ``form``.
FORMS = ("dual", "primal")
#: Accepted values of ``on_non_positive``.
NON_POSITIVE_POLICIES = ("raise", "stop", "backoff")
#: Accepted values of ``mixed_charts``.
MIXED_CHART_POLICIES = ("raise", "separate")
#: Accepted values of ``reduction``.
REDUCTIONS = ("sum", "mean")
#: Named per-point losses (pointwise functions of g; Kähler, transition and
#: Ricci losses need derivatives of g or g at other points and cannot be flowed).
LOSS_NAMES = ("sigma", "volk")

_NOT_POINTWISE = ("kaehler", "transition", "ricci")
_MARKER = "cyntk-kernel-flow-error: "
_BASE_CHUNK = 4096


def _encode(a):
    """A float array as the int64 bit patterns of its float64 values (anything else unchanged).

    Keras' array data adapters cast float inputs of fit/evaluate/predict to
    ``keras.config.floatx()`` (float32 by default), which would round the
    points, targets and sample weights of the flow. Integer arrays pass through
    unchanged, so the flow's steps receive the exact float64 values and
    :func:`_decode` restores them; no global setting is touched.
    """
    arr = _to_numpy(a)
    if arr is None or arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        return a
    return np.ascontiguousarray(arr, dtype=np.float64).view(np.int64)


def _decode(t):
    """Inverse of :func:`_encode` inside the steps: int64 bit patterns -> float64; floats cast."""
    if t is None:
        return None
    t = tf.convert_to_tensor(t)
    if t.dtype == tf.int64:
        return tf.bitcast(t, tf.float64)
    return tf.cast(t, tf.float64) if t.dtype.is_floating else t


def _encode_args(args, kwargs, positions):
    """Encode the named array arguments of a Keras entry point (given by keyword or position)."""
    args = list(args)
    for name, pos in positions.items():
        if name in kwargs:
            kwargs[name] = _encode_data(kwargs[name]) if name == "validation_data" else _encode(kwargs[name])
        elif pos is not None and len(args) > pos:
            args[pos] = _encode_data(args[pos]) if name == "validation_data" else _encode(args[pos])
    return args, kwargs


def _encode_data(vd):
    if isinstance(vd, tuple) and 2 <= len(vd) <= 3:
        return tuple(_encode(v) for v in vd)
    return vd


class NonPositiveMetricError(RuntimeError):
    """A flow step would have made the metric non-positive-definite."""


# ----------------------------------------------------------------------------- helpers
def _check_sample_weight(sample_weight, x):
    """Refuse sample weights that are not finite, >= 0, one per point and not all 0.

    A negative weight turns the kernel flow's descent into ascent on that point.
    """
    sw = _to_numpy(sample_weight)
    if sw is None:
        return
    if not np.issubdtype(sw.dtype, np.number) or np.iscomplexobj(sw):
        raise TypeError(f"`sample_weight` must be a real numeric array (P,); received dtype {sw.dtype}.")
    sw = sw.astype(np.float64)
    xa = _to_numpy(x)
    if xa is not None and xa.ndim >= 1 and sw.reshape(-1).shape[0] != len(xa):
        raise ValueError(f"`sample_weight` must have one entry per point ({len(xa)}); received shape "
                         f"{sw.shape}.")
    if not np.all(np.isfinite(sw)):
        raise ValueError(f"`sample_weight` must be finite; received {int(np.sum(~np.isfinite(sw)))} "
                         "NaN/inf entries.")
    if np.any(sw < 0):
        raise ValueError(f"`sample_weight` must be >= 0 (a negative weight makes the kernel flow ascend "
                         f"on that point); received {int(np.sum(sw < 0))} negative entries, min "
                         f"{sw.min():.3g}.")
    if sw.size and not np.any(sw > 0):
        raise ValueError("`sample_weight` is 0 for every point: the flow would not move; give some "
                         "points a positive weight.")


def _to_numpy(a):
    if a is None or isinstance(a, (tf.data.Dataset,)) or callable(getattr(a, "__next__", None)):
        return None
    if isinstance(a, (dict, list, tuple)):
        return None
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        a = a.numpy()
    try:
        return np.asarray(a)
    except Exception:     # noqa: BLE001 - not array-like (generators, PyDatasets)
        return None


def _serialize_kernel(kernel) -> dict:
    if isinstance(kernel, EmpiricalNTKKernel):
        return {"class_name": "EmpiricalNTKKernel", "module": EmpiricalNTKKernel.__module__,
                "config": {"snapshot": kernel.snapshot, "chunk_size": kernel.chunk_size,
                           "implementation": kernel.implementation, "output": kernel.output},
                "model": "base_metric"}
    if not hasattr(kernel, "get_config"):
        raise TypeError(f"kernel {type(kernel).__name__} has no get_config(); it cannot be saved.")
    return {"class_name": type(kernel).__qualname__, "module": type(kernel).__module__,
            "config": kernel.get_config()}


def _deserialize_kernel(config: dict):
    module, name = config["module"], config["class_name"]
    cls = keras.saving.get_registered_object(f"cyntk>{name}")
    if cls is None:
        if not module.startswith("cyntk."):
            raise ValueError(f"cannot rebuild kernel {module}.{name}: only cyntk kernels or kernels "
                             "registered with keras.saving.register_keras_serializable(package="
                             "'cyntk') can be loaded.")
        cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Kernel)):
        raise TypeError(f"{module}.{name} is not a cyntk Kernel.")
    return cls(**config["config"])


def _force_trainable(config):
    """Set every ``"trainable"`` flag of a serialised Keras object to True (in place)."""
    if isinstance(config, dict):
        for k, v in config.items():
            if k == "trainable" and isinstance(v, bool):
                config[k] = True
            else:
                _force_trainable(v)
    elif isinstance(config, list):
        for v in config:
            _force_trainable(v)
    return config


def _copy_model(model, x_probe, weights=None, *, trainable=False):
    """A copy of a Keras metric model with the given (or its current) weights.

    With ``trainable=True`` every layer of the copy is trainable, whatever the
    original's flags (used to rebuild the empirical NTK from a frozen model).
    """
    try:
        config = keras.saving.serialize_keras_object(model)
        if trainable:
            config = _force_trainable(config)
        clone = keras.saving.deserialize_keras_object(config)
    except Exception as err:     # noqa: BLE001
        raise TypeError(
            f"the base metric model {type(model).__name__} cannot be copied (Keras serialisation "
            f"failed: {err}). Give it get_config()/from_config() and register it with "
            "keras.saving.register_keras_serializable, so that the KernelModel can freeze it.") from err
    clone(x_probe, training=False)
    src = list(model.variables) if weights is None else None
    values = [np.asarray(v.numpy()) for v in src] if weights is None else list(weights)
    dst = list(clone.variables)
    if len(dst) != len(values) or any(tuple(d.shape) != tuple(np.shape(w)) for d, w in zip(dst, values)):
        raise ValueError(f"the copy of the base metric model {type(model).__name__} has variables "
                         f"{[tuple(d.shape) for d in dst]}, the model {[np.shape(w) for w in values]}; "
                         "the model must be rebuildable from its config.")
    for d, w in zip(dst, values):
        d.assign(w)
    return clone


class _MinMetric(keras.metrics.Metric):
    """Smallest value seen since the last reset."""

    def __init__(self, name="min_eigenvalue", dtype="float64"):
        super().__init__(name=name, dtype=dtype)
        self.value = self.add_variable(shape=(), initializer=keras.initializers.Constant(np.inf),
                                       dtype=dtype, name="value")

    def update_state(self, values, sample_weight=None):
        values = tf.cast(values, self.dtype)
        self.value.assign(tf.minimum(self.value, tf.reduce_min(values)))

    def result(self):
        return self.value

    def reset_state(self):
        self.value.assign(np.inf)


# ----------------------------------------------------------------------------- the model
@keras.saving.register_keras_serializable(package="cyntk")
class KernelModel(keras.Model):
    """Frozen-kernel metric flow ``g(x) = g0(x) - sum_x' Theta(x, x') alpha(x')``.

    See the module docstring for the update rule (SGD with learning rate dt is
    eq. 3.5 exactly), the loss reduction, charts, clusters, the primal form
    and the positive-definiteness guard.

    Usage::

        M = fermat_quintic()
        z = M.sample_points(1000, seed=0, chart=(0, 1))
        x = to_real(z); y = KernelModel.targets(M, x)         # (P, 2) [w, |Omega|^2]
        model = KernelModel(GaussianFSKernel(sigma=0.1), x, M)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
        model.fit(x, y, batch_size=len(x), epochs=50)         # 50 steps of (3.5)
        model.evaluate(x_test, y_test); g = model.predict(x_test)   # (P, 3, 3) complex

    Args:
        kernel: a :class:`~cyntk.kernels.base.Kernel`: component-diagonal
            (``kernel(x1, x2)`` -> (P1, P2)) or full (P1, P2, m, m) with
            m = n^2; e.g. ``GaussianFSKernel``, ``DeltaKernel``,
            ``InfiniteWidthKernel``, ``EmpiricalNTKKernel``.
        x_train: float (N, 2N_c) real train points ``[Re z, Im z]`` on the
            manifold, distinct, patch-normalised, in one chart (see
            ``mixed_charts``).
        manifold: ``Hypersurface``, ``CYDataset``, cymetric basis dict or
            :class:`~cyntk.models.ManifoldSpec`.
        base_metric: ``"fubini_study"``, a Keras metric model (real (P, 2N_c)
            -> complex (P, n, n) or real (P, n^2); copied and frozen at its
            current weights), or None: the kernel's network at its weight
            snapshot for an ``EmpiricalNTKKernel`` (the linearisation point),
            Fubini--Study otherwise.
        kappa: ``Vol_K / Vol_CY`` of the sigma loss; default: the manifold's
            (CYDataset / basis), else computed from the train points.
        loss: ``"sigma"`` (default), ``"volk"``, a dict ``{name: weight}`` of
            those, or a callable ``fn(g, y) -> (B,)`` of the metric g (B, n, n)
            complex and ``y`` (B, 2) ``[w, |Omega|^2]`` (per-point values).
        reduction: ``"sum"`` (eq. 3.5) or ``"mean"`` over the batch.
        form: ``"dual"`` or ``"primal"`` (``EmpiricalNTKKernel`` only).
        clusters: None, a number of clusters C, labels (N,) int, or an
            estimator with ``fit_predict(z)`` (e.g. ``BatchedFSClustering``).
        cluster_batch_size: mini-batch size of the FS clustering when
            ``clusters`` is a number (the paper: 10 000).
        mixed_charts: ``"raise"`` or ``"separate"`` (block-diagonal over charts).
        on_non_positive: ``"raise"``, ``"stop"`` or ``"backoff"``.
        backoff_factor: step scale per backoff, in (0, 1).
        max_backoffs: largest number of backoffs per step.
        eigenvalue_floor: a metric is valid where its smallest eigenvalue
            exceeds this (>= 0).
        tile_size: points per tile side of the kernel products.
        n_threads: threads for kernel tiles (default: available cores).
        point_chunk: points per chunk of base-metric / network evaluations
            (and of the primal form's Jacobian products) inside a step.
        seed: seed of the clustering.
        dtype: ``"float64"`` (default) or ``"float32"``; the output is
            complex128 / complex64. Kernels are evaluated in float64.
        name: Keras name.

    Call:
        ``model(x, training=None, j_elim=None)``: x (B, 2N_c) real -> g
        (B, n, n) complex, cymetric's signature (``j_elim`` must agree with
        the points' own charts).

    Raises:
        ValueError / TypeError: empty or non-finite train points, points of
            the wrong width or off the manifold, mixed charts, a kernel whose
            blocks have the wrong shape or width, bad options.
    """

    def __init__(self, kernel, x_train, manifold, *, base_metric=None, kappa=None, loss="sigma",
                 reduction="sum", form="dual", clusters=None, cluster_batch_size=10_000,
                 mixed_charts="raise", on_non_positive="raise", backoff_factor=0.5,
                 max_backoffs=30, eigenvalue_floor=0.0, tile_size=256, n_threads=None,
                 point_chunk=8192, seed=None, dtype="float64", name=None, _state=None, **kwargs):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"`dtype` must be 'float32' or 'float64'; received {dtype!r}.")
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.spec = manifold_spec(manifold, kappa)
        _require_hypersurface(self.spec)
        self.surface = Hypersurface(self.spec.monomials, self.spec.coefficients, self.spec.kmoduli,
                                    name=self.spec.name)
        self.reduction = one_of(reduction, "reduction", REDUCTIONS)
        self.form = one_of(form, "form", FORMS)
        self.mixed_charts = one_of(mixed_charts, "mixed_charts", MIXED_CHART_POLICIES)
        self.on_non_positive = one_of(on_non_positive, "on_non_positive", NON_POSITIVE_POLICIES)
        try:
            self.backoff_factor = float(backoff_factor)
        except (TypeError, ValueError):
            raise TypeError(f"`backoff_factor` must be a number in (0, 1); received "
                            f"{backoff_factor!r}.") from None
        if not 0.0 < self.backoff_factor < 1.0:
            raise ValueError(f"`backoff_factor` must be in (0, 1); received {backoff_factor!r}.")
        self.max_backoffs = positive_int(max_backoffs, "max_backoffs")
        self.eigenvalue_floor = float(eigenvalue_floor)
        if not np.isfinite(self.eigenvalue_floor) or self.eigenvalue_floor < 0:
            raise ValueError(f"`eigenvalue_floor` must be a finite number >= 0; received "
                             f"{eigenvalue_floor!r}.")
        self.tile_size = positive_int(tile_size, "tile_size")
        self.n_threads = default_threads() if n_threads is None else positive_int(n_threads, "n_threads")
        self.point_chunk = positive_int(point_chunk, "point_chunk")
        self.cluster_batch_size = cluster_batch_size
        self.seed = seed
        self._loss_spec = self._resolve_loss(loss)
        self.kernel = kernel
        self.n = self.spec.nfold
        self.m = self.n * self.n
        self.width = 2 * self.spec.ncoords
        if not isinstance(kernel, EmpiricalNTKKernel) and self.form == "primal":
            raise ValueError("`form='primal'` (training the linearised network) needs an "
                             f"EmpiricalNTKKernel; received kernel {type(kernel).__name__}. Use "
                             "form='dual'.")
        if self.form == "primal" and clusters is not None:
            raise ValueError("`clusters` is only available in the dual form (the primal form has one "
                             "global parameter vector); received form='primal' with clusters.")
        if _state is not None:          # from_config: shapes only, values come from the weights
            self._init_from_state(_state, base_metric)
        else:
            self._init_from_data(x_train, base_metric, clusters)
        self._create_trackers()
        self._flow_error = None
        self._halted = False
        self.built = True

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _resolve_loss(loss):
        if callable(loss) and not isinstance(loss, (str, dict)):
            return {"callable": loss}
        if isinstance(loss, str):
            loss = {loss: 1.0}
        if not isinstance(loss, dict) or not loss:
            raise TypeError(f"`loss` must be one of {LOSS_NAMES}, a dict {{name: weight}} of them, or "
                            f"a callable fn(g, y) -> (B,); received {loss!r}.")
        out = {}
        for k, w in loss.items():
            if k in _NOT_POINTWISE:
                raise ValueError(f"the {k!r} loss of cyntk.models depends on derivatives of g or on g "
                                 "at other points, not on the metric at the flowed points, so a kernel "
                                 f"flow cannot differentiate it; use one of {LOSS_NAMES} or a callable.")
            if k not in LOSS_NAMES:
                raise ValueError(f"`loss` names must be among {LOSS_NAMES}; received {k!r}.")
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not np.isfinite(w) or w < 0:
                raise ValueError(f"loss weight of {k!r} must be a finite number >= 0; received {w!r}.")
            out[k] = float(w)
        return out

    def _check_points(self, x, name, *, check_manifold=True) -> np.ndarray:
        """float64 (P, 2N_c) points, validated (width, finite, on the manifold)."""
        arr = as_real_points(x, name)
        if arr.shape[1] != self.width:
            raise ValueError(
                f"`{name}` must have shape (P, 2N) = (P, {self.width}) for {self.spec.describe()} "
                f"(real parts then imaginary parts); received shape {arr.shape}. The points and the "
                "manifold (and kernel) must have the same width.")
        if check_manifold:
            z = to_complex(arr)
            res = self.spec.residual(z / z[np.arange(len(z)), np.argmax(np.abs(z), axis=1)][:, None])
            if res.max() > 1e-4:
                raise ValueError(f"`{name}` does not lie on {self.spec.describe()}: relative residual "
                                 f"|Q(z)|/sum|c_m z^m| up to {res.max():.3g} (expected <= 1e-4).")
        return arr

    def _init_from_data(self, x_train, base_metric, clusters):
        x = self._check_points(x_train, "x_train")
        z = to_complex(x)
        charts = self.surface.charts(z)
        ids = charts[:, 0] * self.spec.ncoords + charts[:, 1]
        uniq, counts = np.unique(ids, return_counts=True)
        if len(uniq) > 1 and self.mixed_charts == "raise":
            desc = ", ".join(f"(k={u // self.spec.ncoords}, j={u % self.spec.ncoords}): {c}"
                             for u, c in zip(uniq[:6], counts[:6]))
            raise ValueError(
                f"`x_train` mixes {len(uniq)} charts (patch k, eliminated coordinate j) -- {desc}"
                f"{' ...' if len(uniq) > 6 else ''}. A kernel adds metric components of different "
                "points, which is meaningful only in one chart. Sample in one chart "
                "(M.sample_points(n, chart=(k, j))), or pass mixed_charts='separate' to flow each "
                "chart on its own (block-diagonal kernel).")
        if self.spec.kappa is None:
            self.spec = self.spec.with_kappa(self.surface.kappa(z))
        # the kernel (probe: shapes and widths) -------------------------------
        self._product = KernelProduct(self.kernel, self.m, tile_size=self.tile_size,
                                      n_threads=self.n_threads)
        self._probe_kernel(x)
        # base metric -----------------------------------------------------------
        self._set_base_metric(base_metric, x)
        g0 = self._base_components_np(x)
        lam = min_eigenvalues(g0, self.n)
        if np.any(lam <= self.eigenvalue_floor):
            bad = np.flatnonzero(lam <= self.eigenvalue_floor)
            raise ValueError(f"the base metric is not positive-definite at {len(bad)} of {len(x)} train "
                             f"points (smallest eigenvalue {lam.min():.3g}, first at point {bad[0]}); a "
                             "flow must start from a valid metric.")
        # clusters --------------------------------------------------------------
        labels = self._cluster_labels(clusters, x)
        self._create_state(len(x), int(len(np.unique(labels))) if clusters is not None else 0)
        self.x_train.assign(x)
        self.g0_train.assign(g0)
        self.cluster_labels.assign(labels)
        self._reset_cache()

    def _init_from_state(self, state, base_metric):
        self._product = KernelProduct(self.kernel, self.m, tile_size=self.tile_size,
                                      n_threads=self.n_threads)
        self._base_model = base_metric
        self._base_is_kernel_model = isinstance(self.kernel, EmpiricalNTKKernel)
        if not base_metric.built or not base_metric.variables:
            probe = to_real(self.surface.sample_points(2, seed=0))
            base_metric(tf.constant(probe, base_metric.compute_dtype), training=False)
        self._param_index = state.get("param_index")
        self._create_state(int(state["n_train"]), int(state["n_clusters"]))
        self._reset_cache()

    def _probe_kernel(self, x):
        probe = x[:2]
        try:
            if self._product.own_matvec:
                self._product.matvec(probe, probe, np.zeros((len(probe), self.m)))
            else:
                self._product.check_block(self.kernel(probe, probe), len(probe), len(probe))
        except (ValueError, TypeError, RuntimeError, tf.errors.InvalidArgumentError) as err:
            raise ValueError(
                f"kernel {type(self.kernel).__name__} cannot be evaluated on the train points of shape "
                f"{x.shape} with m = n^2 = {self.m} metric components: {err}") from err
        nc = getattr(self.kernel, "n_components", None)
        if not getattr(self.kernel, "component_diagonal", False) and nc is not None and nc != self.m:
            raise ValueError(f"kernel {type(self.kernel).__name__} has {nc} components per point; the "
                             f"metric on {self.spec.name} has m = n^2 = {self.m}.")

    def _set_base_metric(self, base_metric, x):
        probe = tf.constant(x[:4], self.compute_dtype)
        kernel_model = getattr(self.kernel, "model", None) if isinstance(
            self.kernel, EmpiricalNTKKernel) else None
        if base_metric is None:
            base_metric = kernel_model if kernel_model is not None else "fubini_study"
        self._param_index = None
        self._base_is_kernel_model = kernel_model is not None and base_metric is kernel_model
        if isinstance(base_metric, str):
            if base_metric != "fubini_study":
                raise ValueError(f"`base_metric` must be 'fubini_study', a Keras metric model or None; "
                                 f"received {base_metric!r}.")
            self._base_model = FSModel(self.spec, dtype=self.compute_dtype, name="base_metric")
            return
        if not isinstance(base_metric, keras.layers.Layer):
            raise TypeError(f"`base_metric` must be 'fubini_study', a Keras metric model or None; "
                            f"received {type(base_metric).__name__}.")
        weights = None
        if base_metric is kernel_model and self.kernel.weights is not None:
            weights = self.kernel.weights              # the kernel's snapshot theta0
        source_vars = list(base_metric.variables)
        trainable_ids = {id(v) for v in base_metric.trainable_variables}
        try:
            self._base_model = _copy_model(base_metric, tf.cast(probe, base_metric.compute_dtype), weights)
            self._base_model.trainable = False
        except TypeError:
            # Not rebuildable from its config (e.g. cymetric's models): use the live model with a
            # frozen weight snapshot, loaded for the duration of every fit/evaluate/predict and
            # restored bit for bit afterwards. Kept out of Keras' tracking, so the KernelModel's
            # variables stay its own and the user's model is not made non-trainable.
            if weights is None:
                weights = [np.array(v.numpy()) for v in source_vars]
            object.__setattr__(self, "_base_model", base_metric)
            object.__setattr__(self, "_live_base", (source_vars, [np.array(w) for w in weights]))
        if self.form == "primal":
            if base_metric is not kernel_model:
                raise ValueError("`form='primal'` linearises the kernel's network; `base_metric` must "
                                 "be None (or the EmpiricalNTKKernel's model).")
            self._param_index = [i for i, v in enumerate(source_vars) if id(v) in trainable_ids]

    def _cluster_labels(self, clusters, x):
        if clusters is None:
            return np.zeros(len(x), dtype=np.int64)
        z = to_complex(x)
        if isinstance(clusters, (numbers.Integral,)) and not isinstance(clusters, bool):
            C = positive_int(int(clusters), "clusters")
            if C > len(x):
                raise ValueError(f"`clusters` must be at most the number of train points ({len(x)}); "
                                 f"received {C}.")
            est = BatchedFSClustering(n_clusters=C, batch_size=self.cluster_batch_size,
                                      shuffle=self.seed is not None, random_state=self.seed)
            labels = est.fit_predict(z)
        elif hasattr(clusters, "fit_predict"):
            labels = clusters.fit_predict(z)
        else:
            labels = np.asarray(clusters)
        labels = np.asarray(labels)
        if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"`clusters` labels must be integers of shape ({len(x)},) (one per train "
                             f"point); received shape {labels.shape}, dtype {labels.dtype}.")
        _, labels = np.unique(labels, return_inverse=True)
        return labels.astype(np.int64)

    def _create_state(self, n_train, n_clusters):
        self.n_train = int(n_train)
        self.n_clusters = int(n_clusters)
        if self.n_train < 1:
            raise ValueError("`x_train` must contain at least one point; received an empty set.")
        f64 = "float64"
        self.x_train = self.add_weight(shape=(self.n_train, self.width), dtype=f64, trainable=False,
                                       initializer="zeros", name="x_train")
        self.g0_train = self.add_weight(shape=(self.n_train, self.m), dtype=f64, trainable=False,
                                        initializer="zeros", name="g0_train")
        self.cluster_labels = self.add_weight(shape=(self.n_train,), dtype="int64", trainable=False,
                                              initializer="zeros", name="cluster_labels")
        if self.form == "dual":
            self.alpha = self.add_weight(shape=(self.n_train, self.m), dtype=f64, trainable=True,
                                         initializer="zeros", name="alpha")
            self.u_train = self.add_weight(shape=(self.n_train, self.m), dtype=f64, trainable=False,
                                           initializer="zeros", name="u_train")
            self.delta_theta = []
        else:
            params = self._params()
            self.delta_theta = [
                self.add_weight(shape=tuple(p.shape), dtype=p.dtype, trainable=True,
                                initializer="zeros", name=f"delta_theta_{i}")
                for i, p in enumerate(params)]

    def _create_trackers(self):
        # float64 trackers: the logged losses keep the flow's precision
        self._flow_loss_tracker = keras.metrics.Mean(name="loss", dtype="float64")
        names = [k for k in self._loss_spec if k != "callable"]
        self._term_trackers = {k: keras.metrics.Mean(name=f"{k}_loss", dtype="float64") for k in names}
        self._eig_tracker = _MinMetric(name="min_eigenvalue")
        self._backoff_tracker = keras.metrics.Sum(name="backoffs", dtype="float64")

    def _reset_cache(self):
        self._cache = {}

    def load_own_variables(self, store):
        """Keras hook: load the variables, then drop the NumPy caches built from them."""
        super().load_own_variables(store)
        self._reset_cache()

    # ------------------------------------------------------------- properties
    @property
    def metrics(self):
        trackers = getattr(self, "_term_trackers", None)
        if trackers is None:
            return []
        out = [self._flow_loss_tracker] + list(trackers.values()) + [self._eig_tracker]
        if self.on_non_positive == "backoff":
            out.append(self._backoff_tracker)
        return out

    @property
    def kappa(self) -> float:
        """kappa of the sigma loss."""
        return self.spec.kappa

    @property
    def base_model(self):
        """The frozen base metric model (``g0``)."""
        return self._base_model

    @staticmethod
    def targets(manifold, x) -> np.ndarray:
        """``y = [w, |Omega|^2]`` (P, 2) float64 at real points x, cymetric's ``y_train`` layout.

        Args:
            manifold: ``Hypersurface`` (or anything :class:`KernelModel` accepts).
            x: real (P, 2N) points.
        """
        spec = manifold_spec(manifold)
        _require_hypersurface(spec)
        surf = Hypersurface(spec.monomials, spec.coefficients, spec.kmoduli)
        xa = as_real_points(x, "x")
        if xa.shape[1] != 2 * spec.ncoords:
            raise ValueError(f"`x` must have shape (P, 2N) = (P, {2 * spec.ncoords}) for {spec.describe()}; "
                             f"received shape {xa.shape}.")
        z = to_complex(xa)
        check_on_variety(surf, z, "x")
        geo = surf.geometry(z, check_variety=False)
        return np.stack([geo["weights"], geo["omega_sq"]], axis=1)

    # --------------------------------------------------------- NumPy caches
    def _np_state(self):
        c = self._cache
        if "x" not in c:
            x = np.asarray(self.x_train.numpy(), dtype=np.float64)
            c["x"] = x
            charts = self.surface.charts(to_complex(x))
            ids = charts[:, 0] * self.spec.ncoords + charts[:, 1]
            c["chart_ids"] = ids
            c["charts"] = np.unique(ids)
            labels = np.asarray(self.cluster_labels.numpy(), dtype=np.int64)
            c["labels"] = labels
            if len(c["charts"]) > 1 or self.n_clusters > 0:
                rank = np.searchsorted(c["charts"], ids)
                c["groups"] = rank * max(self.n_clusters, 1) + labels
            else:
                c["groups"] = None
        return c

    def _row_index(self):
        if "rows" not in self._cache:
            self._cache["rows"] = RowIndex(self._np_state()["x"])
        return self._cache["rows"]

    def _groups_for(self, x, j_elim=None):
        """Chart check and block labels of arbitrary points (None: one block)."""
        st = self._np_state()
        charts = self.surface.charts(to_complex(x))
        if j_elim is not None:
            j = np.asarray(j_elim).reshape(-1)
            if j.shape[0] != len(x) or np.any(j != charts[:, 1]):
                raise ValueError("`j_elim` must agree with the points' own elimination indices (the "
                                 "KernelModel's charts are fixed by its points); received other values.")
        ids = charts[:, 0] * self.spec.ncoords + charts[:, 1]
        known = np.isin(ids, st["charts"])
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            N = self.spec.ncoords
            train = ", ".join(f"(k={u // N}, j={u % N})" for u in st["charts"][:6])
            raise ValueError(
                f"{int((~known).sum())} of {len(x)} points lie in charts without train points (first: "
                f"point {i} in chart (k={ids[i] // N}, j={ids[i] % N})); the train points are in "
                f"{train}. Metric components of different charts cannot be mixed: sample the points in "
                "the train chart (M.sample_points(n, chart=(k, j))).")
        if st["groups"] is None:
            return None
        rank = np.searchsorted(st["charts"], ids)
        if self.n_clusters == 0:
            return rank
        labels = np.empty(len(x), dtype=np.int64)
        zt = to_complex(st["x"])
        zq = to_complex(x)
        for c in np.unique(ids):
            q = np.flatnonzero(ids == c)
            r = np.flatnonzero(st["chart_ids"] == c)
            _, idx = fs_nearest(zq[q], zt[r], k=1, exclude_self=False)
            labels[q] = st["labels"][r[idx[:, 0]]]
        return rank * self.n_clusters + labels

    # --------------------------------------------------------- base metric
    def _base_components(self, x):
        """g0 at x as real components (B, m), float64 tensor."""
        y = self._base_model(tf.cast(x, self._base_model.compute_dtype), training=False)
        if y.dtype.is_complex:
            y = components_from_hermitian_tf(y)
        y = tf.reshape(y, (-1, self.m))
        return tf.cast(y, tf.float64)

    def _base_components_np(self, x):
        out = [self._base_components(tf.constant(x[s:s + _BASE_CHUNK])).numpy()
               for s in range(0, len(x), _BASE_CHUNK)]
        return np.concatenate(out, axis=0)

    # ------------------------------------------------------ chunked evaluation
    def _chunked(self, fn, x, width):
        """``fn`` (B_c, d) -> (B_c, width) float64 applied to chunks of ``point_chunk`` points.

        A ``tf.while_loop``, so that memory (network activations, tapes) is
        bounded by the chunk, not by the batch.
        """
        c = self.point_chunk
        n = tf.shape(x)[0]
        k = (n + c - 1) // c
        ta = tf.TensorArray(tf.float64, size=k, infer_shape=False,
                            element_shape=tf.TensorShape([None, width]))

        def body(i, ta):
            return i + 1, ta.write(i, fn(x[i * c:(i + 1) * c]))

        _, ta = tf.while_loop(lambda i, ta: i < k, body, (tf.constant(0), ta), parallel_iterations=1)
        return tf.reshape(ta.concat(), [-1, width])

    # ------------------------------------------------------ primal helpers
    def _params(self):
        variables = list(self._base_model.variables)
        return [variables[i] for i in self._param_index]

    def _jvp_chunk(self, x, tangents):
        params = self._params()
        primals = [getattr(p, "value", p) for p in params]
        tangents = [tf.cast(t, p.dtype) for t, p in zip(tangents, params)]
        with tf.autodiff.ForwardAccumulator(primals, tangents) as acc:
            f = self._base_components(x)
        return tf.concat([f, acc.jvp(f, unconnected_gradients=tf.UnconnectedGradients.ZERO)], 1)

    def _linearised(self, x, tangents):
        """``(g(theta0, x), J(x) tangents)``, each (B, m) float64, chunk by chunk."""
        out = self._chunked(lambda xc: self._jvp_chunk(xc, tangents), x, 2 * self.m)
        return out[:, :self.m], out[:, self.m:]

    def _vjp(self, x, cotangent):
        """``J(x)^T cotangent`` per parameter, accumulated over chunks of points."""
        params = [getattr(p, "value", p) for p in self._params()]
        c = self.point_chunk
        n = tf.shape(x)[0]
        k = (n + c - 1) // c

        def body(i, *acc):
            xc, vc = x[i * c:(i + 1) * c], cotangent[i * c:(i + 1) * c]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(params)
                f = self._base_components(xc)
            g = tape.gradient(f, params, output_gradients=vc,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return (i + 1,) + tuple(a + tf.cast(b, a.dtype) for a, b in zip(acc, g))

        init = (tf.constant(0),) + tuple(tf.zeros_like(p) for p in params)
        out = tf.while_loop(lambda i, *acc: i < k, body, init, parallel_iterations=1)
        return list(out[1:])

    # ------------------------------------------------------------------ call
    def call(self, x, training=None, j_elim=None):
        """Metric g (B, n, n) complex at real points x (B, 2N_c)."""
        x = _decode(x)
        if self.form == "dual":
            g0 = self._chunked(self._base_components, x, self.m)
            args = [x, self.alpha] + ([] if j_elim is None else [tf.cast(j_elim, tf.int64)])
            u = tf.py_function(self._np_apply, args, tf.float64)
            u = tf.ensure_shape(u, [None, self.m])
            g = g0 - u
        else:
            tf.py_function(self._np_check_points, [x] + ([] if j_elim is None else
                                                        [tf.cast(j_elim, tf.int64)]), [])
            g0, jt = self._linearised(x, self.delta_theta)
            g = g0 + jt
        g = tf.cast(g, self.compute_dtype)
        return hermitian_from_components_tf(g)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.n, self.n)

    def _np_check_points(self, x, j_elim=None):
        try:
            self._groups_for(np.asarray(x, dtype=np.float64),
                             None if j_elim is None else np.asarray(j_elim))
        except ValueError as err:
            raise ValueError(_MARKER + str(err)) from err

    def _np_apply(self, x, alpha, j_elim=None):
        """``sum_b Theta(x, x_b) alpha_b`` (P, m) for arbitrary points x."""
        try:
            x = np.asarray(x, dtype=np.float64)
            st = self._np_state()
            groups = self._groups_for(x, None if j_elim is None else np.asarray(j_elim))
            same = x.shape == st["x"].shape and np.array_equal(x, st["x"])
            return self._product.grouped_matvec(x, st["groups"] if same else groups, st["x"],
                                                st["groups"], np.asarray(alpha), same=same)
        except ValueError as err:
            raise ValueError(_MARKER + str(err)) from err

    # ------------------------------------------------------------------ loss
    def pointwise_loss(self, g, x=None, y=None):
        """Per-point loss terms of the metric.

        Args:
            g: (B, n, n) complex metric.
            x: (B, 2N_c) real points (needed by ``"volk"``).
            y: (B, 2) ``[w, |Omega|^2]``.

        Returns:
            dict ``{"loss": (B,), <term>: (B,) ...}`` (float64): the weighted
            sum and each named term.
        """
        if y is None:
            raise ValueError("`y` is required: pass y = [w, |Omega|^2] of shape (P, 2) (cymetric's "
                             "y_train layout; KernelModel.targets(manifold, x) computes it).")
        y = tf.cast(y, tf.float64)
        g = tf.cast(g, tf.complex128)
        out = {}
        if "callable" in self._loss_spec:
            val = tf.cast(self._loss_spec["callable"](g, y), tf.float64)
            if val.shape.rank != 1 or (val.shape[0] is not None and g.shape[0] is not None
                                       and val.shape[0] != g.shape[0]):
                raise ValueError(f"the loss callable must return per-point values of shape (B,) = "
                                 f"({g.shape[0]},) for metrics g of shape {tuple(g.shape)}; received "
                                 f"shape {tuple(val.shape)}.")
            check = tf.debugging.assert_equal(
                tf.shape(val)[0], tf.shape(g)[0],
                message=_MARKER + "the loss callable must return per-point values of shape (B,).")
            with tf.control_dependencies([check]):
                out["loss"] = tf.identity(val)
            return out
        total = tf.zeros_like(y[:, 0])
        for k, w in self._loss_spec.items():
            if k == "sigma":
                # kappa as a float64 tensor: tf.cast(<python float>, float64) inside sigma_loss
                # would first round it to float32
                term = L.sigma_loss(g, y[:, 1], tf.constant(self.kappa, tf.float64))
            else:     # volk
                fs_unit = tf.py_function(self._np_fs_unit, [x], tf.complex128)
                fs_unit = tf.ensure_shape(fs_unit, [None, self.n, self.n])
                term = L.volk_loss(g, fs_unit, y[:, 0], y[:, 1], self.spec.volk_target)
            out[k] = term
            total = total + w * term
        out["loss"] = total
        return out

    def _np_fs_unit(self, x):
        return self.surface.fs_metric_pb(to_complex(np.asarray(x, dtype=np.float64)), t=1.0)

    def _reduce(self, per_point, sample_weight):
        if sample_weight is None:
            s = tf.ones_like(per_point)
        else:
            s = tf.reshape(tf.cast(sample_weight, per_point.dtype), [-1])
        total = tf.reduce_sum(s * per_point)
        return total if self.reduction == "sum" else total / tf.reduce_sum(s)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The objective ``L`` of a batch for metrics ``y_pred`` (B, n, n).

        ``L = sum_i s_i l_i`` (``reduction="sum"``) or ``sum s l / sum s``
        (``"mean"``), with ``s`` the sample weights (1 when None). Trackers are
        not updated here.
        """
        per = self.pointwise_loss(y_pred, x, y)["loss"]
        return self._reduce(per, sample_weight)

    def _update_trackers(self, terms, sample_weight, eigenvalues):
        per = terms["loss"]
        s = tf.ones_like(per) if sample_weight is None else tf.reshape(
            tf.cast(sample_weight, per.dtype), [-1])
        self._flow_loss_tracker.update_state(per, sample_weight=s)
        for k, tr in self._term_trackers.items():
            tr.update_state(terms[k], sample_weight=s)
        self._eig_tracker.update_state(eigenvalues)

    # ---------------------------------------------------------------- steps
    def train_step(self, data):
        x, y, sample_weight = (_decode(v) for v in keras.utils.unpack_x_y_sample_weight(data))
        idx = tf.py_function(self._np_lookup, [x], tf.int64)
        idx = tf.ensure_shape(idx, [None])
        x = tf.gather(self.x_train, idx)          # the exact (float64) train points
        if self.form == "dual":
            g_batch = tf.gather(self.g0_train, idx) - tf.gather(self.u_train, idx)
        else:
            g0_batch, jt = self._linearised(x, self.delta_theta)
            g_batch = g0_batch + jt
        with tf.GradientTape() as tape:
            tape.watch(g_batch)
            terms = self.pointwise_loss(hermitian_from_components_tf(g_batch), x, y)
            objective = self._reduce(terms["loss"], sample_weight)
        dl_dg = tape.gradient(objective, g_batch)
        if self.form == "dual":
            eig, backoffs = self._dual_update(idx, dl_dg)
        else:
            eig, backoffs = self._primal_update(x, g_batch, dl_dg)
        self._update_trackers(terms, sample_weight, eig)
        self._backoff_tracker.update_state(backoffs)
        return {m.name: m.result() for m in self.metrics}

    def _dual_update(self, idx, dl_dg):
        # grad_alpha = -dL/dg at the batch points: SGD(dt) gives alpha += dt dL/dg, i.e. (3.5)
        grad = tf.scatter_nd(idx[:, None], -dl_dg, tf.shape(self.alpha, out_type=tf.int64))
        alpha_old = tf.identity(self.alpha)
        self.optimizer.apply([grad], [self.alpha])
        delta = tf.convert_to_tensor(self.alpha) - alpha_old
        scale, du, eig, backoffs = tf.py_function(
            self._np_commit_dual, [delta, self.u_train, self.optimizer.iterations],
            [tf.float64, tf.float64, tf.float64, tf.float64])
        du = tf.ensure_shape(du, [None, self.m])
        scale, backoffs = tf.reshape(scale, []), tf.reshape(backoffs, [])
        # scale 0 (refused step) keeps alpha exactly, even if the update was not finite
        self.alpha.assign(tf.where(scale > 0, alpha_old + scale * delta, alpha_old))
        self.u_train.assign_add(scale * du)
        return tf.reshape(eig, [-1]), backoffs

    def _primal_update(self, x, g_batch, dl_dg):
        grads = self._vjp(x, dl_dg)
        old = [tf.identity(v) for v in self.delta_theta]
        self.optimizer.apply(grads, self.delta_theta)
        deltas = [tf.convert_to_tensor(v) - o for v, o in zip(self.delta_theta, old)]
        dg = self._linearised(x, deltas)[1]
        scale, eig, backoffs = tf.py_function(
            self._np_commit_primal, [g_batch, dg, self.optimizer.iterations],
            [tf.float64, tf.float64, tf.float64])
        scale, backoffs = tf.reshape(scale, []), tf.reshape(backoffs, [])
        for v, o, d in zip(self.delta_theta, old, deltas):
            v.assign(tf.where(scale > 0, o + tf.cast(scale, d.dtype) * d, o))
        return tf.reshape(eig, [-1]), backoffs

    def _np_lookup(self, x):
        x = np.asarray(x)
        try:
            return self._row_index().lookup(x)
        except ValueError as err:
            raise ValueError(_MARKER + str(err)) from err

    def _np_commit_dual(self, delta, u_train, step):
        """Kernel product of the step's update, positive-definiteness policy."""
        delta = np.asarray(delta)
        u_train = np.asarray(u_train)
        st = self._np_state()
        x, groups = st["x"], st["groups"]
        rows = np.flatnonzero(np.any(delta != 0.0, axis=1))
        if not self._finite(delta, int(step)) or self._halted or len(rows) == 0:
            return 0.0, np.zeros_like(u_train), np.array([np.inf]), 0.0
        if self._product.pairwise and len(rows) < len(x):
            du = self._product.grouped_matvec(x, groups, x[rows], None if groups is None else
                                              groups[rows], delta[rows])
        else:
            du = self._product.grouped_matvec(x, groups, x, groups, delta, same=True)
        g_old = np.asarray(self.g0_train.numpy()) - u_train
        scale, eig, k = self._policy(g_old, -du, int(step))
        return scale, du, eig, float(k)

    def _np_commit_primal(self, g_old, dg, step):
        if not self._finite(np.asarray(dg), int(step)) or self._halted:
            return 0.0, np.array([np.inf]), 0.0
        scale, eig, k = self._policy(np.asarray(g_old), np.asarray(dg), int(step))
        return scale, eig, float(k)

    def _finite(self, update, step):
        """False (and training stops with a ValueError) when the step's update is not finite."""
        if np.all(np.isfinite(update)):
            return True
        if self._flow_error is None:
            self._flow_error = ValueError(
                f"step {step}: the flow update is not finite (NaN/inf loss gradient: check that the "
                "targets y = [w, |Omega|^2] are finite with |Omega|^2 > 0); the update was discarded "
                "and training stopped.")
        self._halted = True
        self.stop_training = True
        return False

    def _policy(self, g_old, dg, step):
        """Scale s of the step's metric change dg such that g_old + s dg stays valid.

        Returns ``(s, eigenvalues (P,) of the accepted metric, number of backoffs)``.
        """
        floor = self.eigenvalue_floor
        lam = min_eigenvalues(g_old + dg, self.n)
        if np.all(lam > floor):
            return 1.0, lam, 0
        bad = lam <= floor
        msg = (f"step {step}: the metric update would make the metric non-positive-definite at "
               f"{int(bad.sum())} of {len(lam)} checked points (smallest eigenvalue {lam.min():.3g} "
               f"<= eigenvalue_floor {floor:g}).")
        lam_old = min_eigenvalues(g_old, self.n)
        if self.on_non_positive == "backoff":
            s = 1.0
            for k in range(1, self.max_backoffs + 1):
                s *= self.backoff_factor
                lam_s = min_eigenvalues(g_old + s * dg, self.n)
                if np.all(lam_s > floor):
                    return s, lam_s, k
            msg += (f" No step scale >= backoff_factor**max_backoffs = "
                    f"{self.backoff_factor ** self.max_backoffs:.3g} keeps it valid.")
            policy = "raise"
        else:
            policy = self.on_non_positive
        advice = (" The update was discarded and the model keeps its last valid metric. Lower the "
                  "learning rate (dt) or change the kernel's hyperparameters"
                  + (", or raise max_backoffs." if self.on_non_positive == "backoff" else
                     ", or use on_non_positive='backoff'."))
        self._halted = True
        self.stop_training = True
        if policy == "raise":
            self._flow_error = NonPositiveMetricError(msg + advice)
        else:
            warnings.warn(msg + advice + " Training stopped (on_non_positive='stop').",
                          RuntimeWarning, stacklevel=2)
        return 0.0, lam_old, 0

    def test_step(self, data):
        x, y, sample_weight = (_decode(v) for v in keras.utils.unpack_x_y_sample_weight(data))
        g = self(x, training=False)
        terms = self.pointwise_loss(g, x, y)
        comps = components_from_hermitian_tf(tf.cast(g, tf.complex128))
        eig = tf.reduce_min(tf.math.real(tf.linalg.eigvalsh(hermitian_from_components_tf(comps))),
                            axis=-1)
        self._update_trackers(terms, sample_weight, eig)
        return {m.name: m.result() for m in self.metrics if m is not self._backoff_tracker}

    # ------------------------------------------------------- Keras entry points
    def compile(self, optimizer="sgd", loss=None, metrics=None, *, jit_compile=False,
                steps_per_execution=1, run_eagerly=False, loss_weights=None,
                weighted_metrics=None, **kwargs):
        """Configure the flow's optimizer.

        Args:
            optimizer: a Keras optimizer or its name; ``SGD(learning_rate=dt)``
                is eq. (3.5) with step dt. The learning rate must be > 0.
            loss, loss_weights, metrics, weighted_metrics: must be None: the
                flow's loss is the constructor's ``loss``.
            jit_compile: must be False (the steps call NumPy kernels).
            steps_per_execution, run_eagerly: as in ``keras.Model.compile``.
        """
        for arg, val in (("loss", loss), ("loss_weights", loss_weights), ("metrics", metrics),
                         ("weighted_metrics", weighted_metrics)):
            if val is not None:
                raise TypeError(f"`{arg}` is not accepted by KernelModel.compile: the flow's loss is "
                                f"the constructor's `loss` (received {arg}={val!r}).")
        if jit_compile not in (False, "auto"):
            raise ValueError("`jit_compile` must be False: a KernelModel step evaluates NumPy kernels "
                             f"(tf.py_function), which XLA cannot compile; received {jit_compile!r}.")
        optimizer = keras.optimizers.get(optimizer)
        try:
            lr0 = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except (TypeError, ValueError):
            lr0 = None
        if lr0 is not None and not (np.isfinite(lr0) and lr0 > 0):
            raise ValueError(f"the optimizer's learning rate (the flow step dt) must be a finite number "
                             f"> 0; received {lr0!r}.")
        super().compile(optimizer=optimizer, jit_compile=False,
                        steps_per_execution=steps_per_execution, run_eagerly=run_eagerly, **kwargs)

    def get_compile_config(self):
        """The optimizer and step settings of :meth:`compile` (Keras' saving hook)."""
        return super().get_compile_config()

    def compile_from_config(self, config):
        """Re-compile from :meth:`get_compile_config` (Keras' loading hook)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def check_data(self, x, y=None, name="x", *, train=False):
        """Validate array inputs of fit/evaluate/predict (datasets are checked in the steps).

        Checks width, finiteness, that the points lie on the manifold and in
        the model's chart(s), for ``train`` that every point is a train point,
        and that ``y`` is (P, 2) ``[w, |Omega|^2]``, finite, with
        ``|Omega|^2 > 0``.
        """
        xa = _to_numpy(x)
        if xa is None:
            return
        xa = self._check_points(xa, name)
        if train:
            self._row_index().lookup(xa)
        else:
            self._groups_for(xa)
        ya = _to_numpy(y)
        if ya is None:
            return
        yname = "y" if name == "x" else f"{name}'s y"
        if ya.shape != (len(xa), 2):
            raise ValueError(f"`{yname}` must have shape (P, 2) = ({len(xa)}, 2) with columns "
                             f"[w, |Omega|^2]; received shape {ya.shape}.")
        if not np.issubdtype(ya.dtype, np.number) or not np.all(np.isfinite(ya)):
            raise ValueError(f"`{yname}` (targets [w, |Omega|^2]) must be finite; received "
                             f"{int(np.sum(~np.isfinite(ya.astype(float))))} non-finite entries.")
        if np.any(ya[:, 1] <= 0):
            raise ValueError(f"`{yname}` must hold |Omega|^2 > 0 in column 1; received min "
                             f"{ya[:, 1].min():.3g}.")

    def _unwrap_errors(self, err):
        text = str(err)
        if _MARKER in text:
            msg = text.split(_MARKER, 1)[1].split("\n")[0]
            raise ValueError(msg) from err
        raise err

    @contextlib.contextmanager
    def _running(self):
        """fit/evaluate/predict context: a live base model's frozen weights (no-op for a copied one)."""
        live = self.__dict__.get("_live_base")
        if live is None:
            yield
            return
        variables, frozen = live
        saved = [np.array(v.numpy()) for v in variables]
        try:
            for v, w in zip(variables, frozen):
                v.assign(w)
            yield
        finally:
            for v, w in zip(variables, saved):
                v.assign(w)

    def fit(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.fit`` over the train points (any order, any batch size).

        Every epoch of ``fit(x_train, y, batch_size=N_train)`` is one step of
        eq. (3.5). Raises :class:`NonPositiveMetricError` under
        ``on_non_positive="raise"`` (after discarding the offending update).
        """
        self.check_data(x, y, train=True)
        _check_sample_weight(kwargs.get("sample_weight", args[8] if len(args) > 8 else None), x)
        vd = kwargs.get("validation_data")
        if isinstance(vd, (tuple, list)) and len(vd) >= 2:
            self.check_data(vd[0], vd[1], name="validation_data")
        self._flow_error = None
        self._halted = False
        try:
            args, kwargs = _encode_args(args, kwargs, {"sample_weight": 8, "validation_data": 5})
            with self._running():
                history = super().fit(_encode(x), _encode(y), *args, **kwargs)
        except (tf.errors.OpError, ValueError) as err:
            self._unwrap_errors(err)
        if self._flow_error is not None:
            err, self._flow_error = self._flow_error, None
            raise err
        return history

    def train_on_batch(self, x, y=None, *args, **kwargs):
        """``keras.Model.train_on_batch`` (one flow step on train points) with the flow's errors."""
        _check_sample_weight(kwargs.get("sample_weight", args[0] if args else None), x)
        self._flow_error = None
        self._halted = False
        try:
            args, kwargs = _encode_args(args, kwargs, {"sample_weight": 0})
            with self._running():
                out = super().train_on_batch(_encode(x), _encode(y), *args, **kwargs)
        except (tf.errors.OpError, ValueError) as err:
            self._unwrap_errors(err)
        if self._flow_error is not None:
            err, self._flow_error = self._flow_error, None
            raise err
        return out

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.evaluate`` on any points of the model's chart(s)."""
        if kwargs.get("_use_cached_eval_dataset"):
            # fit's validation pass: the data were checked and encoded by fit
            with self._running():
                return super().evaluate(x, y, *args, **kwargs)
        self.check_data(x, y)
        _check_sample_weight(kwargs.get("sample_weight", args[2] if len(args) > 2 else None), x)
        try:
            args, kwargs = _encode_args(args, kwargs, {"sample_weight": 2})
            with self._running():
                return super().evaluate(_encode(x), _encode(y), *args, **kwargs)
        except (tf.errors.OpError, ValueError) as err:
            self._unwrap_errors(err)

    def predict(self, x, *args, **kwargs):
        """Metrics g (P, n, n) complex at any points of the model's chart(s)."""
        self.check_data(x)
        try:
            with self._running():
                return super().predict(_encode(x), *args, **kwargs)
        except (tf.errors.OpError, ValueError) as err:
            self._unwrap_errors(err)

    # ------------------------------------------------------------- serialisation
    def get_config(self):
        if isinstance(self.kernel, EmpiricalNTKKernel) and not self._base_is_kernel_model:
            raise NotImplementedError(
                "saving a KernelModel whose EmpiricalNTKKernel network differs from its base metric "
                "is not supported (the network is saved as the base metric); use base_metric=None.")
        if self.__dict__.get("_live_base") is not None:
            raise NotImplementedError(
                f"this KernelModel freezes a live {type(self._base_model).__name__} by a weight snapshot "
                "(the model cannot be rebuilt from a Keras config), so it cannot be saved; save the flow's "
                "state with `alpha` and the base model's weights instead.")
        base = keras.saving.serialize_keras_object(self._base_model)
        base.pop("compile_config", None)        # the frozen base metric is never trained
        loss = self._loss_spec
        if "callable" in loss:
            loss = keras.saving.serialize_keras_object(loss["callable"])
        return {
            "name": self.name,
            "dtype": self.compute_dtype,
            "kernel": _serialize_kernel(self.kernel),
            "manifold": self.spec.get_config(),
            "base_metric": base,
            "loss": loss,
            "reduction": self.reduction,
            "form": self.form,
            "mixed_charts": self.mixed_charts,
            "on_non_positive": self.on_non_positive,
            "backoff_factor": self.backoff_factor,
            "max_backoffs": self.max_backoffs,
            "eigenvalue_floor": self.eigenvalue_floor,
            "tile_size": self.tile_size,
            "n_threads": self.n_threads,
            "point_chunk": self.point_chunk,
            "cluster_batch_size": self.cluster_batch_size,
            "seed": self.seed,
            "state": {"n_train": self.n_train, "n_clusters": self.n_clusters,
                      "param_index": self._param_index},
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        base = keras.saving.deserialize_keras_object(config.pop("base_metric"),
                                                     custom_objects=custom_objects)
        kcfg = config.pop("kernel")
        if kcfg["class_name"] == "EmpiricalNTKKernel":
            kernel = _LazyEmpiricalNTK(base, kcfg["config"])
        else:
            kernel = _deserialize_kernel(kcfg)
        loss = config.pop("loss")
        if isinstance(loss, dict) and "class_name" in loss:
            loss = keras.saving.deserialize_keras_object(loss, custom_objects=custom_objects)
        state = config.pop("state")
        manifold = ManifoldSpec.from_config(config.pop("manifold"))
        return cls(kernel, None, manifold, base_metric=base, loss=loss, _state=state, **config)


class _LazyEmpiricalNTK(EmpiricalNTKKernel):
    """Empirical NTK of a loaded KernelModel's base network, built after the weights load.

    The frozen base model holds ``theta0``; the kernel needs a model with
    trainable variables, so a trainable copy is made from it on first use.
    """

    def __init__(self, base, config):        # noqa: D107 - deferred construction
        self._base = base
        self._config = dict(config)
        self._ready = False
        self.snapshot = bool(config.get("snapshot", True))
        self.chunk_size = config.get("chunk_size")
        self.implementation = config.get("implementation", "auto")
        self.output = config.get("output", "auto")

    def _build(self, x):
        if not self._ready:
            model = _copy_model(self._base, tf.constant(x[:2], self._base.compute_dtype),
                                trainable=True)
            EmpiricalNTKKernel.__init__(self, model, **self._config)
            self._ready = True

    @property
    def model(self):
        return self.__dict__.get("model", self._base)

    @model.setter
    def model(self, value):
        self.__dict__["model"] = value

    def _block(self, x1, x2):
        self._build(x1)
        return super()._block(x1, x2)

    def matvec(self, x1, x2, v, *, chunk_size=None):
        self._build(np.asarray(x1, dtype=np.float64))
        return super().matvec(x1, x2, v, chunk_size=chunk_size)


def _require_hypersurface(spec):
    """KernelModel flows need one hypersurface in one P^n (complete intersections: not yet)."""
    if not hasattr(spec, "monomials"):
        raise NotImplementedError(
            f"`manifold`: KernelModel supports hypersurfaces in one projective space; received "
            f"{spec.describe()}. Complete intersections / products of projective spaces work with the "
            f"metric models and cyntk.geometry.product_fs_distance, not yet with KernelModel.")
