"""KernelModel on complete intersections in products of projective spaces (issue 18).

Eq. (3.5) against an independent NumPy flow (dense product-distance Gaussian kernel
written out here, closed-form sigma-loss gradient), chart rows in errors, clustering
with the product distance, saving, and dual == primal for an empirical NTK on the bicubic.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cyntk.flows.kernel_model import KernelModel  # noqa: E402
from cyntk.geometry import (  # noqa: E402
    components_from_hermitian,
    default_distance_threshold,
    hermitian_from_components,
    to_real,
)
from cyntk.geometry.cicy_manifolds import bicubic, get_cicy, tetraquadric  # noqa: E402
from cyntk.geometry.clustering import BatchedFSClustering  # noqa: E402
from cyntk.kernels.empirical import EmpiricalNTKKernel  # noqa: E402
from cyntk.kernels.fs import DeltaKernel, GaussianFSKernel  # noqa: E402
from cyntk.models import MultiplicativeModel  # noqa: E402

LR = 2.0**-14


def sigma_and_grad(comps, omega_sq, kappa):
    """sigma = |1 - det g/(kappa |Omega|^2)| and its closed-form gradient in the components."""
    g = hermitian_from_components(comps)
    det = np.real(np.linalg.det(g))
    eta = det / (kappa * omega_sq)
    E = hermitian_from_components(np.eye(comps.shape[1]))
    ddet = det[:, None] * np.real(np.einsum("pab,Iba->pI", np.linalg.inv(g), E))
    return np.abs(1.0 - eta), -np.sign(1.0 - eta)[:, None] * ddet / (kappa * omega_sq)[:, None]


def product_gaussian(z1, z2, slices, t, sigma):
    """exp(-sqrt(sum_F t_F d_F^2)/(2 sigma)), d_F = arccos(|<z_F, z'_F>|/(|z_F||z'_F|)), written out."""
    d2 = np.zeros((len(z1), len(z2)))
    for (a, b), tf_ in zip(slices, t):
        u, v = z1[:, a:b], z2[:, a:b]
        c2 = np.abs(np.conj(u) @ v.T) ** 2 / np.outer(np.sum(np.abs(u) ** 2, 1), np.sum(np.abs(v) ** 2, 1))
        c2 = np.minimum(c2, 1.0)
        c2[(1.0 - c2) < default_distance_threshold()] = 1.0
        d2 += tf_ * np.arccos(np.sqrt(c2)) ** 2
    return np.exp(-np.sqrt(d2) / (2 * sigma))


def common_chart(M):
    c = M.charts(M.sample_points(1500, seed=0))
    rows, cnt = np.unique(c, axis=0, return_counts=True)
    return rows[np.argmax(cnt)]


@pytest.fixture(scope="module", params=["bicubic", "tetraquadric"])
def chart_data(request):
    M = bicubic() if request.param == "bicubic" else tetraquadric().with_kmoduli([1.0, 1.5, 1.0, 0.5])
    row = common_chart(M)
    z = M.sample_points(60, seed=4, chart=row)
    x = to_real(z)
    return dict(M=M, row=row, z=z, x=x, y=KernelModel.targets(M, x))


def test_sgd_steps_equal_numpy_eq_3_5_on_products(chart_data):
    M, z, x, y = chart_data["M"], chart_data["z"], chart_data["x"], chart_data["y"]
    ztr, zte, xtr, xte, ytr = z[:40], z[40:], x[:40], x[40:], y[:40]
    sigma = 0.5
    kernel = GaussianFSKernel(sigma)
    model = KernelModel(kernel, xtr, M, tile_size=16)
    # the model filled the factor layout in from the manifold (the user's kernel is not changed)
    assert model.kernel.factor_slices == tuple(map(tuple, M.factor_slices.tolist()))
    assert model.kernel.t == tuple(M.kmoduli) and kernel.factor_slices is None
    model.compile(optimizer=keras.optimizers.SGD(LR))
    K_tt = product_gaussian(ztr, ztr, M.factor_slices, M.kmoduli, sigma)
    K_st = product_gaussian(zte, ztr, M.factor_slices, M.kmoduli, sigma)
    g_tr = components_from_hermitian(M.fs_metric_pb(ztr))
    g_te = components_from_hermitian(M.fs_metric_pb(zte))
    losses = []
    for _ in range(2):
        sig, grad = sigma_and_grad(g_tr, ytr[:, 1], model.kappa)
        losses.append(sig.mean())
        g_tr, g_te = g_tr - LR * K_tt @ grad, g_te - LR * K_st @ grad
    hist = model.fit(xtr, ytr, batch_size=40, epochs=2, verbose=0)
    np.testing.assert_allclose(hist.history["loss"], losses, rtol=1e-10)
    got_tr = components_from_hermitian(model.predict(xtr, batch_size=40, verbose=0))
    np.testing.assert_allclose(got_tr, g_tr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.g0_train.numpy() - model.u_train.numpy(), g_tr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(components_from_hermitian(model.predict(xte, verbose=0)), g_te, rtol=1e-10, atol=1e-12)
    after = sigma_and_grad(g_tr, ytr[:, 1], model.kappa)[0].mean()
    assert after < losses[0] - 1e-3  # the flow lowered the sigma loss noticeably
    ev = model.evaluate(xtr, ytr, batch_size=40, verbose=0, return_dict=True)
    np.testing.assert_allclose(ev["sigma_loss"], after, rtol=1e-10)


def test_mixed_charts_name_the_chart_rows():
    M = bicubic()
    z = M.sample_points(200, seed=1)
    c = M.charts(z)
    rows = np.unique(c, axis=0)
    pick = np.concatenate([np.flatnonzero(np.all(c == rows[0], 1))[:3], np.flatnonzero(np.all(c == rows[1], 1))[:3]])
    x = to_real(z[pick])
    r0 = tuple(int(v) for v in rows[0])
    with pytest.raises(ValueError, match=r"mixes 2 charts .*one=\(%d, %d\), elim=\(%d,\)\): 3" % r0):
        KernelModel(GaussianFSKernel(0.5), x, M)
    model = KernelModel(GaussianFSKernel(0.5), x, M, mixed_charts="separate")
    assert len(model._np_state()["charts"]) == 2
    # a point of a third chart: an error naming its row and the train rows
    other = np.flatnonzero(~np.isin(np.arange(len(z)), pick) & ~np.all(c == rows[0], 1) & ~np.all(c == rows[1], 1))
    r2 = tuple(int(v) for v in c[other[0]])
    with pytest.raises(ValueError, match=r"in chart \(one=\(%d, %d\), elim=\(%d,\)\)" % r2):
        model.predict(to_real(z[other[:1]]), verbose=0)


def test_clusters_use_the_product_distance(chart_data):
    M, z, x, y = chart_data["M"], chart_data["z"], chart_data["x"], chart_data["y"]
    model = KernelModel(GaussianFSKernel(0.5), x[:40], M, clusters=3, seed=0, cluster_batch_size=None)
    ref = BatchedFSClustering(n_clusters=3, batch_size=None, shuffle=True, random_state=0, manifold=M)
    labels = ref.fit_predict(z[:40])
    _, labels = np.unique(labels, return_inverse=True)
    np.testing.assert_array_equal(model.cluster_labels.numpy(), labels)
    # a test point takes the cluster of its nearest train point in the product distance
    d = -np.log(product_gaussian(z[40:], z[:40], M.factor_slices, M.kmoduli, 0.5))  # monotone in d
    groups = model._groups_for(x[40:])
    np.testing.assert_array_equal(groups, labels[np.argmin(d, axis=1)])
    model.compile(optimizer=keras.optimizers.SGD(LR))
    hist = model.fit(x[:40], y[:40], batch_size=40, epochs=2, verbose=0)
    assert hist.history["loss"][1] < hist.history["loss"][0]


def test_save_and_load_round_trip_on_a_product(chart_data, tmp_path):
    M, x, y = chart_data["M"], chart_data["x"], chart_data["y"]
    model = KernelModel(GaussianFSKernel(0.5), x[:40], M, clusters=2, cluster_batch_size=None)
    model.compile(optimizer=keras.optimizers.SGD(LR))
    model.fit(x[:40], y[:40], batch_size=40, epochs=2, verbose=0)
    path = tmp_path / "cicy_flow.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.surface.nproj == M.nproj and loaded.kernel.factor_slices == model.kernel.factor_slices
    assert loaded.kappa == model.kappa
    np.testing.assert_array_equal(loaded.cluster_labels.numpy(), model.cluster_labels.numpy())
    np.testing.assert_allclose(loaded.predict(x[40:], verbose=0), model.predict(x[40:], verbose=0), rtol=1e-13)


def test_kernel_layout_must_match_and_targets_check_all_equations():
    M = bicubic()
    x = to_real(M.sample_points(30, seed=2, chart=common_chart(M)))
    with pytest.raises(ValueError, match="factor_slices .* differ from the manifold's"):
        KernelModel(GaussianFSKernel(0.5, factor_slices=[[0, 2], [2, 6]]), x, M)
    # the nearest-neighbour kernel also gets the product distance
    assert KernelModel(DeltaKernel(), x, M).kernel.factor_slices == ((0, 3), (3, 6))
    bad = x.copy()
    bad[0, 1] += 0.3
    with pytest.raises(ValueError, match="does not lie on|not on the variety"):
        KernelModel(GaussianFSKernel(0.5), bad, M)
    C = get_cicy("cicy", configuration="5|3,3", seed=0)
    zc = C.sample_points(12, seed=1, chart=common_chart(C))
    assert np.abs(C.Q(zc)).max() < 1e-10
    off = C.patch_normalise(zc + 0.05)
    with pytest.raises(ValueError, match="not on the variety|does not lie"):
        KernelModel.targets(C, to_real(off))
    y = KernelModel.targets(C, to_real(zc))
    geo = C.geometry(zc)
    np.testing.assert_allclose(y, np.stack([geo["weights"], geo["omega_sq"]], 1), rtol=1e-14)


def multiplicative(M, seed):
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(seed)
        net = keras.Sequential(
            [
                keras.Input((2 * M.ncoords,)),
                keras.layers.Dense(6, activation="tanh"),
                keras.layers.Dense(9, kernel_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed)),
            ]
        )
        return MultiplicativeModel(net, M, dtype="float64", kaehler=0.0, transition=0.0, volk=0.0)
    finally:
        keras.config.set_dtype_policy(old)


def test_dual_equals_primal_for_the_empirical_ntk_on_the_bicubic():
    M = bicubic()
    z = M.sample_points(24, seed=5, chart=common_chart(M))
    x = to_real(z)
    y = KernelModel.targets(M, x[:18])
    net = multiplicative(M, 0)
    kernel = EmpiricalNTKKernel(net)
    preds = {}
    for form in ("dual", "primal"):
        model = KernelModel(kernel, x[:18], M, form=form, point_chunk=7)
        model.compile(optimizer=keras.optimizers.SGD(2.0**-9))
        model.fit(x[:18], y, batch_size=18, epochs=2, verbose=0)
        preds[form] = [components_from_hermitian(model.predict(a, verbose=0)) for a in (x[:18], x[18:])]
    for a, b in zip(preds["dual"], preds["primal"]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    g0 = components_from_hermitian(net(tf.constant(x[18:])).numpy())
    assert np.abs(preds["dual"][1] - g0).max() > 1e-6 * np.abs(g0).max()


def test_engines_and_tiles_agree_on_a_product():
    M = bicubic()
    x = to_real(M.sample_points(48, seed=8, chart=common_chart(M)))
    y = KernelModel.targets(M, x)
    preds = {}
    for name, kw in {"numpy": dict(engine="numpy"), "xla": dict(tiles="xla"), "auto": {}}.items():
        model = KernelModel(GaussianFSKernel(0.4), x[:32], M, tile_size=16, **kw)
        model.compile(optimizer=keras.optimizers.SGD(LR))
        model.fit(x[:32], y[:32], batch_size=32, epochs=2, verbose=0)
        preds[name] = components_from_hermitian(model.predict(x, verbose=0))
    np.testing.assert_allclose(preds["xla"], preds["numpy"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(preds["auto"], preds["numpy"], rtol=1e-12, atol=1e-14)
