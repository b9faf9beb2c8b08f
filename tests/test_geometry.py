"""cyntk.geometry against cymetric's reference data, closed forms and symmetry."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cyntk.geometry import (
    CYDataset,
    Hypersurface,
    component_labels,
    components_from_hermitian,
    dwork_quintic,
    fermat_cubic,
    fermat_quartic,
    fermat_quintic,
    fs_distance,
    fs_distance_matrix,
    fs_nearest,
    fubini_study_metric,
    get_manifold,
    hermitian_from_components,
    load_basis,
    make_dataset,
    patch_normalise,
    to_complex,
    to_real,
)


def rel_err(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b))


# ---------------------------------------------------------------- reference data
@pytest.fixture(scope="module")
def ref(cymetric_reference_dir):
    return dict(np.load(cymetric_reference_dir / "points_reference.npz"))


def test_reference_points_geometry_matches_cymetric(ref):
    M = fermat_quintic()
    geo = M.geometry(ref["points"])
    assert rel_err(geo["pullbacks"], ref["pullbacks"]) < 1e-10
    assert rel_err(geo["omega_sq"], ref["omega_sq"]) < 1e-10
    assert rel_err(geo["omega"], ref["omega"]) < 1e-10
    assert rel_err(geo["weights"], ref["weights"]) < 1e-10
    assert rel_err(geo["fs_metric_pb"], ref["g_fs_pb_np"]) < 1e-10
    assert rel_err(geo["det_fs"], ref["det_g_fs_pb"]) < 1e-10
    assert rel_err(fubini_study_metric(ref["points"]), ref["g_fs_ambient"]) < 1e-10
    assert rel_err(M.dQdz(ref["points"]), ref["dQdz"]) < 1e-12
    np.testing.assert_array_equal(geo["charts"][:, 0], ref["patch_index"])
    np.testing.assert_array_equal(geo["charts"][:, 1], ref["j_elim"])
    good = M.good_coordinates(ref["patch_index"], ref["j_elim"])
    np.testing.assert_array_equal(good, ref["good_coords"])


def test_real_input_accepted_and_round_trips(ref):
    M = fermat_quintic()
    x = ref["x_real"]
    np.testing.assert_allclose(to_real(to_complex(x)), x)
    assert rel_err(M.pullbacks(x), ref["pullbacks"]) < 1e-10


def test_reference_dataset_loads_and_reproduces_kappa(cymetric_reference_dir, ref):
    ds = CYDataset.load(cymetric_reference_dir)
    assert ds.n_train == 1800 and ds.n_val == 200
    assert ds.manifold.same_as(fermat_quintic())
    np.testing.assert_allclose(ds.kappa, float(ref["kappa"]), rtol=1e-14)
    # kappa recomputed from the stored weights: vol_j_norm / mean(w over all points)
    w = np.concatenate([ds.weights_train, ds.weights_val])
    np.testing.assert_allclose(5.0 / w.mean(), float(ref["kappa"]), rtol=1e-12)
    np.testing.assert_allclose(
        ds.manifold.kappa(np.concatenate([ds.points_train, ds.points_val])), float(ref["kappa"]), rtol=1e-10
    )
    stored = np.load(cymetric_reference_dir / "dataset.npz")["val_pullbacks"]
    assert rel_err(ds.pullbacks_val, stored) < 1e-12
    # our recomputed train weights equal the stored ones
    assert rel_err(ds.manifold.weights(ds.points_train), ds.weights_train) < 1e-10


def test_basis_pickle_identical_to_cymetric(cymetric_reference_dir, ref):
    theirs = load_basis(cymetric_reference_dir / "basis.pickle")
    ours = fermat_quintic().basis(float(ref["kappa"]))
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        assert type(ours[k]) is type(v), k
        if isinstance(v, np.ndarray):
            assert ours[k].dtype == v.dtype and ours[k].shape == v.shape, k
        np.testing.assert_array_equal(np.asarray(ours[k]), np.asarray(v), err_msg=k)


def test_dataset_round_trip_in_cymetric_format(tmp_path):
    ds = make_dataset(fermat_quintic(), 300, seed=3)
    ds.save(tmp_path)
    with np.load(tmp_path / "dataset.npz") as f:
        assert sorted(f.files) == sorted(["X_train", "y_train", "X_val", "y_val", "val_pullbacks"])
        assert f["X_train"].dtype == np.float64 and f["X_train"].shape == (270, 10)
        assert f["y_train"].shape == (270, 2)
        assert f["val_pullbacks"].dtype == np.complex128 and f["val_pullbacks"].shape == (30, 3, 5)
        np.testing.assert_array_equal(f["y_train"][:, 0], ds.weights_train)
        np.testing.assert_array_equal(f["y_train"][:, 1], ds.omega_sq_train)
    with open(tmp_path / "basis.pickle", "rb") as fh:
        basis = pickle.load(fh)
    np.testing.assert_allclose(float(basis["KAPPA"]), ds.kappa)
    back = CYDataset.load(tmp_path)
    np.testing.assert_array_equal(back.X_train, ds.X_train)
    np.testing.assert_array_equal(back.charts_val, ds.charts_val)
    assert back.kappa == ds.kappa


# ------------------------------------------------------------------- geometry
@pytest.fixture(scope="module")
def quintic_points():
    return fermat_quintic().sample_points(4000, seed=11)


def test_points_on_variety_and_normalised(quintic_points):
    M = fermat_quintic()
    z = quintic_points
    res = np.abs(M.Q(z)) / M.monomial_scale(z)
    assert res.max() < 1e-13
    assert np.allclose(np.max(np.abs(z), axis=1), 1.0)
    assert np.all(np.isclose(z, 1.0).sum(axis=1) == 1)


def test_pullback_rows_tangent_and_fs_positive(quintic_points):
    M = fermat_quintic()
    z = quintic_points
    J = M.pullbacks(z)
    dq = M.dQdz(z)
    tangent = np.einsum("pai,pi->pa", J, dq)
    assert np.max(np.abs(tangent)) < 1e-12 * np.max(np.abs(dq))
    G = M.fs_metric_pb(z)
    np.testing.assert_allclose(G, np.conj(np.swapaxes(G, 1, 2)), atol=1e-15)
    assert np.all(np.linalg.eigvalsh(G) > 0)


def test_pullback_is_derivative_of_embedding():
    """Central finite differences of z(x) along the local coordinates reproduce J."""
    M = fermat_quintic()
    z = M.sample_points(20, seed=5)
    ch = M.charts(z)
    J = M.pullbacks(z)
    h = 1e-6
    for p in range(len(z)):
        k, j = ch[p]
        good = M.good_coordinates([k], [j])[0]
        for a, ga in enumerate(good):
            col = []
            for s in (+1, -1):
                w = z[p].copy()
                w[ga] += s * h
                # solve Q = 0 for z_j by Newton, starting at the old value
                for _ in range(30):
                    w[j] -= M.Q(w[None])[0] / M.dQdz(w[None])[0, j]
                col.append(w)
            fd = (col[0] - col[1]) / (2 * h)
            np.testing.assert_allclose(fd, J[p, a], atol=1e-7)


def test_fs_volume_equals_intersection_number(quintic_points):
    M = fermat_quintic()
    geo = M.geometry(quintic_points)
    vol_k = np.mean(geo["weights"] * geo["det_fs"] / geo["omega_sq"])
    np.testing.assert_allclose(vol_k, 5.0, rtol=1e-12)  # exact per point by construction of the weights
    # at t = 2, Vol_K scales like t^3
    M2 = fermat_quintic(kmoduli=2.0)
    geo2 = M2.geometry(quintic_points)
    np.testing.assert_allclose(np.mean(geo2["weights"] * geo2["det_fs"] / geo2["omega_sq"]), 40.0, rtol=1e-12)
    assert M2.intersection_number == 40.0


def test_kappa_is_stable_across_independent_samples():
    """kappa = Vol_K / Vol_CY is a Monte-Carlo estimate: two independent halves agree."""
    M = fermat_quintic()
    z = M.sample_points(60_000, seed=2)
    k1 = M.kappa(z[:30000])
    k2 = M.kappa(z[30000:])
    assert abs(k1 - k2) / k1 < 0.05


def test_kappa_for_1e5_points_matches_cymetric():
    M = fermat_quintic()
    z = M.sample_points(100_000, seed=2021)
    kappa = M.kappa(z)
    # cymetric (seed 2021, 1e5 points): 0.0175897714; an independent 1e5 run: 0.01762.
    # weights are heavy-tailed: the MC standard error of kappa at 1e5 points is ~0.5%.
    w = M.weights(z)
    se = kappa * np.std(w) / np.mean(w) / np.sqrt(len(w))
    assert abs(kappa - 0.0175897714) < max(4 * se, 3e-4), (kappa, se)


def test_weights_invariant_under_coordinate_permutation(quintic_points):
    M = fermat_quintic()
    z = quintic_points[:500]
    rng = np.random.default_rng(0)
    for _ in range(3):
        perm = rng.permutation(5)
        np.testing.assert_allclose(M.weights(z[:, perm]), M.weights(z), rtol=1e-10)
        np.testing.assert_allclose(M.omega_sq(z[:, perm]), M.omega_sq(z), rtol=1e-10)


def test_cubic_torus_exact_metric():
    """On the torus the Ricci-flat metric is g = kappa |Omega|^2 in the local coordinate."""
    T = fermat_cubic()
    assert T.nfold == 1 and T.is_calabi_yau
    ds = make_dataset(T, 2000, seed=4)
    g = ds.kappa * ds.omega_sq_val
    eta = g / (ds.kappa * ds.omega_sq_val)
    np.testing.assert_allclose(eta, 1.0, rtol=1e-15)
    # kappa is the ratio Vol_K / Vol_CY of this flat metric too: sigma measure 0
    w = ds.weights_val
    vol_k = np.mean(w * g / ds.omega_sq_val)
    np.testing.assert_allclose(vol_k / np.mean(w), ds.kappa, rtol=1e-12)
    # and FS is not flat: its eta varies
    eta_fs = np.real(T.fs_metric_pb(ds.points_val)[:, 0, 0]) / (ds.kappa * ds.omega_sq_val)
    assert np.std(eta_fs) > 0.05


@pytest.mark.parametrize("factory,N", [(fermat_quartic, 4), (fermat_cubic, 3), (lambda: dwork_quintic(0.3), 5)])
def test_other_manifolds_sample_and_integrate(factory, N):
    M = factory()
    z = M.sample_points(500, seed=1)
    assert z.shape == (500, N)
    assert np.max(np.abs(M.Q(z)) / M.monomial_scale(z)) < 1e-12
    geo = M.geometry(z)
    np.testing.assert_allclose(np.mean(geo["weights"] * geo["det_fs"] / geo["omega_sq"]), M.degree, rtol=1e-12)
    assert np.all(np.real(np.linalg.det(geo["fs_metric_pb"])) > 0)


def test_dwork_psi_zero_is_fermat():
    assert dwork_quintic(0.0).same_as(fermat_quintic())
    assert not dwork_quintic(0.5).same_as(fermat_quintic())
    E, F = dwork_quintic(0.5).derivative_basis()
    assert E.shape == (5, 2, 5)
    z = dwork_quintic(0.5).sample_points(50, seed=0)
    M = dwork_quintic(0.5)
    h = 1e-7
    for i in range(5):
        dz = np.zeros(5)
        dz[i] = h
        fd = (M.Q(z + dz) - M.Q(z - dz)) / (2 * h)
        np.testing.assert_allclose(M.dQdz(z)[:, i], fd, rtol=1e-6, atol=1e-7)


def test_sampling_is_reproducible_and_seed_dependent():
    M = fermat_quintic()
    a = M.sample_points(100, seed=7)
    b = M.sample_points(100, seed=7)
    c = M.sample_points(100, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_roots_of_one_line_are_adjacent():
    z = fermat_quintic().sample_points(50, seed=3)
    # each block of 5 consecutive points spans a complex line: rank 2
    for blk in range(5):
        s = np.linalg.svd(z[5 * blk : 5 * blk + 5], compute_uv=False)
        assert s[2] / s[0] < 1e-10


def test_fixed_chart_sampling():
    M = fermat_quintic()
    z = M.sample_points(300, seed=9, chart=(2, 4))
    ch = M.charts(z)
    assert len(z) == 300
    assert np.all(ch[:, 0] == 2) and np.all(ch[:, 1] == 4)
    ds = make_dataset(M, 100, seed=1, chart=(0, 1))
    assert np.all(ds.charts_train == [0, 1]) and np.all(ds.charts_val == [0, 1])


# --------------------------------------------------------- FS distance
def test_fs_distance_closed_forms():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 5)) + 1j * rng.standard_normal((50, 5))
    # invariant under complex rescaling of each point
    lam = rng.standard_normal(50) + 1j * rng.standard_normal(50)
    np.testing.assert_allclose(fs_distance(z, z * lam[:, None]), 0.0, atol=0)
    # orthogonal points are at the maximal distance pi/2
    e = np.eye(5, dtype=complex)
    np.testing.assert_allclose(fs_distance(e[:1], e[1:2]), np.pi / 2)
    # rotation by angle theta within a complex line: distance theta
    theta = np.linspace(0.01, 1.5, 20)
    a = np.tile(e[0], (20, 1))
    b = np.cos(theta)[:, None] * e[0] + np.sin(theta)[:, None] * e[1] * np.exp(0.3j)
    np.testing.assert_allclose(fs_distance(a, b), theta, rtol=1e-12)


def test_fs_distance_matrix_chunks_symmetry_threshold(quintic_points):
    z = quintic_points[:300]
    D = fs_distance_matrix(z, chunk_size=7)
    D2 = fs_distance_matrix(z, z, chunk_size=1000)
    np.testing.assert_allclose(D, D.T, atol=1e-15)
    np.testing.assert_allclose(D, D2, atol=1e-15)
    assert np.all(np.diag(D) == 0) and np.all(D >= 0) and np.all(D <= np.pi / 2 + 1e-15)
    np.testing.assert_allclose(D[3, :], fs_distance(np.repeat(z[3:4], 300, 0), z), atol=1e-15)
    # below the threshold: exactly 0 (float noise would otherwise give ~1e-8)
    noisy = z[:5] * (1 + 1e-15)
    assert np.all(fs_distance(z[:5], noisy) == 0.0)
    # triangle inequality on a sample of triples
    i, j, k = np.random.default_rng(1).integers(0, 300, (3, 2000))
    assert np.all(D[i, k] <= D[i, j] + D[j, k] + 1e-12)


def test_fs_nearest_matches_brute_force(quintic_points):
    z = quintic_points[:400]
    D = fs_distance_matrix(z)
    np.fill_diagonal(D, np.inf)
    d, idx = fs_nearest(z, k=3, chunk_size=64)
    np.testing.assert_array_equal(idx[:, 0], np.argmin(D, axis=1))
    np.testing.assert_allclose(d, np.sort(D, axis=1)[:, :3], atol=1e-15)
    q = quintic_points[400:450]
    d2, i2 = fs_nearest(q, z)
    np.testing.assert_array_equal(i2[:, 0], np.argmin(fs_distance_matrix(q, z), axis=1))


# --------------------------------------------------------- components
def test_hermitian_components_map_conventions():
    o = np.arange(1.0, 10.0)
    H = hermitian_from_components(o)
    expected = np.array([[1, 2 - 4j, 3 - 7j], [2 + 4j, 5, 6 - 8j], [3 + 7j, 6 + 8j, 9]])
    np.testing.assert_array_equal(H, expected)
    np.testing.assert_array_equal(components_from_hermitian(H), o)
    assert component_labels(3)[3] == "Im g10"


# ------------------------------------------------------------- bad input
def test_bad_polynomials_raise_clear_errors():
    with pytest.raises(ValueError, match="homogeneous"):
        Hypersurface([[5, 0, 0, 0, 0], [0, 4, 0, 0, 0]], [1, 1])
    with pytest.raises(ValueError, match="zero polynomial"):
        Hypersurface(5 * np.eye(5, dtype=int), np.zeros(5))
    with pytest.raises(ValueError, match="N >= 3"):
        Hypersurface([[2, 0], [0, 2]], [1, 1])
    with pytest.raises(ValueError, match="coefficients"):
        Hypersurface(5 * np.eye(5, dtype=int), np.ones(4))
    with pytest.raises(ValueError, match="Unknown manifold"):
        get_manifold("octic")
    with pytest.raises(ValueError, match="n_points"):
        fermat_quintic().sample_points(0)
    with pytest.raises(ValueError, match="chart"):
        fermat_quintic().sample_points(10, chart=(1, 1))


def test_bad_points_raise_clear_errors():
    M = fermat_quintic()
    z = M.sample_points(10, seed=0)
    with pytest.raises(ValueError, match="shape"):
        M.pullbacks(z[:, :4])
    bad = z.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        M.weights(bad)
    with pytest.raises(ValueError, match="patch-normalised"):
        M.pullbacks(z * 2.0)
    with pytest.raises(TypeError, match="numeric"):
        M.Q(np.array([["a"] * 5]))
    assert np.allclose(patch_normalise(z * (0.3 + 2j)), z)


def test_bad_dataset_directories(tmp_path, cymetric_reference_dir):
    with pytest.raises(FileNotFoundError, match="dataset.npz"):
        CYDataset.load(tmp_path)
    src = np.load(cymetric_reference_dir / "dataset.npz")
    arrays = {k: src[k] for k in src.files if k != "y_val"}
    np.savez(tmp_path / "dataset.npz", **arrays)
    (tmp_path / "basis.pickle").write_bytes((cymetric_reference_dir / "basis.pickle").read_bytes())
    with pytest.raises(KeyError, match="y_val"):
        CYDataset.load(tmp_path)
    # points that are not on the variety of the basis
    arrays = {k: src[k] for k in src.files}
    arrays["X_train"] = arrays["X_train"].copy()
    arrays["X_train"][0, 1] += 0.1
    np.savez(tmp_path / "dataset.npz", **arrays)
    with pytest.raises(ValueError, match="not on the variety"):
        CYDataset.load(tmp_path)
    # a basis of another manifold
    ds = make_dataset(fermat_quartic(), 50, seed=0)
    ds.save(tmp_path / "k3")
    (tmp_path / "k3" / "basis.pickle").write_bytes((cymetric_reference_dir / "basis.pickle").read_bytes())
    with pytest.raises(ValueError, match="incomplete: member .*basis.pickle"):  # manifest mismatch
        CYDataset.load(tmp_path / "k3")
    (tmp_path / "k3" / "cyntk.json").unlink()  # without the manifest: a plain cymetric directory
    with pytest.raises(ValueError, match="shape"):
        CYDataset.load(tmp_path / "k3")


def test_project_onto_variety():
    M = fermat_quintic()
    z = M.sample_points(200, seed=6)
    rng = np.random.default_rng(0)
    noisy = z + 1e-2 * (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape))
    assert np.max(np.abs(M.Q(noisy)) / M.monomial_scale(noisy)) > 1e-4
    w, ok = M.project(noisy)
    assert ok.all()
    assert np.max(np.abs(M.Q(w)) / M.monomial_scale(w)) < 1e-13
    d = fs_distance(w, z)
    assert np.all(d < 0.1) and np.mean(d) > 1e-3
    # points already on X do not move
    w0, ok0 = M.project(z)
    np.testing.assert_allclose(w0, z, atol=1e-14)


def test_atomic_write_permissions_and_no_leftovers(tmp_path):
    import os
    import stat

    from cyntk.geometry import atomic_write

    atomic_write(tmp_path / "a.txt", lambda fh: fh.write("hello"), "w")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        atomic_write(
            tmp_path / "a.txt", lambda fh: (fh.write("partial"), (_ for _ in ()).throw(RuntimeError("x"))), "w"
        )
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
