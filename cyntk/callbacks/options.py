"""The settings of a metric-NTK run, in two groups: what is recorded, and where it is written.

:class:`MeasureOptions` (what is recorded) and :class:`OutputOptions` (where it
goes) are validated once, when created. :class:`~cyntk.callbacks.MetricNTKTracker`
takes both; :class:`~cyntk.callbacks.MetricNTKCallback` takes them too
(``measures=``, ``output=``) or builds them from its individual keywords
(``block=``, ``log_dir=``, ...), which keep working.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cyntk import _validation as _checks
from cyntk.callbacks.spectra import SPECTRUM_KINDS

__all__ = ["MeasureOptions", "OutputOptions", "BLOCKS", "ON_ERROR", "SUBDIR"]

#: The three kernel blocks, in the order train-train, test-test, train-test.
BLOCKS = ("train_train", "test_test", "train_test")

#: Accepted values of ``on_error``: a failed record warns and training goes on, or raises.
ON_ERROR = ("warn", "raise")

#: Folder of a run's metric-NTK files (events, history, kernels) under its ``log_dir``.
SUBDIR = "metric_ntk"


@dataclass(frozen=True)
class MeasureOptions:
    """What each record computes and reports.

    Attributes:
        block: the block whose measures go into ``logs`` and Figure 4:
            ``"train_test"`` (default; the paper's Theta(x_train, x_test)),
            ``"train_train"`` or ``"test_test"``.
        spectrum: ``"eigenvalues"`` (real parts) or ``"singular_values"`` for the
            pooled per-(I, J) spectra.
        wasserstein_p: order p >= 1 of the Wasserstein distance.
        log_spectrum: also compute distances between log10 spectra.
        log_floor: relative floor of the log spectra, in (0, 1).
        log_all_blocks: put every measure into ``logs`` (default: the ``block`` summary).
    """

    block: str = "train_test"
    spectrum: str = "eigenvalues"
    wasserstein_p: float = 1.0
    log_spectrum: bool = False
    log_floor: float = 1e-10
    log_all_blocks: bool = False

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"`block` must be one of {BLOCKS}; received {self.block!r}.")
        if self.spectrum not in SPECTRUM_KINDS:
            raise ValueError(f"`spectrum` must be one of {SPECTRUM_KINDS}; received {self.spectrum!r}.")
        try:
            p = float(self.wasserstein_p)
        except (TypeError, ValueError):
            raise TypeError(f"`wasserstein_p` must be a number >= 1; received {self.wasserstein_p!r}.") from None
        if not math.isfinite(p) or p < 1:
            raise ValueError(f"`wasserstein_p` must be a finite number >= 1; received {self.wasserstein_p!r}.")
        floor = float(self.log_floor)
        if not math.isfinite(floor) or not 0 < floor < 1:
            raise ValueError(
                f"`log_floor` must be a number in (0, 1) (relative to the largest "
                f"|eigenvalue|); received {self.log_floor!r}."
            )
        object.__setattr__(self, "wasserstein_p", p)
        object.__setattr__(self, "log_floor", floor)
        object.__setattr__(self, "log_spectrum", bool(self.log_spectrum))
        object.__setattr__(self, "log_all_blocks", bool(self.log_all_blocks))


@dataclass(frozen=True)
class OutputOptions:
    """Where a run is written (nothing when every field is left at its default).

    Attributes:
        log_dir: directory of the run (as given to ``keras.callbacks.TensorBoard``):
            TensorBoard events and, by default, the history go to ``log_dir/metric_ntk/``.
        history_path: where the history is saved (default
            ``log_dir/metric_ntk/history.npz``; ``.npz`` is appended if missing).
        save_kernels: also save the raw kernel of every record
            (``kernels/epoch_XXXXXX.npz`` beside the history).
        histogram_bins: buckets of the TensorBoard histograms.
        image_every: also write the Figure-4 image every this many records
            (``None``: only at the end of training).
    """

    log_dir: Path | None = None
    history_path: Path | None = None
    save_kernels: bool = False
    histogram_bins: int = 30
    image_every: int | None = None

    def __post_init__(self) -> None:
        log_dir = None if self.log_dir is None else _checks.writable_dir(self.log_dir, "log_dir")
        history_path: Any = self.history_path
        if history_path is None and log_dir is not None:
            history_path = log_dir / SUBDIR / "history.npz"
        if history_path is not None:
            history_path = Path(os.fspath(history_path))
            if history_path.suffix != ".npz":
                history_path = history_path.with_name(history_path.name + ".npz")
            _checks.writable_dir(history_path.parent, "history_path")
        object.__setattr__(self, "log_dir", log_dir)
        object.__setattr__(self, "history_path", history_path)
        object.__setattr__(
            self,
            "histogram_bins",
            _checks.positive_int(self.histogram_bins, "histogram_bins", "histogram buckets"),
        )
        if self.image_every is not None:
            every = _checks.positive_int(self.image_every, "image_every", "records between Figure-4 images")
            object.__setattr__(self, "image_every", every)
        object.__setattr__(self, "save_kernels", bool(self.save_kernels))
        if self.save_kernels and history_path is None:
            raise ValueError("`save_kernels=True` needs a place to write: pass `log_dir` or `history_path`.")


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default value of an options dataclass."""
    return {f.name: f.default for f in fields(cls)}
