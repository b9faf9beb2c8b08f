"""Keras layers for metric networks."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np
import tensorflow as tf

from cyntk.models._spec import manifold_spec

if TYPE_CHECKING:
    from tensorflow.types.experimental import TensorLike

    from cyntk.models._spec import ManifoldLike
    from cyntk.models.models import PhiModel

__all__ = ["ProjectiveFeatures", "HermitianMonomials", "LinearPotential", "linear_phi_model"]


@keras.saving.register_keras_serializable(package="cyntk")
class ProjectiveFeatures(keras.layers.Layer):
    """Scale-invariant features of homogeneous coordinates.

    Maps ``x = [Re z, Im z]`` (B, 2N) to the N^2 real numbers of the
    hermitian projector ``P_ij = z_i conj(z_j) / |z|^2``: its N diagonal
    entries, then ``Re P_ij`` and ``Im P_ij`` for i < j. ``P`` depends only on
    the point of ``P^{N-1}`` (it is invariant under ``z -> lambda z`` for any
    complex ``lambda != 0``) and is smooth, so a network that starts with this
    layer is a globally defined function on projective space. A
    :class:`~cyntk.models.PhiModel` built on such a network is a genuine
    Kähler metric on the whole manifold: its transition loss vanishes.

    Input shape: (B, 2N) real. Output shape: (B, N^2) real.
    """

    def build(self, input_shape: Sequence[int | None]) -> None:
        width = input_shape[-1]
        if width is None or width % 2:
            raise ValueError(
                f"ProjectiveFeatures expects inputs of even width 2N; received input shape {tuple(input_shape)}."
            )
        N = width // 2
        iu, ju = np.triu_indices(N, 1)
        M = len(iu)
        # z_i conj(z_j) = (re_i re_j + im_i im_j) + i (im_i re_j - re_i im_j); the output is
        # assembled with constant matrices rather than tf.concat, so that its third derivatives
        # exist under XLA (PhiModel differentiates the network three times).
        self._N = N
        self._iu, self._ju = iu.astype(np.int32), ju.astype(np.int32)
        place = np.eye(N * N)
        self._place_diag = place[:N]
        self._place_re = place[N : N + M]
        self._place_im = place[N + M :]
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        N = self._N
        dt = x.dtype
        re, im = x[:, :N], x[:, N:]
        norm = tf.reduce_sum(re * re + im * im, axis=-1, keepdims=True)
        re_i, im_i = tf.gather(re, self._iu, axis=1), tf.gather(im, self._iu, axis=1)
        re_j, im_j = tf.gather(re, self._ju, axis=1), tf.gather(im, self._ju, axis=1)
        diag = (re * re + im * im) / norm
        off_re = (re_i * re_j + im_i * im_j) / norm
        off_im = (im_i * re_j - re_i * im_j) / norm
        out = tf.matmul(diag, tf.constant(self._place_diag, dt))
        if self._iu.size:
            out = (
                out
                + tf.matmul(off_re, tf.constant(self._place_re, dt))
                + tf.matmul(off_im, tf.constant(self._place_im, dt))
            )
        return out

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        N = input_shape[-1] // 2  # type: ignore[operator]  # the width 2N is known once built
        return tuple(input_shape[:-1]) + (N * N,)


# ------------------------------------------------------------------------- features
@keras.saving.register_keras_serializable(package="cyntk")
class HermitianMonomials(keras.layers.Layer):
    """Real basis of degree-k bihomogeneous functions on P^{N-1}.

    Maps ``x = [Re z, Im z]`` (B, 2N) to ``Re`` and ``Im`` of
    ``s_alpha(z) conj(s_beta(z)) / |z|^{2k}`` for the degree-k monomials
    ``s_alpha`` (M = C(N+k-1, k) of them): the M diagonal entries, then
    ``Re`` and ``Im`` of the M(M-1)/2 entries alpha < beta -- M^2 real functions,
    invariant under ``z -> lambda z``, hence globally defined on P^{N-1}. Their
    span contains every lower degree (``|z|^2 = sum |z_i|^2``) and the
    constants, and is the space of Kähler potentials of Donaldson's
    "balanced" metrics of level k. A ``Dense(1, use_bias=False)`` on top gives a
    potential linear in its weights.

    Args:
        degree: k >= 1.

    Input shape: (B, 2N). Output shape: (B, M^2).
    """

    degree: int

    def __init__(self, degree: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(degree, bool) or not isinstance(degree, numbers.Integral) or degree < 1:
            raise ValueError(f"`degree` must be an integer >= 1; received {degree!r}.")
        self.degree = int(degree)

    def build(self, input_shape: Sequence[int | None]) -> None:
        width = input_shape[-1]
        if width is None or width % 2:
            raise ValueError(
                f"HermitianMonomials expects inputs of even width 2N; received input shape {tuple(input_shape)}."
            )
        N = width // 2
        self._N = N
        self._exps = _monomial_exponents(N, self.degree)
        M = len(self._exps)
        iu, ju = np.triu_indices(M, 1)
        self._iu, self._ju = iu, ju
        self.n_features = M * M
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        N, k = self._N, self.degree
        x = tf.cast(x, self.compute_dtype)
        z = tf.complex(x[:, :N], x[:, N:])
        zz = tf.reduce_sum(x * x, axis=1)
        pw = [tf.ones_like(z), z]
        for _ in range(2, k + 1):
            pw.append(pw[-1] * z)
        mons = []
        for e in self._exps:
            m = tf.ones_like(z[:, 0])
            for l, p in enumerate(e):
                if p:
                    m = m * pw[p][:, l]
            mons.append(m)
        s = tf.stack(mons, axis=1)  # (B, M)
        norm = tf.complex(zz**k, tf.zeros_like(zz))[:, None]
        diag = tf.math.real(s * tf.math.conj(s) / norm)
        si, sj = tf.gather(s, self._iu, axis=1), tf.gather(s, self._ju, axis=1)
        off = si * tf.math.conj(sj) / norm
        return tf.concat([diag, tf.math.real(off), tf.math.imag(off)], axis=1)

    def complex_hessians(self, x: TensorLike) -> np.ndarray:
        """Closed-form complex Hessians ``d_i dbar_j f_K`` of all features, (B, K, N, N) complex128.

        With ``rho = |z|^2``, ``a_{alpha i} = d_i s_alpha`` and
        ``f = s_alpha conj(s_beta) rho^{-k}``::

            d_i dbar_j f = rho^{-k} [a_{alpha i} conj(a_{beta j})
                           - (k/rho)(zbar_i s_alpha conj(a_{beta j}) + z_j a_{alpha i} conj(s_beta))
                           - k s_alpha conj(s_beta) (delta_ij/rho - (k+1) zbar_i z_j / rho^2)]

        and ``Hess Re f = (A + A^H)/2``, ``Hess Im f = (A - A^H)/(2i)``. Used by
        :class:`PhiFlow` (checked against autodiff in the tests).

        Args:
            x: real (B, 2N) (float64 recommended).
        """
        if not self.built:
            self.build(np.shape(x))
        x = np.asarray(x, dtype=np.float64)
        N, k = self._N, self.degree
        z = x[:, :N] + 1j * x[:, N:]
        rho = np.sum(np.abs(z) ** 2, axis=1)  # (B,)
        E = np.asarray(self._exps)  # (M, N)
        s = np.prod(z[:, None, :] ** E[None], axis=-1)  # (B, M)
        a = np.zeros(s.shape + (N,), dtype=np.complex128)  # (B, M, N)
        for i in range(N):
            Ei = E.copy()
            Ei[:, i] = np.maximum(Ei[:, i] - 1, 0)
            a[:, :, i] = E[None, :, i] * np.prod(z[:, None, :] ** Ei[None], axis=-1)
        r = rho[:, None, None, None, None]
        sa = s[:, :, None, None, None]
        sb = np.conj(s)[:, None, :, None, None]
        aa = a[:, :, None, :, None]  # a_{alpha i}
        ab = np.conj(a)[:, None, :, None, :]  # conj(a_{beta j})
        zi = np.conj(z)[:, None, None, :, None]
        zj = z[:, None, None, None, :]
        eye = np.eye(N)[None, None, None]
        A = (
            aa * ab - (k / r) * (zi * sa * ab + zj * aa * sb) - k * sa * sb * (eye / r - (k + 1) * zi * zj / r**2)
        ) * r ** (-k)  # (B, M, M, N, N)
        M = len(self._exps)
        d = np.arange(M)
        diag = A[:, d, d]
        off = A[:, self._iu, self._ju]
        offH = np.conj(np.swapaxes(off, -1, -2))
        return np.concatenate(
            [0.5 * (diag + np.conj(np.swapaxes(diag, -1, -2))), 0.5 * (off + offH), (off - offH) / 2j], axis=1
        )

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        N = input_shape[-1] // 2  # type: ignore[operator]  # the width 2N is known once built
        M = math.comb(N + self.degree - 1, self.degree)
        return tuple(input_shape[:-1]) + (M * M,)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "degree": self.degree}


def _monomial_exponents(N: int, k: int) -> list[tuple[int, ...]]:
    out: list[list[int]] = []

    def rec(prefix: list[int], left: int, i: int) -> None:
        if i == N - 1:
            out.append(prefix + [left])
            return
        for p in range(left, -1, -1):
            rec(prefix + [p], left - p, i + 1)

    rec([], k, 0)
    return [tuple(e) for e in out]


@keras.saving.register_keras_serializable(package="cyntk")
class LinearPotential(keras.Model):
    """A Kähler potential linear in its weights: ``phi(x) = sum_k c_k f_k(x)``.

    ``f = HermitianMonomials(degree)(x)`` (K = M^2 functions), ``c``
    (K,) trainable, initialised to 0 (the Fubini--Study metric). Use it as the
    network of a :class:`~cyntk.models.PhiModel` (:func:`linear_phi_model`).

    Args:
        degree: k of the basis.
        dtype: "float64" (default) or "float32".

    Call: x (B, 2N) real -> phi (B, 1).
    """

    degree: int

    def __init__(self, degree: int = 2, dtype: str = "float64", **kwargs: Any) -> None:
        super().__init__(dtype=dtype, **kwargs)
        self.degree = int(degree)
        self.features = HermitianMonomials(degree, dtype=dtype, name="hermitian_monomials")

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.features.build(input_shape)
        self.coefficients = self.add_weight(
            shape=(self.features.n_features, 1),
            initializer="zeros",
            trainable=True,
            name="coefficients",
            dtype=self.dtype,
        )
        self.built = True

    @property
    def n_basis(self) -> int:
        """K, the number of basis functions."""
        return int(self.features.n_features)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, self.compute_dtype)
        return tf.matmul(self.features(x), tf.cast(self.coefficients, self.compute_dtype))

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "degree": self.degree, "dtype": self.dtype}


def linear_phi_model(
    manifold: ManifoldLike,
    degree: int,
    *,
    kappa: float | None = None,
    dtype: Literal["float64", "float32"] = "float64",
    name: str = "linear_phi",
) -> PhiModel:
    """A :class:`~cyntk.models.PhiModel` whose potential is a :class:`LinearPotential`.

    ``phi(x) = c . HermitianMonomials(degree)(x)`` with c = 0 initially (the
    Fubini--Study metric). phi is a global function on P^{N-1}, so the metric is
    globally defined and its transition loss vanishes.

    Args:
        manifold: ``Hypersurface``, ``CYDataset``, basis dict.
        degree: k of :class:`HermitianMonomials`.
        kappa, dtype, name: forwarded to PhiModel.
    """
    from cyntk.models.models import PhiModel

    spec = manifold_spec(manifold, kappa)
    net = LinearPotential(degree, dtype=dtype, name=f"{name}_potential")
    net.build((None, 2 * spec.ncoords))
    return PhiModel(net, manifold if kappa is None else spec, dtype=dtype, name=name)
