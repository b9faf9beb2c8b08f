"""cyntk.models: geometry, metric models, losses and measures against references.

Everything numerical is checked against an independent computation: cymetric's
stored reference values, cyntk.geometry (NumPy), closed forms, or central finite
differences on the manifold (points moved in local coordinates and put back on
Q = 0 by Newton's method) in float64.
"""

from __future__ import annotations

import functools
import itertools
import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import small_mlp, tol
from cyntk.geometry import dwork_quintic, fermat_cubic, fermat_quartic, fermat_quintic, make_dataset
from cyntk.models import (
    FSModel,
    MeasuresCallback,
    MetricModel,
    MultiplicativeModel,
    PhiModel,
    ProjectiveFeatures,
    hermitian_from_components_tf,
    losses,
    manifold_spec,
)

# ----------------------------------------------------------------- helpers
mlp = functools.partial(small_mlp, dtype="float64")


@pytest.fixture(scope="module")
def quintic_ds():
    return make_dataset(fermat_quintic(), 400, seed=11)


@pytest.fixture(scope="module")
def reference(cymetric_reference_dir):
    d = cymetric_reference_dir
    with open(d / "basis.pickle", "rb") as fh:
        basis = pickle.load(fh)
    return {
        "basis": basis,
        "points": dict(np.load(d / "points_reference.npz")),
        "dataset": dict(np.load(d / "dataset.npz")),
        "dir": d,
    }


def on_manifold(M, z0, patch, j, dx):
    """Point of M whose local coordinates (chart patch, j) are those of z0 plus dx.

    The good coordinates are shifted by dx (complex (n,)), z_patch stays 1 and z_j
    is re-solved from Q = 0 by Newton's method (complex128).
    """
    N = M.ncoords
    good = [i for i in range(N) if i not in (patch, j)]
    z = np.array(z0, dtype=np.complex128)
    z[good] += dx
    for _ in range(50):
        step = M.Q(z[None])[0] / M.dQdz(z[None])[0, j]
        z[j] -= step
        if abs(step) < 1e-17:
            break
    return z


def local_fd_points(M, z0, patch, j, h, order):
    """Points for central differences in the 2n real local directions.

    order 1: [+h e_s, -h e_s] for s in 0..2n-1; order 2: the four corners
    (+-h e_s, +-h e_t) for every pair s <= t. Direction s < n moves Re x^s,
    s >= n moves Im x^(s-n).
    """
    n = M.nfold

    def e(s):
        d = np.zeros(n, complex)
        d[s % n] = 1.0 if s < n else 1j
        return d

    pts = []
    if order == 1:
        for s in range(2 * n):
            pts += [on_manifold(M, z0, patch, j, h * e(s)), on_manifold(M, z0, patch, j, -h * e(s))]
    else:
        for s, t in itertools.combinations_with_replacement(range(2 * n), 2):
            for a, b in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                pts.append(on_manifold(M, z0, patch, j, h * (a * e(s) + b * e(t))))
    return np.array(pts)


def fd_holomorphic(values, n, h):
    """d_c F = (dF/du_c - i dF/dv_c)/2 from first-order points -> (n, ...)."""
    v = values.reshape((2 * n, 2) + values.shape[1:])
    d = (v[:, 0] - v[:, 1]) / (2 * h)
    return 0.5 * (d[:n] - 1j * d[n:])


def fd_ddbar(values, n, h):
    """d_a dbar_b f = (f_{u_a u_b} + f_{v_a v_b} + i (f_{u_a v_b} - f_{v_a u_b}))/4 -> (n, n)."""
    H = np.zeros((2 * n, 2 * n))
    it = iter(values.reshape(-1, 4))
    for s, t in itertools.combinations_with_replacement(range(2 * n), 2):
        pp, pm, mp, mm = next(it)
        H[s, t] = H[t, s] = (pp - pm - mp + mm) / (4 * h * h)
    return 0.25 * (H[:n, :n] + H[n:, n:] + 1j * (H[:n, n:] - H[n:, :n]))


def to_x(z):
    return np.concatenate([z.real, z.imag], axis=-1)


