"""The measures of one metric-NTK record: block spectra and their distances to the reference and previous record.

:class:`NTKMeasures` turns a kernel Theta (P, P, m, m) on train then test points
into the spectra and the ``ntk_*`` scalars of
:class:`~cyntk.callbacks.MetricNTKTracker`, reading the reference (first) and
previous records from a :class:`~cyntk.callbacks.MetricNTKHistory`. Pure NumPy
(the formulas are in :mod:`cyntk.callbacks.spectra`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cyntk.callbacks.history import MetricNTKHistory
from cyntk.callbacks.options import BLOCKS, MeasureOptions
from cyntk.callbacks.spectra import (
    full_spectrum,
    kernel_distance,
    log_spectrum,
    pooled_block_spectrum,
    relative_frobenius_change,
    wasserstein,
)

__all__ = ["NTKMeasures", "BLOCKS", "SYMMETRIC", "nan_safe"]

#: The symmetric blocks (those with a full spectrum).
SYMMETRIC = ("train_train", "test_test")


def nan_safe(fn: Callable[..., Any], *args: Any) -> float:
    """``fn(*args)``, or NaN when an array argument is not finite (diverged training)."""
    for a in args:
        if isinstance(a, np.ndarray) and not np.all(np.isfinite(a)):
            return math.nan
    return float(fn(*args))


class NTKMeasures:
    """Spectra and scalar measures of kernels on ``n_train`` train then test points.

    Args:
        options: what is recorded.
        kinds: block -> spectrum kind of its pooled spectrum.
        n_train: number of train points (the kernel's first ``n_train`` rows).
        history: the history holding the reference and previous records.
    """

    def __init__(self, options: MeasureOptions, kinds: dict[str, str], n_train: int, history: MetricNTKHistory):
        self.options = options
        self.kinds = dict(kinds)
        self.n_train = int(n_train)
        self.history = history
        self._ref64: np.ndarray | None = None  # float64 reference kernel

    # ------------------------------------------------------------------ keys
    def log_keys(self, alignment_keys: list[str]) -> list[str]:
        """The keys that go into ``logs``."""
        o = self.options
        if o.log_all_blocks:
            return [k for k in self.scalar_keys(alignment_keys) if k != "ntk_seconds"]
        b = o.block
        keys = [
            f"ntk_wasserstein_{b}",
            f"ntk_wasserstein_step_{b}",
            f"ntk_frobenius_{b}",
            f"ntk_kernel_distance_{b}",
            "ntk_full_wasserstein_train_train",
        ]
        if o.log_spectrum:
            keys.append(f"ntk_log_wasserstein_{b}")
        return keys + alignment_keys

    def scalar_keys(self, alignment_keys: list[str]) -> list[str]:
        """Every scalar key of a record, ``ntk_seconds`` last."""
        keys = []
        for b in BLOCKS:
            keys += [
                f"ntk_wasserstein_{b}",
                f"ntk_wasserstein_step_{b}",
                f"ntk_frobenius_{b}",
                f"ntk_frobenius_step_{b}",
                f"ntk_kernel_distance_{b}",
                f"ntk_norm_{b}",
            ]
            if self.options.log_spectrum:
                keys.append(f"ntk_log_wasserstein_{b}")
        for b in SYMMETRIC:
            keys += [f"ntk_full_wasserstein_{b}", f"ntk_full_wasserstein_step_{b}"]
            if self.options.log_spectrum:
                keys.append(f"ntk_full_log_wasserstein_{b}")
        return keys + alignment_keys + ["ntk_seconds"]

    # --------------------------------------------------------------- spectra
    def split(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """The blocks ``train_train``, ``test_test`` and ``train_test`` of a kernel."""
        p = self.n_train
        return {"train_train": theta[:p, :p], "test_test": theta[p:, p:], "train_test": theta[:p, p:]}

    def spectra(self, blocks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Pooled spectrum of every block and full spectrum of the symmetric ones."""
        out = {}
        for b in BLOCKS:
            out[f"pooled_{b}"] = pooled_block_spectrum(blocks[b], self.kinds[b], symmetric=b in SYMMETRIC)
        for b in SYMMETRIC:
            out[f"full_{b}"] = full_spectrum(blocks[b])
        return out

    def log_floors(self, ref_spectra: dict[str, np.ndarray]) -> dict[str, float]:
        """Floor of each log spectrum: ``log_floor`` x its largest |value| at the reference (kept in meta)."""
        floors = self.history.meta.get("log_floors")
        if floors is None:
            floors = {
                k: self.options.log_floor * max(float(np.max(np.abs(v))), np.finfo(np.float64).tiny)
                for k, v in ref_spectra.items()
            }
            self.history.meta["log_floors"] = floors
        return floors

    # -------------------------------------------------------------- measures
    def compute(
        self, theta64: np.ndarray, finite: bool, first: bool, previous: np.ndarray | None
    ) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, float] | None]:
        """Scalars, spectra and log floors of one float64 kernel.

        Args:
            theta64: the kernel (P, P, m, m), float64.
            finite: whether it is finite (else its spectra are NaN).
            first: whether it is the reference record.
            previous: the previous record's kernel, or ``None`` when unknown
                (then the ``ntk_frobenius_step_*`` measures are NaN).
        """
        blocks = self.split(theta64)
        if finite:
            spectra = self.spectra(blocks)
        else:
            spectra = {k: np.full_like(v[0], np.nan) for k, v in self.history.spectra.items()}
        if first:
            self._ref64 = theta64
            ref_spectra, prev_spectra = spectra, spectra
            previous = theta64
        else:
            ref_spectra = {k: v[0] for k, v in self.history.spectra.items()}
            prev_spectra = {k: v[-1] for k, v in self.history.spectra.items()}
        if self._ref64 is None:
            self._ref64 = self.history.arrays["theta_reference"].astype(np.float64)
        ref_blocks = self.split(self._ref64)
        prev_blocks = self.split(previous) if previous is not None else None

        o = self.options
        p = o.wasserstein_p
        scalars: dict[str, float] = {}
        floors = self.log_floors(ref_spectra) if o.log_spectrum else None

        def log_w(f: float) -> Callable[[np.ndarray, np.ndarray], float]:
            return lambda u, v: wasserstein(log_spectrum(u, f), log_spectrum(v, f), p)

        for b in BLOCKS:
            s, s0 = spectra[f"pooled_{b}"], ref_spectra[f"pooled_{b}"]
            scalars[f"ntk_wasserstein_{b}"] = nan_safe(wasserstein, s, s0, p)
            scalars[f"ntk_wasserstein_step_{b}"] = nan_safe(wasserstein, s, prev_spectra[f"pooled_{b}"], p)
            if floors is not None:
                scalars[f"ntk_log_wasserstein_{b}"] = nan_safe(log_w(floors[f"pooled_{b}"]), s, s0)
            scalars[f"ntk_frobenius_{b}"] = nan_safe(relative_frobenius_change, blocks[b], ref_blocks[b])
            scalars[f"ntk_frobenius_step_{b}"] = (
                nan_safe(relative_frobenius_change, blocks[b], prev_blocks[b]) if prev_blocks else math.nan
            )
            scalars[f"ntk_kernel_distance_{b}"] = nan_safe(kernel_distance, blocks[b], ref_blocks[b])
            scalars[f"ntk_norm_{b}"] = float(np.linalg.norm(blocks[b].reshape(-1)))
        for b in SYMMETRIC:
            s, s0 = spectra[f"full_{b}"], ref_spectra[f"full_{b}"]
            scalars[f"ntk_full_wasserstein_{b}"] = nan_safe(wasserstein, s, s0, p)
            scalars[f"ntk_full_wasserstein_step_{b}"] = nan_safe(wasserstein, s, prev_spectra[f"full_{b}"], p)
            if floors is not None:
                scalars[f"ntk_full_log_wasserstein_{b}"] = nan_safe(log_w(floors[f"full_{b}"]), s, s0)
        return scalars, spectra, floors
