"""Keras layers for metric networks."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

__all__ = ["ProjectiveFeatures"]


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

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None or width % 2:
            raise ValueError(f"ProjectiveFeatures expects inputs of even width 2N; received input "
                             f"shape {tuple(input_shape)}.")
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
        self._place_re = place[N:N + M]
        self._place_im = place[N + M:]
        self.built = True

    def call(self, x):
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
            out = (out + tf.matmul(off_re, tf.constant(self._place_re, dt))
                   + tf.matmul(off_im, tf.constant(self._place_im, dt)))
        return out

    def compute_output_shape(self, input_shape):
        N = input_shape[-1] // 2
        return tuple(input_shape[:-1]) + (N * N,)
