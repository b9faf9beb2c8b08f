"""``MetricNTKTracker``: the empirical metric-NTK of a model at chosen moments, without Keras callbacks.

The tracker holds fixed train and test points, computes the kernel

    Theta_IJ(x, x') = sum_p  dg_I(x)/dtheta_p  dg_J(x')/dtheta_p          (2.7)

of Halverson & Ruehle (arXiv:2310.19870) on them whenever :meth:`MetricNTKTracker.record`
is called, with its spectra and how far they moved from the first record, and
keeps everything in a :class:`~cyntk.callbacks.MetricNTKHistory` (saved
atomically after each record when a path is given). It works from a plain
Python loop, a custom ``tf.GradientTape`` loop or any trainer::

    tracker = MetricNTKTracker(10, 10, data=ds, seed=0)
    for epoch in range(epochs + 1):
        if epoch:
            train_one_epoch(model)
        scalars = tracker.record(epoch, model)

:class:`~cyntk.callbacks.MetricNTKCallback` is this tracker driven by
``model.fit``; :class:`~cyntk.callbacks.MetricNTKWriter` writes its records
to TensorBoard (pass it in ``sinks``).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyntk.callbacks.history import MetricNTKHistory, reference_path
from cyntk.callbacks.measures import BLOCKS, NTKMeasures
from cyntk.callbacks.options import ON_ERROR, MeasureOptions, OutputOptions
from cyntk.callbacks.points import align_targets, select_points

__all__ = ["MetricNTKTracker", "NTKRecord"]


@dataclass
class NTKRecord:
    """One record of a tracker (also what its ``sinks`` receive).

    Attributes:
        label: the record's label (e.g. completed epochs), increasing.
        scalars: the ``ntk_*`` measures, floats (``ntk_seconds``: wall time).
        spectra: name -> float64 spectrum (``pooled_<block>``, ``full_<symmetric block>``).
        log_floors: name -> floor of the log spectra (``None`` without ``log_spectrum``).
        theta: the kernel (P, P, m, m) on train then test points, in the engine's dtype.
    """

    label: int
    scalars: dict[str, float]
    spectra: dict[str, np.ndarray]
    log_floors: dict[str, float] | None
    theta: np.ndarray


class MetricNTKTracker:
    """Record the empirical metric-NTK of a model on fixed points, with its spectra and their evolution.

    **Which model.** Anything with cymetric's call signature ``model(x,
    training=False)``, ``x`` real (B, d) -> complex hermitian (B, n, n)
    (m = n**2 components, :mod:`cyntk.geometry.components`), a non-hermitian
    complex (B, n, n) (m = 2 n**2) or a real (B, m) vector. The kernel comes from
    ``ntk_fn(model, x, **ntk_kwargs)`` (default :func:`cyntk.kernels.metric_ntk`,
    which needs a Keras/TF model; with your own ``ntk_fn`` any callable model
    works). The model is only ever called with ``training=False`` and never
    written to; the tracker draws no random numbers.

    **Keys** of a record (all floats; ``<B>`` a block, ``<S>`` a symmetric one):
    ``ntk_wasserstein[_step]_<B>``, ``ntk_log_wasserstein_<B>`` (``log_spectrum``),
    ``ntk_full_wasserstein[_step]_<S>``, ``ntk_full_log_wasserstein_<S>``,
    ``ntk_frobenius[_step]_<B>``, ``ntk_kernel_distance_<B>``, ``ntk_norm_<B>``,
    ``ntk_target_alignment``/``ntk_residual_alignment`` (``train_targets``),
    ``ntk_signal_alignment`` (``signal_fn``) and ``ntk_seconds``; see
    :class:`~cyntk.callbacks.MetricNTKCallback` for their definitions.

    Args:
        train_points, test_points, data, seed: the fixed points, arrays (P, d)
            or counts drawn once from ``data`` (:func:`cyntk.callbacks.points.select_points`).
        train_targets: optional targets at the train points (for the alignments).
        signal_fn: optional ``signal_fn(model, x_train) -> (P_train, m)`` training signal.
        measures: :class:`MeasureOptions`, what is recorded (block, spectrum,
            Wasserstein order, log spectra, which keys go into ``logs``).
        output: :class:`OutputOptions`, where the history (and kernels) are
            saved; only ``history_path`` and ``save_kernels`` are used here.
        resume: ``False``, ``True`` or the path of a history to continue.
        ntk_fn, ntk_kwargs: the kernel engine and its keyword arguments. A
            model built under a strategy with several replicas has its kernel
            split across them unless ``ntk_kwargs`` sets ``"strategy"`` (``None``:
            computed whole here), when the engine takes ``strategy=``.
        on_error: ``"warn"`` (a failed record is warned about and skipped) or ``"raise"``.
        verbose: 0 or 1 (one line per record).
        sinks: callables ``sink(record, history)`` called after each record
            (e.g. a :class:`~cyntk.callbacks.MetricNTKWriter`).
        write_files: ``False`` writes nothing (non-chief workers of a multi-worker run).
        model: optional model to record the reference (label 0, or the last
            label of a resumed history) right away.
        name: the name used in messages and warnings.

    Attributes:
        history: the :class:`MetricNTKHistory`. x_train, x_test: float64 points.
        last_record: the latest :class:`NTKRecord` made by this object (or ``None``).
    """

    def __init__(
        self,
        train_points: Any,
        test_points: Any,
        *,
        data: Any = None,
        seed: Any = 0,
        train_targets: Any = None,
        signal_fn: Callable[[Any, np.ndarray], Any] | None = None,
        measures: MeasureOptions | None = None,
        output: OutputOptions | None = None,
        resume: bool | str | Path = False,
        ntk_fn: Callable[..., Any] | None = None,
        ntk_kwargs: dict | None = None,
        on_error: str = "warn",
        verbose: int = 0,
        sinks: Sequence[Callable[[NTKRecord, MetricNTKHistory], None]] = (),
        write_files: bool = True,
        model: Any = None,
        name: str = "MetricNTKTracker",
    ):
        self.name = name
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}; received {on_error!r}.")
        self.on_error = on_error
        self.measures = measures if measures is not None else MeasureOptions()
        self.output = output if output is not None else OutputOptions()
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
        self.sinks = list(sinks)
        self.write_files = bool(write_files)

        x_train, x_test, train_index = select_points(train_points, test_points, data, seed)
        self.train_targets = align_targets(train_targets, train_index, len(x_train))
        loaded = self._load_resume(resume)
        if loaded is not None:
            x_train, x_test = self._check_resumed(loaded, x_train, x_test)
            self.history = loaded
        else:
            self.history = MetricNTKHistory()
        self.x_train, self.x_test = x_train, x_test
        kinds = {b: self.measures.spectrum for b in BLOCKS}
        if self.measures.spectrum == "eigenvalues" and len(x_train) != len(x_test):
            kinds["train_test"] = "singular_values"
            warnings.warn(
                f"{name}: P_train={len(x_train)} != P_test={len(x_test)}, so the "
                "train-test blocks are rectangular and have no eigenvalues; their pooled "
                "spectrum uses singular values. Use equal counts for eigenvalues.",
                stacklevel=3,
            )
        self._calc = NTKMeasures(self.measures, kinds, len(x_train), self.history)
        self.history.meta.update(self._meta())
        self.history.arrays["x_train"] = x_train
        self.history.arrays["x_test"] = x_test
        if self.train_targets is not None:
            self.history.arrays["train_targets"] = self.train_targets

        self.model: Any = None
        self.last_record: NTKRecord | None = None
        self._output_kind: str | None = None
        self._m: int | None = None
        self._theta_last: np.ndarray | None = None  # float64 kernel of the latest record (in memory only)
        self._kernel_dtype: Any = np.float64
        self._live = False  # a record was made by this object (not only loaded)
        if model is not None:
            self.attach(model)
            self.record(0 if self.history.last_epoch is None else self.history.last_epoch)

    # ================================================================ config
    @property
    def history_path(self) -> Path | None:
        """Where the history is saved (``None``: in memory only)."""
        return self.output.history_path

    @property
    def live(self) -> bool:
        """Whether this object has made a record (rather than only loaded a history)."""
        return self._live

    @property
    def log_keys(self) -> list[str]:
        """The keys :meth:`record` writes into ``logs``."""
        return self._calc.log_keys(self._alignment_keys())

    def _alignment_keys(self) -> list[str]:
        keys = []
        if self.train_targets is not None:
            keys += ["ntk_target_alignment", "ntk_residual_alignment"]
        if self.signal_fn is not None:
            keys.append("ntk_signal_alignment")
        return keys

    def _meta(self) -> dict:
        o = self.measures
        return {
            "wasserstein_p": o.wasserstein_p,
            "spectrum": o.spectrum,
            "spectrum_kinds": dict(self._calc.kinds),
            "block": o.block,
            "log_spectrum": o.log_spectrum,
            "log_floor": o.log_floor,
            "n_train": int(len(self.x_train)),
            "n_test": int(len(self.x_test)),
            "seed": self.seed if isinstance(self.seed, (int, type(None))) else str(self.seed),
            "wasserstein_reports": "W_p (the p-th root of POT's wasserstein_1d)",
        }

    # ================================================================ resume
    def _load_resume(self, resume: Any) -> MetricNTKHistory | None:
        if resume is False or resume is None:
            if self.write_files:
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

    def _keep_old_history(self) -> None:
        """A new history never replaces an old one: the old files are renamed with a timestamp."""
        path = self.history_path
        if path is None or not (path.is_file() or path.with_suffix(".json").is_file()):
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = []
        kernels = path.parent / "kernels"
        for old in (path, path.with_suffix(".json"), reference_path(path)):
            if old.is_file():
                new = old.with_name(old.name.replace(path.stem, f"{path.stem}.{stamp}", 1))
                old.replace(new)
                moved.append(new.name)
        if kernels.is_dir() and self.output.save_kernels:
            new = kernels.with_name(f"kernels.{stamp}")
            kernels.replace(new)
            moved.append(new.name + "/")
        warnings.warn(
            f"{self.name}: {str(path)!r} already held a metric-NTK history; it was kept as "
            f"{', '.join(moved)} in {str(path.parent)!r} and a new history starts (pass "
            "resume=True to continue the old one instead).",
            UserWarning,
            stacklevel=4,
        )

    def _check_resumed(self, loaded: MetricNTKHistory, x_train: np.ndarray, x_test: np.ndarray):
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
            if key in loaded.meta and loaded.meta[key] != getattr(self.measures, key):
                raise ValueError(
                    f"`resume`: the history was recorded with {key}={loaded.meta[key]!r}; "
                    f"received {key}={getattr(self.measures, key)!r}. Use the same setting."
                )
        if loaded.epochs and "theta_reference" not in loaded.arrays:
            raise ValueError(
                "the history to resume lacks its reference kernel (the "
                "`<stem>_reference.npz` file beside it); it cannot be continued."
            )
        return loaded.arrays["x_train"].astype(np.float64), loaded.arrays["x_test"].astype(np.float64)

    def truncate(self, last_label: int) -> list[int]:
        """Drop the records after ``last_label`` (an abandoned stretch of a resumed run); returns their labels."""
        dropped = self.history.truncate(last_label)
        if dropped:
            self._theta_last = None
        return dropped

    def check_resume_point(self, label: int) -> None:
        """At a resume point the kernel should be the one recorded there (weights restored).

        Compared with the last kernel when this object computed it, else with the
        spectra recorded at ``label`` (a history resumed from a file); warns when
        they differ. The current kernel becomes the "previous" one of the
        ``_step`` measures.
        """
        if label != self.history.last_epoch:
            return
        now = self._kernel().astype(np.float64)
        if not np.all(np.isfinite(now)):
            change = math.inf
        elif self._theta_last is not None:
            from cyntk.callbacks.spectra import relative_frobenius_change

            change = relative_frobenius_change(now, self._theta_last)
        else:
            with single_threaded_blas():
                spectra = self._calc.spectra(self._calc.split(now))
            change = max(
                float(np.max(np.abs(spectra[k] - self.history.spectra[k][-1])))
                / max(float(np.max(np.abs(self.history.spectra[k][-1]))), np.finfo(float).tiny)
                for k in spectra
            )
        if change > 1e-4:
            warnings.warn(
                f"{self.name}: resuming at epoch {label}, but the model's metric-NTK differs "
                f"from the one recorded at that epoch (relative change {change:.3g}); were the "
                "weights restored from the checkpoint of that epoch?",
                stacklevel=3,
            )
        self._theta_last = now

    # ================================================================ model
    def use_model(self, model: Any) -> None:
        """Track ``model`` (one tracker tracks one model once it has recorded)."""
        previous = self.model
        if previous is not None and model is not previous and self._live:
            noun = "callback" if self.name.endswith("Callback") else "tracker"
            raise ValueError(
                f"{self.name} was given the model {getattr(previous, 'name', previous)!r} (at construction "
                f"or in an earlier fit) and now receives {getattr(model, 'name', model)!r}; one {noun} "
                f"tracks one model. Create a new {noun} for the other model."
            )
        self.model = model

    def attach(self, model: Any = None) -> None:
        """Use ``model`` (default: the current one) and check its output kind, m and input width."""
        from cyntk.callbacks import _model_io

        if model is not None:
            self.use_model(model)
        kind, m = _model_io.inspect_model(self.model, self.x_train, self.name)
        prev = self.history.meta.get("m")
        if prev is not None and int(prev) != m:
            raise ValueError(
                f"`resume`: the history was recorded for a model with m={prev} components; this model has m={m}."
            )
        if self.train_targets is not None and self.train_targets.shape[1] != m:
            raise ValueError(
                f"`train_targets` must have m={m} components per point (the model's "
                f"{'metric components n*n' if kind == 'metric' else 'outputs'}); received "
                f"shape {self.train_targets.shape}."
            )
        self._output_kind, self._m = kind, m
        self.history.meta.update({"output_kind": kind, "m": m})

    def _kernel(self) -> np.ndarray:
        """Theta (P, P, m, m) on the train then test points."""
        from cyntk.callbacks import _model_io

        theta, path = _model_io.kernel(
            self.model,
            np.concatenate([self.x_train, self.x_test], axis=0),  # a fresh copy
            self._m,
            self._output_kind,
            self.ntk_fn,
            self.ntk_kwargs,
            want_path=self.ntk_fn is None and "ntk_path" not in self.history.meta,
            name=self.name,
        )
        if path is not None:
            self.history.meta["ntk_path"] = path
            if self.verbose:
                print(f"{self.name}: metric-NTK computed by the {path} path")
        self._kernel_dtype = theta.dtype if theta.dtype in (np.float32, np.float64) else np.float64
        return theta

    # ================================================================ record
    def record(self, label: int, model: Any = None, logs: dict | None = None) -> dict[str, float]:
        """Compute the kernel and its measures now and append them to the history under ``label``.

        Args:
            label: increasing int (e.g. completed epochs; the first record is the reference).
            model: the model (needed on the first call unless given at construction).
            logs: optional dict (e.g. Keras' epoch ``logs``) that receives :attr:`log_keys`.

        Returns:
            the record's scalars; after a failed record with ``on_error="warn"``,
            ``{"ntk_failed": 1.0}`` and NaN for every log key.
        """
        if model is not None and (model is not self.model or self._m is None):
            self.attach(model)
        elif self._m is None:
            if self.model is None:
                raise ValueError(f"{self.name} has no model: pass one to `record(label, model)`.")
            self.attach()
        if self.on_error == "raise":
            return self._record_now(int(label), logs)
        try:
            return self._record_now(int(label), logs)
        except Exception as err:  # noqa: BLE001 - never kill the user's training (on_error="warn")
            message = f"{type(err).__name__}: {err}"
            self.history.meta.setdefault("errors", []).append({"epoch": int(label), "error": message})
            warnings.warn(
                f"{self.name}: the record of epoch {label} failed and is skipped "
                f"({message}); training goes on. Pass on_error='raise' to stop instead.",
                RuntimeWarning,
                stacklevel=2,
            )
            failed = {"ntk_failed": 1.0, **{k: math.nan for k in self.log_keys}}
            if logs is not None:
                logs.update(failed)
            if self.write_files and self.history_path is not None and self.history.epochs:
                with contextlib.suppress(OSError):
                    self.history.save(self.history_path)
            return failed

    def _record_now(self, label: int, logs: dict | None) -> dict[str, float]:
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
                f"{self.name}: the metric-NTK at epoch {label} has NaN or inf entries; "
                "its measures are recorded as NaN.",
                stacklevel=3,
            )
        theta64 = theta.astype(np.float64)
        if first:
            self.history.arrays["theta_reference"] = theta64.astype(self._kernel_dtype)
        with single_threaded_blas():
            scalars, spectra, floors = self._calc.compute(theta64, finite, first, self._theta_last)
            scalars.update(self._alignments(self._calc.split(theta64)["train_train"]))
        scalars["ntk_seconds"] = time.perf_counter() - t0

        self.history.append(label, scalars, spectra)
        self._live = True
        self._theta_last = theta64
        self.last_record = NTKRecord(label, scalars, spectra, floors, theta)
        if self.write_files:
            for sink in self.sinks:
                sink(self.last_record, self.history)
            if self.history_path is not None:
                self.history.save(self.history_path)
                if self.output.save_kernels:
                    self._save_kernel(label, theta)
        if logs is not None:
            for k in self.log_keys:
                logs[k] = scalars[k]
        if self.verbose:
            b, p = self.measures.block, self.measures.wasserstein_p
            print(
                f"MetricNTK epoch {label}: W_{p:g}({b})={scalars[f'ntk_wasserstein_{b}']:.4g}, "
                f"frobenius={scalars[f'ntk_frobenius_{b}']:.4g}, "
                f"kernel distance={scalars[f'ntk_kernel_distance_{b}']:.4g} "
                f"({scalars['ntk_seconds']:.2f} s)"
            )
        return dict(scalars)

    def _alignments(self, theta_tt: np.ndarray) -> dict[str, float]:
        from cyntk.callbacks import _model_io
        from cyntk.callbacks.measures import nan_safe
        from cyntk.callbacks.spectra import kernel_target_alignment

        out = {}
        if self.train_targets is not None:
            y = self.train_targets
            out["ntk_target_alignment"] = nan_safe(kernel_target_alignment, theta_tt, y)
            pred = _model_io.components(_model_io.call_model(self.model, self.x_train))
            out["ntk_residual_alignment"] = nan_safe(kernel_target_alignment, theta_tt, pred - y)
        if self.signal_fn is not None:
            sig = self.signal_fn(self.model, np.array(self.x_train, copy=True))
            sig = np.asarray(sig.numpy() if hasattr(sig, "numpy") else sig)
            if np.iscomplexobj(sig) and sig.ndim == 3:
                sig = _model_io.components(sig)
            if sig.shape != (len(self.x_train), self._m):
                raise ValueError(
                    f"`signal_fn` must return shape (P_train, m) = ({len(self.x_train)}, "
                    f"{self._m}); received shape {sig.shape}."
                )
            out["ntk_signal_alignment"] = nan_safe(kernel_target_alignment, theta_tt, sig)
        return out

    def _save_kernel(self, label: int, theta: np.ndarray) -> None:
        from cyntk.geometry import atomic_write

        assert self.history_path is not None
        path = self.history_path.parent / "kernels" / f"epoch_{label:06d}.npz"
        atomic_write(
            path,
            lambda fh: np.savez(fh, theta=theta, x_train=self.x_train, x_test=self.x_test, epoch=np.int64(label)),
            "wb",
        )


_BLAS_CONTROLLER: list = []


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """Context limiting NumPy's BLAS/LAPACK to one thread (a no-op without threadpoolctl).

    The spectra are many small eigenproblems (m**2 blocks of P x P, P ~ 10-100),
    for which BLAS thread start-up and contention with the training threads cost
    far more than they save (measured: 81 eigvals of 100 x 100 take 0.4 s on one
    thread and 3-8 s on two busy cores).
    """
    if not _BLAS_CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER.append(ThreadpoolController())
        except Exception:  # noqa: BLE001 - threadpoolctl is optional (it comes with scikit-learn)
            _BLAS_CONTROLLER.append(None)
    ctl = _BLAS_CONTROLLER[0]
    return contextlib.nullcontext() if ctl is None else ctl.limit(limits=1, user_api="blas")
