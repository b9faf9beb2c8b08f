"""``MetricNTKCallback``: watch the empirical metric-NTK evolve during ``fit``.

Reproduces the measurement behind Figure 4 of Halverson & Ruehle
(arXiv:2310.19870): the empirical metric-NTK

    Theta_IJ(x, x') = sum_p  dg_I(x)/dtheta_p  dg_J(x')/dtheta_p          (2.7)

of the model on fixed train and test points, at the start of training and
every ``every`` epochs, its spectra, and how far they move from epoch 0.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from cyntk import _validation as _checks
from cyntk.callbacks.history import MetricNTKHistory
from cyntk.callbacks.spectra import (
    SPECTRUM_KINDS,
    full_spectrum,
    kernel_distance,
    kernel_target_alignment,
    log_spectrum,
    pooled_block_spectrum,
    relative_frobenius_change,
    wasserstein,
)

__all__ = ["MetricNTKCallback", "BLOCKS", "ON_ERROR"]

#: Accepted values of ``on_error``: a failed record warns and training goes on, or raises.
ON_ERROR = ("warn", "raise")

#: The three kernel blocks, in the order train-train, test-test, train-test.
BLOCKS = ("train_train", "test_test", "train_test")
_SYMMETRIC = ("train_train", "test_test")
_SUBDIR = "metric_ntk"


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
        verbose: 0 (silent) or 1 (one line per record).

    Attributes:
        history: the :class:`MetricNTKHistory` (in memory, always up to date).
        x_train: float64 (P_train, d), the fixed train points.
        x_test: float64 (P_test, d), the fixed test points.
        log_keys: the keys this callback writes into Keras' ``logs``.
    """

    def __init__(
        self,
        train_points,
        test_points,
        *,
        data=None,
        seed: int = 0,
        every: int = 1,
        log_dir=None,
        history_path=None,
        resume=False,
        block: str = "train_test",
        spectrum: str = "eigenvalues",
        wasserstein_p: float = 1,
        log_spectrum: bool = False,
        log_floor: float = 1e-10,
        train_targets=None,
        signal_fn=None,
        log_all_blocks: bool = False,
        histogram_bins: int = 30,
        image_every: int | None = None,
        save_kernels: bool = False,
        track_last: bool = True,
        ntk_fn=None,
        ntk_kwargs=None,
        verbose: int = 0,
        model=None,
        on_error: str = "warn",
    ):
        super().__init__()
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}; received {on_error!r}.")
        self.on_error = on_error
        self.every = _checks.positive_int(every, "every", "record every `every` epochs")
        if block not in BLOCKS:
            raise ValueError(f"`block` must be one of {BLOCKS}; received {block!r}.")
        self.block = block
        if spectrum not in SPECTRUM_KINDS:
            raise ValueError(f"`spectrum` must be one of {SPECTRUM_KINDS}; received {spectrum!r}.")
        self.spectrum = spectrum
        try:
            p = float(wasserstein_p)
        except (TypeError, ValueError):
            raise TypeError(f"`wasserstein_p` must be a number >= 1; received {wasserstein_p!r}.") from None
        if not math.isfinite(p) or p < 1:
            raise ValueError(f"`wasserstein_p` must be a finite number >= 1; received {wasserstein_p!r}.")
        self.wasserstein_p = p
        self.log_spectrum = bool(log_spectrum)
        self.log_floor = float(log_floor)
        if not math.isfinite(self.log_floor) or not 0 < self.log_floor < 1:
            raise ValueError(
                f"`log_floor` must be a number in (0, 1) (relative to the largest "
                f"|eigenvalue|); received {log_floor!r}."
            )
        self.log_all_blocks = bool(log_all_blocks)
        self.histogram_bins = _checks.positive_int(histogram_bins, "histogram_bins", "histogram buckets")
        self.image_every = (
            None
            if image_every is None
            else _checks.positive_int(image_every, "image_every", "records between Figure-4 images")
        )
        self.save_kernels = bool(save_kernels)
        self.track_last = bool(track_last)
        if signal_fn is not None and not callable(signal_fn):
            raise TypeError(
                f"`signal_fn` must be callable signal_fn(model, x_train) -> (P_train, m); "
                f"received {type(signal_fn).__name__}."
            )
        self.signal_fn = signal_fn
        if ntk_fn is not None and not callable(ntk_fn):
            raise TypeError(
                f"`ntk_fn` must be callable ntk_fn(model, x, **ntk_kwargs); received {type(ntk_fn).__name__}."
            )
        self.ntk_fn = ntk_fn
        self.ntk_kwargs = dict(ntk_kwargs or {})
        if verbose not in (0, 1, False, True):
            raise ValueError(f"`verbose` must be 0 or 1; received {verbose!r}.")
        self.verbose = int(verbose)
        self.seed = seed

        # ------------------------------------------------------------ files
        self.log_dir = None if log_dir is None else _checks.writable_dir(log_dir, "log_dir")
        if history_path is None and self.log_dir is not None:
            history_path = self.log_dir / _SUBDIR / "history.npz"
        if history_path is not None:
            history_path = Path(history_path)
            if history_path.suffix != ".npz":
                history_path = history_path.with_name(history_path.name + ".npz")
            _checks.writable_dir(history_path.parent, "history_path")
        self.history_path = history_path
        if self.save_kernels and self.history_path is None:
            raise ValueError("`save_kernels=True` needs a place to write: pass `log_dir` or `history_path`.")

        # ----------------------------------------------------------- points
        x_train, x_test, train_index = self._resolve_points(train_points, test_points, data, seed)
        self._train_targets = self._resolve_targets(train_targets, train_points, train_index, len(x_train))

        # ----------------------------------------------------------- resume
        loaded = self._load_resume(resume)
        if loaded is not None:
            x_train, x_test = self._check_resumed(loaded, x_train, x_test)
            self.history = loaded
        else:
            self.history = MetricNTKHistory()
        self.x_train = x_train
        self.x_test = x_test
        self._kinds = {b: spectrum for b in BLOCKS}
        if spectrum == "eigenvalues" and len(x_train) != len(x_test):
            self._kinds["train_test"] = "singular_values"
            warnings.warn(
                f"MetricNTKCallback: P_train={len(x_train)} != P_test={len(x_test)}, so the "
                "train-test blocks are rectangular and have no eigenvalues; their pooled "
                "spectrum uses singular values. Use equal counts for eigenvalues.",
                stacklevel=2,
            )
        self.history.meta.update(self._meta())
        self.history.arrays["x_train"] = x_train
        self.history.arrays["x_test"] = x_test
        if self._train_targets is not None:
            self.history.arrays["train_targets"] = self._train_targets

        # lazily created / per-fit state
        self._writer = None
        self._output_kind = None
        self._m = None
        self._fit_started = False
        self._offset = 0
        self._last_label = None
        self._last_image = None
        self._theta_last = None  # float64 kernel of the latest record (in memory only)
        self._ref64 = None  # float64 reference kernel
        self._kernel_dtype = np.float64
        self._live = False  # a record was made in this process (not only loaded)
        if model is not None:
            self.set_model(model)
            self._inspect_model()
            self._record(0 if self.history.last_epoch is None else self.history.last_epoch, None)

    # ================================================================ config
    @property
    def log_keys(self) -> list[str]:
        """The keys written into Keras' ``logs`` at tracked epochs."""
        if self.log_all_blocks:
            keys = [k for k in self._all_scalar_keys() if k != "ntk_seconds"]
        else:
            b = self.block
            keys = [
                f"ntk_wasserstein_{b}",
                f"ntk_wasserstein_step_{b}",
                f"ntk_frobenius_{b}",
                f"ntk_kernel_distance_{b}",
                "ntk_full_wasserstein_train_train",
            ]
            if self.log_spectrum:
                keys.append(f"ntk_log_wasserstein_{b}")
            keys += self._alignment_keys()
        return keys

    def _alignment_keys(self) -> list[str]:
        keys = []
        if self._train_targets is not None:
            keys += ["ntk_target_alignment", "ntk_residual_alignment"]
        if self.signal_fn is not None:
            keys.append("ntk_signal_alignment")
        return keys

    def _all_scalar_keys(self) -> list[str]:
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
            if self.log_spectrum:
                keys.append(f"ntk_log_wasserstein_{b}")
        for b in _SYMMETRIC:
            keys += [f"ntk_full_wasserstein_{b}", f"ntk_full_wasserstein_step_{b}"]
            if self.log_spectrum:
                keys.append(f"ntk_full_log_wasserstein_{b}")
        return keys + self._alignment_keys() + ["ntk_seconds"]

    def _meta(self) -> dict:
        return {
            "wasserstein_p": self.wasserstein_p,
            "spectrum": self.spectrum,
            "spectrum_kinds": dict(self._kinds),
            "block": self.block,
            "every": self.every,
            "log_spectrum": self.log_spectrum,
            "log_floor": self.log_floor,
            "n_train": int(len(self.x_train)),
            "n_test": int(len(self.x_test)),
            "seed": self.seed if isinstance(self.seed, (int, type(None))) else str(self.seed),
            "wasserstein_reports": "W_p (the p-th root of POT's wasserstein_1d)",
        }

    @staticmethod
    def _resolve_points(train_points, test_points, data, seed):
        counts = [
            isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_))
            for p in (train_points, test_points)
        ]
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
                        raise ValueError(
                            f"`train_points`={n_tr} exceeds the {len(pool_train)} points available in `data`."
                        )
                    index = rng.choice(len(pool_train), size=n_tr, replace=False)
                    x_train = pool_train[index]
                else:
                    index = None
                    x_train = _checks.real_points(train_points, "train_points")
                if n_te is not None:
                    if n_te > len(pool_test):
                        raise ValueError(
                            f"`test_points`={n_te} exceeds the {len(pool_test)} points available in `data`."
                        )
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

    @staticmethod
    def _resolve_targets(train_targets, train_points, train_index, n_train):
        if train_targets is None:
            return None
        y = np.asarray(train_targets.numpy() if hasattr(train_targets, "numpy") else train_targets)
        if y.dtype == object or not np.issubdtype(y.dtype, np.number):
            raise TypeError(f"`train_targets` must be numeric; received dtype {y.dtype}.")
        if np.iscomplexobj(y):
            if y.ndim != 3 or y.shape[1] != y.shape[2]:
                raise ValueError(
                    f"complex `train_targets` must be metrics of shape (P, n, n); received shape {y.shape}."
                )
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
            raise ValueError(
                f"`train_targets` must have one row per train point ({n_train}); received shape {y.shape}."
            )
        if not np.all(np.isfinite(y)):
            raise ValueError("`train_targets` must be finite; received NaN or inf entries.")
        return np.array(y, dtype=np.float64)

    def _load_resume(self, resume):
        if resume is False or resume is None:
            self._keep_old_history()
            return None
        if resume is True:
            if self.history_path is None:
                raise ValueError(
                    "`resume=True` needs `log_dir` or `history_path` (where the history to "
                    "continue is); received neither."
                )
            if not self.history_path.is_file():
                return None
            return MetricNTKHistory.load(self.history_path)
        if isinstance(resume, (str, Path)):
            path = Path(resume)
            if not path.is_file() and not path.with_suffix(".npz").is_file():
                raise FileNotFoundError(f"`resume`={str(resume)!r}: no such metric-NTK history file.")
            return MetricNTKHistory.load(path)
        raise TypeError(f"`resume` must be False, True or the path of a history file; received {resume!r}.")

    def _keep_old_history(self):
        """A new history never replaces an old one: the old files are renamed with a timestamp."""
        path = self.history_path
        if path is None or not (path.is_file() or path.with_suffix(".json").is_file()):
            return
        from cyntk.callbacks.history import reference_path

        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = []
        kernels = path.parent / "kernels"
        for old in (path, path.with_suffix(".json"), reference_path(path)):
            if old.is_file():
                new = old.with_name(old.name.replace(path.stem, f"{path.stem}.{stamp}", 1))
                old.replace(new)
                moved.append(new.name)
        if kernels.is_dir() and self.save_kernels:
            new = kernels.with_name(f"kernels.{stamp}")
            kernels.replace(new)
            moved.append(new.name + "/")
        warnings.warn(
            f"MetricNTKCallback: {str(path)!r} already held a metric-NTK history; it was kept as "
            f"{', '.join(moved)} in {str(path.parent)!r} and a new history starts (pass "
            "resume=True to continue the old one instead).",
            UserWarning,
            stacklevel=3,
        )

    def _check_resumed(self, loaded, x_train, x_test):
        for key, value in (("x_train", x_train), ("x_test", x_test)):
            old = loaded.arrays.get(key)
            if old is None:
                raise ValueError(f"the history to resume has no `{key}`; it cannot be continued.")
            if old.shape != value.shape or not np.array_equal(old, value):
                raise ValueError(
                    f"`resume`: the history was recorded on other {key.replace('x_', '')} "
                    f"points (shape {old.shape}) than those given (shape {value.shape}); "
                    "pass the same points (or the same count, data and seed)."
                )
        for key in ("wasserstein_p", "spectrum", "log_spectrum"):
            if key in loaded.meta and loaded.meta[key] != getattr(self, key):
                raise ValueError(
                    f"`resume`: the history was recorded with {key}={loaded.meta[key]!r}; "
                    f"received {key}={getattr(self, key)!r}. Use the same setting."
                )
        if loaded.epochs and "theta_reference" not in loaded.arrays:
            raise ValueError(
                "the history to resume lacks its reference kernel (the "
                "`<stem>_reference.npz` file beside it); it cannot be continued."
            )
        return loaded.arrays["x_train"].astype(np.float64), loaded.arrays["x_test"].astype(np.float64)

    # ================================================================ hooks
    def set_model(self, model):
        previous = getattr(self, "_model", None)
        if previous is not None and model is not previous and self._live:
            raise ValueError(
                f"MetricNTKCallback was given the model {previous.name!r} (at construction "
                f"or in an earlier fit) and now receives {model.name!r}; one callback "
                "tracks one model. Create a new callback for the other model."
            )
        self._model = model

    def on_train_begin(self, logs=None):
        self._fit_started = False
        self._offset = 0
        self._last_label = None
        self._inspect_model()
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

    def on_epoch_begin(self, epoch, logs=None):
        if self._fit_started:
            return
        self._fit_started = True
        last = self.history.last_epoch
        if self._live and last is not None and epoch == 0:
            # another fit of the same training (cymetric's train_model calls fit twice per
            # epoch): the numbering continues, and the weights may have moved in between
            self._offset = last
            self._last_label = last
            return
        if last is not None and epoch == 0 and last > 0:
            self._offset = last  # a fit restarted at epoch 0 continues the numbering
        elif last is not None and epoch < last:
            dropped = self.history.truncate(epoch)
            if dropped:
                warnings.warn(
                    f"MetricNTKCallback: training resumes at epoch {epoch}; the records of "
                    f"epochs {dropped} (after the resume point) are dropped.",
                    stacklevel=2,
                )
                self._theta_last = None
        label = epoch + self._offset
        if label in self.history.epochs:
            if not self._live:
                self._check_resume_point(label)
        else:
            self._record(label, None)
        self._last_label = label

    def on_epoch_end(self, epoch, logs=None):
        label = epoch + 1 + self._offset
        self._last_label = label
        if label % self.every == 0 and label not in self.history.epochs:
            self._record(label, logs)

    def on_train_end(self, logs=None):
        if self.track_last and self._last_label is not None and self._last_label not in self.history.epochs:
            self._record(self._last_label, None)
        if self.log_dir is not None and len(self.history):
            self._write_image()
        if self._writer is not None:
            self._writer.flush()  # kept open: one event file per training, across fit calls

    def close(self):
        """Close the TensorBoard writer (it is also closed when the callback is collected)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ============================================================ internals
    def _input_dtype(self):
        inputs = getattr(self.model, "inputs", None)
        try:
            if inputs:
                return keras.backend.standardize_dtype(inputs[0].dtype)
        except (AttributeError, TypeError, ValueError):
            pass
        return keras.backend.standardize_dtype(getattr(self.model, "compute_dtype", keras.config.floatx()))

    def _call_model(self, x):
        x = keras.ops.convert_to_tensor(np.array(x, copy=True), dtype=self._input_dtype())
        return self.model(x, training=False)

    def _inspect_model(self):
        """Find the output kind (metric or vector) and m; clear errors for bad models/points."""
        if self.model is None:
            raise ValueError("MetricNTKCallback has no model: use it in `model.fit(..., callbacks=[...])`.")
        d = self.x_train.shape[1]
        width = None
        inputs = getattr(self.model, "inputs", None)
        try:
            if inputs and len(inputs) == 1 and inputs[0].shape[-1] is not None:
                width = int(inputs[0].shape[-1])
        except (AttributeError, TypeError, ValueError):
            width = None
        if width is not None and width != d:
            raise ValueError(
                f"`train_points`/`test_points` must have the model's input width d={width} "
                f"(shape (P, {width})); received points of shape {self.x_train.shape}."
            )
        try:
            out = self._call_model(self.x_train[:2])
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f"MetricNTKCallback could not call the model on `train_points` of shape "
                f"{self.x_train.shape} (width d={d}) with training=False: "
                f"{type(err).__name__}: {err}. The points must be valid model inputs "
                "(shape (P, d) with the model's d)."
            ) from err
        if isinstance(out, (list, tuple, dict)):
            raise ValueError(
                "MetricNTKCallback needs a model with one output, a metric (complex (B, n, n)) "
                f"or a vector (real (B, m)); received a {type(out).__name__} of outputs."
            )
        shape = tuple(out.shape)
        dtype = keras.backend.standardize_dtype(out.dtype)
        if dtype.startswith("complex") and len(shape) == 3 and shape[1] == shape[2]:
            g = np.asarray(keras.ops.convert_to_numpy(out))
            asym = float(np.max(np.abs(g - np.conj(np.swapaxes(g, -1, -2)))))
            scale = max(float(np.max(np.abs(g))), np.finfo(np.float64).tiny)
            if asym > 1e3 * np.finfo(g.real.dtype).eps * scale:
                # not hermitian (e.g. cymetric's MatrixFSModel): Re and Im of every entry
                kind, m = "complex", 2 * shape[1] * shape[2]
            else:
                kind, m = "metric", shape[1] * shape[2]
        elif dtype.startswith(("float", "bfloat")) and len(shape) == 2:
            kind, m = "vector", shape[1]
        else:
            raise ValueError(
                "MetricNTKCallback needs a model whose output is a metric (complex (B, n, n), "
                "cymetric's signature) or a vector (real (B, m)); received output of dtype "
                f"{dtype} and shape {shape}. Wrap the model so that it returns one of these."
            )
        prev = self.history.meta.get("m")
        if prev is not None and int(prev) != m:
            raise ValueError(
                f"`resume`: the history was recorded for a model with m={prev} components; this model has m={m}."
            )
        if self._train_targets is not None and self._train_targets.shape[1] != m:
            raise ValueError(
                f"`train_targets` must have m={m} components per point (the model's "
                f"{'metric components n*n' if kind == 'metric' else 'outputs'}); received "
                f"shape {self._train_targets.shape}."
            )
        self._output_kind, self._m = kind, m
        self.history.meta.update({"output_kind": kind, "m": m})

    def _engine(self):
        if self.ntk_fn is not None:
            return self.ntk_fn
        try:
            from cyntk.kernels import metric_ntk
        except ImportError as err:
            raise ImportError(
                "MetricNTKCallback needs cyntk.kernels.metric_ntk (the empirical "
                f"metric-NTK engine), which could not be imported: {err}."
            ) from err
        return metric_ntk

    def _kernel(self) -> np.ndarray:
        """Theta (P, P, m, m) on the train then test points (float64 copy)."""
        x = np.concatenate([self.x_train, self.x_test], axis=0)  # a fresh copy
        kwargs = dict(self.ntk_kwargs)
        if self._output_kind == "complex" and self.ntk_fn is None:
            kwargs.setdefault("output", "complex")
        theta = self._engine()(self.model, x, **kwargs)
        if self.ntk_fn is None and "ntk_path" not in self.history.meta:
            from cyntk.kernels import metric_ntk_path

            path = metric_ntk_path(
                self.model, **{k: v for k, v in kwargs.items() if k in ("chunk_size", "implementation", "output")}
            )
            if path is not None:
                self.history.meta["ntk_path"] = path
                if self.verbose:
                    print(f"MetricNTKCallback: metric-NTK computed by the {path} path")
        theta = np.asarray(theta.numpy() if hasattr(theta, "numpy") else theta)
        self._kernel_dtype = theta.dtype if theta.dtype in (np.float32, np.float64) else np.float64
        p = len(x)
        if theta.shape != (p, p, self._m, self._m):
            raise RuntimeError(
                f"the NTK engine returned shape {theta.shape}; expected (P, P, m, m) = "
                f"({p}, {p}, {self._m}, {self._m})."
            )
        return theta

    def _split(self, theta):
        p = len(self.x_train)
        return {"train_train": theta[:p, :p], "test_test": theta[p:, p:], "train_test": theta[:p, p:]}

    def _spectra(self, blocks) -> dict:
        out = {}
        for b in BLOCKS:
            out[f"pooled_{b}"] = pooled_block_spectrum(blocks[b], self._kinds[b], symmetric=b in _SYMMETRIC)
        for b in _SYMMETRIC:
            out[f"full_{b}"] = full_spectrum(blocks[b])
        return out

    def _log_floors(self, ref_spectra) -> dict:
        floors = self.history.meta.get("log_floors")
        if floors is None:
            floors = {
                k: self.log_floor * max(float(np.max(np.abs(v))), np.finfo(np.float64).tiny)
                for k, v in ref_spectra.items()
            }
            self.history.meta["log_floors"] = floors
        return floors

    def _record(self, label: int, logs):
        """One record; a failure is recorded, warned about and training goes on (``on_error``)."""
        if self.on_error == "raise":
            self._record_now(label, logs)
            return
        try:
            self._record_now(label, logs)
        except Exception as err:  # noqa: BLE001 - never kill the user's training (on_error="warn")
            message = f"{type(err).__name__}: {err}"
            self.history.meta.setdefault("errors", []).append({"epoch": int(label), "error": message})
            warnings.warn(
                f"MetricNTKCallback: the record of epoch {label} failed and is skipped "
                f"({message}); training goes on. Pass on_error='raise' to stop instead.",
                RuntimeWarning,
                stacklevel=2,
            )
            if logs is not None:
                logs["ntk_failed"] = 1.0
                for k in self.log_keys:
                    logs[k] = math.nan
            if self.history_path is not None and self.history.epochs:
                try:
                    self.history.save(self.history_path)
                except OSError:
                    pass

    def _record_now(self, label: int, logs):
        t0 = time.perf_counter()
        theta = self._kernel()
        finite = bool(np.all(np.isfinite(theta)))
        first = not self.history.epochs
        if not finite:
            if first:
                raise FloatingPointError(
                    "the metric-NTK at the start of training has NaN or inf entries; "
                    "the model's output or its gradients are not finite."
                )
            warnings.warn(
                f"MetricNTKCallback: the metric-NTK at epoch {label} has NaN or inf entries; "
                "its measures are recorded as NaN.",
                stacklevel=2,
            )
        theta64 = theta.astype(np.float64)
        with _single_threaded_blas():
            scalars, spectra, floors = self._measures(theta64, finite, first)
        scalars["ntk_seconds"] = time.perf_counter() - t0

        self.history.append(label, scalars, spectra)
        self._live = True
        self._theta_last = theta64
        if self.log_dir is not None:
            self._write_tensorboard(label, scalars, spectra, floors)
        if self.history_path is not None:
            self.history.save(self.history_path)
            if self.save_kernels:
                self._save_kernel(label, theta)
        if logs is not None:
            for k in self.log_keys:
                logs[k] = scalars[k]
        if self.verbose:
            b, p = self.block, self.wasserstein_p
            print(
                f"MetricNTK epoch {label}: W_{p:g}({b})={scalars[f'ntk_wasserstein_{b}']:.4g}, "
                f"frobenius={scalars[f'ntk_frobenius_{b}']:.4g}, "
                f"kernel distance={scalars[f'ntk_kernel_distance_{b}']:.4g} "
                f"({scalars['ntk_seconds']:.2f} s)"
            )

    def _measures(self, theta64, finite, first):
        """Spectra and every scalar measure of one kernel (float64 (P, P, m, m))."""
        blocks = self._split(theta64)
        if finite:
            spectra = self._spectra(blocks)
        else:
            spectra = {k: np.full_like(v[0], np.nan) for k, v in self.history.spectra.items()}
        if first:
            self.history.arrays["theta_reference"] = theta64.astype(self._kernel_dtype)
            self._ref64 = theta64
            ref_spectra, prev_spectra = spectra, spectra
            prev_theta = theta64
        else:
            ref_spectra = {k: v[0] for k, v in self.history.spectra.items()}
            prev_spectra = {k: v[-1] for k, v in self.history.spectra.items()}
            prev_theta = self._theta_last
        if self._ref64 is None:
            self._ref64 = self.history.arrays["theta_reference"].astype(np.float64)
        ref_blocks = self._split(self._ref64)
        prev_blocks = self._split(prev_theta) if prev_theta is not None else None

        scalars = {}
        p = self.wasserstein_p
        floors = self._log_floors(ref_spectra) if self.log_spectrum else None
        for b in BLOCKS:
            s, s0 = spectra[f"pooled_{b}"], ref_spectra[f"pooled_{b}"]
            scalars[f"ntk_wasserstein_{b}"] = _nan_safe(wasserstein, s, s0, p)
            scalars[f"ntk_wasserstein_step_{b}"] = _nan_safe(wasserstein, s, prev_spectra[f"pooled_{b}"], p)
            if self.log_spectrum:
                f = floors[f"pooled_{b}"]
                scalars[f"ntk_log_wasserstein_{b}"] = _nan_safe(
                    lambda u, v: wasserstein(log_spectrum(u, f), log_spectrum(v, f), p), s, s0
                )
            scalars[f"ntk_frobenius_{b}"] = _nan_safe(relative_frobenius_change, blocks[b], ref_blocks[b])
            scalars[f"ntk_frobenius_step_{b}"] = (
                _nan_safe(relative_frobenius_change, blocks[b], prev_blocks[b]) if prev_blocks else math.nan
            )
            scalars[f"ntk_kernel_distance_{b}"] = _nan_safe(kernel_distance, blocks[b], ref_blocks[b])
            scalars[f"ntk_norm_{b}"] = float(np.linalg.norm(blocks[b].reshape(-1)))
        for b in _SYMMETRIC:
            s, s0 = spectra[f"full_{b}"], ref_spectra[f"full_{b}"]
            scalars[f"ntk_full_wasserstein_{b}"] = _nan_safe(wasserstein, s, s0, p)
            scalars[f"ntk_full_wasserstein_step_{b}"] = _nan_safe(wasserstein, s, prev_spectra[f"full_{b}"], p)
            if self.log_spectrum:
                f = floors[f"full_{b}"]
                scalars[f"ntk_full_log_wasserstein_{b}"] = _nan_safe(
                    lambda u, v: wasserstein(log_spectrum(u, f), log_spectrum(v, f), p), s, s0
                )
        scalars.update(self._alignments(blocks["train_train"]))
        return scalars, spectra, floors

    def _alignments(self, theta_tt) -> dict:
        out = {}
        if self._train_targets is not None:
            y = self._train_targets
            out["ntk_target_alignment"] = _nan_safe(kernel_target_alignment, theta_tt, y)
            pred = self._components(self._call_model(self.x_train))
            out["ntk_residual_alignment"] = _nan_safe(kernel_target_alignment, theta_tt, pred - y)
        if self.signal_fn is not None:
            sig = self.signal_fn(self.model, np.array(self.x_train, copy=True))
            sig = np.asarray(sig.numpy() if hasattr(sig, "numpy") else sig)
            if np.iscomplexobj(sig) and sig.ndim == 3:
                sig = self._components(sig)
            if sig.shape != (len(self.x_train), self._m):
                raise ValueError(
                    f"`signal_fn` must return shape (P_train, m) = ({len(self.x_train)}, "
                    f"{self._m}); received shape {sig.shape}."
                )
            out["ntk_signal_alignment"] = _nan_safe(kernel_target_alignment, theta_tt, sig)
        return out

    def _components(self, out) -> np.ndarray:
        arr = np.asarray(keras.ops.convert_to_numpy(out))
        if np.iscomplexobj(arr):
            from cyntk.geometry import components_from_hermitian

            arr = components_from_hermitian(arr)
        return arr.astype(np.float64)

    # --------------------------------------------------------- TensorBoard
    def _tb_dir(self) -> Path:
        return self.log_dir / _SUBDIR

    def _get_writer(self):
        if self._writer is None:
            import tensorflow as tf

            path = self._tb_dir()
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OSError(f"`log_dir`={str(self.log_dir)!r} cannot be written ({err}).") from err
            self._writer = tf.summary.create_file_writer(str(path))
        return self._writer

    def _write_tensorboard(self, label, scalars, spectra, floors):
        """Scalars and spectrum histograms of one record (tensors written directly).

        The summaries are the same as ``tf.summary.scalar`` / ``tf.summary.histogram``
        write (TensorBoard's scalar and histogram plugins: a float32 scalar, and a
        float64 (buckets, 3) array of [left edge, right edge, count]), but the
        buckets are computed in NumPy, which is ~5x cheaper than the eager ops.
        """
        import tensorflow as tf
        from tensorboard.plugins.histogram import metadata as histogram_metadata
        from tensorboard.plugins.scalar import metadata as scalar_metadata

        writer = self._get_writer()
        scalar_md = scalar_metadata.create_summary_metadata(display_name=None, description=None)
        hist_md = histogram_metadata.create_summary_metadata(display_name=None, description=None)
        with writer.as_default():
            for k, v in scalars.items():
                tf.summary.write(f"metric_ntk/{k}", tf.constant(v, tf.float32), step=label, metadata=scalar_md)
            for name, s in spectra.items():
                if np.all(np.isfinite(s)):
                    tf.summary.write(
                        f"metric_ntk_spectrum/{name}",
                        _histogram_buckets(s, self.histogram_bins),
                        step=label,
                        metadata=hist_md,
                    )
                    if floors is not None:
                        tf.summary.write(
                            f"metric_ntk_log_spectrum/{name}",
                            _histogram_buckets(log_spectrum(s, floors[name]), self.histogram_bins),
                            step=label,
                            metadata=hist_md,
                        )
        writer.flush()
        if self.image_every is not None and len(self.history) % self.image_every == 0:
            self._write_image()

    def _write_image(self):
        import tensorflow as tf

        from cyntk.callbacks.plotting import figure_to_rgba, plot_figure4

        label = self.history.last_epoch
        if label is None or self._last_image == label:
            return
        fig = plot_figure4(self.history, self.block, figsize=(9, 3.5))
        image = figure_to_rgba(fig, dpi=80)
        writer = self._get_writer()
        with writer.as_default():
            tf.summary.image(
                f"metric_ntk_figure/{self.block}",
                image,
                step=label,
                description="metric-NTK spectrum at the first vs latest record, and W_p to "
                "epoch 0 (Figure 4 of arXiv:2310.19870)",
            )
        writer.flush()
        self._last_image = label

    # ----------------------------------------------------------- kernels
    def _save_kernel(self, label, theta):
        from cyntk.geometry import atomic_write

        path = self.history_path.parent / "kernels" / f"epoch_{label:06d}.npz"
        atomic_write(
            path,
            lambda fh: np.savez(fh, theta=theta, x_train=self.x_train, x_test=self.x_test, epoch=np.int64(label)),
            "wb",
        )

    def _check_resume_point(self, label):
        """At a resume point the kernel should be the one recorded there (weights restored).

        Compared with the last kernel when this callback computed it (a second
        ``fit`` call), else with the spectra recorded at ``label`` (a callback
        resumed from a file); the current kernel becomes the "previous" one of
        the step measures.
        """
        if label != self.history.last_epoch:
            return
        now = self._kernel().astype(np.float64)
        if not np.all(np.isfinite(now)):
            change = math.inf
        elif self._theta_last is not None:
            change = relative_frobenius_change(now, self._theta_last)
        else:
            with _single_threaded_blas():
                spectra = self._spectra(self._split(now))
            change = max(
                float(np.max(np.abs(spectra[k] - self.history.spectra[k][-1])))
                / max(float(np.max(np.abs(self.history.spectra[k][-1]))), np.finfo(float).tiny)
                for k in spectra
            )
        if change > 1e-4:
            warnings.warn(
                f"MetricNTKCallback: resuming at epoch {label}, but the model's metric-NTK differs "
                f"from the one recorded at that epoch (relative change {change:.3g}); were the "
                "weights restored from the checkpoint of that epoch?",
                stacklevel=2,
            )
        self._theta_last = now


def _optimizer_steps(model) -> int:
    """How many steps the model's optimizer has taken (0 if unknown / not compiled)."""
    opt = getattr(model, "optimizer", None)
    it = getattr(opt, "iterations", None)
    try:
        return int(it.numpy()) if it is not None else 0
    except Exception:  # noqa: BLE001 - any optimizer without a readable step count
        return 0


def _histogram_buckets(values, bins: int) -> np.ndarray:
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


_BLAS_CONTROLLER = []


def _single_threaded_blas():
    """Context limiting NumPy's BLAS/LAPACK to one thread (a no-op without threadpoolctl).

    The spectra are many small eigenproblems (m**2 blocks of P x P, P ~ 10-100),
    for which BLAS thread start-up and contention with the training threads cost
    far more than they save (measured: 81 eigvals of 100 x 100 take 0.4 s on one
    thread and 3-8 s on two busy cores).
    """
    import contextlib

    if not _BLAS_CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER.append(ThreadpoolController())
        except Exception:  # noqa: BLE001 - threadpoolctl is optional (it comes with scikit-learn)
            _BLAS_CONTROLLER.append(None)
    ctl = _BLAS_CONTROLLER[0]
    return contextlib.nullcontext() if ctl is None else ctl.limit(limits=1, user_api="blas")


def _nan_safe(fn, *args):
    """``fn(*args)``, or NaN when an array argument is not finite (diverged training)."""
    for a in args:
        if isinstance(a, np.ndarray) and not np.all(np.isfinite(a)):
            return math.nan
    return float(fn(*args))
