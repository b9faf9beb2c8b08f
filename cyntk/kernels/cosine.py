"""The cosine network of paper section 2.3.2 and its Gaussian NTK.

Architecture implemented (one independent network per metric component I)::

    phi_I(x) = (A / sqrt(N)) sum_{i=1..N} a_{I,i} cos(w_{I,i} . x + b_{I,i}),
    a ~ N(0, sigma_a^2)   (trained),
    w_{I,i} ~ N(0, (sigma_w^2 / d) 1_d)   (frozen, a vector in R^d),
    b ~ U(-pi, pi)   (frozen).

The paper's eq. (2.32) prints a double sum ``sum_i sum_j a_i cos(w_ij x_j + b_i)``.
Read literally (one cosine per coordinate) the infinite-width NTK would be
``(A^2/2) sum_j exp(-sigma_w^2 (x_j - x'_j)^2 / (2d))``, a sum of 1-D Gaussians,
not the d-dimensional Gaussian of eq. (2.35). Eq. (2.35) follows only for
``cos(sum_j w_ij x_j + b_i) = cos(w_i . x + b_i)``, which is what we implement.

**NTK.** Only ``a`` is trained, so ``Theta_IJ(x, x') = delta_IJ (A^2/N) sum_i
cos(w_{I,i}.x + b_{I,i}) cos(w_{I,i}.x' + b_{I,i})`` (independent of ``a``). With
``cos u cos v = (cos(u - v) + cos(u + v))/2``, ``E_b cos(u + v) = 0`` for
``b ~ U(-pi, pi)`` and ``E_w cos(w.(x - x')) = exp(-sigma_w^2 |x - x'|^2 / (2d))``
(characteristic function of N(0, sigma_w^2/d 1)), the law of large numbers gives
(eq. 2.35)::

    Theta(x, x') -> (A^2 / 2) exp(-|x - x'|^2 / (2 sigma^2)),   sigma = sqrt(d) / sigma_w.

**Normalisation.** A normalised Gaussian in R^d is
``(2 pi sigma^2)^(-d/2) exp(-|x - x'|^2 / (2 sigma^2))``, so
``A^2 / 2 = (2 pi sigma^2)^(-d/2) = (sigma_w^2 / (2 pi d))^(d/2)``, i.e. ::

    A = sqrt(2) (sigma_w^2 / (2 pi d))^(d/4) = 2^(1/2) (sigma_w / sqrt(2 pi d))^(d/2).

The paper's eq. (2.36), ``A = 2^(1/4) (sigma_w / sqrt(2 pi d))^(d/4)``, is the
square root of this value (it normalises ``A`` where ``A^2`` should be): with it
``int Theta(x, x') d^d x' = 2^(-1/2) (sigma_w / sqrt(2 pi d))^(-d/2)``, which is
not 1 (0.79 for d = 1, sigma_w = 2; 0.22 for d = 10, sigma_w = 10) and tends
to 0 as sigma_w -> infinity, so the paper's kernel would not approach a
delta-function of unit weight. :func:`cosine_normalisation` returns the
correct ``A``; :func:`paper_cosine_normalisation` the printed one (for
comparison). ``sigma`` (eq. 2.37) is unaffected.

**Rescaling.** A network multiplied by a fixed function, ``h(x) phi(x)``, has
NTK ``h(x) h(x') Theta(x, x')`` (the Jacobian is multiplied by ``h(x)``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf
from scipy.spatial.distance import cdist

from cyntk._validation import as_real_points, matching_widths, positive_float, positive_int
from cyntk.kernels.base import Kernel

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from tensorflow.types.experimental import TensorLike

__all__ = ["cosine_normalisation", "paper_cosine_normalisation", "cosine_ntk", "CosineNTKKernel", "CosineNetwork"]


def cosine_normalisation(sigma_w: float, d: int) -> float:
    """Amplitude A making the cosine network's NTK a normalised Gaussian.

    ``A = sqrt(2) (sigma_w^2 / (2 pi d))^(d/4)``, so that
    ``(A^2/2) exp(-sigma_w^2 |x - x'|^2 / (2d))`` integrates to 1 over R^d
    (derivation in :mod:`cyntk.kernels.cosine`).

    Args:
        sigma_w: weight scale (> 0); ``w ~ N(0, sigma_w^2 / d)`` per coordinate.
        d: input dimension (> 0).

    Returns:
        float A.
    """
    sigma_w = positive_float(sigma_w, "sigma_w")
    d = positive_int(d, "d")
    return math.sqrt(2.0) * (sigma_w**2 / (2.0 * math.pi * d)) ** (d / 4.0)


def paper_cosine_normalisation(sigma_w: float, d: int) -> float:
    """The constant printed in the paper's eq. (2.36), ``2^(1/4) (sigma_w/sqrt(2 pi d))^(d/4)``.

    Kept for comparison only: it does not normalise the kernel (see
    :mod:`cyntk.kernels.cosine`); use :func:`cosine_normalisation`.
    """
    sigma_w = positive_float(sigma_w, "sigma_w")
    d = positive_int(d, "d")
    return 2.0**0.25 * (sigma_w / math.sqrt(2.0 * math.pi * d)) ** (d / 4.0)


def cosine_ntk(
    x1: ArrayLike, x2: ArrayLike | None = None, *, sigma_w: float, amplitude: float | None = None
) -> np.ndarray:
    """Infinite-width NTK of the cosine network (paper eq. 2.35).

    ``Theta(x, x') = (A^2 / 2) exp(-sigma_w^2 |x - x'|^2 / (2 d))``; with the
    default ``amplitude=None``, ``A = cosine_normalisation(sigma_w, d)`` and the
    kernel is the normalised Gaussian
    ``(2 pi sigma^2)^(-d/2) exp(-|x - x'|^2 / (2 sigma^2))``, ``sigma = sqrt(d)/sigma_w``.

    Args:
        x1: real (P1, d).
        x2: real (P2, d) or ``None`` (= ``x1``).
        sigma_w: weight scale (> 0).
        amplitude: A (> 0), or ``None`` for the normalised kernel.

    Returns:
        float64 array (P1, P2), the kernel of each component (Theta_IJ = delta_IJ Theta).
    """
    sigma_w = positive_float(sigma_w, "sigma_w")
    x1 = as_real_points(x1, "x1")
    x2 = x1 if x2 is None else as_real_points(x2, "x2")
    matching_widths(x1, x2)
    d = x1.shape[1]
    a = cosine_normalisation(sigma_w, d) if amplitude is None else positive_float(amplitude, "amplitude")
    sq = cdist(x1, x2, "sqeuclidean")  # exact differences, no cancellation
    return 0.5 * a**2 * np.exp(-0.5 * sigma_w**2 * sq / d)


@keras.saving.register_keras_serializable(package="cyntk")
class CosineNTKKernel(Kernel):
    """Infinite-width NTK of the cosine network as a component-diagonal kernel.

    ``Theta_IJ(x, x') = delta_IJ (A^2/2) exp(-sigma_w^2 |x - x'|^2 / (2 d))``
    (:func:`cosine_ntk`); normalised Gaussian of width ``sqrt(d)/sigma_w`` when
    ``amplitude`` is None. It tends to ``delta(x - x')`` as sigma_w -> infinity.

    Args:
        sigma_w: weight scale (> 0).
        amplitude: A, or None for the normalised kernel.
    """

    component_diagonal = True
    pairwise = True
    symmetric = True
    positive_semidefinite = True  # a Gaussian of the Euclidean distance
    identity_on_same_points = False
    has_tile_api = False
    has_tf_tile = True  # cyntk.flows.tf_tiles has _block as TensorFlow ops
    has_fused_tile_matvec = False
    has_matrix_free_matvec = False

    def __init__(self, sigma_w: float, *, amplitude: float | None = None) -> None:
        self.sigma_w = positive_float(sigma_w, "sigma_w")
        self.amplitude = None if amplitude is None else positive_float(amplitude, "amplitude")

    def get_config(self) -> dict[str, Any]:
        return {"sigma_w": self.sigma_w, "amplitude": self.amplitude}

    def _block(self, x1, x2):
        return cosine_ntk(x1, x2, sigma_w=self.sigma_w, amplitude=self.amplitude)


@keras.saving.register_keras_serializable(package="cyntk")
class CosineNetwork(keras.Model):
    """The cosine network of paper section 2.3.2, one independent network per output.

    ``phi_I(x) = (A/sqrt(N)) sum_i a_{I,i} cos(w_{I,i} . x + b_{I,i})`` for
    ``I = 0..n_outputs-1`` (architecture, NTK and normalisation in
    :mod:`cyntk.kernels.cosine`). Only ``a`` (n_outputs, N) is trainable;
    ``w`` (n_outputs, d, N) ~ N(0, sigma_w^2/d) and ``b`` (n_outputs, N) ~ U(-pi, pi)
    are frozen. Its empirical NTK is component-diagonal and tends to
    :func:`cosine_ntk` as N -> infinity.

    Args:
        n_outputs: number of components (networks), e.g. 9 for a 3x3 metric.
        width: N, cosines per network.
        sigma_w: weight scale.
        sigma_a: standard deviation of the trained readout ``a``.
        amplitude: A; ``None`` gives :func:`cosine_normalisation` (sigma_w, d)
            once the input width d is known.
        seed: integer seed of the initialisers.

    Call:
        inputs: real (B, d). Returns real (B, n_outputs).
    """

    def __init__(
        self,
        n_outputs: int = 1,
        width: int = 1024,
        *,
        sigma_w: float = 1.0,
        sigma_a: float = 1.0,
        amplitude: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_outputs = positive_int(n_outputs, "n_outputs")
        self.width = positive_int(width, "width")
        self.sigma_w = positive_float(sigma_w, "sigma_w")
        self.sigma_a = positive_float(sigma_a, "sigma_a")
        self._amplitude_arg = None if amplitude is None else positive_float(amplitude, "amplitude")
        self.seed = seed

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        d = input_shape[-1]
        if d is None:
            raise ValueError(f"CosineNetwork needs a known input width; received input shape {input_shape}.")
        m, n = self.n_outputs, self.width
        seed = self.seed
        s = lambda k: None if seed is None else seed + k
        self.w = self.add_weight(
            name="w",
            shape=(m, d, n),
            trainable=False,
            initializer=keras.initializers.RandomNormal(0.0, self.sigma_w / math.sqrt(d), seed=s(0)),
        )
        self.b = self.add_weight(
            name="b",
            shape=(m, n),
            trainable=False,
            initializer=keras.initializers.RandomUniform(-math.pi, math.pi, seed=s(1)),
        )
        self.a = self.add_weight(
            name="a",
            shape=(m, n),
            trainable=True,
            initializer=keras.initializers.RandomNormal(0.0, self.sigma_a, seed=s(2)),
        )
        self.input_dim = int(d)

    @property
    def amplitude(self) -> float:
        """A (the normalised value unless given explicitly); needs the input width."""
        if self._amplitude_arg is not None:
            return self._amplitude_arg
        if not self.built:
            raise ValueError("CosineNetwork.amplitude needs the input width: build the model first.")
        return cosine_normalisation(self.sigma_w, self.input_dim)

    def features(self, x: TensorLike) -> tf.Tensor:
        """``cos(w_{I,i} . x + b_{I,i})``, shape (B, n_outputs, N)."""
        x = tf.cast(x, self.compute_dtype)
        return tf.cos(tf.einsum("bd,mdn->bmn", x, self.w) + self.b[None])

    def call(self, inputs: TensorLike) -> tf.Tensor:
        scale = tf.constant(self.amplitude / math.sqrt(self.width), self.compute_dtype)
        return scale * tf.einsum("bmn,mn->bm", self.features(inputs), self.a)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.n_outputs,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            n_outputs=self.n_outputs,
            width=self.width,
            sigma_w=self.sigma_w,
            sigma_a=self.sigma_a,
            amplitude=self._amplitude_arg,
            seed=self.seed,
        )
        return config
