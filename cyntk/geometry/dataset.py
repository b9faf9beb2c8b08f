"""Datasets of points on a Calabi-Yau, and cymetric's dataset files.

:class:`CYDataset` holds train and validation points with named fields (no
"column -2" contracts). It reads and writes cymetric's two files exactly as
conventions §5 describes:

``dataset.npz`` (``np.savez_compressed``)
    ``X_train`` (N_tr, 2N) float64, ``y_train`` (N_tr, 2) float64 =
    [weight, |Omega|^2], ``X_val``, ``y_val`` likewise, ``val_pullbacks``
    (N_val, n, N) complex128.
``basis.pickle``
    the dict of :meth:`Hypersurface.basis` (DQDZB0, DQDZF0, QB0, QF0, NFOLD,
    AMBIENT, KMODULI, NHYPER, INTNUMS, KAPPA).

The three files are one *file set*: ``cyntk.json`` is first rewritten to say
"incomplete", then each file is written atomically, and ``cyntk.json`` is
written last with the size and SHA-256 of the other two. :meth:`CYDataset.load`
refuses a directory whose ``cyntk.json`` says incomplete or whose files do not
match it, and checks stored quantities (weights, |Omega|^2, ``val_pullbacks``)
against ones recomputed from the points.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from cyntk._validation import as_points, check_memory, positive_int
from cyntk.geometry.cicy_io import manifold_from_basis
from cyntk.geometry.files import (
    CorruptFileError,
    IncompleteFileSetError,
    atomic_write,
    begin_file_set,
    check_file_set,
    finish_file_set,
    read_npz,
    read_pickle,
)
from cyntk.geometry.hypersurface import Hypersurface
from cyntk.geometry.projective import to_real
from cyntk.geometry.variety import FILE_VARIETY_TOL, check_on_variety

__all__ = ["CYDataset", "make_dataset", "load_basis", "save_basis", "atomic_write"]

DATASET_KEYS = ("X_train", "y_train", "X_val", "y_val", "val_pullbacks")
#: tolerance on |Q(z)| / sum_m |c_m z^m| for points read from files
ON_VARIETY_TOL = FILE_VARIETY_TOL
#: relative tolerance of stored weights / |Omega|^2 against recomputed ones on load
STORED_RTOL = 1e-6
_FIX_DATASET = "re-create the dataset (`cyntk sample ... -o DIR` or `make_dataset(...).save(DIR)`)."


def save_basis(basis: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a cymetric basis dict as a pickle (protocol 5), atomically."""
    atomic_write(path, lambda fh: pickle.dump(basis, fh, protocol=5))


