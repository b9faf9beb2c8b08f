"""Rows of an empirical-NTK computation split across the replicas of a ``tf.distribute`` strategy.

:func:`~cyntk.kernels.ntk.metric_ntk` and :func:`~cyntk.kernels.ntk.metric_ntk_vp`
called inside ``strategy.scope()`` (or given ``strategy=``) run one function per
replica with ``strategy.run``: replica r computes its own rows on its own device
(MirroredStrategy: one thread per local device; MultiWorkerMirroredStrategy: the
replicas of every worker), then the row blocks are joined -- in this process when
every replica is local, by ``strategy.gather`` across workers -- so the caller
(every worker's caller) holds the whole result.

Running in a replica context is also what a model built inside the scope needs:
its mirrored variables have no single value in the scope's cross-replica
context, and each replica reads its own copy.

The kernels layer has its own small helpers here (the flows' collectives live in
:mod:`cyntk.flows.distribute`, a layer above).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["distribution_strategy", "even_rows", "triangle_rows", "run_rows"]


def distribution_strategy(strategy: Any = None) -> Any:
    """The strategy whose replicas split the computation, or ``None`` to compute it here.

    Args:
        strategy: ``None`` -- the strategy of the current ``strategy.scope()``
            (Keras' convention), none outside a scope; or a
            ``tf.distribute.Strategy`` to split over, e.g.
            ``model.distribute_strategy`` from a callback (outside the scope).

    Returns:
        the strategy, or ``None`` outside any scope and in a replica context
        (inside ``strategy.run``, e.g. a replica's train step: every replica
        computes its own call, nothing is nested).

    Raises:
        TypeError: ``strategy`` is not a ``tf.distribute.Strategy``.
        ValueError: ``strategy`` differs from the strategy of the current scope.
    """
    if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            f"`strategy` must be None (the strategy of the current scope, if any) or a "
            f"tf.distribute.Strategy; received {type(strategy).__name__}."
        )
    scoped = tf.distribute.has_strategy()
    if scoped and not tf.distribute.in_cross_replica_context():
        return None  # a replica context: this replica computes its own call
    current = tf.distribute.get_strategy() if scoped else None
    if strategy is None:
        return current
    if current is not None and current is not strategy:
        raise ValueError(
            "`strategy` must be the strategy of the current scope when called inside a "
            f"strategy.scope(); received {type(strategy).__name__} inside the scope of "
            f"{type(current).__name__}. Pass strategy=None to use the scope's."
        )
    return strategy


def even_rows(n: int, replicas: int) -> list[slice]:
    """``replicas`` consecutive slices of ``range(n)`` whose sizes differ by at most one."""
    sizes = [n // replicas + (1 if r < n % replicas else 0) for r in range(replicas)]
    stops = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in zip(stops[:-1], stops[1:])]


def triangle_rows(n: int, replicas: int) -> list[slice]:
    """Consecutive row slices of an ``n x n`` upper triangle with (nearly) equal areas.

    Row ``i`` of the triangle (columns ``i..n-1``) has ``n - i`` entries, so the
    first replicas take fewer, longer rows.
    """
    area = np.cumsum(n - np.arange(n, dtype=np.float64))
    total = area[-1] if n else 0.0
    stops = [0]
    for r in range(1, replicas):
        stop = int(np.searchsorted(area, r * total / replicas, side="left")) + 1 if n else 0
        stops.append(min(max(stop, stops[-1]), n))
    stops.append(n)
    return [slice(a, b) for a, b in zip(stops[:-1], stops[1:])]


def run_rows(strategy: Any, block: Callable[[int, int, Any], tuple[np.ndarray, tuple[int, ...]]]) -> np.ndarray:
    """``block(r, R, ctx)`` on every replica (on its device), zero-padded to a common shape and gathered.

    Args:
        strategy: the ``tf.distribute.Strategy``.
        block: called once per replica, in its replica context, with the
            replica's global id ``r``, the number of replicas ``R`` and the
            replica context (for collectives such as ``ctx.all_reduce``, which
            every replica must then call alike). Returns ``(part, shape)``:
            the replica's rows and the padded shape common to every replica
            (``part`` has at most ``shape[0]`` rows and trailing axes ``shape[1:]``;
            every replica's part has the same dtype).

    Returns:
        ``(R * shape[0], *shape[1:])``: replica r's part, zero-padded, at rows
        ``r * shape[0] ...`` (the same array for the caller of every worker).
    """
    n_replicas = int(strategy.num_replicas_in_sync)

    def per_replica():
        ctx = tf.distribute.get_replica_context()
        rid = int(tf.get_static_value(ctx.replica_id_in_sync_group))
        part, shape = block(rid, n_replicas, ctx)
        part = np.asarray(part)
        shape = tuple(int(s) for s in shape)
        if part.shape[1:] != shape[1:] or part.shape[0] > shape[0]:
            raise ValueError(f"replica {rid}'s rows have shape {part.shape}; expected at most {shape}.")
        if part.shape != shape:
            part = np.concatenate([part, np.zeros((shape[0] - len(part), *shape[1:]), part.dtype)])
        return tf.constant(part)

    with strategy.scope():
        parts = strategy.run(per_replica)
        local = strategy.experimental_local_results(parts)
        if len(local) == n_replicas:  # every replica in this process (MirroredStrategy): no collective needed
            return np.concatenate([np.asarray(p) for p in local])
        return np.asarray(strategy.gather(parts, axis=0))  # across workers (MultiWorkerMirroredStrategy)
