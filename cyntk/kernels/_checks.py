"""Argument validation shared by cyntk.kernels (clear errors, never asserts)."""

from __future__ import annotations

import numbers

import numpy as np


def as_real_points(x, name: str, *, dtype=np.float64, allow_vector: bool = False) -> np.ndarray:
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
            "cyntk.geometry.to_real(z).")
    if arr.ndim == 1 and allow_vector:
        arr = arr[None, :]
    if arr.ndim != 2:
        expected = "(P, d) or (d,)" if allow_vector else "(P, d)"
        raise ValueError(f"`{name}` must have shape {expected}; received shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` must contain at least one point; received an empty set of "
                         f"shape {arr.shape}.")
    if arr.shape[1] == 0:
        raise ValueError(f"`{name}` must have at least one coordinate per point; received shape "
                         f"{arr.shape}.")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"`{name}` must be finite; received {bad.size} point(s) with NaN or inf coordinates "
            f"(first at row {int(bad[0])}). Remove or regenerate them.")
    return np.ascontiguousarray(arr, dtype=dtype)


def matching_widths(x1: np.ndarray, x2: np.ndarray, name1: str = "x1", name2: str = "x2") -> None:
    """Raise if two point sets have different input widths."""
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(
            f"`{name1}` and `{name2}` must have the same input width d (shape (P, d)); received "
            f"d={x1.shape[1]} for `{name1}` and d={x2.shape[1]} for `{name2}`.")


def optional_chunk_size(chunk_size, name: str = "chunk_size") -> int | None:
    """``None`` or a positive integer (number of points per chunk)."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer (points per chunk) or None; "
                        f"received {chunk_size!r}.")
    if chunk_size <= 0:
        raise ValueError(f"`{name}` must be a positive integer (points per chunk) or None; "
                         f"received {chunk_size}.")
    return int(chunk_size)


def positive_float(value, name: str) -> float:
    """A finite float > 0."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a positive number; received {value!r}.") from None
    if not np.isfinite(out) or out <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0; received {value!r}.")
    return out


def nonnegative_float(value, name: str) -> float:
    """A finite float >= 0."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a non-negative number; received {value!r}.") from None
    if not np.isfinite(out) or out < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0; received {value!r}.")
    return out


def positive_int(value, name: str) -> int:
    """An integer > 0 (bools rejected)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer; received {value!r}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {value}.")
    return int(value)


def one_of(value, name: str, choices) -> str:
    """A string among ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(c) for c in choices)}; "
                         f"received {value!r}.")
    return value
