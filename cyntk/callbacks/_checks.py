"""Argument validation for cyntk.callbacks (clear errors, never asserts)."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def positive_int(value, name: str, what: str) -> int:
    """An integer > 0 (bools rejected); ``what`` says what it counts."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer ({what}); received {value!r}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer ({what}); received {value}.")
    return int(value)


def real_points(x, name: str, min_points: int = 2) -> np.ndarray:
    """Validate a (P, d) real array of network inputs; returns a float64 copy."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        raise TypeError(f"`{name}` must be a real numeric array of shape (P, d); received dtype "
                        f"{arr.dtype}.")
    if np.iscomplexobj(arr):
        raise TypeError(f"`{name}` must be real network inputs of shape (P, d) (cymetric's layout "
                        f"[Re z, Im z]); received a complex array of shape {arr.shape}. Convert with "
                        "cyntk.geometry.to_real(z).")
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"`{name}` must have shape (P, d) (P points of width d); received shape "
                         f"{arr.shape}.")
    if arr.shape[0] < min_points:
        raise ValueError(f"`{name}` must contain at least {min_points} points (a kernel block needs "
                         f"P >= {min_points}); received {arr.shape[0]}.")
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
        raise ValueError(f"`{name}` must be finite; received {bad.size} point(s) with NaN or inf "
                         f"coordinates (first at row {int(bad[0])}).")
    return np.array(arr, dtype=np.float64, copy=True)


def data_pools(data):
    """``(train_pool, test_pool)`` arrays from ``data`` (test_pool None for a single pool).

    ``data`` may be an object with ``X_train`` and ``X_val`` attributes (a
    :class:`cyntk.geometry.CYDataset`), a mapping with ``"X_train"`` and
    ``"X_val"`` keys (cymetric's ``dataset.npz`` loaded with ``np.load``), a
    pair ``(X_train_pool, X_test_pool)``, or one array (both sets drawn from it,
    disjoint).
    """
    if data is None:
        return None, None
    if hasattr(data, "X_train") and hasattr(data, "X_val"):
        return np.asarray(data.X_train), np.asarray(data.X_val)
    if isinstance(data, Mapping) or (hasattr(data, "files") and hasattr(data, "__getitem__")):
        keys = set(data.keys()) if hasattr(data, "keys") else set(data.files)
        if {"X_train", "X_val"} <= keys:
            return np.asarray(data["X_train"]), np.asarray(data["X_val"])
        raise ValueError(f"`data` as a mapping must have keys 'X_train' and 'X_val' (cymetric's dataset "
                         f"layout); received keys {sorted(keys)}.")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    arr = np.asarray(data)
    if arr.ndim == 2:
        return arr, None
    raise TypeError("`data` must be a CYDataset-like object (X_train, X_val), a mapping with 'X_train' "
                    "and 'X_val', a pair of (N, d) arrays, or one (N, d) array; received "
                    f"{type(data).__name__}.")


def writable_dir(path, name: str) -> Path:
    """Check (without creating anything) that directory ``path`` can be created or written."""
    try:
        p = Path(os.fspath(path)).expanduser()
    except TypeError:
        raise TypeError(f"`{name}` must be a path (str or os.PathLike); received {path!r}.") from None
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"`{name}` must be a directory that can be created and written; received "
                         f"{str(p)!r}, but {str(probe)!r} is a file, not a directory. Choose another "
                         "path.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"`{name}` must be a directory that can be created and written; received "
                              f"{str(p)!r}, but {str(probe)!r} is not writable. Choose another path or "
                              "fix its permissions.")
    return p
