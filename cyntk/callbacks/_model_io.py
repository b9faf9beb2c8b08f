"""How the tracker talks to a model: calling it, reading its output kind, and the kernel engine.

Keras is imported lazily (only when a model is called), so importing the
tracker does not need it; TensorFlow/Keras models and plain callables that
accept ``(x, training=False)`` are both handled.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["call_model", "components", "inspect_model", "kernel", "replica_strategy"]


def _input_dtype(model: Any) -> str:
    import keras

    inputs = getattr(model, "inputs", None)
    try:
        if inputs:
            return keras.backend.standardize_dtype(inputs[0].dtype)
    except (AttributeError, TypeError, ValueError):
        pass
    return keras.backend.standardize_dtype(getattr(model, "compute_dtype", keras.config.floatx()))


def call_model(model: Any, x: np.ndarray) -> Any:
    """``model(x, training=False)`` with ``x`` a fresh tensor of the model's input dtype."""
    import keras

    t = keras.ops.convert_to_tensor(np.array(x, copy=True), dtype=_input_dtype(model))
    return model(t, training=False)


def components(out: Any) -> np.ndarray:
    """float64 real components (P, m) of a model output (complex metrics -> cyntk's components)."""
    import keras

    arr = np.asarray(keras.ops.convert_to_numpy(out))
    if np.iscomplexobj(arr):
        from cyntk.geometry import components_from_hermitian

        arr = components_from_hermitian(arr)
    return arr.astype(np.float64)


def inspect_model(model: Any, x_train: np.ndarray, name: str) -> tuple[str, int]:
    """The output kind (``"metric"``, ``"complex"`` or ``"vector"``) and m; clear errors for bad models/points."""
    import keras

    if model is None:
        raise ValueError(f"{name} has no model: use it in `model.fit(..., callbacks=[...])`.")
    d = x_train.shape[1]
    width = None
    inputs = getattr(model, "inputs", None)
    try:
        if inputs and len(inputs) == 1 and inputs[0].shape[-1] is not None:
            width = int(inputs[0].shape[-1])
    except (AttributeError, TypeError, ValueError):
        width = None
    if width is not None and width != d:
        raise ValueError(
            f"`train_points`/`test_points` must have the model's input width d={width} "
            f"(shape (P, {width})); received points of shape {x_train.shape}."
        )
    try:
        out = call_model(model, x_train[:2])
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"{name} could not call the model on `train_points` of shape "
            f"{x_train.shape} (width d={d}) with training=False: "
            f"{type(err).__name__}: {err}. The points must be valid model inputs "
            "(shape (P, d) with the model's d)."
        ) from err
    if isinstance(out, (list, tuple, dict)):
        raise ValueError(
            f"{name} needs a model with one output, a metric (complex (B, n, n)) "
            f"or a vector (real (B, m)); received a {type(out).__name__} of outputs."
        )
    shape = tuple(out.shape)
    dtype = keras.backend.standardize_dtype(out.dtype)
    if dtype.startswith("complex") and len(shape) == 3 and shape[1] == shape[2]:
        g = np.asarray(keras.ops.convert_to_numpy(out))
        asym = float(np.max(np.abs(g - np.conj(np.swapaxes(g, -1, -2)))))
        scale = max(float(np.max(np.abs(g))), np.finfo(np.float64).tiny)
        if asym > 1e3 * np.finfo(g.real.dtype).eps * scale:
            # not hermitian (e.g. cymetric's MatrixFSModel): Re and Im of every entry
            return "complex", 2 * shape[1] * shape[2]
        return "metric", shape[1] * shape[2]
    if dtype.startswith(("float", "bfloat")) and len(shape) == 2:
        return "vector", shape[1]
    raise ValueError(
        f"{name} needs a model whose output is a metric (complex (B, n, n), "
        "cymetric's signature) or a vector (real (B, m)); received output of dtype "
        f"{dtype} and shape {shape}. Wrap the model so that it returns one of these."
    )


def _engine(ntk_fn: Callable[..., Any] | None, name: str) -> Callable[..., Any]:
    if ntk_fn is not None:
        return ntk_fn
    try:
        from cyntk.kernels import metric_ntk
    except ImportError as err:
        raise ImportError(
            f"{name} needs cyntk.kernels.metric_ntk (the empirical "
            f"metric-NTK engine), which could not be imported: {err}."
        ) from err
    return metric_ntk


def replica_strategy(model: Any) -> Any:
    """The ``tf.distribute`` strategy ``model`` was built under when it has more than one replica, else None.

    Only the model's own strategy counts (``model.distribute_strategy`` of a
    model built inside ``strategy.scope()``), not a scope entered later.
    """
    strategy = getattr(model, "_distribute_strategy", None)
    try:
        replicas = int(getattr(strategy, "num_replicas_in_sync", 1))
    except (TypeError, ValueError):
        return None
    return strategy if replicas > 1 else None


def _takes_strategy(ntk_fn: Callable[..., Any] | None) -> bool:
    """Whether the kernel engine takes ``strategy=`` (the default engine, or a parameter of that name)."""
    if ntk_fn is None:
        return True
    try:
        return "strategy" in inspect.signature(ntk_fn).parameters
    except (TypeError, ValueError):  # no signature (a builtin): pass nothing it may not know
        return False


def kernel(
    model: Any,
    x: np.ndarray,
    m: int | None,
    output_kind: str | None,
    ntk_fn: Callable[..., Any] | None,
    ntk_kwargs: dict,
    *,
    want_path: bool = False,
    name: str = "MetricNTKTracker",
) -> tuple[np.ndarray, str | None]:
    """Theta (P, P, m, m) of ``model`` on ``x`` (NumPy, engine dtype) and, if asked, the engine's path name.

    When ``model`` was built under a strategy with several replicas
    (:func:`replica_strategy`) and ``ntk_kwargs`` has no ``"strategy"``, the
    engine is given ``strategy=model.distribute_strategy`` (if it takes a
    ``strategy`` argument, as :func:`cyntk.kernels.metric_ntk` does), so the
    replicas split the kernel's rows; ``ntk_kwargs={"strategy": None}``
    computes it whole in this process instead.
    """
    kwargs = dict(ntk_kwargs)
    if "strategy" not in kwargs and _takes_strategy(ntk_fn):
        strategy = replica_strategy(model)
        if strategy is not None:  # the model's replicas share the rows of the kernel
            kwargs["strategy"] = strategy
    if output_kind == "complex" and ntk_fn is None:
        kwargs.setdefault("output", "complex")
    theta = _engine(ntk_fn, name)(model, x, **kwargs)
    path = None
    if want_path:
        from cyntk.kernels import metric_ntk_path

        path = metric_ntk_path(
            model, **{k: v for k, v in kwargs.items() if k in ("chunk_size", "implementation", "output")}
        )
    theta = np.asarray(theta.numpy() if hasattr(theta, "numpy") else theta)
    p = len(x)
    if theta.shape != (p, p, m, m):
        raise RuntimeError(
            f"the NTK engine returned shape {theta.shape}; expected (P, P, m, m) = ({p}, {p}, {m}, {m})."
        )
    return theta, path