# ------------------------------------------------------ hermitian map (6.1)
def test_hermitian_map_matches_conventions_element_by_element(rng):
    o = rng.normal(size=(4, 9))
    H = hermitian_from_components_tf(tf.constant(o)).numpy()
    for b in range(4):
        o0, o1, o2, o3, o4, o5, o6, o7, o8 = o[b]
        expected = np.array(
            [[o0, o1 - 1j * o3, o2 - 1j * o6], [o1 + 1j * o3, o4, o5 - 1j * o7], [o2 + 1j * o6, o5 + 1j * o7, o8]]
        )
        np.testing.assert_array_equal(H[b], expected)
    # the general rule for n = 2: A = o.reshape(n, n) row-major
    o2 = rng.normal(size=(3, 4))
    H2 = hermitian_from_components_tf(tf.constant(o2)).numpy()
    A = o2.reshape(3, 2, 2)
    np.testing.assert_array_equal(H2[:, 0, 1], A[:, 0, 1] - 1j * A[:, 1, 0])
    np.testing.assert_array_equal(H2[:, 1, 0], A[:, 0, 1] + 1j * A[:, 1, 0])
    np.testing.assert_array_equal(H2[:, 1, 1], A[:, 1, 1])


def test_multiplicative_model_is_G_times_one_plus_H(quintic_ds):
    net = mlp(10, 9, seed=3)
    model = MultiplicativeModel(net, quintic_ds, dtype="float64")
    x = quintic_ds.X_val[:20]
    g = model(x).numpy()
    G = quintic_ds.manifold.fs_metric_pb(quintic_ds.points_val[:20])
    o = net(tf.constant(x)).numpy()  # points are patch-normalised already
    H = np.empty((20, 3, 3), complex)
    for r in range(3):
        for c in range(3):
            if r == c:
                H[:, r, c] = o[:, 3 * r + r]
            elif r < c:
                H[:, r, c] = o[:, 3 * r + c] - 1j * o[:, 3 * c + r]
            else:
                H[:, r, c] = o[:, 3 * c + r] + 1j * o[:, 3 * r + c]
    np.testing.assert_allclose(g, G * (1 + H), **tol("float64"))


# --------------------------------------------------- FS model and geometry
def test_fs_model_matches_cymetric_reference_float64(reference):
    ref = reference["points"]
    model = FSModel(reference["basis"], dtype="float64")
    x = ref["x_real"]
    g = model(x).numpy()
    assert g.dtype == np.complex128 and g.shape == (200, 3, 3)
    scale = np.max(np.abs(ref["g_fs_pb_np"]))
    assert np.max(np.abs(g - ref["g_fs_pb_np"])) / scale <= 1e-10
    J = model.pullbacks(x).numpy()
    assert np.max(np.abs(J - ref["pullbacks"])) / np.max(np.abs(ref["pullbacks"])) <= 1e-10
    patch, j = model.charts(x)
    np.testing.assert_array_equal(patch.numpy(), ref["patch_index"])
    np.testing.assert_array_equal(j.numpy(), ref["j_elim"])
    np.testing.assert_allclose(model.omega_sq(x).numpy(), ref["omega_sq"], rtol=1e-12)


def test_fs_model_float32_matches_cymetric_tf(reference):
    ref = reference["points"]
    model = FSModel(reference["basis"], dtype="float32")
    g = model(ref["x_real"].astype(np.float32)).numpy()
    assert g.dtype == np.complex64
    scale = np.max(np.abs(ref["g_fs_pb"]))
    assert np.max(np.abs(g - ref["g_fs_pb"])) / scale < 2e-6  # cymetric's own TF-vs-NumPy gap: 3.7e-7
    J = model.pullbacks(ref["x_real"].astype(np.float32)).numpy()
    assert np.max(np.abs(J - ref["pullbacks_tf"])) < 5e-6


@pytest.mark.parametrize(
    "make",
    [
        fermat_quintic,
        lambda: dwork_quintic(0.4 + 0.2j),
        fermat_quartic,
        fermat_cubic,
        lambda: fermat_quintic(kmoduli=2.5),
    ],
)
def test_fs_model_equals_geometry_fs_metric(make):
    M = make()
    z = M.sample_points(60, seed=5)
    model = FSModel(M, dtype="float64")
    x = to_x(z)
    np.testing.assert_allclose(model(x).numpy(), M.fs_metric_pb(z), **tol("float64"))
    np.testing.assert_allclose(model.pullbacks(x).numpy(), M.pullbacks(z), **tol("float64"))
    np.testing.assert_array_equal(np.stack([t.numpy() for t in model.charts(x)], 1), M.charts(z))
    # j_elim overrides the elimination choice, as in cymetric's call signature
    j_other = (M.charts(z)[:, 0] + 1) % M.ncoords
    j_other = np.where(j_other == M.charts(z)[:, 1], (j_other + 1) % M.ncoords, j_other)
    np.testing.assert_allclose(model(x, j_elim=j_other).numpy(), M.fs_metric_pb(z, j_elim=j_other), **tol("float64"))


