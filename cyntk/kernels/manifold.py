"""The normalised Gaussian kernel on a manifold, optionally rescaled (paper 2.24-2.29).

See :mod:`cyntk.flows.local` for the sigma -> 0 limit it is built for.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np

from cyntk._validation import as_real_points, one_of, positive_float, positive_int
from cyntk.geometry import Hypersurface
from cyntk.geometry.local_coordinates import SPACES, _check_chart, _check_manifold, chart_coordinates, measure_density
from cyntk.kernels.base import Kernel

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from numpy.typing import ArrayLike

__all__ = ["ManifoldGaussianKernel", "manifold_cosine_amplitude", "RESCALINGS"]

#: Rescaling of the kernel: none, or the Riemannian one h = (d lambda/d mu)^(1/2).
RESCALINGS = ("none", "riemannian")


def _manifold_config(manifold: Hypersurface) -> dict:
    """The hypersurface as a JSON-able spec (monomials, coefficients, Kaehler parameter, name)."""
    return {
        "monomials": np.asarray(manifold.monomials).tolist(),
        "coefficients_real": np.real(manifold.coefficients).tolist(),
        "coefficients_imag": np.imag(manifold.coefficients).tolist(),
        "kmoduli": np.asarray(manifold.kmoduli).tolist(),
        "name": manifold.name,
    }


def _manifold_from_config(value) -> Hypersurface:
    """Inverse of :func:`_manifold_config`; also a manifold name (:func:`cyntk.geometry.get_manifold`)."""
    if isinstance(value, Hypersurface):
        return value
    if isinstance(value, str):
        from cyntk.geometry import get_manifold

        return get_manifold(value)
    coef = np.asarray(value["coefficients_real"]) + 1j * np.asarray(value.get("coefficients_imag", 0.0))
    return Hypersurface(
        np.asarray(value["monomials"], np.int64),
        coef,
        np.asarray(value.get("kmoduli", 1.0), np.float64),
        name=value.get("name", "hypersurface"),
    )


def manifold_cosine_amplitude(sigma_w: float, d: int, m: int) -> float:
    """Amplitude A of the cosine network whose NTK is a normalised Gaussian on an m-manifold.

    ``A^2/2 = (2 pi sigma^2)^(-m/2)`` with ``sigma = sqrt(d)/sigma_w``:
    ``A = sqrt(2) (sigma_w^2 / (2 pi d))^(m/4)``. For m = d this is
    :func:`~cyntk.kernels.cosine.cosine_normalisation`.

    Args:
        sigma_w: weight scale (> 0).
        d: input dimension of the network (2N).
        m: real dimension of the manifold the inputs lie on (2n).
    """
    sigma_w = positive_float(sigma_w, "sigma_w")
    d = positive_int(d, "d")
    m = positive_int(m, "m")
    return math.sqrt(2.0) * (sigma_w**2 / (2.0 * math.pi * d)) ** (m / 4.0)


@keras.saving.register_keras_serializable(package="cyntk")
class ManifoldGaussianKernel(Kernel):
    """Normalised Gaussian on the manifold, optionally rescaled (paper 2.27-2.28).

    ``Theta_IJ(x, x') = delta_IJ h(x) h(x') (2 pi sigma^2)^(-m/2) exp(-|u(x) - u(x')|^2/(2 sigma^2))``

    with ``u = x`` (``space="input"``: the real network inputs [Re z, Im z], the
    infinite-width NTK of the cosine network with ``sigma_w = sqrt(2N)/sigma``
    and :func:`manifold_cosine_amplitude`) or ``u`` the real chart coordinates
    (``space="chart"``, paper 2.27), m = 2n, and ``h = (d lambda/d mu_CY)^(1/2)``
    for ``rescaling="riemannian"`` (lambda = the induced volume for "input",
    Lebesgue d^{2n}u for "chart"; paper 2.28 with ``h = g~^(-1/4)``) or h = 1.

    Args:
        sigma: width (> 0).
        manifold: the hypersurface (for m, h and the charts).
        chart: (k, j), the chart of all points (metric components and chart
            coordinates live there).
        space: ``"input"`` or ``"chart"``.
        rescaling: ``"none"`` or ``"riemannian"``.
    """

    component_diagonal = True
    pairwise = True
    symmetric = True
    positive_semidefinite = True  # h(x) h(x') times a Gaussian of a Euclidean distance
    identity_on_same_points = False
    has_tile_api = False
    has_tf_tile = True  # cyntk.flows.tf_tiles has _block as TensorFlow ops
    has_fused_tile_matvec = False
    has_matrix_free_matvec = False

    def __init__(
        self,
        sigma: float,
        manifold: Hypersurface,
        chart: Sequence[int],
        *,
        space: Literal["input", "chart"] = "input",
        rescaling: Literal["none", "riemannian"] = "none",
    ) -> None:
        self.sigma = positive_float(sigma, "sigma")
        self.manifold = _check_manifold(manifold)
        self.chart = _check_chart(chart, manifold.ncoords)
        self.space = one_of(space, "space", SPACES)
        self.rescaling = one_of(rescaling, "rescaling", RESCALINGS)
        self.m = 2 * manifold.nfold

    def get_config(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "chart": list(self.chart),
            "space": self.space,
            "rescaling": self.rescaling,
            "manifold": _manifold_config(self.manifold),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ManifoldGaussianKernel:
        """Rebuild from :meth:`get_config`; ``manifold`` may be a spec dict or a name of ``get_manifold``."""
        config = dict(config)
        config["manifold"] = _manifold_from_config(config["manifold"])
        return cls(**config)

    def coordinates(self, x: ArrayLike) -> np.ndarray:
        """The coordinates the Gaussian uses: x itself (z_k = 1) or the chart coordinates."""
        x = as_real_points(x, "x", allow_vector=True)
        if x.shape[1] != 2 * self.manifold.ncoords:
            raise ValueError(
                f"`x` must be real points of shape (P, 2N) = (P, {2 * self.manifold.ncoords}) "
                f"on {self.manifold.name}; received shape {x.shape}."
            )
        if self.space == "chart":
            return chart_coordinates(x, self.chart)
        k, N = self.chart[0], self.manifold.ncoords
        off = np.abs(x[:, k] - 1.0) + np.abs(x[:, N + k])
        if np.any(off > 1e-8):
            bad = int(np.flatnonzero(off > 1e-8)[0])
            raise ValueError(
                f"`x` must be points with z_k = 1 (patch k = {k} of chart {self.chart}) for the "
                f"input-space Gaussian; point {bad} has z_{k} = "
                f"{x[bad, k]:.6g}{x[bad, N + k]:+.6g}i."
            )
        return x

    def h(self, x: ArrayLike) -> np.ndarray:
        """The rescaling h(x) (P,): ``(d lambda/d mu_CY)^(1/2)``, or ones for ``rescaling="none"``."""
        x = as_real_points(x, "x", allow_vector=True)
        if self.rescaling == "none":
            return np.ones(len(x))
        return measure_density(self.manifold, x, self.chart, reference=self.space) ** -0.5

    @property
    def mass(self) -> float:
        """``(2 pi sigma^2)^(-m/2)``, the Gaussian's normalisation."""
        return (2.0 * math.pi * self.sigma**2) ** (-self.m / 2.0)

    def _block(self, x1, x2):
        u1 = self.coordinates(x1)
        u2 = u1 if x2 is None else self.coordinates(x2)
        sq = np.sum(u1**2, 1)[:, None] + np.sum(u2**2, 1)[None, :] - 2.0 * u1 @ u2.T
        k = self.mass * np.exp(-0.5 * np.maximum(sq, 0.0) / self.sigma**2)
        if self.rescaling == "none":
            return k
        h1 = self.h(x1)
        h2 = h1 if x2 is None else self.h(x2)
        return h1[:, None] * k * h2[None, :]
