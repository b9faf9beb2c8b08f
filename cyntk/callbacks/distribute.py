"""Which process of a distributed training writes the metric-NTK files.

Under ``tf.distribute.MirroredStrategy`` (one process, several devices) Keras
runs callbacks once, on the host, so the kernel is computed and written once
whatever the number of replicas. Under ``MultiWorkerMirroredStrategy`` every
worker process runs its own copy of the callbacks: all of them compute the
kernel (the weights are the same on every worker, so are the measures, and
callbacks such as ``EarlyStopping`` monitoring an ``ntk_*`` key take the same
decision everywhere), but only the chief writes files.

When the trained model was built under a strategy with more than one
replica, each record's kernel is split across the replicas by default: the
callback passes ``strategy=model.distribute_strategy`` to
:func:`cyntk.kernels.metric_ntk` (or to an ``ntk_fn`` with a ``strategy``
parameter), which computes each replica's rows on its own device and gathers
them, so every worker still holds the whole kernel (and the same measures)
while the work is done once in all. Every worker runs the callback, as the
collectives need. ``ntk_kwargs={"strategy": None}`` opts out: every worker
(or the one process) then computes the whole kernel itself.

:func:`is_chief` decides, without importing TensorFlow when it has not been
imported: from the strategy's cluster resolver (``task_type``/``task_id``) or
``extended.should_checkpoint``, else from the ``TF_CONFIG`` environment
variable, else ``True`` (a single process).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

__all__ = ["is_chief", "current_strategy"]


def current_strategy(model: Any = None) -> Any:
    """The ``tf.distribute`` strategy of ``model`` (or the current scope's), or ``None``.

    ``None`` when TensorFlow was never imported or only the default strategy is active.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    strategy = None
    if model is not None:
        strategy = getattr(model, "_distribute_strategy", None)
    if strategy is None:
        try:
            strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        except Exception:  # noqa: BLE001 - a TensorFlow without tf.distribute: no strategy
            strategy = None
    return strategy


def _chief_of(task_type: str | None, task_id: int | None, cluster: dict | None) -> bool:
    """Multi-worker convention: the ``chief`` task, or worker 0 when the cluster has no chief."""
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    if task_type == "worker":
        return int(task_id or 0) == 0 and not (cluster and cluster.get("chief"))
    return False  # evaluator, ps


def is_chief(strategy: Any = None) -> bool:
    """Whether this process writes files (``True`` outside multi-worker training).

    Args:
        strategy: a ``tf.distribute`` strategy (e.g. ``model.distribute_strategy``),
            or ``None`` for the strategy of the current scope, if any.
    """
    if strategy is None:
        strategy = current_strategy()
    if strategy is not None:
        extended = getattr(strategy, "extended", None)
        should = getattr(extended, "should_checkpoint", None)
        resolver: Any = getattr(strategy, "cluster_resolver", None)
        task_type = getattr(resolver, "task_type", None)
        if task_type is not None:
            task_id = getattr(resolver, "task_id", 0)
            try:
                spec = resolver.cluster_spec().as_dict()
            except Exception:  # noqa: BLE001 - a resolver without a readable cluster spec
                spec = None
            return _chief_of(task_type, task_id, spec)
        if isinstance(should, bool):
            return should
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            config = json.loads(raw)
            task = config.get("task") or {}
            return _chief_of(task.get("type"), task.get("index", 0), config.get("cluster"))
        except (ValueError, AttributeError, TypeError):
            return True
    return True
