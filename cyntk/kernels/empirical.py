"""The empirical metric-NTK of a network at a weight snapshot, as a frozen :class:`~cyntk.kernels.base.Kernel`.

The kernel is computed by the engine of :mod:`cyntk.kernels.ntk` (blocks by
:func:`~cyntk.kernels.ntk.metric_ntk`, products matrix-free by
:func:`~cyntk.kernels.ntk.metric_ntk_vp`) at the weights the model had when the
kernel was made.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np

from cyntk._validation import matching_widths
from cyntk.kernels._replicas import distribution_strategy
from cyntk.kernels.base import Kernel

if TYPE_CHECKING:
    from collections.abc import Mapping

    from numpy.typing import ArrayLike

from cyntk.kernels.ntk import _Engine, _vector

__all__ = ["EmpiricalNTKKernel"]


# ----------------------------------------------------------------------------- kernel object
@keras.saving.register_keras_serializable(package="cyntk")
class EmpiricalNTKKernel(Kernel):
    """The empirical metric-NTK of a model as a (full) kernel.

    ``Theta_IJ(x, x') = sum_theta d g_I(x)/d theta d g_J(x')/d theta`` evaluated
    with the model's weights *at construction* (``snapshot=True``, default):
    the kernel of a network at initialisation, or the "after-kernel" of a
    trained network at any checkpoint, unaffected by later training. Each
    evaluation temporarily loads the snapshot into the model's variables and
    restores the current values afterwards (bit for bit); evaluations are
    serialised by a lock, but do not train the same model in another thread
    while the kernel is being evaluated. With
    ``snapshot=False`` the live weights are used (e.g. to track the NTK during
    training without re-tracing).

    Blocks are (P1, P2, m, m) NumPy arrays in the model's real dtype. The
    traced functions are reused across calls.

    Evaluated inside ``strategy.scope()`` of a ``tf.distribute`` strategy, the
    rows are split across its replicas and gathered, as by :func:`metric_ntk`;
    this is also how a model *built* inside the scope (mirrored variables) is
    evaluated there. In a replica context, or outside any scope (e.g. the
    product shards of a :class:`~cyntk.flows.KernelModel`'s steps), the call
    computes everything itself, on the current device.

    Args:
        model: built Keras model (see :func:`metric_ntk`).
        snapshot: freeze the weights at construction.
        chunk_size: points per chunk (see :func:`metric_ntk`).
        implementation: ``'auto'``, ``'structured'`` or ``'generic'``.
        output: ``'auto'``, ``'metric'`` or ``'vector'``.

    Attributes:
        implementation_: ``'structured'`` or ``'generic'``, the path taken
            (set after the first evaluation).
    """

    component_diagonal = False
    pairwise = True
    symmetric = True
    positive_semidefinite = True  # a Gram matrix J J^T
    identity_on_same_points = False
    has_tile_api = False
    has_fused_tile_matvec = False
    has_matrix_free_matvec = True  # J (J^T v) without the block
    has_tf_tile = False  # matrix-free J (J^T v), itself TensorFlow

    def __init__(
        self,
        model: keras.Model,
        *,
        snapshot: bool = True,
        chunk_size: int | None = None,
        implementation: Literal["auto", "generic", "structured"] = "auto",
        output: Literal["auto", "metric", "vector", "complex"] = "auto",
    ) -> None:
        self.model = model
        self.snapshot = bool(snapshot)
        self.chunk_size = chunk_size
        self.implementation = implementation
        self.output = output
        self._engine = _Engine(model, output=output, implementation=implementation, chunk_size=chunk_size)
        self._variables = list(model.variables)
        self._weights = [np.array(v.numpy()) for v in self._variables] if self.snapshot else None
        self._lock = threading.RLock()

    def get_config(self) -> dict[str, Any]:
        """The model (serialised by ``keras.saving``), its weights and the options.

        ``weights`` is the snapshot (``snapshot=True``) or the current weights,
        in ``model.variables`` order; :meth:`from_config` loads them into the
        rebuilt model. (A :class:`~cyntk.flows.kernel_model.KernelModel` saves
        its kernel without the model: it rebuilds it from its base metric.)
        """
        weights = self._weights if self._weights is not None else [np.array(v.numpy()) for v in self.model.variables]
        return {
            "model": self.model,
            "weights": list(weights),
            "snapshot": self.snapshot,
            "chunk_size": self.chunk_size,
            "implementation": self.implementation,
            "output": self.output,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EmpiricalNTKKernel:
        """Rebuild the model (Keras config), load the saved weights, and snapshot them."""
        config = dict(config)
        model = config.pop("model")
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        weights = config.pop("weights", None)
        if weights is not None:
            weights = [
                np.asarray(keras.saving.deserialize_keras_object(w) if isinstance(w, dict) else w) for w in weights
            ]
            variables = list(model.variables)
            if len(variables) != len(weights):
                raise ValueError(
                    f"cannot load the EmpiricalNTKKernel's {len(weights)} saved weights into the rebuilt "
                    f"model {getattr(model, 'name', '')!r} with {len(variables)} variables (is it built?)."
                )
            for var, w in zip(variables, weights):
                var.assign(w)
        return cls(model, **config)

    def __repr__(self) -> str:
        return (
            f"EmpiricalNTKKernel(model={getattr(self.model, 'name', type(self.model).__name__)!r}, "
            f"snapshot={self.snapshot}, chunk_size={self.chunk_size!r}, "
            f"implementation={self.implementation!r}, output={self.output!r})"
        )

    @property
    def n_components(self) -> int | None:  # type: ignore[override]  # a read-only property over Kernel.n_components
        """m (known after the first evaluation)."""
        return None if self._engine.outputs is None else self._engine.outputs.m

    @property
    def implementation_(self) -> str | None:
        plan = self._engine.plan
        return None if plan is None else plan.name

    @property
    def path_(self) -> str | None:
        """How the kernel is computed (see :func:`metric_ntk_path`); None before the first evaluation."""
        return self._engine.path

    @property
    def weights(self) -> list[np.ndarray] | None:
        """The snapshot (list of NumPy arrays in ``model.variables`` order) or None."""
        return self._weights

    @contextlib.contextmanager
    def _snapshot_weights(self):
        if self._weights is None:
            yield
            return
        current = list(self.model.variables)
        if [id(v) for v in current] != [id(v) for v in self._variables]:
            raise RuntimeError(
                "The model's variables changed since the snapshot was taken (layers "
                "added or rebuilt); create a new EmpiricalNTKKernel."
            )
        saved = [np.array(v.numpy()) for v in current]
        try:
            for var, w in zip(current, self._weights):
                var.assign(w)
            yield
        finally:
            for var, w in zip(current, saved):
                var.assign(w)

    def _block(self, x1, x2):
        strategy = distribution_strategy()
        with self._lock, self._snapshot_weights():
            if strategy is not None:
                return self._engine.kernel_on_replicas(strategy, x1, x2)
            return self._engine.kernel(x1, x2)

    def matvec(self, x1: ArrayLike, x2: ArrayLike, v: ArrayLike, *, chunk_size: int | None = None) -> np.ndarray:
        """Matrix-free ``Theta(x1, x2) . v`` (see :func:`metric_ntk_vp`).

        Args:
            x1: real (P1, d) target points.
            x2: real (P2, d) source points.
            v: real (P2, m).
            chunk_size: ignored (the kernel's ``chunk_size`` applies).

        Returns:
            array (P1, m) in the model's real dtype.
        """
        p1, _ = self._points(x1, "x1")
        p2, _ = self._points(x2, "x2")
        matching_widths(p1, p2)
        v = _vector(v, len(p2))
        strategy = distribution_strategy()
        with self._lock, self._snapshot_weights():
            if strategy is not None:
                return self._engine.vp_on_replicas(strategy, p2, v, p1)
            return self._engine.vp(p2, v, p1)
