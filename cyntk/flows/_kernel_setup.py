"""Setting up a KernelModel: train points, base metric, clusters, state and kernel serialisation.

A mixin of :class:`~cyntk.flows.kernel_model.KernelModel`.
"""

from __future__ import annotations

import importlib
import numbers

import keras
import numpy as np
import tensorflow as tf

from cyntk._validation import positive_int
from cyntk.flows._kernel_common import chart_advice, chart_ids, chart_label
from cyntk.flows.product import KernelProduct, min_eigenvalues
from cyntk.geometry import CompleteIntersection, Hypersurface, product_fs_distance_matrix, to_complex, to_real
from cyntk.geometry.clustering import BatchedFSClustering
from cyntk.geometry.projective import fs_nearest
from cyntk.kernels.base import Kernel
from cyntk.kernels.empirical import EmpiricalNTKKernel
from cyntk.kernels.fs import DeltaKernel, GaussianFSKernel
from cyntk.models._tf import copy_model
from cyntk.models.models import FSModel


class _FlowSetup:
    """Construction from data or from a saved state; base metric, clusters and state variables."""

    def _init_from_data(self, x_train, base_metric, clusters):
        x = self._check_points(x_train, "x_train")
        z = to_complex(x)
        charts = self.surface.charts(z)
        ids = chart_ids(charts, self.spec.ncoords)
        uniq, counts = np.unique(ids, return_counts=True)
        if len(uniq) > 1 and self.mixed_charts == "raise":
            S = self.surface
            desc = ", ".join(
                f"{chart_label(u, S.ncoords, S.nproj, S.nhyper)}: {c}" for u, c in zip(uniq[:6], counts[:6])
            )
            kind = (
                "patch k, eliminated coordinate j"
                if S.nproj == 1 and S.nhyper == 1
                else "chart rows: one index per factor, one eliminated coordinate per equation"
            )
            raise ValueError(
                f"`x_train` mixes {len(uniq)} charts ({kind}) -- {desc}"
                f"{' ...' if len(uniq) > 6 else ''}. A kernel adds metric components of different "
                "points, which is meaningful only in one chart. Sample in one chart "
                f"({chart_advice(S.nproj, S.nhyper)}), or pass mixed_charts='separate' to flow each "
                "chart on its own (block-diagonal kernel)."
            )
        if self.spec.kappa is None:
            self.spec = self.spec.with_kappa(self.surface.kappa(z))
        # the kernel (probe: shapes and widths) -------------------------------
        self._product = KernelProduct(self.kernel, self.m, tile_size=self.tile_size, n_threads=self.n_threads)
        self._probe_kernel(x)
        # base metric -----------------------------------------------------------
        self._set_base_metric(base_metric, x)
        g0 = self._base_components_np(x)
        lam = min_eigenvalues(g0, self.n)
        if np.any(lam <= self.eigenvalue_floor):
            bad = np.flatnonzero(lam <= self.eigenvalue_floor)
            raise ValueError(
                f"the base metric is not positive-definite at {len(bad)} of {len(x)} train "
                f"points (smallest eigenvalue {lam.min():.3g}, first at point {bad[0]}); a "
                "flow must start from a valid metric."
            )
        # clusters --------------------------------------------------------------
        labels = self._cluster_labels(clusters, x)
        self._create_state(len(x), int(len(np.unique(labels))) if clusters is not None else 0)
        self.x_train.assign(x)
        self.g0_train.assign(g0)
        self.cluster_labels.assign(labels)
        self._reset_cache()

    def _init_from_state(self, state, base_metric):
        self._product = KernelProduct(self.kernel, self.m, tile_size=self.tile_size, n_threads=self.n_threads)
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
                f"{x.shape} with m = n^2 = {self.m} metric components: {err}"
            ) from err
        nc = getattr(self.kernel, "n_components", None)
        if not getattr(self.kernel, "component_diagonal", False) and nc is not None and nc != self.m:
            raise ValueError(
                f"kernel {type(self.kernel).__name__} has {nc} components per point; the "
                f"metric on {self.spec.name} has m = n^2 = {self.m}."
            )

    def _set_base_metric(self, base_metric, x):
        probe = tf.constant(x[:4], self.compute_dtype)
        kernel_model = getattr(self.kernel, "model", None) if isinstance(self.kernel, EmpiricalNTKKernel) else None
        if base_metric is None:
            base_metric = kernel_model if kernel_model is not None else "fubini_study"
        self._param_index = None
        self._base_is_kernel_model = kernel_model is not None and base_metric is kernel_model
        if isinstance(base_metric, str):
            if base_metric != "fubini_study":
                raise ValueError(
                    f"`base_metric` must be 'fubini_study', a Keras metric model or None; received {base_metric!r}."
                )
            self._base_model = FSModel(self.spec, dtype=self.compute_dtype, name="base_metric")
            return
        if not isinstance(base_metric, keras.layers.Layer):
            raise TypeError(
                f"`base_metric` must be 'fubini_study', a Keras metric model or None; "
                f"received {type(base_metric).__name__}."
            )
        weights = None
        if base_metric is kernel_model and self.kernel.weights is not None:
            weights = self.kernel.weights  # the kernel's snapshot theta0
        source_vars = list(base_metric.variables)
        trainable_ids = {id(v) for v in base_metric.trainable_variables}
        try:
            self._base_model = copy_model(base_metric, tf.cast(probe, base_metric.compute_dtype), weights)
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
                raise ValueError(
                    "`form='primal'` linearises the kernel's network; `base_metric` must "
                    "be None (or the EmpiricalNTKKernel's model)."
                )
            self._param_index = [i for i, v in enumerate(source_vars) if id(v) in trainable_ids]

    def _cluster_labels(self, clusters, x):
        if clusters is None:
            return np.zeros(len(x), dtype=np.int64)
        z = to_complex(x)
        if isinstance(clusters, (numbers.Integral,)) and not isinstance(clusters, bool):
            C = positive_int(int(clusters), "clusters")
            if C > len(x):
                raise ValueError(f"`clusters` must be at most the number of train points ({len(x)}); received {C}.")
            est = BatchedFSClustering(
                n_clusters=C,
                batch_size=self.cluster_batch_size,
                shuffle=self.seed is not None,
                random_state=self.seed,
                manifold=_product_layout(self.surface),  # products: the product FS distance
            )
            labels = est.fit_predict(z)
        elif hasattr(clusters, "fit_predict"):
            labels = clusters.fit_predict(z)
        else:
            labels = np.asarray(clusters)
        labels = np.asarray(labels)
        if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"`clusters` labels must be integers of shape ({len(x)},) (one per train "
                f"point); received shape {labels.shape}, dtype {labels.dtype}."
            )
        _, labels = np.unique(labels, return_inverse=True)
        return labels.astype(np.int64)

    def _create_state(self, n_train, n_clusters):
        self.n_train = int(n_train)
        self.n_clusters = int(n_clusters)
        if self.n_train < 1:
            raise ValueError("`x_train` must contain at least one point; received an empty set.")
        f64 = "float64"
        self.x_train = self.add_weight(
            shape=(self.n_train, self.width), dtype=f64, trainable=False, initializer="zeros", name="x_train"
        )
        self.g0_train = self.add_weight(
            shape=(self.n_train, self.m), dtype=f64, trainable=False, initializer="zeros", name="g0_train"
        )
        self.cluster_labels = self.add_weight(
            shape=(self.n_train,), dtype="int64", trainable=False, initializer="zeros", name="cluster_labels"
        )
        if self.form == "dual":
            self.alpha = self.add_weight(
                shape=(self.n_train, self.m), dtype=f64, trainable=True, initializer="zeros", name="alpha"
            )
            self.u_train = self.add_weight(
                shape=(self.n_train, self.m), dtype=f64, trainable=False, initializer="zeros", name="u_train"
            )
            self.delta_theta = []
        else:
            params = self._params()
            self.delta_theta = [
                self.add_weight(
                    shape=tuple(p.shape), dtype=p.dtype, trainable=True, initializer="zeros", name=f"delta_theta_{i}"
                )
                for i, p in enumerate(params)
            ]


