"""Argument validation for all of cyntk: one rule per kind of argument, clear errors, never asserts.

Every function takes the value and the argument's name and either returns the
value in canonical form or raises ``TypeError`` (wrong kind of value) or
``ValueError`` (right kind, wrong value) with a message that names the
argument, says what was expected and what was received.

This module sits below every layer (:mod:`cyntk.geometry` upwards) and imports
nothing from cyntk.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast, overload

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = [
    "as_points",
    "as_real_points",
    "real_points",
    "matching_widths",
    "positive_int",
    "optional_chunk_size",
    "positive_float",
    "nonnegative_float",
    "one_of",
    "data_pools",
    "writable_dir",
    "available_memory",
    "check_memory",
]

_S = TypeVar("_S", bound=str)


def positive_int(value: Any, name: str, what: str | None = None) -> int:
    """An integer > 0: Python/NumPy integers or integral floats (``1e5``); bools rejected.

    ``what`` (optional) says what the number counts, for the message.
    """
    hint = f" ({what})" if what else ""
    integral_float = isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer()
    if isinstance(value, (bool, np.bool_)) or not (isinstance(value, numbers.Integral) or integral_float):
        raise TypeError(f"`{name}` must be a positive integer{hint}; received {value!r}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer{hint}; received {value}.")
    return int(value)


def as_points(z: ArrayLike, name: str = "z", ncoords: int | None = None, allow_real: bool = True) -> np.ndarray:
    """Validate homogeneous points and return them as complex128 (P, N).

    Accepts complex (P, N) arrays, or, when ``allow_real`` is true, real arrays
    in cymetric's layout (P, 2N) = [Re z, Im z] (only when ``ncoords`` is given,
    so the layout is unambiguous).
    """
    arr = np.asarray(z)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"`{name}` must be a numeric array of points; received dtype {arr.dtype}.")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(
            f"`{name}` must have shape (P, N) (complex) or (P, 2N) (real [Re z, Im z]); received shape {np.shape(z)}."
        )
    if not np.iscomplexobj(arr):
        if ncoords is not None and arr.shape[1] == 2 * ncoords and allow_real:
            arr = arr[:, :ncoords] + 1j * arr[:, ncoords:]
        elif ncoords is not None:
            raise ValueError(
                f"`{name}` must be complex with shape (P, {ncoords}) or real with shape "
                f"(P, {2 * ncoords}); received real array of shape {arr.shape}."
            )
        else:
            arr = arr.astype(np.complex128)
    if ncoords is not None and arr.shape[1] != ncoords:
        raise ValueError(
            f"`{name}` must have {ncoords} homogeneous coordinates per point (shape (P, {ncoords})); "
            f"received shape {arr.shape}."
        )
    arr = arr.astype(np.complex128, copy=False)
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(f"`{name}` contains {bad} point(s) with NaN or inf coordinates; remove or regenerate them.")
    return arr


def as_real_points(x: ArrayLike, name: str, *, dtype: DTypeLike = np.float64, allow_vector: bool = False) -> np.ndarray:
    """Validate real network inputs and return them as a C-contiguous array.

    Args:
        x: array-like of shape (P, d) (cymetric's real layout [Re z, Im z] for
            points of projective space), or (d,) when ``allow_vector``.
        name: argument name used in error messages.
        dtype: NumPy dtype of the result.
        allow_vector: accept a single point of shape (d,) (returned as (1, d)).

    Returns:
        array of shape (P, d) and dtype ``dtype``.

    Raises:
        TypeError: complex or non-numeric input.
        ValueError: wrong rank, no points, no coordinates, or NaN/inf entries.
    """
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"`{name}` must be a real numeric array of points; received dtype {arr.dtype}.")
    if np.iscomplexobj(arr):
        raise TypeError(
            f"`{name}` must be real points of shape (P, d) (cymetric's layout [Re z, Im z] for "
            f"complex coordinates); received a complex array of shape {arr.shape}. Convert with "
            "cyntk.geometry.to_real(z)."
        )
    if arr.ndim == 1 and allow_vector:
        arr = arr[None, :]
    if arr.ndim != 2:
        expected = "(P, d) or (d,)" if allow_vector else "(P, d)"
        raise ValueError(f"`{name}` must have shape {expected}; received shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` must contain at least one point; received an empty set of shape {arr.shape}.")
    if arr.shape[1] == 0:
        raise ValueError(f"`{name}` must have at least one coordinate per point; received shape {arr.shape}.")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"`{name}` must be finite; received {bad.size} point(s) with NaN or inf coordinates "
            f"(first at row {int(bad[0])}). Remove or regenerate them."
        )
    return np.ascontiguousarray(arr, dtype=dtype)


def matching_widths(x1: np.ndarray, x2: np.ndarray, name1: str = "x1", name2: str = "x2") -> None:
    """Raise if two point sets have different input widths."""
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(
            f"`{name1}` and `{name2}` must have the same input width d (shape (P, d)); received "
            f"d={x1.shape[1]} for `{name1}` and d={x2.shape[1]} for `{name2}`."
        )


def optional_chunk_size(chunk_size: Any, name: str = "chunk_size") -> int | None:
    """``None`` or a positive integer (number of points per chunk)."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer (points per chunk) or None; received {chunk_size!r}.")
    if chunk_size <= 0:
        raise ValueError(f"`{name}` must be a positive integer (points per chunk) or None; received {chunk_size}.")
    return int(chunk_size)