def test_outputs_hermitian_and_positive_definite_at_init(quintic_ds):
    x = quintic_ds.X_train[:200]
    keras.utils.set_random_seed(0)
    cymetric_net = keras.Sequential(
        [keras.Input((10,))]
        + [keras.layers.Dense(64, "gelu") for _ in range(3)]
        + [keras.layers.Dense(9, use_bias=False)]
    )
    models = [
        FSModel(quintic_ds),
        MultiplicativeModel(cymetric_net, quintic_ds),
        PhiModel(mlp(10, 1, features=True, dtype="float32", last_std=0.01), quintic_ds),
    ]
    for model in models:
        g = model(x).numpy()
        assert g.dtype == np.complex64 and g.shape == (200, 3, 3)
        np.testing.assert_allclose(g, np.conj(np.swapaxes(g, 1, 2)), rtol=0, atol=1e-6 * np.abs(g).max())
        eig = np.linalg.eigvalsh(g)
        assert eig.min() > 0, (type(model).__name__, eig.min())


def test_fs_holomorphic_derivative_closed_form_vs_finite_differences():
    M = dwork_quintic(0.3 - 0.1j)  # a polynomial with mixed monomials
    model = FSModel(M, dtype="float64")
    z = M.sample_points(4, seed=2)
    _, dg = model.holomorphic_derivative(to_x(z))
    charts = M.charts(z)
    h = 1e-5
    for p in range(len(z)):
        k, j = charts[p]
        pts = local_fd_points(M, z[p], k, j, h, 1)
        vals = model(to_x(pts), j_elim=np.full(len(pts), j)).numpy()
        fd = fd_holomorphic(vals, 3, h)
        np.testing.assert_allclose(dg.numpy()[p], fd, rtol=0, atol=1e-8 * np.abs(fd).max())


# ---------------------------------------------------------------- losses
def test_kaehler_and_transition_vanish_for_fs_and_phi_models(quintic_ds):
    x, y = quintic_ds.X_val[:30], quintic_ds.y_val[:30]
    fs = FSModel(quintic_ds, dtype="float64")
    t = fs.loss_terms(x, y, terms=("kaehler", "transition", "sigma"))
    scale = np.abs(fs(x).numpy()).max() ** 2
    assert t["kaehler"].numpy().max() < 1e-26 * scale
    assert t["transition"].numpy().max() < 1e-26 * scale
    assert t["sigma"].numpy().mean() > 0.1  # but FS is not Ricci flat
    for mode in ("metric", "phi"):
        phi = PhiModel(mlp(10, 1, features=True, seed=4), quintic_ds, dtype="float64", transition_mode=mode)
        t = phi.loss_terms(x, y, terms=("kaehler", "transition"))
        g = t["g"].numpy()
        assert np.abs(g - fs(x).numpy()).max() > 1e-3 * np.abs(g).max()  # a genuinely different metric
        assert t["kaehler"].numpy().max() < 1e-24 * np.abs(g).max() ** 2
        assert t["transition"].numpy().max() < 1e-24 * max(1.0, np.abs(g).max() ** 2)


def test_transition_matrix_closed_form():
    """conventions §7.3 example: old patch 0, j = 4, new patch 1: w = (z0, z2, z3)/z1."""
    M = fermat_quintic()
    model = FSModel(M, dtype="float64")
    z = M.sample_points(400, seed=9)
    charts = M.charts(z)
    pick = np.nonzero((charts[:, 0] == 0) & (charts[:, 1] == 4))[0][:5]
    assert len(pick) > 0
    zz = tf.constant(z[pick])
    patch, j = tf.constant(charts[pick, 0], tf.int32), tf.constant(charts[pick, 1], tf.int32)
    trans = model.geometry.transition_points(zz, patch, j)
    m = trans["m"]
    T = trans["T"].numpy().reshape(m, len(pick), 3, 3)
    kp = trans["patch"].numpy().reshape(m, len(pick))
    for p in range(len(pick)):
        i = list(kp[:, p]).index(1)
        z0, z1, z2, z3 = z[pick[p], :4]
        expected = np.array([[-((z1 / z0) ** 2), -z2 * z1 / z0**2, -z3 * z1 / z0**2], [0, z1 / z0, 0], [0, 0, z1 / z0]])
        np.testing.assert_allclose(T[i, p], expected, **tol("float64"))