def _serialize_kernel(kernel) -> dict:
    """The kernel's Keras serialisation (``keras.saving.serialize_keras_object``).

    The empirical NTK is saved without its model (``"model": "base_metric"``):
    the loaded KernelModel rebuilds it from its base metric (:class:`_LazyEmpiricalNTK`).
    """
    if isinstance(kernel, EmpiricalNTKKernel):
        return {
            "module": EmpiricalNTKKernel.__module__,
            "class_name": "EmpiricalNTKKernel",
            "config": {
                "snapshot": kernel.snapshot,
                "chunk_size": kernel.chunk_size,
                "implementation": kernel.implementation,
                "output": kernel.output,
            },
            "registered_name": "cyntk>EmpiricalNTKKernel",
            "model": "base_metric",
        }
    if not hasattr(kernel, "get_config"):
        raise TypeError(f"kernel {type(kernel).__name__} has no get_config(); it cannot be saved.")
    if keras.saving.get_registered_object(keras.saving.get_registered_name(type(kernel))) is not type(kernel):
        raise TypeError(
            f"kernel {type(kernel).__name__} is not registered with Keras; decorate its class with "
            "keras.saving.register_keras_serializable(package='cyntk') so that it can be saved and loaded."
        )
    return keras.saving.serialize_keras_object(kernel)


