"""The fixed points a metric-NTK is tracked on, and the targets aligned with them.

:func:`select_points` turns the ``train_points``/``test_points`` arguments of
:class:`~cyntk.callbacks.MetricNTKTracker` (arrays, or counts drawn once from
``data``) into two float64 (P, d) arrays; :func:`align_targets` checks the
optional train targets and indexes them like the train points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cyntk import _validation as _checks

__all__ = ["select_points", "align_targets"]


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def select_points(
    train_points: Any, test_points: Any, data: Any = None, seed: Any = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The fixed train and test points.

    Args:
        train_points: real array (P_train, d), or an int, the number of points
            drawn once from ``data``.
        test_points: real array (P_test, d) or an int.
        data: the pool counts are drawn from (without replacement, with
            ``numpy.random.default_rng(seed)``): a ``CYDataset`` or anything with
            ``X_train``/``X_val``, a mapping with those keys, a pair of arrays, or
            one (N, d) array (both sets drawn from it, disjoint).
        seed: seed of the draw.

    Returns:
        ``(x_train, x_test, train_index)``: float64 arrays (P_train, d) and
        (P_test, d), and the indices of the train points in the train pool
        (``None`` when the train points were given as an array).
    """
    counts = [_is_count(p) for p in (train_points, test_points)]
    if not any(counts):
        if data is not None:
            raise ValueError(
                "`data` is only used when `train_points`/`test_points` are counts; "
                "received arrays of points and `data`. Pass one or the other."
            )
        x_train = _checks.real_points(train_points, "train_points")
        x_test = _checks.real_points(test_points, "test_points")
        index = None
    else:
        if data is None:
            raise ValueError(
                "`train_points`/`test_points` given as counts need `data` to draw the "
                "points from (a CYDataset, a dict with 'X_train'/'X_val', a pair of "
                "arrays or one (N, d) array); received data=None."
            )
        pool_train, pool_test = _checks.data_pools(data)
        pool_train = _checks.real_points(pool_train, "data (train pool)")
        shared = pool_test is None
        pool_test = pool_train if shared else _checks.real_points(pool_test, "data (test pool)")
        rng = np.random.default_rng(seed)
        n_tr = _checks.positive_int(train_points, "train_points", "number of train points") if counts[0] else None
        n_te = _checks.positive_int(test_points, "test_points", "number of test points") if counts[1] else None
        for n, name in ((n_tr, "train_points"), (n_te, "test_points")):
            if n is not None and n < 2:
                raise ValueError(f"`{name}` must be at least 2 (a kernel block needs P >= 2); received {n}.")
        if shared and n_tr is not None and n_te is not None:
            if n_tr + n_te > len(pool_train):
                raise ValueError(
                    f"`data` has {len(pool_train)} points; cannot draw "
                    f"train_points={n_tr} + test_points={n_te} disjoint points."
                )
            perm = rng.choice(len(pool_train), size=n_tr + n_te, replace=False)
            index = perm[:n_tr]
            x_train, x_test = pool_train[index], pool_train[perm[n_tr:]]
        else:
            if n_tr is not None:
                if n_tr > len(pool_train):
                    raise ValueError(f"`train_points`={n_tr} exceeds the {len(pool_train)} points available in `data`.")
                index = rng.choice(len(pool_train), size=n_tr, replace=False)
                x_train = pool_train[index]
            else:
                index = None
                x_train = _checks.real_points(train_points, "train_points")
            if n_te is not None:
                if n_te > len(pool_test):
                    raise ValueError(f"`test_points`={n_te} exceeds the {len(pool_test)} points available in `data`.")
                x_test = pool_test[rng.choice(len(pool_test), size=n_te, replace=False)]
            else:
                x_test = _checks.real_points(test_points, "test_points")
        x_train, x_test = np.array(x_train), np.array(x_test)
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"`train_points` and `test_points` must have the same width d (shape "
            f"(P, d)); received d={x_train.shape[1]} and d={x_test.shape[1]}."
        )
    return x_train, x_test, index


def align_targets(train_targets: Any, train_index: np.ndarray | None, n_train: int) -> np.ndarray | None:
    """Validated float64 (P_train, m) targets at the train points, or ``None``.

    Args:
        train_targets: ``None``, a real array (P_train, m) (or (P_train,)), or
            complex (P_train, n, n) metrics (converted to their m = n**2 real
            components, :mod:`cyntk.geometry.components`). With train points
            drawn from a pool (``train_index`` given), aligned with that pool.
        train_index: indices of the train points in their pool, or ``None``.
        n_train: number of train points.
    """
    if train_targets is None:
        return None
    y = np.asarray(train_targets.numpy() if hasattr(train_targets, "numpy") else train_targets)
    if y.dtype == object or not np.issubdtype(y.dtype, np.number):
        raise TypeError(f"`train_targets` must be numeric; received dtype {y.dtype}.")
    if np.iscomplexobj(y):
        if y.ndim != 3 or y.shape[1] != y.shape[2]:
            raise ValueError(f"complex `train_targets` must be metrics of shape (P, n, n); received shape {y.shape}.")
        from cyntk.geometry import components_from_hermitian

        y = components_from_hermitian(y)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(
            f"`train_targets` must have shape (P_train, m) (or complex (P_train, n, n)); received shape {y.shape}."
        )
    if train_index is not None:
        if y.shape[0] <= int(np.max(train_index)):
            raise ValueError(
                f"with a count of train points, `train_targets` must be aligned with the "
                f"pool they are drawn from; received {y.shape[0]} rows, fewer than the "
                f"pool's drawn index {int(np.max(train_index))}."
            )
        y = y[train_index]
    elif y.shape[0] != n_train:
        raise ValueError(f"`train_targets` must have one row per train point ({n_train}); received shape {y.shape}.")
    if not np.all(np.isfinite(y)):
        raise ValueError("`train_targets` must be finite; received NaN or inf entries.")
    return np.array(y, dtype=np.float64)
