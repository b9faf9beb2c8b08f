"""tf.distribute for kernel flows: which replica computes which shard, and the collectives that join them.

A :class:`~cyntk.flows.KernelModel` built inside ``strategy.scope()`` runs its
steps on every replica of the strategy (Keras' convention): each replica
takes its part of the batch, the optimizer sums the replicas' gradients of
the dual coefficients, and the kernel product of the update ``u += K d_alpha``
is split: replica r computes shard ``(r, R)`` of the product's tiles
(:class:`~cyntk.flows.tf_product.TFKernelProduct`) on its own device, and an
all-reduce sums the R partial products, so every replica holds the same
update and applies the same positive-definiteness decision.

Strategies:

* ``tf.distribute.MirroredStrategy()`` over the local GPUs, or over logical
  CPU devices (:func:`logical_cpus` before TensorFlow initialises);
* ``tf.distribute.MultiWorkerMirroredStrategy()`` across processes and
  machines, each started with its ``TF_CONFIG`` (:func:`tf_config`).

The helpers here are used inside the model's (traced) steps; they are no-ops
without a strategy.
"""

from __future__ import annotations

import json

import tensorflow as tf

__all__ = [
    "replica_context",
    "shard_of",
    "all_reduce_sum",
    "all_min",
    "multi_worker",
    "local_device",
    "logical_cpus",
    "tf_config",
    "WorkerLostError",
]


class WorkerLostError(RuntimeError):
    """A worker (or device) of the distribution strategy stopped answering during a flow."""


def multi_worker(strategy) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy with more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    check = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(check()) if callable(check) else True


def replica_context():
    """The replica context when more than one replica is in sync, else None."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def shard_of(ctx):
    """``(replica id tensor int32, number of replicas)`` of a replica context (``(0, 1)`` for None)."""
    if ctx is None:
        return tf.constant(0, tf.int32), 1
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32), int(ctx.num_replicas_in_sync)


def all_reduce_sum(ctx, x):
    """Sum of ``x`` over the replicas (``x`` itself without a context)."""
    return x if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def all_min(ctx, x):
    """Smallest entry of ``x`` over every replica (a scalar)."""
    m = tf.reduce_min(x)
    if ctx is None:
        return m
    return tf.reduce_min(ctx.all_gather(tf.reshape(m, [1]), axis=0))


def local_device(strategy, replica_id: int) -> str | None:
    """The device of a (global) replica id on this worker, or None without a strategy."""
    if strategy is None:
        return None
    devices = tuple(getattr(strategy.extended, "worker_devices", ()) or ())
    if len(devices) <= 1:
        return devices[0] if devices else None
    return devices[int(replica_id) % len(devices)]


def logical_cpus(n: int) -> list:
    """Split the first CPU into ``n`` logical devices (call before TensorFlow initialises its devices).

    ``tf.distribute.MirroredStrategy(logical_cpus(2))`` then runs two replicas
    on one machine's cores (for tests, and to measure distribution overhead).

    Args:
        n: number of logical CPU devices (>= 1).

    Returns:
        the device names, e.g. ``["/device:CPU:0", "/device:CPU:1"]``.

    Raises:
        ValueError: ``n < 1``. RuntimeError: TensorFlow's devices were already
            initialised with another configuration.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` (logical CPU devices) must be an integer >= 1; received {n!r}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is None or len(current) != n:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError as err:
            raise RuntimeError(
                f"cannot split the CPU into {n} logical devices: TensorFlow has already initialised its "
                "devices. Call cyntk.flows.distribute.logical_cpus first thing in the process (before any "
                f"tensor is created). ({err})"
            ) from err
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def tf_config(workers: list[str], index: int) -> str:
    """The ``TF_CONFIG`` (JSON) of worker ``index`` of a MultiWorkerMirroredStrategy cluster.

    Args:
        workers: ``"host:port"`` of every worker, the chief (index 0) first.
        index: this process's position in ``workers``.

    Returns:
        the JSON string to put in the environment variable ``TF_CONFIG``.
    """
    if not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise ValueError(f"`workers` must be a non-empty list of 'host:port' strings; received {workers!r}.")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(workers):
        raise ValueError(f"`index` must be an integer in [0, {len(workers)}); received {index!r}.")
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})