def positive_float(value: Any, name: str) -> float:
    """A finite float > 0."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a positive number; received {value!r}.") from None
    if not np.isfinite(out) or out <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0; received {value!r}.")
    return out


def nonnegative_float(value: Any, name: str) -> float:
    """A finite float >= 0."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a non-negative number; received {value!r}.") from None
    if not np.isfinite(out) or out < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0; received {value!r}.")
    return out


def one_of(value: Any, name: str, choices: Collection[_S]) -> _S:
    """A string among ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(c) for c in choices)}; received {value!r}.")
    return cast(_S, value)  # checked: a str among ``choices``


def real_points(x: ArrayLike, name: str, min_points: int = 2) -> np.ndarray:
    """Validate a (P, d) real array of network inputs; returns a float64 copy."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        raise TypeError(f"`{name}` must be a real numeric array of shape (P, d); received dtype {arr.dtype}.")
    if np.iscomplexobj(arr):
        raise TypeError(
            f"`{name}` must be real network inputs of shape (P, d) (cymetric's layout "
            f"[Re z, Im z]); received a complex array of shape {arr.shape}. Convert with "
            "cyntk.geometry.to_real(z)."
        )
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"`{name}` must have shape (P, d) (P points of width d); received shape {arr.shape}.")
    if arr.shape[0] < min_points:
        raise ValueError(
            f"`{name}` must contain at least {min_points} points (a kernel block needs "
            f"P >= {min_points}); received {arr.shape[0]}."
        )
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
        raise ValueError(
            f"`{name}` must be finite; received {bad.size} point(s) with NaN or inf "
            f"coordinates (first at row {int(bad[0])})."
        )
    return np.array(arr, dtype=np.float64, copy=True)


@overload
def data_pools(data: None) -> tuple[None, None]: ...
@overload
def data_pools(data: object) -> tuple[np.ndarray, np.ndarray | None]: ...


def data_pools(data: object) -> tuple[np.ndarray | None, np.ndarray | None]:
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
        raise ValueError(
            f"`data` as a mapping must have keys 'X_train' and 'X_val' (cymetric's dataset "
            f"layout); received keys {sorted(keys)}."
        )
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    arr = np.asarray(data)
    if arr.ndim == 2:
        return arr, None
    raise TypeError(
        "`data` must be a CYDataset-like object (X_train, X_val), a mapping with 'X_train' "
        "and 'X_val', a pair of (N, d) arrays, or one (N, d) array; received "
        f"{type(data).__name__}."
    )


def writable_dir(path: str | os.PathLike[str], name: str) -> Path:
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
        raise ValueError(
            f"`{name}` must be a directory that can be created and written; received "
            f"{str(p)!r}, but {str(probe)!r} is a file, not a directory. Choose another "
            "path."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(
            f"`{name}` must be a directory that can be created and written; received "
            f"{str(p)!r}, but {str(probe)!r} is not writable. Choose another path or "
            "fix its permissions."
        )
    return p


def available_memory() -> int | None:
    """Bytes of memory available to this process now (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(n_bytes: int, name: str, value: float, what: str) -> None:
    """Refuse a request whose estimated memory exceeds the available memory.

    Raises:
        ValueError: naming ``name``, the estimate and the memory available.
    """
    avail = available_memory()
    if avail is not None and n_bytes > avail:
        raise ValueError(
            f"`{name}` = {value} needs about {n_bytes / 2**30:.3g} GiB for {what}, but only "
            f"{avail / 2**30:.3g} GiB of memory is available; use fewer points (at most about "
            f"{int(value * avail / n_bytes):d}) or split the work into several runs."
        )
