"""Datasets of points on a Calabi-Yau, and cymetric's dataset files.

:class:`CYDataset` holds train and validation points with named fields (no
"column -2" contracts). It reads and writes cymetric's two files exactly as
CONVENTIONS.md section 5 describes:

``dataset.npz`` (``np.savez_compressed``)
    ``X_train`` (N_tr, 2N) float64, ``y_train`` (N_tr, 2) float64 =
    [weight, |Omega|^2], ``X_val``, ``y_val`` likewise, ``val_pullbacks``
    (N_val, n, N) complex128.
``basis.pickle``
    the dict of :meth:`Hypersurface.basis` (DQDZB0, DQDZF0, QB0, QF0, NFOLD,
    AMBIENT, KMODULI, NHYPER, INTNUMS, KAPPA).

Files are written atomically (to a temporary file, then renamed), so an
interrupted write never leaves a truncated dataset behind.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cyntk.geometry._checks import as_points, positive_int
from cyntk.geometry.hypersurface import Hypersurface
from cyntk.geometry.projective import to_real

__all__ = ["CYDataset", "make_dataset", "load_basis", "save_basis", "atomic_write"]

DATASET_KEYS = ("X_train", "y_train", "X_val", "y_val", "val_pullbacks")
#: tolerance on |Q(z)| / sum_m |c_m z^m| for points read from files
ON_VARIETY_TOL = 1e-8


def atomic_write(path, writer, mode: str = "wb"):
    """Write ``path`` atomically: ``writer(fileobj)`` fills a temporary file that is renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)     # mkstemp makes 0600 files; use the usual permissions
    try:
        with os.fdopen(fd, mode) as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_basis(basis: dict, path):
    """Write a cymetric basis dict as a pickle (protocol 5), atomically."""
    atomic_write(path, lambda fh: pickle.dump(basis, fh, protocol=5))