def test_kaehler_loss_of_non_kaehler_metric_vs_finite_differences(quintic_ds):
    M = quintic_ds.manifold
    model = MultiplicativeModel(mlp(10, 9, seed=7), quintic_ds, dtype="float64")
    z = quintic_ds.points_val[:4]
    x = to_x(z)
    _, dg = model.holomorphic_derivative(x)
    k_model = model.loss_terms(x, terms=("kaehler",))["kaehler"].numpy()
    charts = M.charts(z)
    h = 1e-5
    for p in range(len(z)):
        k, j = charts[p]
        pts = local_fd_points(M, z[p], k, j, h, 1)
        fd = fd_holomorphic(model(to_x(pts), j_elim=np.full(len(pts), j)).numpy(), 3, h)
        np.testing.assert_allclose(dg.numpy()[p], fd, rtol=0, atol=1e-7 * np.abs(fd).max())
        k_fd = np.sum(np.abs(fd - np.swapaxes(fd, 0, 1)) ** 2)
        assert k_fd > 1e-6  # the metric is far from Kähler
        np.testing.assert_allclose(k_model[p], k_fd, rtol=1e-6)


def test_phi_model_metric_is_fs_plus_ddbar_phi_by_finite_differences(quintic_ds):
    M = quintic_ds.manifold
    model = PhiModel(mlp(10, 1, seed=8), quintic_ds, dtype="float64")
    z = quintic_ds.points_val[:3]
    g = model(to_x(z)).numpy()
    G = M.fs_metric_pb(z)
    h = 2e-4
    for p, (k, j) in enumerate(M.charts(z)):
        pts = local_fd_points(M, z[p], k, j, h, 2)
        phi = model.potential(tf.constant(to_x(pts))).numpy()
        np.testing.assert_allclose(g[p] - G[p], fd_ddbar(phi, 3, h), rtol=0, atol=2e-6 * np.abs(g[p]).max())


def test_sigma_and_volk_losses_vs_numpy(quintic_ds):
    model = MultiplicativeModel(mlp(10, 9, seed=1), quintic_ds, dtype="float64")
    x, y = quintic_ds.X_train[:64], quintic_ds.y_train[:64]
    t = model.loss_terms(x, y, terms=("sigma", "volk"))
    g = t["g"].numpy()
    w, om = y[:, 0], y[:, 1]
    det = np.linalg.det(g).real
    np.testing.assert_allclose(t["sigma"].numpy(), np.abs(1 - det / (quintic_ds.kappa * om)), **tol("float64"))
    # volk with the explicit Levi-Civita contraction (1/n!) eps eps g g F, F = FS at t = 1
    F = quintic_ds.manifold.fs_metric_pb(quintic_ds.points_train[:64], t=1.0)
    perms = list(itertools.permutations(range(3)))
    sign = [np.linalg.det(np.eye(3)[list(s)]) for s in perms]
    m = np.zeros(64)
    for s1, e1 in zip(perms, sign):
        for s2, e2 in zip(perms, sign):
            m += (e1 * e2 * g[:, s1[0], s2[0]] * g[:, s1[1], s2[1]] * F[:, s1[2], s2[2]]).real
    m /= 6
    V = abs(np.mean(w * m / om) - 5.0)
    np.testing.assert_allclose(t["volk"].numpy(), np.full(64, V), **tol("float64"))
    # identity: the mixed determinant with F = g is det g
    np.testing.assert_allclose(losses.mixed_determinant(g, g).numpy(), det, **tol("float64"))