def load_basis(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a cymetric ``basis.pickle`` (or a cyntk/cymetric ``basis.npz``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"basis file {path} does not exist.")
    if path.suffix == ".npz":
        return read_npz(path, what="a cymetric basis (.npz)", fix=_FIX_DATASET)
    basis = read_pickle(path, what="a cymetric basis (pickled dict)", fix=_FIX_DATASET)
    if not isinstance(basis, dict):
        raise ValueError(f"{path} does not hold a cymetric basis dict; received {type(basis).__name__}.")
    return basis


@dataclass
class CYDataset:
    """Train and validation points on a hypersurface, with all per-point geometry.

    Fields (P = number of points of the split, N coordinates, n = N - 2):

    * ``manifold``: the :class:`Hypersurface`.
    * ``kappa``: ``Vol_K / Vol_CY`` over all points (train + val), the
      Monge-Ampere constant: the Ricci-flat metric has ``det g = kappa |Omega|^2``.
    * ``points_train`` / ``points_val``: complex128 (P, N), patch-normalised.
    * ``weights_train`` / ``weights_val``: float64 (P,), cymetric-normalised.
    * ``omega_sq_train`` / ``omega_sq_val``: float64 (P,), ``|Omega|^2``.
    * ``pullbacks_train`` / ``pullbacks_val``: complex128 (P, n, N).
    * ``charts_train`` / ``charts_val``: int64 (P, 2) = [patch, eliminated].

    Derived: ``X_train``/``X_val`` (P, 2N) float64 network inputs,
    ``y_train``/``y_val`` (P, 2) = [weight, |Omega|^2] (cymetric's layout).
    """

    manifold: Hypersurface
    kappa: float
    points_train: np.ndarray
    points_val: np.ndarray
    weights_train: np.ndarray
    weights_val: np.ndarray
    omega_sq_train: np.ndarray
    omega_sq_val: np.ndarray
    pullbacks_train: np.ndarray
    pullbacks_val: np.ndarray
    charts_train: np.ndarray
    charts_val: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ derived
    @property
    def X_train(self) -> np.ndarray:
        return to_real(self.points_train)

    @property
    def X_val(self) -> np.ndarray:
        return to_real(self.points_val)

    @property
    def y_train(self) -> np.ndarray:
        return np.stack([self.weights_train, self.omega_sq_train], axis=1)

    @property
    def y_val(self) -> np.ndarray:
        return np.stack([self.weights_val, self.omega_sq_val], axis=1)

    @property
    def n_train(self) -> int:
        return len(self.points_train)

    @property
    def n_val(self) -> int:
        return len(self.points_val)

    @property
    def vol_cy(self) -> float:
        """Monte-Carlo ``Vol_CY = mean(w)`` over all points."""
        return float(np.mean(np.concatenate([self.weights_train, self.weights_val])))

    def split(self, which: Literal["train", "val"]) -> dict[str, np.ndarray]:
        """Named fields of one split: ``which`` in {'train', 'val'}."""
        if which not in ("train", "val"):
            raise ValueError(f"`which` must be 'train' or 'val'; received {which!r}.")
        return {k: getattr(self, f"{k}_{which}") for k in ("points", "weights", "omega_sq", "pullbacks", "charts")} | {
            "X": getattr(self, f"X_{which}")
        }

    def __repr__(self) -> str:
        return (
            f"CYDataset(manifold={self.manifold.name!r}, n_train={self.n_train}, "
            f"n_val={self.n_val}, kappa={self.kappa:.8g})"
        )

    # ---------------------------------------------------------- construct
    @classmethod
    def from_points(
        cls,
        manifold: Hypersurface,
        points: ArrayLike,
        *,
        val_split: float = 0.1,
        kappa: float | None = None,
        meta: dict[str, Any] | None = None,
        check_variety: bool = True,
    ) -> "CYDataset":
        """Split points (generation order, no shuffle) and compute their geometry.

        The first ``int((1 - val_split) * P)`` points are for training (cymetric).

        Args:
            manifold: the hypersurface.
            points: complex (P, N) or real (P, 2N) points on it.
            val_split: validation fraction in [0, 1); at least one training point must remain.
            kappa: override the Monte-Carlo kappa.
            meta: extra JSON-serialisable information kept in ``cyntk.json``.
            check_variety: raise when a point is not on the variety (relative
                residual above ``cyntk.geometry.VARIETY_TOL``).
        """
        z = as_points(points, "points", ncoords=manifold.ncoords)
        if len(z) < 2:
            raise ValueError(f"`points` must hold at least 2 points; received {len(z)}.")
        if isinstance(val_split, (bool, np.bool_)) or not isinstance(val_split, (int, float, np.number)):
            raise TypeError(f"`val_split` must be a number in [0, 1); received {val_split!r}.")
        val_split = float(val_split)
        if not 0.0 <= val_split < 1.0:
            raise ValueError(f"`val_split` must be in [0, 1); received {val_split}.")
        ntr = int((1.0 - val_split) * len(z))
        if ntr < 1:
            raise ValueError(
                f"`val_split` = {val_split} leaves no training point of the {len(z)} points "
                f"(int((1 - val_split) * P) = 0); use a smaller `val_split` or more points."
            )
        if check_variety:
            check_on_variety(manifold, z, "points")
        geo = manifold.geometry(z, check_variety=False)
        if kappa is None:
            kappa = float(np.mean(geo["weights"] * geo["det_fs"] / geo["omega_sq"]) / np.mean(geo["weights"]))
        s_tr, s_va = slice(0, ntr), slice(ntr, None)
        return cls(
            manifold=manifold,
            kappa=float(kappa),
            points_train=z[s_tr],
            points_val=z[s_va],
            weights_train=geo["weights"][s_tr],
            weights_val=geo["weights"][s_va],
            omega_sq_train=geo["omega_sq"][s_tr],
            omega_sq_val=geo["omega_sq"][s_va],
            pullbacks_train=geo["pullbacks"][s_tr],
            pullbacks_val=geo["pullbacks"][s_va],
            charts_train=geo["charts"][s_tr],
            charts_val=geo["charts"][s_va],
            meta=dict(meta or {}),
        )

    # --------------------------------------------------------------- files
    def save(self, dirname: str | os.PathLike[str]) -> Path:
        """Write ``dataset.npz`` + ``basis.pickle`` (cymetric format) and ``cyntk.json``.

        Returns:
            the directory.
        """
        d = Path(dirname)
        if d.exists() and not d.is_dir():
            raise FileExistsError(
                f"`dirname` {d} is an existing file; a dataset is a directory "
                "(dataset.npz, basis.pickle, cyntk.json). Choose another path."
            )
        d.mkdir(parents=True, exist_ok=True)
        arrays = dict(
            X_train=self.X_train,
            y_train=self.y_train,
            X_val=self.X_val,
            y_val=self.y_val,
            val_pullbacks=self.pullbacks_val.astype(np.complex128),
        )
        info = {
            "manifold": self.manifold.name,
            "kappa": self.kappa,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "vol_cy": self.vol_cy,
            **self.meta,
        }
        begin_file_set(d / "cyntk.json", info)
        # numpy's stub types **arrays as if a key could be its `allow_pickle: bool`
        atomic_write(d / "dataset.npz", lambda fh: np.savez_compressed(fh, **arrays))  # type: ignore[arg-type]
        save_basis(self.manifold.basis(self.kappa), d / "basis.pickle")
        finish_file_set(d / "cyntk.json", ["dataset.npz", "basis.pickle"], info)
        return d

    @classmethod
    def load(cls, dirname: str | os.PathLike[str], *, check_points: bool = True) -> "CYDataset":
        """Read a cymetric directory (``dataset.npz`` + ``basis.pickle``).

        A directory written by cyntk is first checked against its
        ``cyntk.json`` manifest (sizes and SHA-256 of both files): an
        interrupted or modified set is refused. Pullbacks and charts are then
        recomputed from the points with cymetric's rules (max |dQ/dz|
        elimination), and the stored weights, |Omega|^2 and ``val_pullbacks``
        must agree with the recomputed ones (relative ``STORED_RTOL`` = 1e-6),
        so a file whose ``y`` columns are swapped or that belongs to another
        manifold is refused rather than loaded.

        Args:
            dirname: directory holding the two files.
            check_points: verify the points lie on the variety
                (|Q| <= 1e-8 * sum_m |c_m z^m|) and the stored quantities match
                recomputed ones; ``False`` skips both (experts only).

        Raises:
            FileNotFoundError: the directory or a file is missing.
            IncompleteFileSetError: the set was not written completely.
            CorruptFileError: a file cannot be read.
            KeyError / ValueError: naming the offending file and key.
        """
        d = Path(dirname)
        if not d.is_dir():
            raise FileNotFoundError(f"dataset directory {d} does not exist.")
        ds_path = d / "dataset.npz"
        status, reason, info = check_file_set(d / "cyntk.json")
        if status == "incomplete":
            raise IncompleteFileSetError(
                f"dataset directory {d} is incomplete: {reason}. Nothing was loaded; {_FIX_DATASET}"
            )
        if not ds_path.is_file():
            raise FileNotFoundError(
                f"{ds_path} is missing: a cymetric dataset directory holds dataset.npz and basis.pickle."
            )
        basis_path = d / "basis.pickle"
        if not basis_path.is_file():
            alt = d / "basis.npz"
            if not alt.is_file():
                raise FileNotFoundError(
                    f"{basis_path} is missing: a cymetric dataset directory holds dataset.npz and basis.pickle."
                )
            basis_path = alt
        basis = load_basis(basis_path)
        name = info.get("manifold", d.name)  # cyntk.json (complete or pre-manifest)
        try:
            manifold = manifold_from_basis(basis, name=str(name))
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptFileError(f"{basis_path} does not describe a hypersurface: {exc} {_FIX_DATASET}") from exc
        f = read_npz(ds_path, what="a cymetric dataset (.npz)", fix=_FIX_DATASET)
        missing = [k for k in DATASET_KEYS if k not in f]
        if missing:
            raise KeyError(f"{ds_path} is missing key(s) {missing}; expected {list(DATASET_KEYS)}.")
        arr = {k: f[k] for k in DATASET_KEYS}
        N, n = manifold.ncoords, manifold.nfold
        for split in ("train", "val"):
            X, y = arr[f"X_{split}"], arr[f"y_{split}"]
            for key, a in ((f"X_{split}", X), (f"y_{split}", y)):
                if not np.issubdtype(a.dtype, np.floating):
                    raise ValueError(
                        f"{ds_path}: {key} must be a real floating-point array; received "
                        f"dtype {a.dtype}. {_FIX_DATASET}"
                    )
            if X.ndim != 2 or X.shape[1] != 2 * N:
                raise ValueError(
                    f"{ds_path}: X_{split} must have shape (P, {2 * N}) for this manifold (N={N}); received {X.shape}."
                )
            if y.ndim != 2 or y.shape != (len(X), 2):
                raise ValueError(
                    f"{ds_path}: y_{split} must have shape ({len(X)}, 2) = [weight, |Omega|^2]; received {y.shape}."
                )
            if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
                raise ValueError(f"{ds_path}: X_{split}/y_{split} contain NaN or inf.")
        zt = arr["X_train"][:, :N] + 1j * arr["X_train"][:, N:]
        zv = arr["X_val"][:, :N] + 1j * arr["X_val"][:, N:]
        if check_points:
            for key, z in (("X_train", zt), ("X_val", zv)):
                if len(z):
                    res = np.abs(manifold.Q(z)) / manifold.monomial_scale(z)
                    if not np.max(res) <= ON_VARIETY_TOL:
                        raise ValueError(
                            f"{ds_path}: {int(np.sum(~(res <= ON_VARIETY_TOL)))} point(s) of {key} are not on "
                            f"the variety of {basis_path.name} (max |Q|/scale = {np.max(res):.2e} > "
                            f"{ON_VARIETY_TOL:g}); dataset and basis do not belong together. {_FIX_DATASET}"
                        )
        gt = manifold.geometry(zt, check_variety=False)
        gv = manifold.geometry(zv, check_variety=False)
        pbv = arr["val_pullbacks"]
        if pbv.shape != (len(zv), n, N):
            raise ValueError(f"{ds_path}: val_pullbacks must have shape ({len(zv)}, {n}, {N}); received {pbv.shape}.")
        if not np.all(np.isfinite(pbv)):
            raise ValueError(f"{ds_path}: val_pullbacks contain NaN or inf. {_FIX_DATASET}")
        if check_points:
            if hasattr(manifold, "weight_normalisation"):  # cymetric's data-dependent constant (cicy.py)
                c = manifold.weight_normalisation(
                    np.concatenate([arr["y_train"][:, 0], arr["y_val"][:, 0]]),
                    np.concatenate([gt["weights"], gv["weights"]]),
                )
                gt["weights"], gv["weights"] = c * gt["weights"], c * gv["weights"]
            for key, stored, fresh in (
                ("y_train[:, 0] (weights)", arr["y_train"][:, 0], gt["weights"]),
                ("y_train[:, 1] (|Omega|^2)", arr["y_train"][:, 1], gt["omega_sq"]),
                ("y_val[:, 0] (weights)", arr["y_val"][:, 0], gv["weights"]),
                ("y_val[:, 1] (|Omega|^2)", arr["y_val"][:, 1], gv["omega_sq"]),
                ("val_pullbacks", pbv, gv["pullbacks"]),
            ):
                _check_stored(ds_path, key, stored, fresh)
        kappa = float(np.real(np.asarray(basis.get("KAPPA", np.nan))))
        if not np.isfinite(kappa) or kappa <= 0:
            w = np.concatenate([arr["y_train"][:, 0], arr["y_val"][:, 0]])
            det = np.concatenate([gt["det_fs"], gv["det_fs"]])
            om2 = np.concatenate([arr["y_train"][:, 1], arr["y_val"][:, 1]])
            kappa = float(np.mean(w * det / om2) / np.mean(w))
        return cls(
            manifold=manifold,
            kappa=kappa,
            points_train=zt,
            points_val=zv,
            weights_train=arr["y_train"][:, 0].copy(),
            weights_val=arr["y_val"][:, 0].copy(),
            omega_sq_train=arr["y_train"][:, 1].copy(),
            omega_sq_val=arr["y_val"][:, 1].copy(),
            pullbacks_train=gt["pullbacks"],
            pullbacks_val=pbv.astype(np.complex128),
            charts_train=gt["charts"],
            charts_val=gv["charts"],
            meta={"source": str(d)},
        )


def _check_stored(
    path: str | os.PathLike[str], key: str, stored: np.ndarray, fresh: np.ndarray, rtol: float = STORED_RTOL
) -> None:
    """Raise unless a stored per-point quantity matches the recomputed one."""
    if stored.size == 0:
        return
    axes = tuple(range(1, stored.ndim))
    scale = np.abs(fresh).max(axis=axes) if axes else np.abs(fresh)
    err = np.abs(stored - fresh).max(axis=axes) if axes else np.abs(stored - fresh)
    bad = ~(err <= rtol * scale)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(
            f"{path}: stored {key} disagree with the values recomputed from the points at "
            f"{int(bad.sum())} of {len(bad)} points (e.g. point {i}: relative error "
            f"{float(err[i] / max(scale[i], 1e-300)):.3g} > {rtol:g}); the file was modified, its "
            f"columns are swapped, or it belongs to another manifold. {_FIX_DATASET} "
            f"(`check_points=False` skips this check.)"
        )


def make_dataset(
    manifold: Hypersurface,
    n_points: int,
    *,
    val_split: float = 0.1,
    seed: int | np.random.Generator | None = None,
    chart: Sequence[int] | None = None,
    progress: bool | None = None,
) -> CYDataset:
    """Sample ``n_points`` points and build a :class:`CYDataset` (cymetric's prepare_dataset).

    Args:
        manifold: the hypersurface.
        n_points: total number of points (train + val).
        val_split: fraction of validation points (the last ones, no shuffle).
        seed: RNG seed (int) or ``numpy.random.Generator``.
        chart: optional (patch, eliminated) pair: all points in that one chart.
        progress: progress bar (default: for large requests).

    Returns:
        the dataset; ``kappa`` is computed over all points, as cymetric does.
    """
    n_points = positive_int(n_points, "n_points")
    N, n = manifold.ncoords, manifold.nfold
    per_point = 16 * (4 * N + 3 * n * N + 4 * n * n) + 8 * 12
    check_memory(n_points * per_point, "n_points", n_points, f"a dataset on {manifold.name}")
    z = manifold.sample_points(n_points, seed=seed, chart=chart, progress=progress)
    meta = {
        "seed": seed if isinstance(seed, (int, type(None))) else "generator",
        "chart": None if chart is None else [int(c) for c in chart],
        "val_split": val_split,
    }
    return CYDataset.from_points(manifold, z, val_split=val_split, meta=meta)
