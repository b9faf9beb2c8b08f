"""Manifold description of a complete intersection in a product of projective spaces.

:class:`CICYSpec` is the counterpart of :class:`~cyntk.models._spec.ManifoldSpec`
for K equations in P^{n_1} x ... x P^{n_m} (no TensorFlow here). It wraps a
:class:`cyntk.geometry.CompleteIntersection` and the Monge--Ampere constant
``kappa``, with the same public surface the metric models use (``ncoords``,
``nfold``, ``kmoduli``, ``kappa``, ``residual``, ``volk_target``, ``describe``,
``with_kappa``, ``get_config``/``from_config``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from cyntk.geometry.cicy import CompleteIntersection
from cyntk.geometry.hypersurface import Hypersurface

__all__ = ["CICYSpec", "CICY_CONFIG_MARKER", "is_cicy_like"]

CICY_CONFIG_MARKER = "cyntk_cicy_spec"


def is_cicy_like(manifold) -> bool:
    """True for a complete intersection / product ambient (several equations or factors).

    A :class:`~cyntk.geometry.Hypersurface` (the K = 1, m = 1 case of
    :class:`~cyntk.geometry.CompleteIntersection`) is not: the models treat it with
    :class:`~cyntk.models._spec.ManifoldSpec`.
    """
    if isinstance(manifold, CICYSpec):
        return True
    if isinstance(manifold, CompleteIntersection):
        return not isinstance(manifold, Hypersurface)
    if isinstance(manifold, dict):
        if manifold.get(CICY_CONFIG_MARKER):
            return True
        nh = int(np.real(np.asarray(manifold.get("NHYPER", 1))))
        amb = np.real(np.asarray(manifold.get("AMBIENT", [0]))).reshape(-1)
        return nh != 1 or amb.shape[0] != 1
    return False


class CICYSpec:
    """A complete intersection as the metric models see it.

    Args:
        manifold: the :class:`~cyntk.geometry.CompleteIntersection`.
        kappa: ``Vol_K / Vol_CY`` of the training data (None: sigma loss unavailable).
        name: label (default the manifold's).
    """

    def __init__(self, manifold: CompleteIntersection, kappa: Optional[float] = None, name=None):
        if not isinstance(manifold, CompleteIntersection):
            raise TypeError(f"`manifold` must be a CompleteIntersection; received {type(manifold).__name__}.")
        if kappa is not None:
            kappa = float(np.real(kappa))
            if not np.isfinite(kappa) or kappa <= 0:
                raise ValueError(f"`kappa` must be a positive finite number; received {kappa!r}.")
        self.manifold = manifold
        self.kappa = kappa
        self.name = manifold.name if name is None else str(name)

    # sizes and classes
    @property
    def ncoords(self) -> int:
        return self.manifold.ncoords

    @property
    def nfold(self) -> int:
        return self.manifold.nfold

    @property
    def nproj(self) -> int:
        return self.manifold.nproj

    @property
    def nhyper(self) -> int:
        return self.manifold.nhyper

    @property
    def kmoduli(self) -> np.ndarray:
        return self.manifold.kmoduli

    @property
    def ambient(self) -> np.ndarray:
        return self.manifold.ambient

    @property
    def factor_slices(self) -> np.ndarray:
        return self.manifold.factor_slices

    @property
    def vol_j_norm(self) -> float:
        """Kaehler volume ``int_X J_t^n`` at the spec's Kaehler parameters."""
        return self.manifold.volume_k

    @property
    def volk_target(self) -> np.ndarray:
        """float64 (m,): slopes ``mu_r = d_{r s t..} t_s t_t ..`` (cymetric's volk targets)."""
        d = self.manifold.intersection_numbers.astype(np.float64)
        for _ in range(self.nfold - 1):
            d = d @ self.kmoduli
        return d

    def residual(self, z) -> np.ndarray:
        """Scale-free residual ``max_k |Q_k| / sum_m |c_m z^m|`` (B,)."""
        return self.manifold.residual(np.asarray(z, dtype=np.complex128))

    def same_manifold(self, other) -> bool:
        """True when ``other`` describes the same complete intersection and Kaehler class.

        ``other`` may be a :class:`CICYSpec` (same ambient, configuration,
        monomials, coefficients to 1e-6 and Kaehler parameters) or a
        :class:`~cyntk.models._spec.ManifoldSpec` (a hypersurface in one
        projective space: the same manifold only when this spec is one equation
        in one factor with the same polynomial, compared as
        :meth:`ManifoldSpec.same_manifold` does). Anything else is a different
        manifold.
        """
        from cyntk.models._spec import ManifoldSpec

        if isinstance(other, ManifoldSpec):
            if self.nhyper != 1 or self.nproj != 1:
                return False
            m = self.manifold
            try:
                mine = ManifoldSpec(m.monomials[0], m.coefficients[0], m.kmoduli)
            except ValueError:  # not a hypersurface ManifoldSpec can describe
                return False
            return mine.same_manifold(other)
        if not isinstance(other, CICYSpec):
            return False
        a, b = self.manifold, other.manifold
        if not (np.array_equal(a.ambient, b.ambient) and np.array_equal(a.configuration, b.configuration)):
            return False
        return all(
            np.array_equal(m1, m2) and np.allclose(c1, c2, rtol=1e-6, atol=1e-12)
            for m1, m2, c1, c2 in zip(a.monomials, b.monomials, a.coefficients, b.coefficients)
        ) and np.allclose(a.kmoduli, b.kmoduli, rtol=1e-12)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.nhyper} equation(s) of configuration {self.manifold.configuration.tolist()} "
            f"in P^{' x P^'.join(str(int(a)) for a in self.ambient)}, t = {self.kmoduli.tolist()}"
        )

    def with_kappa(self, kappa) -> "CICYSpec":
        return CICYSpec(self.manifold, kappa, self.name)

    def get_config(self) -> dict:
        m = self.manifold
        return {
            CICY_CONFIG_MARKER: 1,
            "ambient": m.ambient.tolist(),
            "monomials": [mk.tolist() for mk in m.monomials],
            "coefficients_real": [c.real.tolist() for c in m.coefficients],
            "coefficients_imag": [c.imag.tolist() for c in m.coefficients],
            "kmoduli": m.kmoduli.tolist(),
            "kappa": self.kappa,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> "CICYSpec":
        coefs = [
            np.asarray(r) + 1j * np.asarray(i) for r, i in zip(config["coefficients_real"], config["coefficients_imag"])
        ]
        ci = CompleteIntersection(
            [np.asarray(mk, np.int64) for mk in config["monomials"]],
            coefs,
            config["ambient"],
            config["kmoduli"],
            name=config.get("name", "cicy"),
        )
        return cls(ci, config.get("kappa"), config.get("name"))

    @classmethod
    def from_any(cls, manifold, kappa=None) -> "CICYSpec":
        """From a CompleteIntersection, a CICYSpec (or its config) or a cymetric basis dict."""
        if isinstance(manifold, CICYSpec):
            return manifold if kappa is None else manifold.with_kappa(kappa)
        if isinstance(manifold, CompleteIntersection):
            return cls(manifold, kappa)
        if isinstance(manifold, dict) and manifold.get(CICY_CONFIG_MARKER):
            spec = cls.from_config(manifold)
            return spec if kappa is None else spec.with_kappa(kappa)
        if isinstance(manifold, dict):
            if kappa is None and "KAPPA" in manifold:
                kappa = float(np.real(np.asarray(getattr(manifold["KAPPA"], "numpy", lambda: manifold["KAPPA"])())))
            basis = {k: np.asarray(getattr(v, "numpy", lambda v=v: v)()) for k, v in manifold.items()}
            return cls(CompleteIntersection.from_basis(basis, name="basis"), kappa)
        raise TypeError(f"`manifold` must describe a complete intersection; received {type(manifold).__name__}.")