def load_basis(path) -> dict:
    """Read a cymetric ``basis.pickle`` (or a cyntk/cymetric ``basis.npz``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"basis file {path} does not exist.")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    with open(path, "rb") as fh:
        basis = pickle.load(fh)
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
    meta: dict = field(default_factory=dict)

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

    def split(self, which: str) -> dict:
        """Named fields of one split: ``which`` in {'train', 'val'}."""
        if which not in ("train", "val"):
            raise ValueError(f"`which` must be 'train' or 'val'; received {which!r}.")
        return {k: getattr(self, f"{k}_{which}") for k in
                ("points", "weights", "omega_sq", "pullbacks", "charts")} | {
                    "X": getattr(self, f"X_{which}")}

    def __repr__(self):
        return (f"CYDataset(manifold={self.manifold.name!r}, n_train={self.n_train}, "
                f"n_val={self.n_val}, kappa={self.kappa:.8g})")

    # ---------------------------------------------------------- construct
    @classmethod
    def from_points(cls, manifold: Hypersurface, points, *, val_split: float = 0.1,
                    kappa: float | None = None, meta: dict | None = None) -> "CYDataset":
        """Split points (generation order, no shuffle) and compute their geometry.

        The first ``int((1 - val_split) * P)`` points are for training (cymetric).
        """
        z = as_points(points, "points", ncoords=manifold.ncoords)
        if len(z) < 2:
            raise ValueError(f"`points` must hold at least 2 points; received {len(z)}.")
        val_split = float(val_split)
        if not 0.0 <= val_split < 1.0:
            raise ValueError(f"`val_split` must be in [0, 1); received {val_split}.")
        geo = manifold.geometry(z)
        ntr = int((1.0 - val_split) * len(z))
        if kappa is None:
            kappa = float(np.mean(geo["weights"] * geo["det_fs"] / geo["omega_sq"]) / np.mean(geo["weights"]))
        s_tr, s_va = slice(0, ntr), slice(ntr, None)
        return cls(manifold=manifold, kappa=float(kappa),
                   points_train=z[s_tr], points_val=z[s_va],
                   weights_train=geo["weights"][s_tr], weights_val=geo["weights"][s_va],
                   omega_sq_train=geo["omega_sq"][s_tr], omega_sq_val=geo["omega_sq"][s_va],
                   pullbacks_train=geo["pullbacks"][s_tr], pullbacks_val=geo["pullbacks"][s_va],
                   charts_train=geo["charts"][s_tr], charts_val=geo["charts"][s_va],
                   meta=dict(meta or {}))

    # --------------------------------------------------------------- files
    def save(self, dirname) -> Path:
        """Write ``dataset.npz`` + ``basis.pickle`` (cymetric format) and ``cyntk.json``.

        Returns:
            the directory.
        """
        d = Path(dirname)
        d.mkdir(parents=True, exist_ok=True)
        arrays = dict(X_train=self.X_train, y_train=self.y_train, X_val=self.X_val,
                      y_val=self.y_val, val_pullbacks=self.pullbacks_val.astype(np.complex128))
        atomic_write(d / "dataset.npz", lambda fh: np.savez_compressed(fh, **arrays))
        save_basis(self.manifold.basis(self.kappa), d / "basis.pickle")
        info = {"manifold": self.manifold.name, "kappa": self.kappa, "n_train": self.n_train,
                "n_val": self.n_val, "vol_cy": self.vol_cy, **self.meta}
        atomic_write(d / "cyntk.json", lambda fh: fh.write(json.dumps(info, indent=2, default=str)), "w")
        return d

    @classmethod
    def load(cls, dirname, *, check_points: bool = True) -> "CYDataset":
        """Read a cymetric directory (``dataset.npz`` + ``basis.pickle``).

        Pullbacks and charts are recomputed from the points with cymetric's
        rules (max |dQ/dz| elimination); the stored ``val_pullbacks`` are
        checked against them. Weights and |Omega|^2 are taken from the file.

        Args:
            dirname: directory holding the two files.
            check_points: verify the points lie on the variety
                (|Q| <= 1e-8 * sum_m |c_m z^m|) and are finite.

        Raises:
            FileNotFoundError / KeyError / ValueError with the offending file or key.
        """
        d = Path(dirname)
        if not d.is_dir():
            raise FileNotFoundError(f"dataset directory {d} does not exist.")
        ds_path = d / "dataset.npz"
        if not ds_path.is_file():
            raise FileNotFoundError(f"{ds_path} is missing: a cymetric dataset directory holds "
                                    f"dataset.npz and basis.pickle.")
        basis_path = d / "basis.pickle"
        if not basis_path.is_file():
            alt = d / "basis.npz"
            if not alt.is_file():
                raise FileNotFoundError(f"{basis_path} is missing: a cymetric dataset directory holds "
                                        f"dataset.npz and basis.pickle.")
            basis_path = alt
        basis = load_basis(basis_path)
        name = d.name
        if (d / "cyntk.json").is_file():
            name = json.loads((d / "cyntk.json").read_text()).get("manifold", name)
        manifold = Hypersurface.from_basis(basis, name=str(name))
        with np.load(ds_path, allow_pickle=False) as f:
            missing = [k for k in DATASET_KEYS if k not in f.files]
            if missing:
                raise KeyError(f"{ds_path} is missing key(s) {missing}; expected {list(DATASET_KEYS)}.")
            arr = {k: f[k] for k in DATASET_KEYS}
        N, n = manifold.ncoords, manifold.nfold
        for split in ("train", "val"):
            X, y = arr[f"X_{split}"], arr[f"y_{split}"]
            if X.ndim != 2 or X.shape[1] != 2 * N:
                raise ValueError(f"{ds_path}: X_{split} must have shape (P, {2 * N}) for this manifold "
                                 f"(N={N}); received {X.shape}.")
            if y.ndim != 2 or y.shape != (len(X), 2):
                raise ValueError(f"{ds_path}: y_{split} must have shape ({len(X)}, 2) = [weight, |Omega|^2]; "
                                 f"received {y.shape}.")
            if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
                raise ValueError(f"{ds_path}: X_{split}/y_{split} contain NaN or inf.")
        zt = arr["X_train"][:, :N] + 1j * arr["X_train"][:, N:]
        zv = arr["X_val"][:, :N] + 1j * arr["X_val"][:, N:]
        if check_points:
            for name, z in (("X_train", zt), ("X_val", zv)):
                if len(z):
                    res = np.abs(manifold.Q(z)) / manifold.monomial_scale(z)
                    if np.max(res) > ON_VARIETY_TOL:
                        raise ValueError(
                            f"{ds_path}: {int(np.sum(res > ON_VARIETY_TOL))} point(s) of {name} are not on "
                            f"the variety of basis.pickle (max |Q|/scale = {np.max(res):.2e} > "
                            f"{ON_VARIETY_TOL:g}); dataset and basis do not belong together.")
        gt, gv = manifold.geometry(zt), manifold.geometry(zv)
        pbv = arr["val_pullbacks"]
        if pbv.shape != (len(zv), n, N):
            raise ValueError(f"{ds_path}: val_pullbacks must have shape ({len(zv)}, {n}, {N}); "
                             f"received {pbv.shape}.")
        kappa = float(np.real(np.asarray(basis.get("KAPPA", np.nan))))
        if not np.isfinite(kappa) or kappa <= 0:
            w = np.concatenate([arr["y_train"][:, 0], arr["y_val"][:, 0]])
            det = np.concatenate([gt["det_fs"], gv["det_fs"]])
            om2 = np.concatenate([arr["y_train"][:, 1], arr["y_val"][:, 1]])
            kappa = float(np.mean(w * det / om2) / np.mean(w))
        return cls(manifold=manifold, kappa=kappa,
                   points_train=zt, points_val=zv,
                   weights_train=arr["y_train"][:, 0].copy(), weights_val=arr["y_val"][:, 0].copy(),
                   omega_sq_train=arr["y_train"][:, 1].copy(), omega_sq_val=arr["y_val"][:, 1].copy(),
                   pullbacks_train=gt["pullbacks"], pullbacks_val=pbv.astype(np.complex128),
                   charts_train=gt["charts"], charts_val=gv["charts"],
                   meta={"source": str(d)})


def make_dataset(manifold: Hypersurface, n_points: int, *, val_split: float = 0.1, seed=None,
                 chart=None, progress=None) -> CYDataset:
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
    z = manifold.sample_points(n_points, seed=seed, chart=chart, progress=progress)
    meta = {"seed": seed if isinstance(seed, (int, type(None))) else "generator",
            "chart": None if chart is None else [int(c) for c in chart], "val_split": val_split}
    return CYDataset.from_points(manifold, z, val_split=val_split, meta=meta)
