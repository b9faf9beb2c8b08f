"""TensorFlow versions of the component <-> hermitian maps.

See :mod:`cyntk.geometry.components` for the (cymetric) order of the n**2 real
components; the tables are shared so both implementations agree by construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from cyntk.geometry.components import hermitian_index_tables

if TYPE_CHECKING:
    from tensorflow.types.experimental import TensorLike

__all__ = ["hermitian_from_components_tf", "components_from_hermitian_tf"]


def hermitian_from_components_tf(o: TensorLike) -> tf.Tensor:
    """(B, n*n) real tensor -> (B, n, n) complex hermitian tensor (conventions §6.1).

    The complex dtype follows the real dtype (float32 -> complex64,
    float64 -> complex128).
    """
    o = tf.convert_to_tensor(o)
    m = o.shape[-1]
    n = int(round(np.sqrt(m)))
    if m is None or n * n != m:
        raise ValueError(f"`o` must have n*n components in its last axis; received last axis {m}.")
    re_i, im_i, sign = hermitian_index_tables(n)
    re = tf.gather(o, re_i.reshape(-1), axis=-1)
    im = tf.gather(o, im_i.reshape(-1), axis=-1) * tf.constant(sign.reshape(-1), o.dtype)
    h = tf.complex(re, im)
    return tf.reshape(h, tf.concat([tf.shape(o)[:-1], [n, n]], axis=0))


def components_from_hermitian_tf(g: TensorLike) -> tf.Tensor:
    """(B, n, n) complex tensor -> (B, n*n) real components (inverse map)."""
    g = tf.convert_to_tensor(g)
    n = g.shape[-1]
    if n is None or g.shape[-2] != n:
        raise ValueError(f"`g` must have shape (..., n, n); received shape {g.shape}.")
    lower = np.tril(np.ones((n, n), bool), -1)
    out = tf.where(tf.constant(lower), tf.math.imag(g), tf.math.real(g))
    return tf.reshape(out, tf.concat([tf.shape(g)[:-2], [n * n]], axis=0))
