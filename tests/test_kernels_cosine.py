"""The cosine network of paper section 2.3.2: Gaussian NTK, normalisation, rescaling."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from cyntk.kernels import (
    CosineNetwork,
    CosineNTKKernel,
    NTKDense,
    cosine_normalisation,
    cosine_ntk,
    metric_ntk,
    paper_cosine_normalisation,
)


def _grid(center, half_width, h, d):
    axes = [np.arange(c - half_width, c + half_width + h / 2, h) for c in center]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1), h**d


@pytest.mark.parametrize("d, sigma_w", [(1, 2.0), (2, 5.0), (3, 1.3)])
def test_normalised_kernel_integrates_to_one(d, sigma_w):
    x0 = np.full((1, d), 0.3)
    sigma = math.sqrt(d) / sigma_w
    grid, cell = _grid(x0[0], 8 * sigma, sigma / 12, d)
    integral = cosine_ntk(x0, grid, sigma_w=sigma_w).sum() * cell
    assert integral == pytest.approx(1.0, rel=1e-8)
    # the paper's printed constant (2.36) does not normalise it
    a_paper = paper_cosine_normalisation(sigma_w, d)
    integral_paper = cosine_ntk(x0, grid, sigma_w=sigma_w, amplitude=a_paper).sum() * cell
    expected_paper = 2**-0.5 * (sigma_w / math.sqrt(2 * math.pi * d)) ** (-d / 2)
    assert integral_paper == pytest.approx(expected_paper, rel=1e-8)
    assert abs(integral_paper - 1) > 0.05
    # A^2/2 is the normalised Gaussian's peak (2 pi sigma^2)^(-d/2)
    a = cosine_normalisation(sigma_w, d)
    assert a**2 / 2 == pytest.approx((2 * math.pi * sigma**2) ** (-d / 2), rel=1e-14)


def _exact_finite_width_ntk(net, x1, x2):
    """(A^2/N) sum_i cos(w_i.x + b_i) cos(w_i.x' + b_i), component by component (NumPy)."""
    w, b = net.w.numpy(), net.b.numpy()
    f1 = np.cos(np.einsum("pd,mdn->pmn", x1, w) + b)
    f2 = np.cos(np.einsum("pd,mdn->pmn", x2, w) + b)
    return net.amplitude**2 / net.width * np.einsum("amn,bmn->abm", f1, f2)


def test_finite_width_ntk_is_exact_and_tends_to_gaussian(rng):
    x1, x2 = rng.uniform(-1, 1, size=(5, 3)), rng.uniform(-1, 1, size=(4, 3))
    analytic = cosine_ntk(x1, x2, sigma_w=1.5)
    errors = {}
    for width in (256, 16384):
        net = CosineNetwork(2, width, sigma_w=1.5, seed=11, dtype="float64")
        net(x1)
        theta = metric_ntk(net, x1, x2)
        assert theta.shape == (5, 4, 2, 2)
        np.testing.assert_array_equal(theta[:, :, 0, 1], 0.0)  # independent networks
        exact = _exact_finite_width_ntk(net, x1, x2)
        np.testing.assert_allclose(theta[:, :, [0, 1], [0, 1]], exact, rtol=1e-10, atol=1e-13)
        errors[width] = np.abs(theta[:, :, [0, 1], [0, 1]] - analytic[..., None]).max() / analytic.max()
    assert errors[16384] < 0.05
    assert errors[16384] < errors[256] / 3  # ~ 1/sqrt(64) = 1/8 expected


def test_finite_width_ntk_integrates_to_one():
    sigma_w, width = 3.0, 40000
    net = CosineNetwork(1, width, sigma_w=sigma_w, seed=3, dtype="float64")
    x0 = np.array([[0.2]])
    net(x0)
    grid, cell = _grid(x0[0], 6.0 / sigma_w, 1.0 / (20 * sigma_w), 1)
    theta = metric_ntk(net, x0, grid)[0, :, 0, 0]
    assert theta.sum() * cell == pytest.approx(1.0, abs=0.03)
    # with the paper's constant the same network integrates to its (wrong) value
    ratio = paper_cosine_normalisation(sigma_w, 1) ** 2 / cosine_normalisation(sigma_w, 1) ** 2
    assert theta.sum() * cell * ratio == pytest.approx(2**-0.5 * (sigma_w / math.sqrt(2 * math.pi)) ** -0.5, rel=0.03)


def test_tends_to_delta_function():
    """int Theta_sigma_w(x0, x') f(x') dx' -> f(x0) with error ~ sigma^2 f''/2 = f''/(2 sigma_w^2)."""

    def f(x):
        return np.cos(2 * x[:, 0]) + x[:, 0] ** 2

    x0 = np.array([[0.4]])
    errs = []
    for sigma_w in (2.0, 8.0, 32.0):
        grid, cell = _grid(x0[0], 10.0 / sigma_w, 1.0 / (40 * sigma_w), 1)
        smoothed = (cosine_ntk(x0, grid, sigma_w=sigma_w)[0] * f(grid)).sum() * cell
        errs.append(abs(smoothed - f(x0)[0]))
    f2 = -4 * np.cos(0.8) + 2
    np.testing.assert_allclose(errs[2], abs(f2) / (2 * 32.0**2), rtol=0.01)
    assert errs[0] > errs[1] > errs[2]


class Rescaled(keras.Model):
    """h(x) * phi(x) with a fixed h(x) = 1 + |x|^2."""

    def __init__(self, net, **kw):
        super().__init__(dtype="float64", **kw)
        self.net = net

    @staticmethod
    def h(x):
        return 1.0 + tf.reduce_sum(tf.cast(x, "float64") ** 2, axis=1, keepdims=True)

    def call(self, x):
        return self.h(x) * self.net(x)


def test_rescaling_trick(rng):
    x1, x2 = rng.normal(size=(4, 2)), rng.normal(size=(3, 2))
    net = CosineNetwork(3, 512, sigma_w=2.0, seed=5, dtype="float64")
    model = Rescaled(net)
    model(x1)
    theta = metric_ntk(net, x1, x2)
    scaled = metric_ntk(model, x1, x2)
    h1, h2 = Rescaled.h(x1).numpy()[:, 0], Rescaled.h(x2).numpy()[:, 0]
    np.testing.assert_allclose(
        scaled, h1[:, None, None, None] * h2[None, :, None, None] * theta, rtol=1e-12, atol=1e-14
    )


def test_cosine_kernel_object(rng):
    x1, x2 = rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    kernel = CosineNTKKernel(sigma_w=1.2)
    assert kernel.component_diagonal
    np.testing.assert_array_equal(kernel(x1, x2), cosine_ntk(x1, x2, sigma_w=1.2))
    k11 = kernel(x1)
    np.testing.assert_array_equal(k11, k11.T)
    assert np.linalg.eigvalsh(k11).min() > 0
    np.testing.assert_allclose(
        CosineNTKKernel(1.2, amplitude=2.0)(x1, x2),
        2.0 * np.exp(-(1.2**2) * ((x1[:, None] - x2[None]) ** 2).sum(-1) / 6),
        rtol=1e-14,
    )
    with pytest.raises(ValueError, match="`sigma_w` must be a finite number > 0"):
        CosineNTKKernel(0.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CosineNetwork(3, 16, sigma_w=2.0, sigma_a=0.5, seed=1),
        lambda: keras.Sequential(
            [
                keras.Input((4,)),
                NTKDense(8, W_std=1.5, b_std=0.1, activation="relu", seed=2),
                NTKDense(2, W_std=1.5, seed=4),
            ]
        ),
    ],
)
def test_serialization_round_trip(tmp_path, make):
    model = make()
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    y = model(x).numpy()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), y)
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
