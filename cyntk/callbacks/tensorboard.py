"""TensorBoard output of the metric-NTK tracker: scalars, spectrum histograms, the Figure-4 image.

:class:`MetricNTKWriter` writes real TensorFlow event files under
``log_dir/metric_ntk/`` (beside the ``train/`` and ``validation/`` folders of
Keras' own ``TensorBoard`` callback). One ``tf.summary`` file writer is kept
open per run, created lazily at the first write, so a training split over
several ``fit`` calls gives one event file.

It is called with each new record of a :class:`~cyntk.callbacks.MetricNTKTracker`
(``tracker = MetricNTKTracker(..., sinks=[writer])``, or
``writer.write_record(tracker.last_record, tracker.history)`` by hand).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cyntk import _validation as _checks
from cyntk.callbacks.options import SUBDIR
from cyntk.callbacks.spectra import log_spectrum

if TYPE_CHECKING:
    from cyntk.callbacks.history import MetricNTKHistory
    from cyntk.callbacks.tracker import NTKRecord

__all__ = ["MetricNTKWriter", "histogram_buckets", "SUBDIR"]

_FIGURE_DESCRIPTION = (
    "metric-NTK spectrum at the first vs latest record, and W_p to epoch 0 (Figure 4 of arXiv:2310.19870)"
)


def histogram_buckets(values: Any, bins: int) -> np.ndarray:
    """TensorBoard histogram tensor: float64 (bins, 3) rows [left edge, right edge, count].

    Same convention as ``tf.summary.histogram``: ``bins`` equal-width buckets
    from min to max (the last one closed); all values equal -> every edge at
    that value and the whole count in the last bucket.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    lo, hi = float(v.min()), float(v.max())
    if hi == lo:
        out = np.zeros((bins, 3))
        out[:, :2] = lo
        out[-1, 2] = v.size
        return out
    idx = np.minimum(np.floor((v - lo) / ((hi - lo) / bins)).astype(np.int64), bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    edges = np.linspace(lo, hi, bins + 1)
    edges[-1] = hi
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


class MetricNTKWriter:
    """TensorBoard event files of a metric-NTK run (one writer per run, created lazily).

    Args:
        log_dir: directory of the run (as given to ``keras.callbacks.TensorBoard``);
            the events go to ``log_dir/metric_ntk/``.
        histogram_bins: buckets of the spectrum histograms.
        image_every: also write the Figure-4 image every this many records
            (``None``: only when :meth:`write_figure` is called, e.g. at the end
            of training).
        block: the kernel block of the Figure-4 image (``"train_test"``,
            ``"train_train"`` or ``"test_test"``).

    Tags: scalars ``metric_ntk/<key>``, histograms ``metric_ntk_spectrum/<name>``
    (and ``metric_ntk_log_spectrum/<name>`` when the record has log floors),
    the image ``metric_ntk_figure/<block>``; the step is the record's label.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        histogram_bins: int = 30,
        image_every: int | None = None,
        block: str = "train_test",
    ):
        self.log_dir = _checks.writable_dir(log_dir, "log_dir")
        self.histogram_bins = _checks.positive_int(histogram_bins, "histogram_bins", "histogram buckets")
        self.image_every = (
            None
            if image_every is None
            else _checks.positive_int(image_every, "image_every", "records between Figure-4 images")
        )
        self.block = block
        self._writer: Any = None
        self._last_image: int | None = None

    # ------------------------------------------------------------ writer
    @property
    def path(self) -> Path:
        """The folder of the event files, ``log_dir/metric_ntk``."""
        return self.log_dir / SUBDIR

    @property
    def is_open(self) -> bool:
        """Whether the event file writer has been created (and not closed)."""
        return self._writer is not None

    def _get_writer(self) -> Any:
        if self._writer is None:
            import tensorflow as tf

            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OSError(f"`log_dir`={str(self.log_dir)!r} cannot be written ({err}).") from err
            self._writer = tf.summary.create_file_writer(str(self.path))
        return self._writer

    def flush(self) -> None:
        """Flush the event file (when one is open)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Close the event file; a later write opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------- parts
    def scalars(self, step: int, values: dict[str, float], prefix: str = SUBDIR) -> None:
        """Scalars ``<prefix>/<key>`` (float32, TensorBoard's scalar plugin)."""
        import tensorflow as tf
        from tensorboard.plugins.scalar import metadata as scalar_metadata

        md = scalar_metadata.create_summary_metadata(display_name=None, description=None)
        with self._get_writer().as_default():
            for k, v in values.items():
                tf.summary.write(f"{prefix}/{k}", tf.constant(v, tf.float32), step=step, metadata=md)

    def histograms(self, step: int, values: dict[str, np.ndarray], prefix: str = f"{SUBDIR}_spectrum") -> None:
        """Histograms ``<prefix>/<name>`` of finite samples (non-finite ones are skipped).

        The summaries are what ``tf.summary.histogram`` writes (a float64
        (buckets, 3) tensor of [left edge, right edge, count]), but the buckets
        are computed in NumPy (:func:`histogram_buckets`), ~5x cheaper than the
        eager ops.
        """
        import tensorflow as tf
        from tensorboard.plugins.histogram import metadata as histogram_metadata

        md = histogram_metadata.create_summary_metadata(display_name=None, description=None)
        with self._get_writer().as_default():
            for name, s in values.items():
                if np.all(np.isfinite(s)):
                    buckets = histogram_buckets(s, self.histogram_bins)
                    tf.summary.write(f"{prefix}/{name}", buckets, step=step, metadata=md)

    def image(self, tag: str, rgba: np.ndarray, step: int, description: str | None = None) -> None:
        """One image (uint8 (1, H, W, 4) or (H, W, 4)) under ``tag``."""
        import tensorflow as tf

        rgba = np.asarray(rgba)
        if rgba.ndim == 3:
            rgba = rgba[None]
        with self._get_writer().as_default():
            tf.summary.image(tag, rgba, step=step, description=description)

    # ----------------------------------------------------------- records
    def write_record(self, record: NTKRecord, history: MetricNTKHistory | None = None) -> None:
        """Scalars and spectrum histograms of one record; the Figure-4 image every ``image_every`` records."""
        self.scalars(record.label, record.scalars)
        spectra = {k: v for k, v in record.spectra.items() if np.all(np.isfinite(v))}
        self.histograms(record.label, spectra)
        if record.log_floors is not None:
            logs = {k: log_spectrum(v, record.log_floors[k]) for k, v in spectra.items()}
            self.histograms(record.label, logs, prefix=f"{SUBDIR}_log_spectrum")
        self.flush()
        if history is not None and self.image_every is not None and len(history) % self.image_every == 0:
            self.write_figure(history)

    __call__ = write_record

    def write_figure(self, history: MetricNTKHistory) -> None:
        """The Figure-4 image of ``history`` at its latest record (once per label)."""
        from cyntk.callbacks.plotting import figure_to_rgba, plot_figure4

        label = history.last_epoch
        if label is None or self._last_image == label:
            return
        fig = plot_figure4(history, self.block, figsize=(9, 3.5))
        self.image(f"{SUBDIR}_figure/{self.block}", figure_to_rgba(fig, dpi=80), label, _FIGURE_DESCRIPTION)
        self.flush()
        self._last_image = label
