"""Empirical metric-NTK: references, brute force, finite differences, paths, structure."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tol
from cyntk.geometry import components_from_hermitian, hermitian_from_components
from cyntk.kernels import (
    EmpiricalNTKKernel,
    NTKDense,
    metric_ntk,
    metric_ntk_vp,
    multiplicative_map,
)
from cyntk.models.hermitian import components_from_hermitian_tf, hermitian_from_components_tf


# ----------------------------------------------------------------------------- helpers
def exact_gelu(x):
    """gelu with an exact float64 constant (Keras' float64 gelu rounds 1/sqrt(2) to float32)."""
    return 0.5 * x * (1.0 + tf.math.erf(x * tf.cast(np.sqrt(0.5), x.dtype)))


def mlp(widths, activation="tanh", dtype="float64", seed=0, use_bias=True, d=5):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((d,), dtype=dtype)]
    for w in widths[:-1]:
        layers.append(
            keras.layers.Dense(
                w, activation=activation, dtype=dtype, use_bias=use_bias, bias_initializer="random_normal"
            )
        )
    layers.append(keras.layers.Dense(widths[-1], dtype=dtype, use_bias=use_bias, bias_initializer="random_normal"))
    return keras.Sequential(layers)


def flat_jacobian_bruteforce(model, x, components):
    """J[a, I, p]: one tape.gradient per point and output component."""
    rows = []
    for a in range(len(x)):
        per_point = []
        for i in range(components):
            with tf.GradientTape() as tape:
                out = components_fn(model(x[a : a + 1], training=False))[0, i]
            grads = tape.gradient(out, model.trainable_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            per_point.append(np.concatenate([g.numpy().ravel() for g in grads]))
        rows.append(per_point)
    return np.array(rows)


def components_fn(y):
    return components_from_hermitian_tf(y) if y.dtype.is_complex else y


def flat_jacobian_fd(model, x, eps=1e-6):
    """J[a, I, p] by central finite differences of every parameter (float64)."""
    variables = model.trainable_variables
    base = [v.numpy().copy() for v in variables]
    cols = []
    for k, v in enumerate(variables):
        for idx in np.ndindex(*v.shape):
            vals = []
            for sgn in (+1, -1):
                w = base[k].copy()
                w[idx] += sgn * eps
                v.assign(w)
                vals.append(components_fn(model(x, training=False)).numpy())
            v.assign(base[k])
            cols.append((vals[0] - vals[1]) / (2 * eps))
    return np.stack(cols, axis=-1)


def ntk_from_jacobians(j1, j2):
    return np.einsum("aIp,bJp->abIJ", j1, j2)


def as_matrix(theta):
    p1, p2, m, _ = theta.shape
    return theta.transpose(0, 2, 1, 3).reshape(p1 * m, p2 * m)


@pytest.fixture(scope="module")
def empirical_ref(ntk_reference_dir):
    return dict(np.load(ntk_reference_dir / "empirical_mlp.npz"))


def reference_model(ref):
    layers = [keras.Input((10,), dtype="float64")]
    layers += [keras.layers.Dense(128, activation=exact_gelu, dtype="float64") for _ in range(3)]
    layers += [keras.layers.Dense(9, dtype="float64")]
    model = keras.Sequential(layers)
    model.set_weights([ref[f"{k}_{l}"] for l in range(4) for k in ("kernel", "bias")])
    return model


# ----------------------------------------------------------------------------- references
@pytest.mark.parametrize("implementation", ["structured", "generic"])
def test_matches_neural_tangents_empirical_ntk(empirical_ref, implementation):
    ref = empirical_ref
    model = reference_model(ref)
    np.testing.assert_allclose(model(ref["x1"]).numpy(), ref["f_x1"], rtol=0, atol=1e-14)
    scale = np.abs(ref["ntk_12"]).max()
    theta12 = metric_ntk(model, ref["x1"], ref["x2"], implementation=implementation)
    theta11 = metric_ntk(model, ref["x1"], implementation=implementation, chunk_size=5)
    assert theta12.shape == (16, 12, 9, 9) and theta12.dtype == np.float64
    assert np.abs(theta12 - ref["ntk_12"]).max() <= 1e-10 * scale
    assert np.abs(theta11 - ref["ntk_11"]).max() <= 1e-10 * np.abs(ref["ntk_11"]).max()


def test_bruteforce_and_finite_differences(rng):
    model = mlp([4, 3, 3], activation="tanh")
    x1 = rng.normal(size=(3, 5))
    x2 = rng.normal(size=(2, 5))
    j1 = flat_jacobian_bruteforce(model, x1, 3)
    j2 = flat_jacobian_bruteforce(model, x2, 3)
    brute = ntk_from_jacobians(j1, j2)
    fd = ntk_from_jacobians(flat_jacobian_fd(model, x1), flat_jacobian_fd(model, x2))
    scale = np.abs(brute).max()
    assert np.abs(fd - brute).max() <= 1e-7 * scale  # FD truncation ~ eps^2
    for impl in ("structured", "generic"):
        theta = metric_ntk(model, x1, x2, implementation=impl)
        np.testing.assert_allclose(theta, brute, **tol("float64"))


def test_complex_metric_model_bruteforce_and_fd(rng):
    """A hermitian metric model g = H(nn(x)) (+ a fixed metric), against brute force and FD."""

    class FreeMetric(keras.Model):
        def __init__(self, net, **kw):
            super().__init__(**kw)
            self.net = net

        def call(self, x, training=False):
            h = hermitian_from_components_tf(self.net(x, training=training))
            return h + tf.eye(2, dtype=h.dtype)

    model = FreeMetric(mlp([5, 4], activation="sigmoid"), dtype="float64")
    x = rng.normal(size=(3, 5))
    model(x)
    brute = ntk_from_jacobians(*(2 * [flat_jacobian_bruteforce(model, x, 4)]))
    fd = ntk_from_jacobians(*(2 * [flat_jacobian_fd(model, x)]))
    theta = metric_ntk(model, x)
    assert theta.shape == (3, 3, 4, 4)
    np.testing.assert_allclose(theta, brute, **tol("float64"))
    assert np.abs(fd - brute).max() <= 1e-7 * np.abs(brute).max()
    # components(H(o)) = o, so the metric-NTK is the network's NTK
    np.testing.assert_allclose(theta, metric_ntk(model.net, x), **tol("float64"))


# ----------------------------------------------------------------------------- paths agree
def _chain_models(dtype):
    keras.utils.set_random_seed(3)
    frozen = mlp([6, 5, 4], activation="relu", dtype=dtype, seed=4)
    frozen.layers[0].trainable = False
    nested = keras.Sequential(
        [
            keras.Input((5,), dtype=dtype),
            mlp([7, 6], activation="softplus", dtype=dtype, seed=5),
            keras.layers.Activation("tanh", dtype=dtype),
            keras.layers.Dropout(0.5, dtype=dtype),
            keras.layers.Dense(3, dtype=dtype),
        ]
    )
    inp = keras.Input((5,), dtype=dtype)
    h = keras.layers.Dense(8, dtype=dtype)(inp)
    h = keras.layers.Activation(exact_gelu, dtype=dtype)(h)
    out = NTKDense(4, W_std=1.7, b_std=0.3, dtype=dtype, seed=1)(h)
    functional = keras.Model(inp, out)
    return {
        "tanh": mlp([6, 6, 4], activation="tanh", dtype=dtype),
        "no_bias": mlp([6, 4], activation="elu", dtype=dtype, use_bias=False),
        "frozen_first_layer": frozen,
        "nested_with_activation_layer": nested,
        "functional_ntkdense": functional,
    }


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_structured_equals_generic(rng, dtype):
    x1 = rng.normal(size=(7, 5))
    x2 = rng.normal(size=(4, 5))
    models = _chain_models(dtype)
    if dtype == "float32":  # the dtype plumbing; float64 covers every layer kind
        models = {k: models[k] for k in ("tanh", "functional_ntkdense")}
    for name, model in models.items():
        kernel = EmpiricalNTKKernel(model, implementation="auto")
        fast = kernel(x1, x2)
        assert kernel.implementation_ == "structured", name
        slow = metric_ntk(model, x1, x2, implementation="generic")
        assert fast.dtype == np.dtype(dtype)
        np.testing.assert_allclose(
            fast, slow, rtol=tol(dtype)["rtol"], atol=tol(dtype)["rtol"] * np.abs(slow).max(), err_msg=name
        )


def test_float32_agrees_with_float64(rng):
    x = rng.normal(size=(6, 5))
    m64 = mlp([8, 3], activation="tanh", dtype="float64")
    m32 = mlp([8, 3], activation="tanh", dtype="float32")
    m32.set_weights([w.astype(np.float32) for w in m64.get_weights()])
    t64, t32 = metric_ntk(m64, x), metric_ntk(m32, x)
    assert t32.dtype == np.float32
    np.testing.assert_allclose(t32, t64, rtol=1e-4, atol=1e-5 * np.abs(t64).max())


def test_non_chain_model_falls_back_to_generic(rng):
    inp = keras.Input((5,), dtype="float64")
    h = keras.layers.Dense(5, activation="tanh", dtype="float64")(inp)
    out = keras.layers.Dense(3, dtype="float64")(keras.layers.Add(dtype="float64")([inp, h]))
    residual = keras.Model(inp, out)
    x = rng.normal(size=(4, 5))
    kernel = EmpiricalNTKKernel(residual)
    theta = kernel(x)
    assert kernel.implementation_ == "generic"
    brute = flat_jacobian_bruteforce(residual, x, 3)
    np.testing.assert_allclose(theta, ntk_from_jacobians(brute, brute), **tol("float64"))
    with pytest.raises(ValueError, match="implementation='structured'"):
        metric_ntk(residual, x, implementation="structured")
    # a non-elementwise activation (softmax couples the units) is not a Dense chain either
    softmax = keras.Sequential(
        [
            keras.Input((5,), dtype="float64"),
            keras.layers.Dense(4, activation="softmax", dtype="float64"),
            keras.layers.Dense(2, dtype="float64"),
        ]
    )
    kernel = EmpiricalNTKKernel(softmax)
    theta = kernel(x)
    assert kernel.implementation_ == "generic"
    brute = flat_jacobian_bruteforce(softmax, x, 2)
    np.testing.assert_allclose(theta, ntk_from_jacobians(brute, brute), **tol("float64"))


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("implementation", ["structured", "generic"])
def test_symmetric_psd_and_chunk_invariant(rng, implementation):
    model = mlp([10, 10, 4], activation="tanh")
    x = rng.normal(size=(9, 5))
    theta = metric_ntk(model, x, implementation=implementation, chunk_size=4)
    np.testing.assert_array_equal(theta, theta.transpose(1, 0, 3, 2))  # exactly symmetric
    mat = as_matrix(theta)
    eig = np.linalg.eigvalsh(mat)
    assert eig.min() >= -1e-12 * eig.max()
    for chunk in (1, 2, None):
        np.testing.assert_allclose(
            metric_ntk(model, x, x, implementation=implementation, chunk_size=chunk), theta, **tol("float64")
        )


# ----------------------------------------------------------------------------- multiplicative
class ToyMultiplicative(keras.Model):
    """Minimal stand-in of cyntk.models.MultiplicativeModel: g = G + G * H(network(x))."""

    def __init__(self, network, n=3, **kw):
        super().__init__(dtype="float64", **kw)
        self.network = network
        self.n = n

    def fs_metric(self, x):
        x = tf.cast(x, "float64")
        a = tf.complex(x[:, : self.n], x[:, self.n : 2 * self.n])
        # hermitian, positive definite, point dependent
        s = tf.cast(1.0 + tf.reduce_sum(x**2, axis=1), tf.complex128)
        return (
            s[:, None, None] * tf.eye(self.n, dtype=tf.complex128)[None] + a[:, :, None] * tf.math.conj(a)[:, None, :]
        )

    def call(self, x, training=False):
        G = self.fs_metric(x)
        return G + G * hermitian_from_components_tf(self.network(x, training=training))


def test_multiplicative_map_is_exact(rng):
    n, B = 3, 5
    o = rng.normal(size=(B, n * n))
    c = rng.normal(size=(B, n * n))
    G = hermitian_from_components(c)
    M = multiplicative_map(tf.constant(G)).numpy()
    lhs = components_from_hermitian(G + G * hermitian_from_components(o))
    rhs = components_from_hermitian(G) + np.einsum("bIJ,bJ->bI", M, o)
    np.testing.assert_allclose(lhs, rhs, **tol("float64"))
    # at most two nonzeros per row (diagonal entries one)
    assert (np.count_nonzero(np.abs(M) > 0, axis=-1) <= 2).all()


@pytest.mark.parametrize("net_kind", ["dense", "residual"])
def test_multiplicative_model_equals_m_theta_mt(rng, net_kind):
    if net_kind == "dense":
        net = mlp([8, 9], activation="tanh", d=6)
    else:
        inp = keras.Input((6,), dtype="float64")
        h = keras.layers.Dense(6, activation="tanh", dtype="float64")(inp)
        h = keras.layers.Add(dtype="float64")([inp, h])
        net = keras.Model(inp, keras.layers.Dense(9, dtype="float64")(h))
    model = ToyMultiplicative(net)
    x1, x2 = rng.normal(size=(5, 6)), rng.normal(size=(3, 6))
    model(x1)
    kernel = EmpiricalNTKKernel(model)
    theta = kernel(x1, x2)
    assert kernel.implementation_ == "structured"
    generic = metric_ntk(model, x1, x2, implementation="generic")
    scale = np.abs(generic).max()
    np.testing.assert_allclose(theta, generic, rtol=1e-10, atol=1e-12 * scale)
    m1 = multiplicative_map(model.fs_metric(x1)).numpy()
    m2 = multiplicative_map(model.fs_metric(x2)).numpy()
    manual = np.einsum("aIK,abKL,bJL->abIJ", m1, metric_ntk(net, x1, x2), m2)
    np.testing.assert_allclose(theta, manual, rtol=1e-10, atol=1e-12 * scale)


def test_cyntk_multiplicative_model(rng):
    from cyntk.geometry import fermat_quintic, to_real
    from cyntk.models import MultiplicativeModel

    man = fermat_quintic()
    x = to_real(man.sample_points(12, seed=3))
    z = x[:, :5] + 1j * x[:, 5:]
    x_scaled = to_real(z * (0.7 * np.exp(1.1j)))  # other representatives of the same points
    net = keras.Sequential(
        [
            keras.Input((10,), dtype="float64"),
            keras.layers.Dense(16, activation="gelu", dtype="float64"),
            keras.layers.Dense(9, dtype="float64"),
        ]
    )
    with warnings.catch_warnings():  # a float32-policy warning may or may not be emitted
        warnings.simplefilter("ignore", UserWarning)
        model = MultiplicativeModel(net, man, dtype="float64")
    model(x[:2])
    kernel = EmpiricalNTKKernel(model)
    for pts in (x, x_scaled):
        theta = kernel(pts[:7], pts[7:])
        assert kernel.implementation_ == "structured" and theta.shape == (7, 5, 9, 9)
        generic = metric_ntk(model, pts[:7], pts[7:], implementation="generic")
        np.testing.assert_allclose(theta, generic, rtol=1e-10, atol=1e-12 * np.abs(generic).max())
    v = rng.normal(size=(5, 9))
    np.testing.assert_allclose(
        metric_ntk_vp(model, x[7:], v, x[:7]), np.einsum("abIJ,bJ->aI", kernel(x[:7], x[7:]), v), **tol("float64")
    )


# ----------------------------------------------------------------------------- snapshots
def test_empirical_kernel_snapshot(rng):
    model = mlp([6, 3], activation="tanh")
    x = rng.normal(size=(4, 5))
    theta0 = metric_ntk(model, x)
    frozen = EmpiricalNTKKernel(model)
    live = EmpiricalNTKKernel(model, snapshot=False)
    np.testing.assert_array_equal(frozen(x), live(x))
    # "train": move the weights
    for v in model.trainable_variables:
        v.assign(v + 0.3 * rng.normal(size=v.shape))
    moved = [v.numpy().copy() for v in model.variables]
    np.testing.assert_allclose(frozen(x), theta0, **tol("float64"))
    assert not np.allclose(live(x), theta0)
    np.testing.assert_allclose(live(x), metric_ntk(model, x), **tol("float64"))
    for v, w in zip(model.variables, moved):  # weights restored bit for bit
        np.testing.assert_array_equal(v.numpy(), w)
    assert frozen.n_components == 3 and not frozen.component_diagonal
    full = frozen.full(x, n_components=3)
    np.testing.assert_array_equal(full, frozen(x))


# ----------------------------------------------------------------------------- matrix-free
def test_vector_product_equals_dense(rng):
    model = mlp([7, 7, 4], activation="tanh")
    xs, xt = rng.normal(size=(9, 5)), rng.normal(size=(6, 5))
    v = rng.normal(size=(9, 4))
    dense = metric_ntk(model, xt, xs)
    u = metric_ntk_vp(model, xs, v, xt, chunk_size=4)
    np.testing.assert_allclose(u, np.einsum("abIJ,bJ->aI", dense, v), **tol("float64"))
    u_self = metric_ntk_vp(model, xs, v)
    np.testing.assert_allclose(u_self, np.einsum("abIJ,bJ->aI", metric_ntk(model, xs), v), **tol("float64"))
    kernel = EmpiricalNTKKernel(model)
    np.testing.assert_allclose(kernel.matvec(xt, xs, v), u, **tol("float64"))


def test_vector_product_metric_model(rng):
    net = mlp([8, 9], activation="tanh", d=6)
    model = ToyMultiplicative(net)
    xs, xt = rng.normal(size=(5, 6)), rng.normal(size=(4, 6))
    model(xs)
    v = rng.normal(size=(5, 9))
    dense = metric_ntk(model, xt, xs)
    np.testing.assert_allclose(metric_ntk_vp(model, xs, v, xt), np.einsum("abIJ,bJ->aI", dense, v), **tol("float64"))
