"""Option groups of :class:`~cyntk.flows.KernelModel`: the positive-definiteness guard and chunking.

Each group is a small frozen dataclass that validates itself, so a setting can
be built once, shared between models and printed::

    guard = PositivityGuard(on_non_positive="backoff", backoff_factor=0.5)
    chunks = Chunking(tile_size=512, n_threads=2)
    KernelModel(kernel, x, M, guard=guard, chunking=chunks)

The same options may also be given to ``KernelModel`` as flat keywords
(``on_non_positive=...``, ``tile_size=...``), but not both ways at once.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cyntk._validation import one_of, positive_int

__all__ = ["PositivityGuard", "Chunking", "NON_POSITIVE_POLICIES", "ENGINES"]

#: Accepted values of ``on_non_positive``.
NON_POSITIVE_POLICIES = ("raise", "stop", "backoff")
#: Kernel-product engines: TensorFlow tiles on any device (default), or the NumPy reference.
ENGINES = ("tf", "numpy")


@dataclasses.dataclass(frozen=True)
class PositivityGuard:
    """What a flow step does when it would make a metric non-positive-definite.

    Args:
        on_non_positive: ``"raise"`` (discard the step, raise
            :class:`~cyntk.flows.NonPositiveMetricError`), ``"stop"`` (discard
            it and stop training) or ``"backoff"`` (scale the step by
            ``backoff_factor**k`` with the smallest k that keeps every checked
            metric valid).
        backoff_factor: step scale per backoff, in (0, 1).
        max_backoffs: largest number of backoffs per step (> 0).
        eigenvalue_floor: a metric is valid where its smallest eigenvalue
            exceeds this (>= 0).
    """

    on_non_positive: str = "raise"
    backoff_factor: float = 0.5
    max_backoffs: int = 30
    eigenvalue_floor: float = 0.0

    def __post_init__(self):
        one_of(self.on_non_positive, "on_non_positive", NON_POSITIVE_POLICIES)
        try:
            factor = float(self.backoff_factor)
        except (TypeError, ValueError):
            raise TypeError(f"`backoff_factor` must be a number in (0, 1); received {self.backoff_factor!r}.") from None
        if not 0.0 < factor < 1.0:
            raise ValueError(f"`backoff_factor` must be in (0, 1); received {self.backoff_factor!r}.")
        floor = float(self.eigenvalue_floor)
        if not np.isfinite(floor) or floor < 0:
            raise ValueError(f"`eigenvalue_floor` must be a finite number >= 0; received {self.eigenvalue_floor!r}.")
        object.__setattr__(self, "backoff_factor", factor)
        object.__setattr__(self, "max_backoffs", positive_int(self.max_backoffs, "max_backoffs"))
        object.__setattr__(self, "eigenvalue_floor", floor)


@dataclasses.dataclass(frozen=True)
class Chunking:
    """How the kernel products and network evaluations are cut into pieces, and where they run.

    Args:
        tile_size: largest number of points per side of a kernel tile (None:
            the engine's default: 256 for NumPy tiles, 2048 for XLA tiles on a
            CPU, 8192 on a GPU).
        n_threads: concurrent tile workers of a product (None: the cores
            available to this process; 2 per GPU).
        chunk_size: points per chunk of base-metric and network evaluations
            (the name the kernels use for the same thing).
        engine: ``"tf"`` (:class:`~cyntk.flows.tf_product.TFKernelProduct`,
            XLA-compiled TensorFlow tiles on any device, shardable across the
            replicas of a ``tf.distribute`` strategy) or ``"numpy"`` (the
            reference :class:`~cyntk.flows.product.KernelProduct`, one device,
            kept to test the TF engine against).
        device: TensorFlow device of the tiles (e.g. ``"/GPU:0"``; None:
            TensorFlow's placement, or each replica's own device under a
            strategy). ``engine="tf"`` only.
        tiles: the tiles of ``engine="tf"``: ``"auto"`` (XLA-compiled
            TensorFlow tiles on a GPU and, on CPUs, where they measured faster
            (the ReLU NTK); NumPy tiles otherwise: the fused tiles of
            :mod:`cyntk.flows.host_tiles` for the Gaussian-FS kernel, the
            kernels' NumPy blocks for others), ``"xla"`` or ``"numpy"``
            (:class:`~cyntk.flows.tf_product.TFKernelProduct`).
    """

    tile_size: int | None = None
    n_threads: int | None = None
    chunk_size: int = 8192
    engine: str = "tf"
    device: str | None = None
    tiles: str = "auto"

    def __post_init__(self):
        if self.tile_size is not None:
            object.__setattr__(self, "tile_size", positive_int(self.tile_size, "tile_size"))
        if self.n_threads is not None:
            object.__setattr__(self, "n_threads", positive_int(self.n_threads, "n_threads"))
        object.__setattr__(self, "chunk_size", positive_int(self.chunk_size, "chunk_size"))
        one_of(self.engine, "engine", ENGINES)
        one_of(self.tiles, "tiles", ("auto", "xla", "numpy"))
        if self.device is not None:
            if not isinstance(self.device, str) or not self.device:
                raise TypeError(f"`device` must be None or a device name such as '/GPU:0'; received {self.device!r}.")
            if self.engine != "tf":
                raise ValueError(
                    f"`device` needs engine='tf' (the NumPy engine runs on the host); received {self.device!r}."
                )


def resolve_group(cls, group, name: str, flat: dict, aliases: dict | None = None):
    """The option group from ``group`` or from flat keywords (not both); None flat values are unset."""
    given = {aliases.get(k, k) if aliases else k: v for k, v in flat.items() if v is not None}
    if group is not None:
        if not isinstance(group, cls):
            raise TypeError(f"`{name}` must be a {cls.__name__}; received {type(group).__name__}.")
        if given:
            raise ValueError(
                f"give the options {sorted(flat)} either in `{name}` ({cls.__name__}) or as keywords, not both; "
                f"received `{name}` and {sorted(k for k, v in flat.items() if v is not None)}."
            )
        return group
    return cls(**given)
