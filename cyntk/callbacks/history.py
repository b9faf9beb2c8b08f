"""The record kept by :class:`cyntk.callbacks.MetricNTKCallback`, and its files.

A :class:`MetricNTKHistory` holds, for every tracked epoch ``t`` (the number of
completed training epochs; 0 = before training):

* ``scalars[key][i]``: the evolution measures (the callback's documented
  ``ntk_*`` keys, plus ``ntk_seconds``, the wall time of that measurement);
* ``spectra[name][i]``: the spectra, float64 arrays of a fixed length per name
  (``pooled_train_train``, ``pooled_test_test``, ``pooled_train_test``,
  ``full_train_train``, ``full_test_test``);
* ``arrays``: the fixed points ``x_train`` (P_train, d) and ``x_test``
  (P_test, d), the reference kernel ``theta_reference`` ((P, P, m, m) over the
  P = P_train + P_test points, train first, in the engine's dtype), and
  ``train_targets`` when given; these make a run resumable;
* ``meta``: JSON-serialisable settings (Wasserstein order, spectrum kinds,
  output kind, ...).

Files: ``save(path)`` writes ``path`` (``.npz``, authoritative: everything
above except the kernels), ``<stem>_reference.npz`` (the kernel arrays, e.g.
``theta_reference``; rewritten only when they change, since for 100 + 100
points one kernel is 13 MB) and a ``.json`` sibling (epochs, scalars and meta,
for people and other tools), each atomically (temporary file + rename), so an
interrupted run never leaves a half-written history. The npz records the size
and SHA-256 of the reference file it belongs with, so a kill between the two
writes cannot pair a new kernel file with an old history unnoticed.
:meth:`MetricNTKHistory.load` reads the npz and its reference file, checks that
they belong together, and names the file and the remedy when one is unreadable.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np

from cyntk.geometry import CorruptFileError, IncompleteFileSetError, atomic_write, read_npz

__all__ = ["MetricNTKHistory", "HISTORY_FORMAT"]

#: Format tag stored in every history file.
HISTORY_FORMAT = "cyntk.metric_ntk_history/1"

#: Arrays stored in the ``<stem>_reference.npz`` side file (large, rarely changing).
KERNEL_ARRAYS = ("theta_reference",)

_SCALAR = "scalar__"
_SPECTRUM = "spectrum__"
_ARRAY = "array__"


class MetricNTKHistory:
    """Per-epoch metric-NTK measurements (in memory; saved as npz + JSON).

    Attributes:
        epochs: list of int, the tracked epochs in increasing order.
        scalars: dict key -> list of float, aligned with ``epochs`` (NaN where
            a key was not computed at that epoch).
        spectra: dict name -> list of float64 arrays, aligned with ``epochs``.
        arrays: dict name -> NumPy array (points, reference and last kernels).
        meta: dict of JSON-serialisable settings.
    """

    def __init__(self, meta: dict | None = None):
        self.epochs: list[int] = []
        self.scalars: dict[str, list[float]] = {}
        self.spectra: dict[str, list[np.ndarray]] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.meta: dict = dict(meta or {})
        self._saved_kernels: dict = {}  # name -> (path, id of the array) last written
        self._kernel_digest: tuple[int, str] | None = None  # (size, sha256) of the reference file last written/read

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.epochs)

    def __repr__(self) -> str:
        return f"MetricNTKHistory(epochs={self.epochs}, scalars={sorted(self.scalars)}, spectra={sorted(self.spectra)})"

    @property
    def last_epoch(self) -> int | None:
        """The latest tracked epoch, or ``None`` when nothing is recorded."""
        return self.epochs[-1] if self.epochs else None

    def scalar(self, key: str) -> np.ndarray:
        """float64 array (T,) of one measure over the tracked epochs."""
        if key not in self.scalars:
            raise KeyError(f"no scalar {key!r} in this history; available: {sorted(self.scalars)}.")
        return np.asarray(self.scalars[key], dtype=np.float64)

    def spectrum(self, name: str, epoch: int | None = None) -> np.ndarray:
        """One spectrum (float64 (k,)) at ``epoch`` (default: the latest)."""
        if name not in self.spectra:
            raise KeyError(f"no spectrum {name!r} in this history; available: {sorted(self.spectra)}.")
        if not self.epochs:
            raise ValueError("the history is empty.")
        if epoch is None:
            return self.spectra[name][-1]
        if epoch not in self.epochs:
            raise KeyError(f"epoch {epoch} was not tracked; tracked epochs: {self.epochs}.")
        return self.spectra[name][self.epochs.index(epoch)]

    def as_dict(self) -> dict:
        """``{"epoch": [...], key: [...], ...}`` (lists of Python numbers)."""
        out: dict[str, list] = {"epoch": list(self.epochs)}
        out.update({k: list(v) for k, v in self.scalars.items()})
        return out

    # -------------------------------------------------------------- mutation
    def append(self, epoch: int, scalars: dict, spectra: dict) -> None:
        """Add the measurements of one epoch (which must be later than the last one)."""
        epoch = int(epoch)
        if self.epochs and epoch <= self.epochs[-1]:
            raise ValueError(f"epochs must increase; epoch {epoch} follows {self.epochs[-1]}.")
        t = len(self.epochs)
        for name, value in spectra.items():
            value = np.asarray(value, dtype=np.float64).reshape(-1)
            old = self.spectra.get(name)
            if old is None:
                if t:
                    raise ValueError(
                        f"spectrum {name!r} first appears at epoch {epoch}, after "
                        f"{t} recorded epochs; every epoch must record the same spectra."
                    )
                self.spectra[name] = []
            elif old and old[0].shape != value.shape:
                raise ValueError(
                    f"spectrum {name!r} has {value.size} values at epoch {epoch} but "
                    f"{old[0].size} before; the tracked points changed."
                )
        missing = set(self.spectra) - set(spectra)
        if missing and t:
            raise ValueError(f"spectra {sorted(missing)} are missing at epoch {epoch}.")
        self.epochs.append(epoch)
        for name, value in spectra.items():
            self.spectra[name].append(np.asarray(value, dtype=np.float64).reshape(-1))
        for key in set(self.scalars) | set(scalars):
            column = self.scalars.setdefault(key, [math.nan] * t)
            column.append(float(scalars.get(key, math.nan)))

    def truncate(self, last_epoch: int) -> list[int]:
        """Drop every record with epoch > ``last_epoch``; returns the dropped epochs."""
        keep = [i for i, e in enumerate(self.epochs) if e <= last_epoch]
        dropped = self.epochs[len(keep) :]
        n = len(keep)
        self.epochs = self.epochs[:n]
        for k in self.scalars:
            self.scalars[k] = self.scalars[k][:n]
        for k in self.spectra:
            self.spectra[k] = self.spectra[k][:n]
        return dropped

    # ----------------------------------------------------------------- files
    def save(self, path) -> Path:
        """Write ``path`` (npz) and ``path`` with suffix ``.json``, atomically.

        Args:
            path: target file; ``.npz`` is appended when it has another suffix.

        Returns:
            the npz path.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        payload = {
            "epochs": np.asarray(self.epochs, dtype=np.int64),
            "meta_json": np.asarray(json.dumps(self._json_meta())),
        }
        for k, column in self.scalars.items():
            payload[_SCALAR + k] = np.asarray(column, dtype=np.float64)
        for k, spectra in self.spectra.items():
            payload[_SPECTRUM + k] = np.stack(spectra) if spectra else np.zeros((0, 0))
        for k, array in self.arrays.items():
            if k not in KERNEL_ARRAYS:
                payload[_ARRAY + k] = np.asarray(array)
        kernels = {k: np.asarray(v) for k, v in self.arrays.items() if k in KERNEL_ARRAYS}
        kernel_path = reference_path(path)
        if kernels and (
            self._kernel_digest is None
            or not kernel_path.is_file()
            or any(self._saved_kernels.get(k) != (kernel_path, id(v)) for k, v in kernels.items())
        ):
            data = _npz_bytes(kernels)
            atomic_write(kernel_path, lambda fh: fh.write(data), "wb")
            self._saved_kernels = {k: (kernel_path, id(v)) for k, v in kernels.items()}
            self._kernel_digest = (len(data), hashlib.sha256(data).hexdigest())
        if kernels and self._kernel_digest is not None:
            payload["reference_size"] = np.asarray(self._kernel_digest[0], dtype=np.int64)
            payload["reference_sha256"] = np.asarray(self._kernel_digest[1])
        atomic_write(path, lambda fh: _write_npz(fh, payload), "wb")
        summary = {
            "format": HISTORY_FORMAT,
            "epochs": list(self.epochs),
            "scalars": {k: [None if not math.isfinite(x) else x for x in v] for k, v in self.scalars.items()},
            "meta": self._json_meta(),
        }
        atomic_write(path.with_suffix(".json"), lambda fh: fh.write(json.dumps(summary, indent=1, sort_keys=True)), "w")
        return path

    @classmethod
    def load(cls, path) -> "MetricNTKHistory":
        """Read a history written by :meth:`save` (the ``.npz`` file or its ``.json`` sibling's path)."""
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".npz")
        if not path.is_file():
            raise FileNotFoundError(f"metric-NTK history file {path} does not exist.")
        fix = (
            "delete it (and its _reference.npz / .json siblings) and rerun, or train with "
            "`resume=False` into another `log_dir`."
        )
        f = read_npz(path, what="a cyntk metric-NTK history", fix=fix)
        files = set(f)
        if "epochs" not in files or "meta_json" not in files:
            raise ValueError(f"{path} is not a cyntk metric-NTK history (no 'epochs'/'meta_json').")
        try:
            meta = json.loads(str(f["meta_json"]))
        except ValueError as exc:
            raise CorruptFileError(f"{path}: its metadata (meta_json) is not valid JSON ({exc}); {fix}") from exc
        if not isinstance(meta, dict) or meta.get("format") != HISTORY_FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"{path} has format {got!r}; expected {HISTORY_FORMAT!r}.")
        out = cls(meta={k: v for k, v in meta.items() if k != "format"})
        out.epochs = [int(e) for e in f["epochs"]]
        for name in sorted(files):
            if name.startswith(_SCALAR):
                out.scalars[name[len(_SCALAR) :]] = [float(x) for x in f[name]]
            elif name.startswith(_SPECTRUM):
                out.spectra[name[len(_SPECTRUM) :]] = list(np.asarray(f[name], dtype=np.float64))
            elif name.startswith(_ARRAY):
                out.arrays[name[len(_ARRAY) :]] = np.asarray(f[name])
        n = len(out.epochs)
        bad = [k for k, v in list(out.scalars.items()) + list(out.spectra.items()) if len(v) != n]
        if bad:
            raise CorruptFileError(f"{path}: record(s) {bad} do not have one entry per tracked epoch ({n}); {fix}")
        kernel_path = reference_path(path)
        expected = None
        if "reference_sha256" in files:
            expected = (int(f["reference_size"]), str(f["reference_sha256"]))
            if not kernel_path.is_file():
                raise IncompleteFileSetError(
                    f"{kernel_path} is missing, but the history {path} was saved with it (its reference kernels); {fix}"
                )
            data = kernel_path.read_bytes()
            if (len(data), hashlib.sha256(data).hexdigest()) != expected:
                raise IncompleteFileSetError(
                    f"{kernel_path} does not belong to {path} (size/SHA-256 differ from the ones the history "
                    f"recorded: a save was interrupted between the two files, or one was replaced); {fix}"
                )
        if kernel_path.is_file():
            kernels = read_npz(kernel_path, what="the reference kernels of a metric-NTK history", fix=fix)
            for name, value in kernels.items():
                out.arrays[name] = value
                out._saved_kernels[name] = (kernel_path, id(out.arrays[name]))
            if expected is not None:
                out._kernel_digest = expected
        return out

    def _json_meta(self) -> dict:
        meta = {"format": HISTORY_FORMAT}
        meta.update(self.meta)
        return json.loads(json.dumps(meta, default=_json_default))


def reference_path(path) -> Path:
    """The side file of a history's kernels: ``<stem>_reference.npz`` beside ``path``."""
    path = Path(path)
    return path.with_name(path.stem + "_reference.npz")


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _write_npz(fh, arrays: dict) -> None:
    fh.write(_npz_bytes(arrays))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in the history's JSON metadata.")