def test_sigma_measure_fs_matches_cymetric_and_numpy(reference):
    d = reference["dataset"]
    fs32 = FSModel(reference["basis"])
    meas = fs32.measures(d["X_val"].astype(np.float32), d["y_val"].astype(np.float32), which=("sigma", "volk"))
    assert abs(meas["sigma"] - 0.39791) < 2e-5  # cymetric: 0.39791 (float32, 5 digits)
    assert abs(meas["volk"] - 5.0) < 1e-5
    cb = MeasuresCallback(d, measures=("sigma",))  # the cymetric dataset.npz content
    cb.set_model(fs32)
    assert cb.compute()["sigma_val"] == pytest.approx(meas["sigma"], rel=1e-6)
    # independent NumPy computation from cyntk.geometry on a fresh set (float64)
    M = fermat_quintic()
    ds = make_dataset(M, 500, seed=3)
    G = M.fs_metric_pb(ds.points_val)
    eta = np.linalg.det(G).real / ds.omega_sq_val
    w = ds.weights_val
    vol_cy, vol_k = w.mean(), (w * eta).mean()
    sigma_np = np.mean(w * np.abs(1 - eta * vol_cy / vol_k)) / vol_cy
    meas64 = FSModel(ds, dtype="float64").measures(ds.X_val, ds.y_val, batch_size=17, which=("sigma", "volk"))
    np.testing.assert_allclose(meas64["sigma"], sigma_np, rtol=1e-10)
    np.testing.assert_allclose(meas64["volk"], vol_k, rtol=1e-10)
    np.testing.assert_allclose(losses.sigma_measure(G, w, ds.omega_sq_val).numpy(), sigma_np, rtol=1e-12)


def test_ricci_scalar_vs_finite_differences_and_flat_torus():
    M = fermat_quintic()
    fs = FSModel(M, dtype="float64")
    z = M.sample_points(2, seed=4)
    R = fs.ricci_scalar(to_x(z)).numpy()
    G = M.fs_metric_pb(z)

    def R_fd(p, k, j, h):
        pts = local_fd_points(M, z[p], k, j, h, 2)
        logdet = np.log(np.linalg.det(fs(to_x(pts), j_elim=np.full(len(pts), j)).numpy()).real)
        return np.trace(np.linalg.solve(G[p], fd_ddbar(logdet, 3, h))).real

    for p, (k, j) in enumerate(M.charts(z)):
        h = 4e-4  # Richardson extrapolation of the O(h^2) central differences
        r = (4 * R_fd(p, k, j, h / 2) - R_fd(p, k, j, h)) / 3
        np.testing.assert_allclose(R[p], r, rtol=1e-6)
    # the flat metric kappa |Omega|^2 of the cubic torus is Ricci flat: R = 0 and Ricci measure 0
    T = fermat_cubic()
    ds = make_dataset(T, 200, seed=1)

    class FlatTorus(FSModel):
        """g = kappa |Omega|^2 = kappa / |dQ/dz_j|^2 in every chart (n = 1)."""

        def _metric_from_frame(self, frame, training):
            qj = tf.gather(frame["dq"], frame["j"], axis=1, batch_dims=1)
            val = self.kappa / (tf.math.real(qj) ** 2 + tf.math.imag(qj) ** 2)
            return tf.complex(val, tf.zeros_like(val))[:, None, None]

        def _evaluate(self, *args):  # generic autodiff route, not FS's closed form
            return MetricModel._evaluate(self, *args)

    flat = FlatTorus(ds, dtype="float64")
    np.testing.assert_allclose(flat(ds.X_val).numpy()[:, 0, 0].real, ds.kappa * ds.omega_sq_val, rtol=1e-12)
    meas = flat.measures(ds.X_val, ds.y_val, which=("sigma", "ricci", "kaehler", "transition"))
    assert meas["ricci"] < 1e-9 and meas["sigma"] < 1e-12 and meas["transition"] < 1e-20
    assert np.abs(R).min() > 1.0  # while FS on the quintic is far from flat


