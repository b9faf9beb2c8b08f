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
default; its square ``"sigma_squared"`` (smooth at the minimum); ``"volk"``,
a weighted sum ``{"sigma": 1, "volk": 0.5}`` or any callable ``fn(g, y) -> (B,)``. The objective differentiated is
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
kernels); kernels are evaluated tile by tile (:mod:`cyntk.flows.product`) and
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
On a complete intersection in a product of projective spaces a chart is a full
row of ``CompleteIntersection.charts`` (the one index of every factor, then the
eliminated coordinate of every equation), sampled with
``M.sample_points(n, chart=row)``.
``mixed_charts="separate"`` opts into a block-diagonal kernel over charts
instead: each chart's points flow on their own, and a prediction at a point
uses the train points of its chart only (an error if there are none).

**Clusters** (paper section 3.1). ``clusters=C`` clusters the train points by
FS distance (:class:`~cyntk.geometry.clustering.BatchedFSClustering`; on a
product of projective spaces the product distance ``sqrt(sum_F t_F d_F^2)``
of :mod:`cyntk.geometry.product_distance` with t the Kähler parameters) and flows
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
nothing is rounded and no global setting (``floatx``) is changed. Keras also
keeps an optimizer's learning rate in ``floatx()``, so dt
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

import numbers

import keras
import numpy as np
import tensorflow as tf

from cyntk._validation import as_real_points, one_of
from cyntk.flows._kernel_common import (
    _BASE_CHUNK,
    _MARKER,
    _NOT_POINTWISE,
    FORMS,
    LOSS_NAMES,
    MIXED_CHART_POLICIES,
    NON_POSITIVE_POLICIES,
    REDUCTIONS,
    NonPositiveMetricError,
    _MinMetric,
)
from cyntk.flows._kernel_entry import _KerasEntryPoints
from cyntk.flows._kernel_setup import (
    _deserialize_kernel,
    _FlowSetup,
    _kernel_for,
    _LazyEmpiricalNTK,
    _serialize_kernel,
    _surface_of,
)
from cyntk.flows._kernel_steps import _FlowSteps
from cyntk.flows.distribute import all_reduce_sum, multi_worker, replica_context, shard_of
from cyntk.flows.options import Chunking, PositivityGuard, resolve_group
from cyntk.flows.product import default_threads
from cyntk.flows.tf_product import TFKernelProduct
from cyntk.geometry import Hypersurface, check_on_variety, to_complex
from cyntk.kernels.empirical import EmpiricalNTKKernel
from cyntk.models import losses as L
from cyntk.models._spec import manifold_spec
from cyntk.models._tf import decode_float64, mark
from cyntk.models.hermitian import components_from_hermitian_tf, hermitian_from_components_tf

__all__ = [
    "KernelModel",
    "NonPositiveMetricError",
    "FORMS",
    "NON_POSITIVE_POLICIES",
    "MIXED_CHART_POLICIES",
    "REDUCTIONS",
    "LOSS_NAMES",
]


