"""TensorFlow and Keras helpers shared by the layers above: exact float64 through Keras, model copies, error channels.

* :func:`encode_float64` / :func:`decode_float64`: Keras' array data adapters
  cast float inputs to ``keras.config.floatx()``; models that need exact
  float64 inputs pass them as the int64 bit patterns of their float64 values
  and restore them inside their steps, without touching the global setting.
* :func:`copy_model`: a frozen (or trainable) copy of a Keras model by its config.
* :func:`mark` / :func:`marked_message`: an error raised inside a traced step
  reaches the caller as a TensorFlow error; a marker prefix lets the Keras
  entry point find the original message and raise it as a Python error again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import keras
import numpy as np
import tensorflow as tf

__all__ = ["encode_float64", "decode_float64", "encode_args", "to_numpy", "copy_model", "mark", "marked_message"]

_C = TypeVar("_C")


def mark(marker: str, message: str) -> str:
    """``message`` prefixed with ``marker`` (to be raised inside a traced step)."""
    return f"{marker}: {message}"


def marked_message(err: BaseException, marker: str) -> str | None:
    """The first line after ``marker`` in the text of ``err``, or None when it does not carry it."""
    text = str(err)
    if marker not in text:
        return None
    return text.split(marker, 1)[1].lstrip(": ").split("\n")[0]


def encode_float64(a: Any) -> Any:
    """A float array as the int64 bit patterns of its float64 values (anything else unchanged).

    Keras' array data adapters cast float inputs of fit/evaluate/predict to
    ``keras.config.floatx()`` (float32 by default), which would round the
    points, targets and sample weights of the flow. Integer arrays pass through
    unchanged, so the flow's steps receive the exact float64 values and
    :func:`decode_float64` restores them; no global setting is touched.
    """
    arr = to_numpy(a)
    if arr is None or arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        return a
    return np.ascontiguousarray(arr, dtype=np.float64).view(np.int64)


def decode_float64(t: Any) -> tf.Tensor | None:
    """Inverse of :func:`encode_float64` inside the steps: int64 bit patterns -> float64; floats cast."""
    if t is None:
        return None
    t = tf.convert_to_tensor(t)
    if t.dtype == tf.int64:
        return tf.bitcast(t, tf.float64)
    return tf.cast(t, tf.float64) if t.dtype.is_floating else t


def encode_args(
    args: Sequence[Any], kwargs: dict[str, Any], positions: Mapping[str, int | None]
) -> tuple[list[Any], dict[str, Any]]:
    """Encode the named array arguments of a Keras entry point (given by keyword or position)."""
    args = list(args)
    for name, pos in positions.items():
        if name in kwargs:
            kwargs[name] = _encode_data(kwargs[name]) if name == "validation_data" else encode_float64(kwargs[name])
        elif pos is not None and len(args) > pos:
            args[pos] = _encode_data(args[pos]) if name == "validation_data" else encode_float64(args[pos])
    return args, kwargs


def _encode_data(vd: Any) -> Any:
    if isinstance(vd, tuple) and 2 <= len(vd) <= 3:
        return tuple(encode_float64(v) for v in vd)
    return vd


def to_numpy(a: object) -> np.ndarray | None:
    if a is None or isinstance(a, (tf.data.Dataset,)) or callable(getattr(a, "__next__", None)):
        return None
    if isinstance(a, (dict, list, tuple)):
        return None
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        a = a.numpy()
    try:
        return np.asarray(a)
    except Exception:  # noqa: BLE001 - not array-like (generators, PyDatasets)
        return None


def _force_trainable(config: _C) -> _C:
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


def copy_model(
    model: keras.Model,
    x_probe: np.ndarray | tf.Tensor,
    weights: Sequence[np.ndarray] | None = None,
    *,
    trainable: bool = False,
) -> keras.Model:
    """A copy of a Keras metric model with the given (or its current) weights.

    With ``trainable=True`` every layer of the copy is trainable, whatever the
    original's flags (used to rebuild the empirical NTK from a frozen model).
    """
    try:
        config = keras.saving.serialize_keras_object(model)
        if trainable:
            config = _force_trainable(config)
        clone = keras.saving.deserialize_keras_object(config)
    except Exception as err:  # noqa: BLE001
        raise TypeError(
            f"the base metric model {type(model).__name__} cannot be copied (Keras serialisation "
            f"failed: {err}). Give it get_config()/from_config() and register it with "
            "keras.saving.register_keras_serializable, so that the KernelModel can freeze it."
        ) from err
    clone(x_probe, training=False)
    src = list(model.variables) if weights is None else None
    values = [np.asarray(v.numpy()) for v in src or ()] if weights is None else list(weights)
    dst = list(clone.variables)
    if len(dst) != len(values) or any(tuple(d.shape) != tuple(np.shape(w)) for d, w in zip(dst, values)):
        raise ValueError(
            f"the copy of the base metric model {type(model).__name__} has variables "
            f"{[tuple(d.shape) for d in dst]}, the model {[np.shape(w) for w in values]}; "
            "the model must be rebuildable from its config."
        )
    for d, w in zip(dst, values):
        d.assign(w)
    return clone
