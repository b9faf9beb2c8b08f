"""Argument validation shared by cyntk.geometry (clear errors, never asserts)."""

from __future__ import annotations

import numpy as np


def as_points(z, name: str = "z", ncoords: int | None = None, allow_real: bool = True) -> np.ndarray:
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
            f"`{name}` must have shape (P, N) (complex) or (P, 2N) (real [Re z, Im z]); "
            f"received shape {np.shape(z)}.")
    if not np.iscomplexobj(arr):
        if ncoords is not None and arr.shape[1] == 2 * ncoords and allow_real:
            arr = arr[:, :ncoords] + 1j * arr[:, ncoords:]
        elif ncoords is not None:
            raise ValueError(
                f"`{name}` must be complex with shape (P, {ncoords}) or real with shape "
                f"(P, {2 * ncoords}); received real array of shape {arr.shape}.")
        else:
            arr = arr.astype(np.complex128)
    if ncoords is not None and arr.shape[1] != ncoords:
        raise ValueError(
            f"`{name}` must have {ncoords} homogeneous coordinates per point (shape (P, {ncoords})); "
            f"received shape {arr.shape}.")
    arr = arr.astype(np.complex128, copy=False)
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(f"`{name}` contains {bad} point(s) with NaN or inf coordinates; "
                         "remove or regenerate them.")
    return arr


def positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) and not (
            isinstance(value, float) and float(value).is_integer()):
        raise TypeError(f"`{name}` must be a positive integer; received {value!r}.")
    value = int(value)
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {value}.")
    return value


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
        import os
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(n_bytes: int, name: str, value, what: str) -> None:
    """Refuse a request whose estimated memory exceeds the available memory.

    Raises:
        ValueError: naming ``name``, the estimate and the memory available.
    """
    avail = available_memory()
    if avail is not None and n_bytes > avail:
        raise ValueError(
            f"`{name}` = {value} needs about {n_bytes / 2**30:.3g} GiB for {what}, but only "
            f"{avail / 2**30:.3g} GiB of memory is available; use fewer points (at most about "
            f"{int(value * avail / n_bytes):d}) or split the work into several runs.")
