"""Bad input to the metric-NTK engine and the kernels gives clear errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cyntk.kernels import (
    DeltaKernel,
    EmpiricalNTKKernel,
    GaussianFSKernel,
    InfiniteWidthKernel,
    metric_ntk,
    metric_ntk_vp,
)


@pytest.fixture(scope="module")
def net():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            keras.layers.Dense(5, activation="tanh", dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )


class NonHermitian(keras.Model):
    """Complex (P, 2, 2) output that is not hermitian."""

    def __init__(self, **kw):
        super().__init__(dtype="float64", **kw)
        self.dense = keras.layers.Dense(8, dtype="float64")

    def call(self, x, training=False):
        o = self.dense(x)
        return tf.reshape(tf.complex(o[:, :4], o[:, 4:]), (-1, 2, 2))


X = np.random.default_rng(0).normal(size=(5, 4))


def test_non_hermitian_metric(net):
    model = NonHermitian()
    model(X)
    with pytest.raises(ValueError, match=r"`model` must return hermitian.*max\|g - g\^dagger\|"):
        metric_ntk(model, X, output="metric")
    with pytest.raises(ValueError, match="hermitian"):
        metric_ntk(model, X)  # complex output -> declared metric
    with pytest.raises(ValueError, match="output='vector'` needs a real model output"):
        metric_ntk(model, X, output="vector")
    with pytest.raises(ValueError, match=r"metrics of shape \(P, n, n\).*received output shape \(5, 3\)"):
        metric_ntk(net, X, output="metric")


@pytest.mark.parametrize(
    "call",
    [
        lambda m, a, b: metric_ntk(m, a, b),
        lambda m, a, b: metric_ntk_vp(m, a, np.zeros((len(a), 3)), b),
        lambda m, a, b: EmpiricalNTKKernel(m)(a, b),
    ],
)
def test_mismatched_widths(net, call):
    with pytest.raises(ValueError, match=r"same input width d.*received d=4 .* d=6"):
        call(net, X, np.zeros((2, 6)))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 4)), r"`x1` must contain at least one point; received an empty set of shape \(0, 4\)"),
        (np.array([[0.0, np.nan, 0, 0], [1, 1, 1, 1]]), r"`x1` must be finite; received 1 point\(s\) .* row 0"),
        (np.array([[0.0, np.inf, 0, 0]]), "`x1` must be finite"),
        (np.zeros(4), r"`x1` must have shape \(P, d\); received shape \(4,\)"),
        (np.zeros((2, 2), complex), "must be real points"),
        (np.array([["a"]]), "real numeric array"),
    ],
)
def test_bad_points(net, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        metric_ntk(net, bad)


def test_bad_points_second_set_and_kernels(net):
    with pytest.raises(ValueError, match="`x2` must contain at least one point"):
        metric_ntk(net, X, np.zeros((0, 4)))
    with pytest.raises(ValueError, match="`x_src` must be finite"):
        metric_ntk_vp(net, np.full((2, 4), np.nan), np.zeros((2, 3)))
    for kernel in (GaussianFSKernel(1.0), DeltaKernel(), InfiniteWidthKernel()):
        with pytest.raises(ValueError, match="`x2` must contain at least one point"):
            kernel(X, np.zeros((0, 4)))
        with pytest.raises(ValueError, match="`x1` must be finite"):
            kernel(np.full((1, 4), np.inf))


@pytest.mark.parametrize(
    "chunk, exc, match",
    [
        (0, ValueError, r"`chunk_size` must be a positive integer .* received 0"),
        (-3, ValueError, "received -3"),
        (2.5, TypeError, "received 2.5"),
        (True, TypeError, "received True"),
    ],
)
def test_bad_chunk_size(net, chunk, exc, match):
    with pytest.raises(exc, match=match):
        metric_ntk(net, X, chunk_size=chunk)
    with pytest.raises(exc, match=match):
        metric_ntk_vp(net, X, np.zeros((5, 3)), chunk_size=chunk)
    with pytest.raises(exc, match=match):
        EmpiricalNTKKernel(net, chunk_size=chunk)


def test_bad_options_and_models(net):
    with pytest.raises(
        ValueError,
        match=r"`implementation` must be one of 'auto', 'generic', "
        r"'structured'; received 'fast'",
    ):
        metric_ntk(net, X, implementation="fast")
    with pytest.raises(ValueError, match="`output` must be one of"):
        metric_ntk(net, X, output="matrix")
    with pytest.raises(TypeError, match="`model` must be a Keras model"):
        metric_ntk(np.eye(3), X)
    frozen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, trainable=False)])
    with pytest.raises(ValueError, match="no trainable variables"):
        metric_ntk(frozen, X)


def test_bad_vector(net):
    with pytest.raises(ValueError, match=r"`v` must have shape \(P_src, m\) = \(5, 3\).*\(5, 2\)"):
        metric_ntk_vp(net, X, np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"`v` must have shape \(P_src, m\) with P_src = 5"):
        metric_ntk_vp(net, X, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="`v` must be finite"):
        metric_ntk_vp(net, X, np.full((5, 3), np.nan))


def test_bad_kernel_parameters():
    with pytest.raises(ValueError, match="`sigma` must be a finite number > 0; received -1"):
        GaussianFSKernel(sigma=-1)
    # tanh has a (Gauss-Hermite) infinite-width kernel since issue 17; an unknown name is still an error
    with pytest.raises(ValueError, match="`activation` must be one of .*; received 'tanhh'"):
        InfiniteWidthKernel("tanhh")
    with pytest.raises(ValueError, match="`depth` must be a non-negative integer"):
        InfiniteWidthKernel("relu", depth=-1)
    with pytest.raises(ValueError, match="even width"):
        GaussianFSKernel(1.0)(np.ones((2, 3)))
    with pytest.raises(ValueError, match="`n_components`"):
        GaussianFSKernel(1.0).full(np.ones((2, 4)))