# ----------------------------------------------------------------------------- the model
@keras.saving.register_keras_serializable(package="cyntk")
class KernelModel(_FlowSetup, _FlowSteps, _KerasEntryPoints, keras.Model):
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
        manifold: ``Hypersurface``, ``CompleteIntersection`` (products of
            projective spaces, several equations), ``CYDataset``, cymetric
            basis dict or :class:`~cyntk.models.ManifoldSpec`. On a product
            (more than one factor) a ``GaussianFSKernel`` without a factor
            layout is replaced by a copy with the manifold's
            ``factor_slices`` and ``kmoduli`` (the product FS distance), and
            ``clusters`` use the product distance.
        base_metric: ``"fubini_study"``, a Keras metric model (real (P, 2N_c)
            -> complex (P, n, n) or real (P, n^2); copied and frozen at its
            current weights), or None: the kernel's network at its weight
            snapshot for an ``EmpiricalNTKKernel`` (the linearisation point),
            Fubini--Study otherwise.
        kappa: ``Vol_K / Vol_CY`` of the sigma loss; default: the manifold's
            (CYDataset / basis), else computed from the train points.
        loss: ``"sigma"`` (default), ``"sigma_squared"``, ``"volk"``, a dict
            ``{name: weight}`` of those, or a callable ``fn(g, y) -> (B,)`` of the metric g (B, n, n)
            complex and ``y`` (B, 2) ``[w, |Omega|^2]`` (per-point values).
        reduction: ``"sum"`` (eq. 3.5) or ``"mean"`` over the batch.
        form: ``"dual"`` or ``"primal"`` (``EmpiricalNTKKernel`` only).
        clusters: None, a number of clusters C, labels (N,) int, or an
            estimator with ``fit_predict(z)`` (e.g. ``BatchedFSClustering``).
        cluster_batch_size: mini-batch size of the FS clustering when
            ``clusters`` is a number (the paper: 10 000).
        mixed_charts: ``"raise"`` or ``"separate"`` (block-diagonal over charts).
        guard: a :class:`~cyntk.flows.options.PositivityGuard` (what a step
            that would make a metric non-positive does), or its fields below
            as keywords.
        chunking: a :class:`~cyntk.flows.options.Chunking` (tiles, threads,
            evaluation chunks), or its fields below as keywords.
        on_non_positive: ``"raise"``, ``"stop"`` or ``"backoff"``.
        backoff_factor: step scale per backoff, in (0, 1).
        max_backoffs: largest number of backoffs per step.
        eigenvalue_floor: a metric is valid where its smallest eigenvalue
            exceeds this (>= 0).
        tile_size: largest number of points per tile side of the kernel
            products (default: the engine's, see :class:`~cyntk.flows.options.Chunking`).
        n_threads: concurrent tile workers (default: available cores).
        engine: ``"tf"`` (default: XLA-compiled TensorFlow tiles on any
            device, split across the replicas of a ``tf.distribute`` strategy
            when the model is built inside ``strategy.scope()``) or
            ``"numpy"`` (the single-device reference engine).
        device: TensorFlow device of the kernel tiles (``engine="tf"``).
        tiles: ``"auto"``, ``"xla"`` or ``"numpy"``: the tiles of ``engine="tf"``
            (see :class:`~cyntk.flows.options.Chunking`).
        chunk_size: points per chunk of base-metric / network evaluations
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

    def __init__(
        self,
        kernel,
        x_train,
        manifold,
        *,
        base_metric=None,
        kappa=None,
        loss="sigma",
        reduction="sum",
        form="dual",
        clusters=None,
        cluster_batch_size=10_000,
        mixed_charts="raise",
        guard=None,
        chunking=None,
        on_non_positive=None,
        backoff_factor=None,
        max_backoffs=None,
        eigenvalue_floor=None,
        tile_size=None,
        n_threads=None,
        chunk_size=None,
        point_chunk=None,
        engine=None,
        device=None,
        tiles=None,
        seed=None,
        dtype="float64",
        name=None,
        _state=None,
        **kwargs,
    ):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"`dtype` must be 'float32' or 'float64'; received {dtype!r}.")
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.spec = manifold_spec(manifold, kappa)
        self.surface = _surface_of(self.spec)
        self.reduction = one_of(reduction, "reduction", REDUCTIONS)
        self.form = one_of(form, "form", FORMS)
        self.mixed_charts = one_of(mixed_charts, "mixed_charts", MIXED_CHART_POLICIES)
        if point_chunk is not None and chunk_size is not None:
            raise ValueError("give `chunk_size` (or its older name `point_chunk`), not both.")
        self.guard = resolve_group(
            PositivityGuard,
            guard,
            "guard",
            dict(
                on_non_positive=on_non_positive,
                backoff_factor=backoff_factor,
                max_backoffs=max_backoffs,
                eigenvalue_floor=eigenvalue_floor,
            ),
        )
        self.chunking = resolve_group(
            Chunking,
            chunking,
            "chunking",
            dict(
                tile_size=tile_size,
                n_threads=n_threads,
                chunk_size=chunk_size,
                point_chunk=point_chunk,
                engine=engine,
                device=device,
                tiles=tiles,
            ),
            aliases={"point_chunk": "chunk_size"},
        )
        self.on_non_positive = self.guard.on_non_positive
        self.backoff_factor = self.guard.backoff_factor
        self.max_backoffs = self.guard.max_backoffs
        self.eigenvalue_floor = self.guard.eigenvalue_floor
        self.engine = self.chunking.engine
        self.device = self.chunking.device
        self.tile_size = 256 if self.chunking.tile_size is None else self.chunking.tile_size
        self.n_threads = default_threads() if self.chunking.n_threads is None else self.chunking.n_threads
        self.point_chunk = self.chunking.chunk_size
        self.cluster_batch_size = cluster_batch_size
        self.seed = seed
        self._loss_spec = self._resolve_loss(loss)
        self.kernel = _kernel_for(kernel, self.surface)
        self.n = self.spec.nfold
        self.m = self.n * self.n
        self.width = 2 * self.spec.ncoords
        if not isinstance(kernel, EmpiricalNTKKernel) and self.form == "primal":
            raise ValueError(
                "`form='primal'` (training the linearised network) needs an "
                f"EmpiricalNTKKernel; received kernel {type(kernel).__name__}. Use "
                "form='dual'."
            )
        if self.form == "primal" and clusters is not None:
            raise ValueError(
                "`clusters` is only available in the dual form (the primal form has one "
                "global parameter vector); received form='primal' with clusters."
            )
        if _state is not None:  # from_config: shapes only, values come from the weights
            self._init_from_state(_state, base_metric)
        else:
            self._init_from_data(x_train, base_metric, clusters)
        if self.engine == "tf":  # the set-up probed the kernel with the NumPy reference engine
            self._product = TFKernelProduct(
                self.kernel,
                self.m,
                tile_size=self.chunking.tile_size,
                n_threads=self.chunking.n_threads,
                device=self.device,
                tiles=self.chunking.tiles,
            )
            self.tile_size = self._product.tile_size
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
            raise TypeError(
                f"`loss` must be one of {LOSS_NAMES}, a dict {{name: weight}} of them, or "
                f"a callable fn(g, y) -> (B,); received {loss!r}."
            )
        out = {}
        for k, w in loss.items():
            if k in _NOT_POINTWISE:
                raise ValueError(
                    f"the {k!r} loss of cyntk.models depends on derivatives of g or on g "
                    "at other points, not on the metric at the flowed points, so a kernel "
                    f"flow cannot differentiate it; use one of {LOSS_NAMES} or a callable."
                )
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
                "manifold (and kernel) must have the same width."
            )
        if check_manifold:
            z = to_complex(arr)
            res = self.spec.residual(z / z[np.arange(len(z)), np.argmax(np.abs(z), axis=1)][:, None])
            if res.max() > 1e-4:
                raise ValueError(
                    f"`{name}` does not lie on {self.spec.describe()}: relative residual "
                    f"|Q(z)|/sum|c_m z^m| up to {res.max():.3g} (expected <= 1e-4)."
                )
        return arr

    def _create_trackers(self):
        # float64 trackers: the logged losses keep the flow's precision
        self._flow_loss_tracker = keras.metrics.Mean(name="loss", dtype="float64")
        names = [k for k in self._loss_spec if k != "callable"]
        self._term_trackers = {k: keras.metrics.Mean(name=f"{k}_loss", dtype="float64") for k in names}
        self._eig_tracker = _MinMetric(name="min_eigenvalue")
        self._backoff_tracker = keras.metrics.Sum(name="backoffs", dtype="float64")

    def add_weight(self, *args, **kwargs):
        """Keras' ``add_weight``; the flow's state is the same on every replica of a strategy.

        Every step assigns the same values on every replica (the kernel
        product is all-reduced before it is applied), so the variables
        aggregate as ``"only_first_replica"``.
        """
        kwargs.setdefault("aggregation", "only_first_replica")
        return super().add_weight(*args, **kwargs)

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
        surf = _surface_of(spec)
        xa = as_real_points(x, "x")
        if xa.shape[1] != 2 * spec.ncoords:
            raise ValueError(
                f"`x` must have shape (P, 2N) = (P, {2 * spec.ncoords}) for {spec.describe()}; "
                f"received shape {xa.shape}."
            )
        z = to_complex(xa)
        check_on_variety(surf, z, "x")
        geo = surf.geometry(z, check_variety=False)
        return np.stack([geo["weights"], geo["omega_sq"]], axis=1)

    # --------------------------------------------------------- NumPy caches
    def _base_components(self, x):
        """g0 at x as real components (B, m), float64 tensor."""
        y = self._base_model(tf.cast(x, self._base_model.compute_dtype), training=False)
        if y.dtype.is_complex:
            y = components_from_hermitian_tf(y)
        y = tf.reshape(y, (-1, self.m))
        return tf.cast(y, tf.float64)

    def _base_components_np(self, x):
        out = [
            self._base_components(tf.constant(x[s : s + _BASE_CHUNK])).numpy() for s in range(0, len(x), _BASE_CHUNK)
        ]
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
        ta = tf.TensorArray(tf.float64, size=k, infer_shape=False, element_shape=tf.TensorShape([None, width]))

        def body(i, ta):
            return i + 1, ta.write(i, fn(x[i * c : (i + 1) * c]))

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
        return out[:, : self.m], out[:, self.m :]

    def _vjp(self, x, cotangent):
        """``J(x)^T cotangent`` per parameter, accumulated over chunks of points."""
        params = [getattr(p, "value", p) for p in self._params()]
        c = self.point_chunk
        n = tf.shape(x)[0]
        k = (n + c - 1) // c

        def body(i, *acc):
            xc, vc = x[i * c : (i + 1) * c], cotangent[i * c : (i + 1) * c]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(params)
                f = self._base_components(xc)
            g = tape.gradient(f, params, output_gradients=vc, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return (i + 1,) + tuple(a + tf.cast(b, a.dtype) for a, b in zip(acc, g))

        init = (tf.constant(0),) + tuple(tf.zeros_like(p) for p in params)
        out = tf.while_loop(lambda i, *acc: i < k, body, init, parallel_iterations=1)
        return list(out[1:])

    # ------------------------------------------------------------------ call
    def call(self, x, training=None, j_elim=None):
        """Metric g (B, n, n) complex at real points x (B, 2N_c)."""
        x = decode_float64(x)
        if self.form == "dual":
            g0 = self._chunked(self._base_components, x, self.m)
            args = [x, self.alpha] + ([] if j_elim is None else [tf.cast(j_elim, tf.int64)])
            u = self._host_op(self._np_apply, args, tf.float64)  # the replicas concurrently (when safe)
            u = tf.ensure_shape(u, [None, self.m])
            g = g0 - u
        else:
            tf.py_function(self._np_check_points, [x] + ([] if j_elim is None else [tf.cast(j_elim, tf.int64)]), [])
            g0, jt = self._linearised(x, self.delta_theta)
            g = g0 + jt
        g = tf.cast(g, self.compute_dtype)
        return hermitian_from_components_tf(g)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.n, self.n)

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
            raise ValueError(
                "`y` is required: pass y = [w, |Omega|^2] of shape (P, 2) (cymetric's "
                "y_train layout; KernelModel.targets(manifold, x) computes it)."
            )
        y = tf.cast(y, tf.float64)
        g = tf.cast(g, tf.complex128)
        out = {}
        if "callable" in self._loss_spec:
            val = tf.cast(self._loss_spec["callable"](g, y), tf.float64)
            if val.shape.rank != 1 or (
                val.shape[0] is not None and g.shape[0] is not None and val.shape[0] != g.shape[0]
            ):
                raise ValueError(
                    f"the loss callable must return per-point values of shape (B,) = "
                    f"({g.shape[0]},) for metrics g of shape {tuple(g.shape)}; received "
                    f"shape {tuple(val.shape)}."
                )
            check = tf.debugging.assert_equal(
                tf.shape(val)[0],
                tf.shape(g)[0],
                message=mark(_MARKER, "the loss callable must return per-point values of shape (B,)."),
            )
            with tf.control_dependencies([check]):
                out["loss"] = tf.identity(val)
            return out
        total = tf.zeros_like(y[:, 0])
        for k, w in self._loss_spec.items():
            if k == "sigma":
                # kappa as a float64 tensor: tf.cast(<python float>, float64) inside sigma_loss
                # would first round it to float32
                term = L.sigma_loss(g, y[:, 1], tf.constant(self.kappa, tf.float64))
            elif k == "sigma_squared":  # (1 - eta)^2: smooth at eta = 1, so a constant dt converges
                term = tf.square(L.sigma_loss(g, y[:, 1], tf.constant(self.kappa, tf.float64)))
            else:  # volk
                fs_unit = tf.py_function(self._np_fs_unit, [x], tf.complex128)
                per_factor = [] if isinstance(self.surface, Hypersurface) else [self.surface.nproj]
                fs_unit = tf.ensure_shape(fs_unit, per_factor + [None, self.n, self.n])
                term = L.volk_loss(g, fs_unit, y[:, 0], y[:, 1], self.spec.volk_target)
            out[k] = term
            total = total + w * term
        out["loss"] = total
        return out

    def _reduce(self, per_point, sample_weight, ctx=None):
        """The objective of the batch; ``ctx``: a replica context whose replicas share the batch."""
        if sample_weight is None:
            s = tf.ones_like(per_point)
        else:
            s = tf.reshape(tf.cast(sample_weight, per_point.dtype), [-1])
        total = tf.reduce_sum(s * per_point)
        # "mean": divided by the weight of the whole (global) batch, so that the replicas' summed
        # gradients are those of one device
        return total if self.reduction == "sum" else total / all_reduce_sum(ctx, tf.reduce_sum(s))

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
        s = tf.ones_like(per) if sample_weight is None else tf.reshape(tf.cast(sample_weight, per.dtype), [-1])
        self._flow_loss_tracker.update_state(per, sample_weight=s)
        for k, tr in self._term_trackers.items():
            tr.update_state(terms[k], sample_weight=s)
        self._eig_tracker.update_state(eigenvalues)

    # ---------------------------------------------------------------- steps
    def train_step(self, data):
        x, y, sample_weight = (decode_float64(v) for v in keras.utils.unpack_x_y_sample_weight(data))
        # stateless (unlike tf.py_function): the replicas of a strategy look their batches up concurrently
        idx = tf.numpy_function(self._np_lookup, [x], tf.int64, stateful=False)
        idx = tf.ensure_shape(idx, [None])
        x = tf.gather(self.x_train, idx)  # the exact (float64) train points
        if self.form == "dual":
            g_batch = tf.gather(self.g0_train, idx) - tf.gather(self.u_train, idx)
        else:
            g0_batch, jt = self._linearised(x, self.delta_theta)
            g_batch = g0_batch + jt
        with tf.GradientTape() as tape:
            tape.watch(g_batch)
            terms = self.pointwise_loss(hermitian_from_components_tf(g_batch), x, y)
            objective = self._reduce(terms["loss"], sample_weight, replica_context())
        dl_dg = tape.gradient(objective, g_batch)
        if self.form == "dual":
            eig, backoffs = self._dual_update(idx, dl_dg)
        else:
            eig, backoffs = self._primal_update(x, g_batch, dl_dg)
        self._update_trackers(terms, sample_weight, eig)
        ctx = replica_context()
        if ctx is not None:  # every replica took the same decision: count it once
            backoffs = backoffs * tf.cast(tf.equal(shard_of(ctx)[0], 0), backoffs.dtype)
        self._backoff_tracker.update_state(backoffs)
        return self._logs(self.metrics)

    def test_step(self, data):
        x, y, sample_weight = (decode_float64(v) for v in keras.utils.unpack_x_y_sample_weight(data))
        g = self(x, training=False)
        terms = self.pointwise_loss(g, x, y)
        comps = components_from_hermitian_tf(tf.cast(g, tf.complex128))
        eig = tf.reduce_min(tf.math.real(tf.linalg.eigvalsh(hermitian_from_components_tf(comps))), axis=-1)
        self._update_trackers(terms, sample_weight, eig)
        return self._logs([m for m in self.metrics if m is not self._backoff_tracker])

    def _logs(self, metrics):
        """The step's logs. Across workers Keras averages them over axis 0 (which a scalar lacks):
        there they are (1,) tensors, the same on every worker, and come back as scalars."""
        if multi_worker(self.distribute_strategy):
            return {m.name: tf.reshape(m.result(), [1]) for m in metrics}
        return {m.name: m.result() for m in metrics}

    # ------------------------------------------------------- Keras entry points
    def get_config(self):
        if isinstance(self.kernel, EmpiricalNTKKernel) and not self._base_is_kernel_model:
            raise NotImplementedError(
                "saving a KernelModel whose EmpiricalNTKKernel network differs from its base metric "
                "is not supported (the network is saved as the base metric); use base_metric=None."
            )
        if self.__dict__.get("_live_base") is not None:
            raise NotImplementedError(
                f"this KernelModel freezes a live {type(self._base_model).__name__} by a weight snapshot "
                "(the model cannot be rebuilt from a Keras config), so it cannot be saved; save the flow's "
                "state with `alpha` and the base model's weights instead."
            )
        base = keras.saving.serialize_keras_object(self._base_model)
        base.pop("compile_config", None)  # the frozen base metric is never trained
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
            "tile_size": self.chunking.tile_size,
            "n_threads": self.chunking.n_threads,
            "engine": self.engine,
            "device": self.device,
            "tiles": self.chunking.tiles,
            "chunk_size": self.point_chunk,
            "cluster_batch_size": self.cluster_batch_size,
            "seed": self.seed,
            "state": {"n_train": self.n_train, "n_clusters": self.n_clusters, "param_index": self._param_index},
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        base = keras.saving.deserialize_keras_object(config.pop("base_metric"), custom_objects=custom_objects)
        kcfg = config.pop("kernel")
        if kcfg["class_name"] == "EmpiricalNTKKernel":
            kernel = _LazyEmpiricalNTK(base, kcfg["config"])
        else:
            kernel = _deserialize_kernel(kcfg)
        loss = config.pop("loss")
        if isinstance(loss, dict) and "class_name" in loss:
            loss = keras.saving.deserialize_keras_object(loss, custom_objects=custom_objects)
        state = config.pop("state")
        manifold = manifold_spec(config.pop("manifold"))  # a ManifoldSpec or CICYSpec config
        return cls(kernel, None, manifold, base_metric=base, loss=loss, _state=state, **config)