def _deserialize_kernel(config: dict):
    """Inverse of :func:`_serialize_kernel` (also configs saved before Keras registration)."""
    if "registered_name" in config:
        kernel = keras.saving.deserialize_keras_object(config)
    else:  # older files: {"module", "class_name", "config"} of a cyntk kernel
        module, name = config["module"], config["class_name"]
        cls = keras.saving.get_registered_object(f"cyntk>{name}")
        if cls is None:
            if not module.startswith("cyntk."):
                raise ValueError(
                    f"cannot rebuild kernel {module}.{name}: only cyntk kernels or kernels "
                    "registered with keras.saving.register_keras_serializable(package="
                    "'cyntk') can be loaded."
                )
            cls = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and issubclass(cls, Kernel)):
            raise TypeError(f"{module}.{name} is not a cyntk Kernel.")
        kernel = cls.from_config(config["config"])
    if not isinstance(kernel, Kernel):
        raise TypeError(f"the saved kernel {config.get('class_name')!r} is not a cyntk Kernel.")
    return kernel


class _LazyEmpiricalNTK(EmpiricalNTKKernel):
    """Empirical NTK of a loaded KernelModel's base network, built after the weights load.

    The frozen base model holds ``theta0``; the kernel needs a model with
    trainable variables, so a trainable copy is made from it on first use.
    """

    def __init__(self, base, config):  # noqa: D107 - deferred construction
        self._base = base
        self._config = dict(config)
        self._ready = False
        self.snapshot = bool(config.get("snapshot", True))
        self.chunk_size = config.get("chunk_size")
        self.implementation = config.get("implementation", "auto")
        self.output = config.get("output", "auto")

    def _build(self, x):
        if not self._ready:
            model = copy_model(self._base, tf.constant(x[:2], self._base.compute_dtype), trainable=True)
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


def _product_layout(surface):
    """The manifold whose product FS distance the flow uses (None: one projective space, plain FS)."""
    return surface if getattr(surface, "nproj", 1) > 1 else None


def _surface_of(spec):
    """The geometry object of a models' spec: a Hypersurface (one equation in one P^n) or the CompleteIntersection."""
    manifold = getattr(spec, "manifold", None)
    if isinstance(manifold, CompleteIntersection):  # CICYSpec: complete intersections, products
        return manifold
    if not hasattr(spec, "monomials"):
        raise TypeError(f"`manifold`: cannot build the geometry of {type(spec).__name__}.")
    return Hypersurface(spec.monomials, spec.coefficients, spec.kmoduli, name=spec.name)


def _kernel_for(kernel, surface):
    """The kernel on ``surface``: an FS kernel without factor layout gets the product's.

    On a product of projective spaces (``surface.nproj > 1``) a
    :class:`~cyntk.kernels.fs.GaussianFSKernel` or
    :class:`~cyntk.kernels.fs.DeltaKernel` given without ``factor_slices``
    is replaced by a copy with the manifold's ``factor_slices`` and ``kmoduli``
    (the product FS distance); one with a different layout is refused. Other
    kernels and one projective space: the kernel itself.
    """
    layout = _product_layout(surface)
    if layout is None or not isinstance(kernel, (GaussianFSKernel, DeltaKernel)):
        return kernel
    slices = tuple((int(a), int(b)) for a, b in layout.factor_slices)
    if kernel.factor_slices is None:
        cfg = dict(kernel.get_config(), factor_slices=[list(p) for p in slices], t=layout.kmoduli.tolist())
        return type(kernel).from_config(cfg)
    if kernel.factor_slices != slices:
        raise ValueError(
            f"`kernel`: its factor_slices {[list(p) for p in kernel.factor_slices]} differ from the "
            f"manifold's {[list(p) for p in slices]}; give the kernel the manifold's layout "
            "(GaussianFSKernel(..., manifold=M)) or none (KernelModel fills it in)."
        )
    return kernel


def _nearest_train(zq, zt, layout, chunk: int = 2048):
    """Index (Q,) of the nearest point of ``zt`` for every point of ``zq`` (FS or product FS distance)."""
    if layout is None:
        return fs_nearest(zq, zt, k=1, exclude_self=False)[1][:, 0]
    out = np.empty(len(zq), dtype=np.int64)
    for s in range(0, len(zq), chunk):
        d = product_fs_distance_matrix(zq[s : s + chunk], zt, layout.factor_slices, layout.kmoduli)
        out[s : s + chunk] = np.argmin(d, axis=1)
    return out
