"""Manifold description shared by the metric models (no TensorFlow here).

A :class:`ManifoldSpec` is the small, serialisable set of numbers a metric model
needs about a hypersurface ``Q(z) = sum_m c_m prod_i z_i**M[m, i] = 0`` in a
single projective space ``P^{N-1}``: the exponent matrix, the coefficients, the
Kähler parameter and (optionally) the Monge--Ampère constant ``kappa``
(conventions §1, 4.4 and 5.2).

It is built from any of the inputs the models accept:

* a cymetric ``basis.pickle`` dict (values may be complex64 arrays, as written by
  ``prepare_basis`` or cast by ``prepare_tf_basis``, or Python/NumPy scalars,
  conventions §5.3), or a path to such a pickle / to a directory holding one;
* a :class:`cyntk.geometry.Hypersurface` (anything with ``monomials``,
  ``coefficients``, ``kmoduli`` attributes);
* a :class:`cyntk.geometry.CYDataset` (anything with ``manifold`` and ``kappa``);
* another :class:`ManifoldSpec` or its ``get_config()`` dict.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from cyntk.geometry.files import IncompleteFileSetError, check_file_set, read_pickle

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import TypeAlias

    from cyntk.geometry.cicy import CompleteIntersection
    from cyntk.geometry.dataset import CYDataset
    from cyntk.geometry.hypersurface import Hypersurface
    from cyntk.models._cicy_spec import CICYSpec

    #: every form of the ``manifold`` argument of the models (see :func:`manifold_spec`)
    ManifoldLike: TypeAlias = Union[
        "ManifoldSpec",
        CICYSpec,
        Hypersurface,
        CompleteIntersection,
        CYDataset,
        Mapping[str, Any],
        str,
        os.PathLike[str],
    ]

__all__ = ["ManifoldSpec", "manifold_spec"]

_CONFIG_MARKER = "cyntk_manifold_spec"


def _real_array(value: object, name: str, dtype: DTypeLike) -> np.ndarray:
    """Real part of ``value`` as an array, refusing a genuinely complex value."""
    arr = np.asarray(getattr(value, "numpy", lambda: value)())
    if np.iscomplexobj(arr):
        if arr.size and np.max(np.abs(arr.imag)) > 1e-6 * max(1.0, float(np.max(np.abs(arr.real)))):
            raise ValueError(
                f"basis entry `{name}` must be real (it may be stored as complex with "
                f"zero imaginary part); received imaginary parts up to "
                f"{np.max(np.abs(arr.imag)):.3g}."
            )
        arr = arr.real
    return arr.astype(dtype)


@dataclass(frozen=True, eq=False)
class ManifoldSpec:
    """A hypersurface in one projective space, as the metric models see it.

    Attributes:
        monomials: int64 (nMon, N) exponent matrix of ``Q``.
        coefficients: complex128 (nMon,) coefficients of ``Q``.
        kmoduli: float64 (1,) Kähler parameter ``t``.
        kappa: ``kappa = Vol_K / Vol_CY`` of the data set the model is trained
            on (conventions §4.4), or ``None`` when unknown (then the sigma
            loss cannot be evaluated).
        name: free text, for messages only.
    """

    monomials: np.ndarray
    coefficients: np.ndarray
    kmoduli: np.ndarray
    kappa: Optional[float] = None
    name: str = "hypersurface"
    _derivative_cache: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        mon = np.asarray(self.monomials)
        if mon.ndim != 2 or mon.shape[0] < 1 or mon.shape[1] < 2:
            raise ValueError(
                f"`monomials` must be an int array of shape (nMonomials, N) with N >= 2; received shape {mon.shape}."
            )
        if np.any(mon < 0) or np.any(mon != np.round(mon)):
            raise ValueError("`monomials` must hold non-negative integer exponents.")
        mon = mon.astype(np.int64)
        deg = mon.sum(axis=1)
        if np.any(deg != deg[0]):
            raise ValueError(
                f"`monomials` must define a homogeneous polynomial; received monomial "
                f"degrees {sorted(set(deg.tolist()))}."
            )
        coeff = np.asarray(self.coefficients).astype(np.complex128).reshape(-1)
        if coeff.shape[0] != mon.shape[0]:
            raise ValueError(
                f"`coefficients` must have one entry per monomial ({mon.shape[0]}); received {coeff.shape[0]}."
            )
        t = np.asarray(self.kmoduli, dtype=np.float64).reshape(-1)
        if t.shape != (1,):
            raise ValueError(
                f"`kmoduli` must hold exactly one Kähler parameter (hypersurfaces in a "
                f"single projective space are supported); received {t.tolist()}."
            )
        if not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise ValueError(f"`kmoduli` must be positive; received {t.tolist()}.")
        if not np.all(np.isfinite(coeff)):
            raise ValueError("`coefficients` must be finite; received NaN or inf.")
        keep = coeff != 0
        if not np.any(keep):
            raise ValueError("`coefficients` are all zero: the zero polynomial defines no hypersurface.")
        mon, coeff = mon[keep], coeff[keep]
        kappa = self.kappa
        if kappa is not None:
            kappa = float(np.real(kappa))
            if not np.isfinite(kappa) or kappa <= 0:
                raise ValueError(f"`kappa` must be a positive finite number; received {self.kappa!r}.")
        object.__setattr__(self, "monomials", mon)
        object.__setattr__(self, "coefficients", coeff)
        object.__setattr__(self, "kmoduli", t)
        object.__setattr__(self, "kappa", kappa)
        if self.ncoords - 1 - 1 < 1:
            raise ValueError(
                f"the hypersurface must have complex dimension >= 1 (N >= 3 coordinates); received N = {self.ncoords}."
            )

    # ------------------------------------------------------------------ sizes
    @property
    def ncoords(self) -> int:
        """N, the number of homogeneous coordinates."""
        return int(self.monomials.shape[1])

    @property
    def nfold(self) -> int:
        """n = N - 2, the complex dimension of the hypersurface."""
        return self.ncoords - 2

    @property
    def degree(self) -> int:
        """Degree d of Q; also the intersection number ``int_X J^n`` at t = 1."""
        return int(self.monomials[0].sum())

    @property
    def ambient(self) -> np.ndarray:
        """int64 (1,): the dimension N - 1 of the projective space."""
        return np.array([self.ncoords - 1], dtype=np.int64)

    @property
    def vol_j_norm(self) -> float:
        """Kähler volume ``d * t^n`` at the spec's Kähler parameter."""
        return float(self.degree * self.kmoduli[0] ** self.nfold)

    @property
    def volk_target(self) -> np.ndarray:
        """float64 (1,): the slopes ``mu_r = d_{r s t...} t^s t^t...`` = ``d t^(n-1)``."""
        return np.array([self.degree * self.kmoduli[0] ** (self.nfold - 1)], dtype=np.float64)

    # --------------------------------------------------------- polynomial data
    def derivative_basis(self) -> tuple[np.ndarray, np.ndarray]:
        """dQ/dz_i as padded monomial lists.

        Returns:
            ``(exponents, coefficients)``: int64 (N, T, N) and complex128 (N, T)
            with ``dQ/dz_i = sum_t coefficients[i, t] prod_l z_l**exponents[i, t, l]``.
            Padding terms have coefficient 0 and exponent 0.
        """
        if "basis" not in self._derivative_cache:
            N = self.ncoords
            rows = []
            for i in range(N):
                terms = {}
                for m, c in zip(self.monomials, self.coefficients):
                    if m[i] == 0 or c == 0:
                        continue
                    e = m.copy()
                    e[i] -= 1
                    key = tuple(int(v) for v in e)
                    terms[key] = terms.get(key, 0) + c * m[i]
                rows.append([(k, v) for k, v in terms.items() if v != 0])
            T = max(1, max(len(r) for r in rows))
            E = np.zeros((N, T, N), np.int64)
            F = np.zeros((N, T), np.complex128)
            for i, r in enumerate(rows):
                for t_, (k, v) in enumerate(r):
                    E[i, t_] = k
                    F[i, t_] = v
            self._derivative_cache["basis"] = (E, F)
        E, F = self._derivative_cache["basis"]
        return E.copy(), F.copy()

    def Q(self, z: ArrayLike) -> np.ndarray:
        """Q(z) for complex z of shape (B, N) (NumPy, complex128)."""
        z = np.asarray(z, dtype=np.complex128)
        return (self.coefficients * np.prod(z[:, None, :] ** self.monomials[None], axis=-1)).sum(-1)

    def residual(self, z: ArrayLike) -> np.ndarray:
        """Scale-free residual ``|Q(z)| / sum_m |c_m z^m|`` (B,) float64."""
        z = np.asarray(z, dtype=np.complex128)
        terms = self.coefficients * np.prod(z[:, None, :] ** self.monomials[None], axis=-1)
        scale = np.abs(terms).sum(-1)
        return np.abs(terms.sum(-1)) / np.where(scale > 0, scale, 1.0)

    # ---------------------------------------------------------------- identity
    def same_manifold(self, other: ManifoldSpec | CICYSpec) -> bool:
        """True when ``other`` has the same polynomial (up to monomial order and
        an overall factor) and the same Kähler parameter.

        ``other`` may also be a :class:`~cyntk.models._cicy_spec.CICYSpec`: it
        is the same manifold only when it is one equation in one projective
        space with the same polynomial (a product or several equations is
        another manifold, whatever its number of coordinates). Anything else
        compares as a different manifold.
        """
        if not isinstance(other, ManifoldSpec):
            from cyntk.models._cicy_spec import CICYSpec

            return isinstance(other, CICYSpec) and other.same_manifold(self)
        if other.ncoords != self.ncoords or other.monomials.shape != self.monomials.shape:
            return False

        def canon(spec: ManifoldSpec) -> tuple[np.ndarray, np.ndarray]:
            order = np.lexsort(spec.monomials.T[::-1])
            c = spec.coefficients[order]
            c = c / c[np.argmax(np.abs(c))]
            return spec.monomials[order], c

        m1, c1 = canon(self)
        m2, c2 = canon(other)
        return (
            np.array_equal(m1, m2)
            and np.allclose(c1, c2, rtol=1e-6, atol=1e-9)
            and np.allclose(self.kmoduli, other.kmoduli, rtol=1e-12)
        )

    def describe(self) -> str:
        terms = " + ".join(
            f"({c.real:g}{c.imag:+g}j)*" + "*".join(f"z{i}^{e}" for i, e in enumerate(m) if e)
            if c.imag
            else f"{c.real:g}*" + "*".join(f"z{i}^{e}" for i, e in enumerate(m) if e)
            for m, c in zip(self.monomials[:6], self.coefficients[:6])
        )
        more = " + ..." if len(self.monomials) > 6 else ""
        return f"{self.name}: {terms}{more} = 0 in P^{self.ncoords - 1}, t = {self.kmoduli[0]:g}"

    def with_kappa(self, kappa: float | None) -> ManifoldSpec:
        return ManifoldSpec(self.monomials, self.coefficients, self.kmoduli, kappa, self.name)

    # ----------------------------------------------------------- serialisation
    def get_config(self) -> dict[str, Any]:
        return {
            _CONFIG_MARKER: 1,
            "monomials": self.monomials.tolist(),
            "coefficients_real": self.coefficients.real.tolist(),
            "coefficients_imag": self.coefficients.imag.tolist(),
            "kmoduli": self.kmoduli.tolist(),
            "kappa": self.kappa,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ManifoldSpec:
        return cls(
            np.asarray(config["monomials"], np.int64),
            np.asarray(config["coefficients_real"]) + 1j * np.asarray(config["coefficients_imag"]),
            np.asarray(config["kmoduli"], np.float64),
            config.get("kappa"),
            config.get("name", "hypersurface"),
        )

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_basis(cls, basis: Mapping[str, Any], kappa: float | None = None) -> ManifoldSpec:
        """From a cymetric ``basis.pickle`` dict (conventions §5.2/5.3)."""
        missing = [k for k in ("QB0", "QF0", "KMODULI") if k not in basis]
        if missing:
            raise ValueError(
                f"`manifold` basis dict must contain cymetric's keys QB0, QF0, KMODULI "
                f"(as written by prepare_basis); missing {missing}; received keys "
                f"{sorted(basis)}."
            )
        nhyper = int(np.real(np.asarray(basis.get("NHYPER", 1))))
        if nhyper != 1 or any(k in basis for k in ("QB1", "DQDZB1")):
            raise ValueError(f"only single hypersurfaces are supported (NHYPER = 1); received NHYPER = {nhyper}.")
        ambient = _real_array(basis.get("AMBIENT", [0]), "AMBIENT", np.int64).reshape(-1)
        if ambient.shape[0] != 1:
            raise ValueError(
                f"only hypersurfaces in a single projective space are supported; received "
                f"AMBIENT = {ambient.tolist()} (a product of {ambient.shape[0]} factors)."
            )
        mon = _real_array(basis["QB0"], "QB0", np.float64)
        coeff = np.asarray(getattr(basis["QF0"], "numpy", lambda: basis["QF0"])()).astype(np.complex128)
        if kappa is None and "KAPPA" in basis:
            kappa = float(np.real(np.asarray(getattr(basis["KAPPA"], "numpy", lambda: basis["KAPPA"])())))
        spec = cls(
            np.round(mon).astype(np.int64),
            coeff,
            _real_array(basis["KMODULI"], "KMODULI", np.float64),
            kappa,
            name="basis",
        )
        if ambient[0] != spec.ncoords - 1:
            raise ValueError(
                f"basis is inconsistent: AMBIENT = {ambient.tolist()} but QB0 has {spec.ncoords} coordinates."
            )
        if "NFOLD" in basis:
            nfold = int(round(float(np.real(np.asarray(basis["NFOLD"])))))
            if nfold != spec.nfold:
                raise ValueError(f"basis is inconsistent: NFOLD = {nfold} but QB0 describes a {spec.nfold}-fold.")
        return spec

    @classmethod
    def from_hypersurface(cls, manifold: Hypersurface, kappa: float | None = None) -> ManifoldSpec:
        ambient = np.asarray(getattr(manifold, "ambient", [np.asarray(manifold.monomials).shape[1] - 1]))
        if ambient.reshape(-1).shape[0] != 1:
            raise ValueError(
                f"only hypersurfaces in a single projective space are supported; received ambient = {ambient.tolist()}."
            )
        return cls(
            np.asarray(manifold.monomials),
            np.asarray(manifold.coefficients),
            np.asarray(getattr(manifold, "kmoduli", [1.0])),
            kappa,
            name=getattr(manifold, "name", type(manifold).__name__),
        )


def _load_basis_path(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "basis.pickle"
    status, reason, _ = check_file_set(path.parent / "cyntk.json")
    if status == "incomplete":
        raise IncompleteFileSetError(
            f"`manifold`: the dataset directory {path.parent} is incomplete "
            f"({reason}); re-create it (`cyntk sample ... -o DIR`)."
        )
    if not path.is_file():
        raise ValueError(
            f"`manifold` path must be a cymetric basis.pickle or a directory containing "
            f"one; received {str(path)!r}, which does not exist."
        )
    basis = read_pickle(
        path,
        what="a cymetric basis (pickled dict)",
        fix="re-create it (`cyntk sample ... -o DIR`) or pass the manifold itself.",
    )
    if not isinstance(basis, dict):
        raise TypeError(f"{str(path)!r} must hold a pickled dict (cymetric basis); received {type(basis).__name__}.")
    return basis


def manifold_spec(manifold: ManifoldLike, kappa: float | None = None) -> ManifoldSpec | CICYSpec:
    """Normalise any accepted ``manifold`` argument to a :class:`ManifoldSpec`.

    Args:
        manifold: cymetric basis dict, path to ``basis.pickle`` (or its
            directory), ``Hypersurface``-like object, ``CYDataset``-like object,
            :class:`ManifoldSpec` or its config dict.
        kappa: overrides the kappa found in ``manifold`` (basis ``KAPPA``,
            ``CYDataset.kappa``) when not None.

    Raises:
        TypeError: ``manifold`` is of none of the accepted kinds.
        ValueError: the description is inconsistent or unsupported.
    """
    if kappa is not None:
        try:
            kappa = float(np.real(kappa))
        except (TypeError, ValueError):
            raise TypeError(f"`kappa` must be a positive number; received {kappa!r}.") from None
    if isinstance(manifold, ManifoldSpec):
        return manifold if kappa is None else manifold.with_kappa(kappa)
    from cyntk.models._cicy_spec import CICYSpec, is_cicy_like  # complete intersections, products

    if is_cicy_like(manifold):
        return CICYSpec.from_any(manifold, kappa)
    if isinstance(manifold, dict) and manifold.get(_CONFIG_MARKER):
        spec = ManifoldSpec.from_config(manifold)
        return spec if kappa is None else spec.with_kappa(kappa)
    if isinstance(manifold, (str, os.PathLike)):
        return manifold_spec(_load_basis_path(manifold), kappa)
    if isinstance(manifold, dict):
        return ManifoldSpec.from_basis(manifold, kappa)
    if hasattr(manifold, "manifold") and hasattr(manifold, "kappa"):  # CYDataset
        k = kappa if kappa is not None else cast("CYDataset", manifold).kappa
        return manifold_spec(manifold.manifold, k)
    if hasattr(manifold, "monomials") and hasattr(manifold, "coefficients"):  # Hypersurface
        return ManifoldSpec.from_hypersurface(cast("Hypersurface", manifold), kappa)
    raise TypeError(
        f"`manifold` must be a cyntk Hypersurface, a CYDataset, a cymetric basis dict "
        f"(or a path to basis.pickle); received {type(manifold).__name__}."
    )
