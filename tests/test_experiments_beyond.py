"""Beyond-the-paper experiments: the cubic torus against its exact metric, flows without clustering."""

from __future__ import annotations

import numpy as np
import pytest

from cyntk.experiments.beyond import (
    _relative_error,
    kernel_row_mass,
    plot_noclustering,
    plot_torus,
    run_noclustering,
    run_torus,
)
from cyntk.geometry import fermat_cubic, fermat_quintic, fs_distance_matrix, make_dataset, to_real
from cyntk.kernels import GaussianFSKernel


def test_relative_error_is_zero_for_the_exact_torus_metric_and_matches_numpy_for_fs():
    M = fermat_cubic()
    ds = make_dataset(M, 2000, seed=3)
    z = M.sample_points(50, seed=4)
    geo = M.geometry(z)
    g_exact = (ds.kappa * geo["omega_sq"])[:, None, None].astype(complex)  # n = 1
    assert np.max(_relative_error(g_exact, geo["omega_sq"], ds.kappa)) < 1e-14
    g_fs = M.fs_metric_pb(z)
    want = np.abs(g_fs[:, 0, 0].real - ds.kappa * geo["omega_sq"]) / (ds.kappa * geo["omega_sq"])
    np.testing.assert_allclose(_relative_error(g_fs, geo["omega_sq"], ds.kappa), want, rtol=1e-12)


def test_kernel_row_mass_equals_the_numpy_row_sum_of_the_full_kernel():
    M = fermat_quintic()
    z = M.sample_points(120, seed=5, chart=(0, 1))
    x = to_real(z)
    k = GaussianFSKernel(sigma=0.2)
    want = np.mean(np.sum(np.exp(-fs_distance_matrix(z) / 0.4), axis=1))
    assert kernel_row_mass(k, x, n_rows=1000) == pytest.approx(want, rel=1e-10)
    assert kernel_row_mass(k, x, n_rows=30) == pytest.approx(want, rel=0.3)


def test_run_torus_tiny_returns_finite_errors_of_documented_shape_and_flows_help_on_train_points():
    r = run_torus(
        n_points=1500,
        epochs=2,
        hidden=(16,),
        n_flow=120,
        n_test=60,
        steps=6,
        lr_grid=(1e-4, 1e-3),
        kernels=("gaussian", "delta"),
        log=None,
    )
    assert r["network/val_error"].shape == (3,)
    assert np.all(np.isfinite(r["network/val_error"]))
    for k in ("gaussian", "delta"):
        tr, te = r[f"{k}/train_error"], r[f"{k}/test_error"]
        assert tr.shape == (7,) and te.shape == (7,)
        assert np.all(np.isfinite(tr)) and np.all(np.isfinite(te))
        assert r[f"{k}/failed_at_step"] == 0
        assert r[f"{k}/learning_rate"] in (1e-4, 1e-3)
        assert tr[-1] < 0.8 * tr[0]  # the flow lowers the error to the exact metric on train points
    # the initial kernel-flow metric is Fubini-Study: its test error is the FS error
    assert r["gaussian/test_error"][0] == pytest.approx(r["fs/test_error"], rel=1e-6)
    assert 0.01 < r["fs/test_error"] < 1.0
    plot_torus(r)


def test_run_noclustering_tiny_delta_is_unchanged_by_clustering_and_lr_scales_with_row_mass(tmp_path):
    from cyntk.experiments.runner import ResultStore

    store = ResultStore(tmp_path / "partial")
    kw = dict(
        sizes=(150, 450),
        kernels=("gaussian", "delta"),
        n_test=60,
        steps=5,
        cluster_size=150,
        cluster_batch_size=300,
        lr_grid=(1e-4, 1e-3),
        log=None,
    )
    r = run_noclustering(store=store, **kw)
    for k in ("gaussian", "delta"):
        for mode in ("exact", "clustered"):
            assert r[f"{k}/{mode}/train_gain"].shape == (2,)
        assert np.all(np.isfinite(r[f"{k}/exact/train_gain"]))
        assert np.isnan(r[f"{k}/clustered/train_gain"][0])  # one cluster: not run
        assert np.isfinite(r[f"{k}/clustered/train_gain"][1])
        assert np.all(r[f"{k}/exact/failed_at_step"] == 0)
        assert np.all(r[f"{k}/exact/train_gain"] > 1.0)
    # the Delta kernel couples each train point to itself only: clustering cannot change its flow
    np.testing.assert_allclose(r["delta/clustered/train_gain"][1], r["delta/exact/train_gain"][1], rtol=1e-10)
    np.testing.assert_allclose(r["delta/exact/learning_rate"], r["delta/learning_rate"], rtol=1e-12)
    # the Gaussian step is divided by the kernel's row mass, which grows with N
    assert r["gaussian/exact/learning_rate"][1] < r["gaussian/exact/learning_rate"][0]
    # resumable: a second call reads every item from the store
    r2 = run_noclustering(store=store, **kw)
    np.testing.assert_array_equal(r2["gaussian/exact/test_gain"], r["gaussian/exact/test_gain"])
    plot_noclustering(r)


def test_noclustering_train_points_are_disjoint_from_the_test_points():
    """Regression: the smallest train set once reused the test points' random stream."""
    from cyntk.experiments.beyond import _train_points
    from cyntk.geometry import fs_nearest, to_complex

    M = fermat_quintic()
    z_te = M.sample_points(300, seed=np.random.default_rng(0), chart=(0, 1))
    for i in range(2):
        z_tr = to_complex(_train_points(M, 0, i, 300, (0, 1)))
        assert fs_nearest(z_te, z_tr)[0].min() > 1e-6
    np.testing.assert_array_equal(_train_points(M, 0, 1, 50, (0, 1)), _train_points(M, 0, 1, 50, (0, 1)))