# --------------------------------------------------- inputs and manifolds
def test_accepts_basis_dicts_paths_hypersurfaces_and_datasets(reference, tmp_path):
    basis = reference["basis"]
    ref = reference["points"]
    x = ref["x_real"][:20]
    M = fermat_quintic()
    as_tf_basis = {k: np.asarray(v).astype(np.complex64) for k, v in basis.items()}  # prepare_tf_basis style
    ds = make_dataset(M, 100, seed=0)
    ds.save(tmp_path / "data")
    variants = {
        "dict": basis,
        "complex64 dict": as_tf_basis,
        "path": reference["dir"],
        "pickle path": str(reference["dir"] / "basis.pickle"),
        "hypersurface": M,
        "dataset": ds,
        "saved dataset dir": tmp_path / "data",
        "basis()": M.basis(0.5),
    }
    outs = {k: FSModel(v, dtype="float64")(x).numpy() for k, v in variants.items()}
    for k, v in outs.items():
        np.testing.assert_allclose(v, ref["g_fs_pb_np"][:20], **tol("float64"), err_msg=k)
    assert manifold_spec(basis).kappa == pytest.approx(float(ref["kappa"]))
    assert manifold_spec(as_tf_basis).kappa == pytest.approx(float(ref["kappa"]), rel=1e-7)
    assert manifold_spec(ds).kappa == ds.kappa and manifold_spec(M).kappa is None
    assert manifold_spec(M, kappa=0.3).kappa == 0.3
    assert manifold_spec(basis).same_manifold(manifold_spec(M))
    assert not manifold_spec(M).same_manifold(manifold_spec(dwork_quintic(0.5)))


def test_float32_default_and_floatx():
    M = fermat_cubic()
    assert FSModel(M).compute_dtype == "float32"
    keras.config.set_floatx("float64")
    try:
        model = FSModel(M)
        assert model.compute_dtype == "float64"
        assert model(to_x(M.sample_points(4, seed=0))).dtype == tf.complex128
    finally:
        keras.config.set_floatx("float32")


def test_ricci_loss_and_its_weight_gradient(quintic_ds):
    model = MultiplicativeModel(mlp(10, 9, width=8, seed=2), quintic_ds, dtype="float64", ricci=1.0)
    x, y = quintic_ds.X_train[:6], quintic_ds.y_train[:6]
    R = model.ricci_scalar(x).numpy()
    with tf.GradientTape() as tape:
        t = model.loss_terms(x, y, terms=("ricci",))
        loss = tf.reduce_mean(t["ricci"])
    np.testing.assert_allclose(t["ricci"].numpy(), np.abs(1 - np.exp(-R)), **tol("float64"))
    grads = tape.gradient(loss, model.trainable_variables)
    flat = np.concatenate([g.numpy().ravel() for g in grads])
    assert np.all(np.isfinite(flat)) and np.abs(flat).max() > 0
    # directional derivative of the loss along a random weight direction vs central differences
    rng = np.random.default_rng(0)
    dirs = [rng.normal(size=v.shape) for v in model.trainable_variables]
    base = [v.numpy() for v in model.trainable_variables]

    def loss_at(eps):
        for v, b, d in zip(model.trainable_variables, base, dirs):
            v.assign(b + eps * d)
        return float(tf.reduce_mean(model.loss_terms(x, y, terms=("ricci",))["ricci"]))

    h = 1e-6
    fd = (loss_at(h) - loss_at(-h)) / (2 * h)
    loss_at(0.0)
    np.testing.assert_allclose(sum(np.sum(g.numpy() * d) for g, d in zip(grads, dirs)), fd, rtol=1e-5)


def test_losses_and_layers_serialise_and_symbolic_call(quintic_ds):
    for fn in (losses.sigma_loss, losses.kaehler_loss, losses.volk_loss, losses.sigma_measure):
        cfg = keras.saving.serialize_keras_object(fn)
        assert keras.saving.deserialize_keras_object(cfg) is fn
    layer = ProjectiveFeatures()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(again, ProjectiveFeatures)
    model = MultiplicativeModel(mlp(10, 9, dtype="float32"), quintic_ds)
    sym = model(keras.Input((10,)))
    assert tuple(sym.shape) == (None, 3, 3) and "complex" in str(sym.dtype)
    z = quintic_ds.points_val[:5]
    feats = layer(tf.constant(to_x(z)))
    feats_scaled = layer(tf.constant(to_x(z * (0.3 - 1.7j))))  # invariant under z -> lambda z
    np.testing.assert_allclose(feats.numpy(), feats_scaled.numpy(), rtol=1e-5, atol=1e-6)
    P = z[:, :, None] * np.conj(z)[:, None, :] / np.sum(np.abs(z) ** 2, 1)[:, None, None]
    iu = np.triu_indices(5, 1)
    expected = np.concatenate(
        [np.real(np.diagonal(P, axis1=1, axis2=2)), P[:, iu[0], iu[1]].real, P[:, iu[0], iu[1]].imag], 1
    )
    np.testing.assert_allclose(feats.numpy(), expected, rtol=1e-5, atol=1e-6)
