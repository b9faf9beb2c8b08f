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

__all__ = ["PositivityGuard", "Chunking", "NON_POSITIVE_POLICIES"]

#: Accepted values of ``on_non_positive``.
NON_POSITIVE_POLICIES = ("raise", "stop", "backoff")


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
    """How the kernel products and network evaluations are cut into pieces.

    Args:
        tile_size: points per side of a kernel tile (:class:`~cyntk.flows.KernelProduct`).
        n_threads: worker threads of the tiled products (None: the cores
            available to this process).
        chunk_size: points per chunk of base-metric and network evaluations
            (the name the kernels use for the same thing).
    """

    tile_size: int = 256
    n_threads: int | None = None
    chunk_size: int = 8192

    def __post_init__(self):
        object.__setattr__(self, "tile_size", positive_int(self.tile_size, "tile_size"))
        if self.n_threads is not None:
            object.__setattr__(self, "n_threads", positive_int(self.n_threads, "n_threads"))
        object.__setattr__(self, "chunk_size", positive_int(self.chunk_size, "chunk_size"))


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
