"""``MetricNTKCallback``: watch the empirical metric-NTK evolve during ``fit``.

Reproduces the measurement behind Figure 4 of Halverson & Ruehle
(arXiv:2310.19870): the empirical metric-NTK

    Theta_IJ(x, x') = sum_p  dg_I(x)/dtheta_p  dg_J(x')/dtheta_p          (2.7)

of the model on fixed train and test points, at the start of training and
every ``every`` epochs, its spectra, and how far they move from epoch 0.

The callback is a thin layer over :class:`~cyntk.callbacks.MetricNTKTracker`
(points, kernel, measures, history, resume) and
:class:`~cyntk.callbacks.MetricNTKWriter` (TensorBoard): it turns Keras' hooks
into epoch labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cyntk import _validation as _checks
from cyntk.callbacks.distribute import current_strategy, is_chief
from cyntk.callbacks.options import BLOCKS, ON_ERROR, MeasureOptions, OutputOptions, defaults
from cyntk.callbacks.tensorboard import MetricNTKWriter
from cyntk.callbacks.tensorboard import histogram_buckets as _histogram_buckets  # noqa: F401 - kept importable
from cyntk.callbacks.tracker import MetricNTKTracker

__all__ = ["MetricNTKCallback", "BLOCKS", "ON_ERROR"]


class MetricNTKCallback(keras.callbacks.Callback):
    """Track the empirical metric-NTK of a model during training (Figure 4).

    Add it to ``fit``::

        cb = MetricNTKCallback(10, 10, data=dataset, seed=0, log_dir="logs/run1")
        model.fit(X, y, epochs=50, callbacks=[cb])   # before EarlyStopping etc.
        cyntk.callbacks.plot_figure4(cb.history)

    **Which model.** Any Keras model with cymetric's call signature,
    ``model(x, training=False)`` with ``x`` real (B, 2N) -> complex (B, n, n)
    hermitian metric (cyntk's and cymetric's models), whose m = n**2 real
    components are ordered as in :mod:`cyntk.geometry.components`; or any
    regression network real (B, d) -> real (B, m). Nothing cyntk-specific is
    needed. The kernel is computed by :func:`cyntk.kernels.metric_ntk` on a
    float64 copy of the points, with ``training=False``; the callback draws no
    random numbers and never writes to the model, so training (weights,
    losses) is bitwise the same with and without it.

    **When.** Epoch labels count completed epochs: the state before the first
    epoch of a fit is recorded at the first ``on_epoch_begin`` (label = Keras'
    epoch index, 0 for a fresh run; same weights as ``on_train_begin``), and
    after Keras epoch ``e`` the label is ``e + 1``; it is recorded when
    ``(e + 1) % every == 0``, and (``track_last``) the final state at
    ``on_train_end`` if it was not. The first record of a history is the
    reference ("epoch 0").

    **What is computed** at each record, on the P = P_train + P_test points
    (train first) in one kernel call, Theta of shape (P, P, m, m), split into
    the blocks ``train_train`` (P_train, P_train, m, m), ``test_test`` and
    ``train_test`` (P_train, P_test, m, m) (the paper's Theta(x, x') with x a
    train and x' a test point, the 9 x 9 x 10 x 10 matrix of section 3.4):

    * pooled block spectrum of each block (the paper's statistic): for every
      (I, J) the spectrum of the matrix ``M_IJ[a, b] = Theta[a, b, I, J]``,
      pooled over all m**2 pairs. With ``spectrum="eigenvalues"`` these are
      the real parts of the eigenvalues (the I != J blocks, and all train-test
      blocks, are not symmetric; the I = J blocks of train-train and
      test-test are symmetric, with exactly real eigenvalues); with
      ``"singular_values"`` the singular values. A train-test block with
      P_train != P_test has no eigenvalues: it uses singular values (warned).
      See :func:`cyntk.callbacks.pooled_block_spectrum`.
    * full spectrum of the symmetric blocks: eigenvalues of the (m P) x (m P)
      matrix ``K[(a, I), (b, J)]`` (:func:`cyntk.callbacks.full_spectrum`).
    * measures against the reference (epoch 0) and the previous record.

    **Keys** (``ntk_`` prefix; ``<B>`` is a block name, ``<S>`` a symmetric
    block ``train_train`` or ``test_test``). All are floats; every key is in
    :attr:`history` and TensorBoard at every record:

    * ``ntk_wasserstein_<B>``: ``W_p`` (not ``W_p**p``; p = ``wasserstein_p``)
      between the pooled spectrum now and at the reference epoch;
    * ``ntk_wasserstein_step_<B>``: ``W_p`` to the previous record;
    * ``ntk_log_wasserstein_<B>`` (with ``log_spectrum=True``): ``W_p`` between
      ``log10 max(|lambda|, floor)`` spectra, floor = ``log_floor`` x the
      largest ``|lambda|`` of that spectrum at the reference epoch;
    * ``ntk_full_wasserstein_<S>``, ``ntk_full_wasserstein_step_<S>``,
      ``ntk_full_log_wasserstein_<S>``: the same for the full spectrum;
    * ``ntk_frobenius_<B>``: ``||Theta_t - Theta_0||_F / ||Theta_0||_F``;
      ``ntk_frobenius_step_<B>``: the same against the previous record;
    * ``ntk_kernel_distance_<B>``: ``1 - <Theta_t, Theta_0>_F /
      (||Theta_t||_F ||Theta_0||_F)``;
    * ``ntk_norm_<B>``: ``||Theta_t||_F``;
    * ``ntk_target_alignment`` (with ``train_targets``): kernel-target
      alignment ``y^T K y / (||K||_F ||y||**2)`` of the train-train kernel with
      the targets; ``ntk_residual_alignment``: the same with the residual
      ``f_t(x_train) - y`` (the direction of the function-space gradient flow
      of a squared loss); ``ntk_signal_alignment`` (with ``signal_fn``): with
      the user's training signal, e.g. dloss/dg at the train points;
    * ``ntk_seconds`` (history and TensorBoard only): wall time of the record.

    Keras' ``logs`` (so ``History``, ``EarlyStopping(monitor=...)``,
    ``CSVLogger`` and Keras' ``TensorBoard`` see them, when placed *after*
    this callback in ``callbacks``) receive, at tracked epochs only (like
    ``val_*`` keys with ``validation_freq``): ``ntk_wasserstein_<block>``,
    ``ntk_wasserstein_step_<block>``, ``ntk_frobenius_<block>``,
    ``ntk_kernel_distance_<block>``, ``ntk_full_wasserstein_train_train``,
    ``ntk_log_wasserstein_<block>`` (if enabled) and the alignment keys, with
    ``<block>`` = ``block``; with ``log_all_blocks=True`` every key above
    except ``ntk_seconds``. The epoch-0 record (all distances 0) precedes the
    first ``on_epoch_end`` and so is only in :attr:`history`/TensorBoard.

    **Files** (when ``log_dir`` is given, under ``log_dir/metric_ntk/``, beside
    Keras' ``TensorBoard`` callback's ``train/`` and ``validation/``):

    * TensorBoard events: scalars ``metric_ntk/<key>`` (step = epoch label),
      histograms ``metric_ntk_spectrum/<name>`` for ``pooled_<B>`` and
      ``full_<S>`` (and ``metric_ntk_log_spectrum/<name>`` with
      ``log_spectrum``), and the image ``metric_ntk_figure/<block>`` (Figure 4:
      spectrum histograms at epoch 0 and at the latest record, W_p vs epoch)
      at the end of training and every ``image_every`` records;
    * ``history.npz`` + ``history.json`` (:class:`MetricNTKHistory`), rewritten
      atomically after every record, and ``history_reference.npz`` (the
      reference kernel, written once) (``history_path`` to change the place);
    * ``kernels/epoch_XXXXXX.npz`` (``save_kernels=True``): ``theta`` (P, P, m,
      m) in the engine's dtype, ``x_train``, ``x_test``.

    **Distributed training.** Under ``tf.distribute.MirroredStrategy`` Keras
    calls callbacks once, on the host: the kernel is computed once per record
    (on the mirrored weights, outside the replica context) and written once, and
    it equals the kernel recorded without a strategy. Under
    ``MultiWorkerMirroredStrategy`` every worker runs the callback (so every
    worker's ``logs`` agree), but only the chief writes TensorBoard events,
    history and kernels (:func:`cyntk.callbacks.distribute.is_chief`). When the
    model has several replicas, each record's kernel is split across them by
    default (``strategy=model.distribute_strategy`` is passed to the kernel
    engine: each replica computes its rows, every worker receives the whole
    kernel); ``ntk_kwargs={"strategy": None}`` computes it whole in every
    process instead.

    **Structure.** The callback only maps Keras' hooks to epoch labels; the
    points, kernel, measures, history and resume logic live in
    :class:`~cyntk.callbacks.MetricNTKTracker` (usable without Keras callbacks,
    e.g. in a custom training loop) and the event files in
    :class:`~cyntk.callbacks.MetricNTKWriter`.

    **Resuming.** ``resume=True`` (or the path of a saved history) reloads the
    history, the fixed points and the reference kernel, so distances stay
    measured against the original epoch 0 (the kernel recomputed at the resume
    point serves as the previous one of the ``_step`` measures; were it unknown,
    ``ntk_frobenius_step_<B>`` would be NaN). Labels continue: with
    ``fit(initial_epoch=k)`` Keras' numbering is used (records after k, from
    an abandoned stretch of the interrupted run, are dropped with a warning);
    a fit that restarts at epoch 0 continues after the last recorded epoch. If
    the kernel at the resume point differs from the last recorded one (weights
    not restored), a warning says so.

    Args:
        train_points: real array (P_train, d) of fixed train inputs (cymetric's
            layout [Re z, Im z] for points of P^{N-1}, d = 2N), P_train >= 2;
            or an int, the number of points to draw once from ``data``.
        test_points: real array (P_test, d) or an int (see ``train_points``).
        data: where counts are drawn from (without replacement, with
            ``numpy.random.default_rng(seed)``, which does not touch any global
            RNG): a :class:`cyntk.geometry.CYDataset` or anything with
            ``X_train``/``X_val`` (train points from ``X_train``, test points
            from ``X_val``), a mapping with keys ``"X_train"``/``"X_val"``
            (cymetric's ``dataset.npz``), a pair of arrays, or one (N, d) array
            (both sets drawn from it, disjoint).
        seed: int seed of the draw.
        every: positive int, record every ``every`` epochs (default 1).
        log_dir: directory of the run (as given to ``keras.callbacks.
            TensorBoard``); ``None`` writes no files (unless ``history_path``).
        history_path: where the history is saved (default
            ``log_dir/metric_ntk/history.npz``; ``None`` without ``log_dir``
            keeps it in memory only).
        resume: ``False`` (start a new history, overwriting an old file),
            ``True`` (continue the history at ``history_path`` if it exists), or
            the path of a history file to continue (then saved to
            ``history_path``).
        block: the block whose measures go into ``logs`` and Figure 4:
            ``"train_test"`` (default; the paper's Theta(x_train, x_test)),
            ``"train_train"`` or ``"test_test"``.
        spectrum: ``"eigenvalues"`` (real parts) or ``"singular_values"`` for
            the pooled per-(I, J) spectra.
        wasserstein_p: order p >= 1 of the Wasserstein distance (default 1).
        log_spectrum: also compute distances between log10 spectra.
        log_floor: relative floor of the log spectra (default 1e-10).
        train_targets: optional real array (P_train, m), or complex (P_train, n,
            n) metrics (converted to components), the targets at the train points
            (aligned with ``train_points``; with a count, aligned with the pool
            the train points are drawn from, and indexed like them).
        signal_fn: optional callable ``signal_fn(model, x_train) -> (P_train, m)``
            returning a training signal (e.g. dloss/dg at the train points; it
            must not change the model); gives ``ntk_signal_alignment``.
        log_all_blocks: put every measure into ``logs`` (default: the ``block``
            summary above).
        histogram_bins: number of buckets of the TensorBoard histograms.
        image_every: also write the Figure-4 image every this many records
            (default ``None``: only at the end of training).
        save_kernels: save the raw kernel of every record.
        track_last: record the final state at ``on_train_end`` if the last
            epoch was not a multiple of ``every``.
        ntk_fn: kernel engine ``ntk_fn(model, x, **ntk_kwargs) -> (P, P, m, m)``
            (default :func:`cyntk.kernels.metric_ntk`).
        ntk_kwargs: keyword arguments for ``ntk_fn`` (e.g. ``chunk_size``).
            Without a ``"strategy"`` key, a model with several replicas has its
            kernels split across them (see *Distributed training*);
            ``{"strategy": None}`` turns that off.
        verbose: 0 (silent) or 1 (one line per record).
        model: optional model whose reference kernel is recorded right away
            (when an optimizer has already moved it before the first ``fit``
            that sees the callback, e.g. under cymetric's ``train_model``).
        on_error: ``"warn"`` (a failed record is warned about, stored in
            ``history.meta["errors"]`` and reported as ``ntk_failed`` with NaN
            measures; training goes on) or ``"raise"``.
        measures: a :class:`~cyntk.callbacks.MeasureOptions` grouping what is
            recorded (``block``, ``spectrum``, ``wasserstein_p``,
            ``log_spectrum``, ``log_floor``, ``log_all_blocks``); then leave those
            keywords at their defaults.
        output: an :class:`~cyntk.callbacks.OutputOptions` grouping where it is
            written (``log_dir``, ``history_path``, ``save_kernels``,
            ``histogram_bins``, ``image_every``); then leave those keywords at
            their defaults.

    Attributes:
        history: the :class:`MetricNTKHistory` (in memory, always up to date).
        x_train: float64 (P_train, d), the fixed train points.
        x_test: float64 (P_test, d), the fixed test points.
        log_keys: the keys this callback writes into Keras' ``logs``.
        tracker: the :class:`~cyntk.callbacks.MetricNTKTracker` doing the work.
        writer: the :class:`~cyntk.callbacks.MetricNTKWriter` (``None`` without ``log_dir``).
    """

    def __init__(
        self,
        train_points: Any,
        test_points: Any,
        *,
        data: Any = None,
        seed: Any = 0,
        every: int = 1,
        log_dir: str | Path | None = None,
        history_path: str | Path | None = None,
        resume: bool | str | Path = False,
        block: str = "train_test",
        spectrum: str = "eigenvalues",
        wasserstein_p: float = 1,
        log_spectrum: bool = False,
        log_floor: float = 1e-10,
        train_targets: Any = None,
        signal_fn: Callable[[Any, np.ndarray], Any] | None = None,
        log_all_blocks: bool = False,
        histogram_bins: int = 30,
        image_every: int | None = None,
        save_kernels: bool = False,
        track_last: bool = True,
        ntk_fn: Callable[..., Any] | None = None,
        ntk_kwargs: dict | None = None,
        verbose: int = 0,
        model: Any = None,
        on_error: str = "warn",
        measures: MeasureOptions | None = None,
        output: OutputOptions | None = None,
    ):
        super().__init__()
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}; received {on_error!r}.")
        self.every = _checks.positive_int(every, "every", "record every `every` epochs")
        measures = _grouped(
            MeasureOptions,
            measures,
            "measures",
            block=block,
            spectrum=spectrum,
            wasserstein_p=wasserstein_p,
            log_spectrum=log_spectrum,
            log_floor=log_floor,
            log_all_blocks=log_all_blocks,
        )
        output = _grouped(
            OutputOptions,
            output,
            "output",
            log_dir=log_dir,
            history_path=history_path,
            save_kernels=save_kernels,
            histogram_bins=histogram_bins,
            image_every=image_every,
        )
        self.track_last = bool(track_last)
        self._chief = is_chief(current_strategy(model))
        self.writer: MetricNTKWriter | None = None
        if output.log_dir is not None:
            self.writer = MetricNTKWriter(
                output.log_dir,
                histogram_bins=output.histogram_bins,
                image_every=output.image_every,
                block=measures.block,
            )
        self.tracker = MetricNTKTracker(
            train_points,
            test_points,
            data=data,
            seed=seed,
            train_targets=train_targets,
            signal_fn=signal_fn,
            measures=measures,
            output=output,
            resume=resume,
            ntk_fn=ntk_fn,
            ntk_kwargs=ntk_kwargs,
            on_error=on_error,
            verbose=verbose,
            sinks=[self.writer] if self.writer is not None else [],
            write_files=self._chief,
            name="MetricNTKCallback",
        )
        self.tracker.history.meta["every"] = self.every

        # per-fit state
        self._fit_started = False
        self._offset = 0
        self._last_label: int | None = None
        if model is not None:
            self.set_model(model)
            self.tracker.attach(model)
            last = self.history.last_epoch
            self.tracker.record(0 if last is None else last)

    # ================================================================ config
    history = property(lambda self: self.tracker.history, doc="The :class:`MetricNTKHistory` (always up to date).")
    x_train = property(lambda self: self.tracker.x_train, doc="float64 (P_train, d), the fixed train points.")
    x_test = property(lambda self: self.tracker.x_test, doc="float64 (P_test, d), the fixed test points.")
    measures = property(lambda self: self.tracker.measures, doc="The :class:`MeasureOptions` (what is recorded).")
    output = property(lambda self: self.tracker.output, doc="The :class:`OutputOptions` (where it is written).")
    log_dir = property(lambda self: self.tracker.output.log_dir, doc="The run's directory, or ``None``.")
    history_path = property(lambda self: self.tracker.history_path, doc="Where the history is saved, or ``None``.")
    save_kernels = property(lambda self: self.tracker.output.save_kernels, doc="Whether every kernel is saved.")
    histogram_bins = property(lambda self: self.tracker.output.histogram_bins, doc="Buckets of the histograms.")
    image_every = property(lambda self: self.tracker.output.image_every, doc="Records between Figure-4 images.")
    seed = property(lambda self: self.tracker.seed, doc="Seed of the draw of the points.")

    @property
    def log_keys(self) -> list[str]:
        """The keys written into Keras' ``logs`` at tracked epochs."""
        return self.tracker.log_keys

    def __getattr__(self, name: str) -> Any:
        # the measure options (block, spectrum, wasserstein_p, log_spectrum, log_floor, log_all_blocks)
        # and the tracker's settings (signal_fn, ntk_fn, ntk_kwargs, verbose, on_error) read through
        if name in _MEASURE_FIELDS or name in _TRACKER_FIELDS:
            tracker = self.__dict__.get("tracker")
            if tracker is not None:
                return getattr(tracker.measures, name) if name in _MEASURE_FIELDS else getattr(tracker, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        tracker = self.__dict__.get("tracker")
        if tracker is not None and name in _TRACKER_FIELDS:
            setattr(tracker, name, value)
        elif tracker is not None and name in _MEASURE_FIELDS:
            tracker.measures = tracker._calc.options = replace(tracker.measures, **{name: value})
        else:
            super().__setattr__(name, value)

    # ================================================================ hooks
    def set_model(self, model: Any) -> None:
        self.tracker.use_model(model)
        self._model = model

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._fit_started = False
        self._offset = 0
        self._last_label = None
        self._chief = is_chief(current_strategy(self.model))
        self.tracker.write_files = self._chief
        self.tracker.attach(self.model)
        if not self.history.epochs:
            steps = _optimizer_steps(self.model)
            if steps:
                warnings.warn(
                    f"MetricNTKCallback: the model has already taken {steps} optimizer steps when the "
                    "callback first sees it, so its reference kernel ('epoch 0') is not the kernel at "
                    "initialisation (e.g. cymetric's train_model passes callbacks only to the second "
                    "fit of each epoch). Pass `model=` to MetricNTKCallback to record the reference "
                    "when the callback is created.",
                    stacklevel=2,
                )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._fit_started:
            return
        self._fit_started = True
        last = self.history.last_epoch
        if self.tracker.live and last is not None and epoch == 0:
            # another fit of the same training (cymetric's train_model calls fit twice per
            # epoch): the numbering continues, and the weights may have moved in between
            self._offset = last
            self._last_label = last
            return
        if last is not None and epoch == 0 and last > 0:
            self._offset = last  # a fit restarted at epoch 0 continues the numbering
        elif last is not None and epoch < last:
            dropped = self.tracker.truncate(epoch)
            if dropped:
                warnings.warn(
                    f"MetricNTKCallback: training resumes at epoch {epoch}; the records of "
                    f"epochs {dropped} (after the resume point) are dropped.",
                    stacklevel=2,
                )
        label = epoch + self._offset
        if label in self.history.epochs:
            if not self.tracker.live:
                self.tracker.check_resume_point(label)
        else:
            self.tracker.record(label)
        self._last_label = label

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        label = epoch + 1 + self._offset
        self._last_label = label
        if label % self.every == 0 and label not in self.history.epochs:
            self.tracker.record(label, logs=logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.track_last and self._last_label is not None and self._last_label not in self.history.epochs:
            self.tracker.record(self._last_label)
        if self.writer is not None and self._chief:
            if len(self.history):
                self.writer.write_figure(self.history)
            self.writer.flush()  # kept open: one event file per training, across fit calls

    def close(self) -> None:
        """Close the TensorBoard writer (it is also closed when the callback is collected)."""
        if self.writer is not None:
            self.writer.close()


_MEASURE_FIELDS = frozenset(defaults(MeasureOptions))
_TRACKER_FIELDS = frozenset({"signal_fn", "ntk_fn", "ntk_kwargs", "verbose", "on_error"})


def _grouped(cls: type, given: Any, name: str, **flat: Any) -> Any:
    """An options object from ``given`` or from the individual keywords (not both)."""
    if given is None:
        return cls(**flat)
    if not isinstance(given, cls):
        raise TypeError(f"`{name}` must be a {cls.__name__}; received {type(given).__name__}.")
    changed = sorted(k for k, v in flat.items() if v != defaults(cls)[k])
    if changed:
        raise TypeError(
            f"pass either `{name}={cls.__name__}(...)` or the keywords {changed}, not both "
            f"(the {cls.__name__} already sets them)."
        )
    return given


def _optimizer_steps(model: Any) -> int:
    """How many steps the model's optimizer has taken (0 if unknown / not compiled)."""
    opt = getattr(model, "optimizer", None)
    it = getattr(opt, "iterations", None)
    try:
        return int(it.numpy()) if it is not None else 0
    except Exception:  # noqa: BLE001 - any optimizer without a readable step count
        return 0
