"""Complete intersections in products of projective spaces against cymetric's own output.

Reference data: ``tests/data/cymetric_tetraquadric`` (PointGenerator) and
``cymetric_cicy_p5_33`` (CICYPointGenerator), made with the real cymetric 40efeba.
cymetric evaluates dQ/dz with complex64-rounded factors; with
``cymetric_derivatives=True`` cyntk uses the same tables and must agree to
~1e-13, with exact float64 derivatives the agreement is limited to ~1e-7.
"""

import itertools
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from cyntk.geometry import (
    CompleteIntersection,
    CYDataset,
    bicubic,
    generic_cicy,
    make_dataset,
    manifold_from_basis,
    parse_configuration,
    tetraquadric,
)
from cyntk.geometry.intersection import intersection_tensor, mixed_determinant, mixed_determinant_counts

REF = Path(__file__).resolve().parent / "data"  # cymetric reference arrays, see data/*/README.md
NAMES = ["cymetric_tetraquadric", "cymetric_cicy_p5_33"]


def _ref(name):
    d = REF / name
    if not (d / "points_reference.npz").is_file():
        raise FileNotFoundError(f"reference data {d} is missing from the repository checkout")
    with open(d / "basis.pickle", "rb") as fh:
        basis = pickle.load(fh)
    return d, dict(np.load(d / "points_reference.npz")), basis


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


def _by_assignment(D, ts):
    order = sorted(range(len(ts)), key=lambda i: tuple(ts[i]))
    return np.asarray(D)[order]


@pytest.mark.parametrize("name", NAMES)
def test_reference_exact_with_cymetric_rounding(name):
    _, r, basis = _ref(name)
    ci = CompleteIntersection.from_basis(basis, cymetric_derivatives=True)
    z = r["points"]
    geo = ci.geometry(z, check_variety=False)
    m = ci.nproj
    np.testing.assert_array_equal(ci.one_indices(z), r["one_idx"])
    np.testing.assert_array_equal(geo["charts"][:, m:], r["elim_idx"])
    np.testing.assert_array_equal(ci.good_coordinates(geo["charts"]), r["good_idx"])
    assert _rel(ci.dQdz(z), r["dQdz"]) < 1e-14
    assert _rel(geo["pullbacks"], r["pullbacks"]) < 1e-14
    assert _rel(geo["omega"], r["omega"]) < 1e-14
    assert _rel(geo["omega_sq"], r["omega_abs2"]) < 1e-14
    assert _rel(ci.fs_metric_ambient(z), r["g_fs_ambient"]) < 1e-14
    assert _rel(ci.fs_blocks(z), r["g_fs_ambient_unit_blocks"]) < 1e-14
    assert _rel(geo["fs_metric_pb"], r["g_fs_pb"]) < 1e-13
    assert _rel(geo["det_fs"], r["det_g_fs_pb"]) < 1e-13
    # Levi-Civita contraction (cymetric) vs polarisation (cyntk): rounding only
    assert _rel(_by_assignment(geo["mixed_dets"], ci.all_ts), _by_assignment(r["mixed_dets"], r["all_ts"])) < 1e-12
    assert _rel(geo["weights"], r["weight"]) < 1e-12
    assert ci.weight_constant == pytest.approx(float(r["weight_norm_factor"]), rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_reference_float64(name):
    d, r, basis = _ref(name)
    ci = CompleteIntersection.from_basis(basis)
    z = r["points"]
    geo = ci.geometry(z)
    # exact float64 derivatives agree with the independent float64 ones to rounding ...
    assert _rel(ci.dQdz(z), r["dQdz_exact"]) < 1e-14
    # ... and with cymetric's complex64-factor values to its rounding (data sheets 3.5/3.6)
    assert _rel(geo["pullbacks"], r["pullbacks"]) < 1e-6
    assert _rel(geo["omega_sq"], r["omega_abs2"]) < 1e-6
    assert _rel(geo["weights"], r["weight"]) < 1e-6
    np.testing.assert_array_equal(geo["charts"][:, ci.nproj :], r["elim_idx"])
    # intersection numbers, volumes, kappa over all stored points with the stored weights
    np.testing.assert_array_equal(ci.intersection_numbers, r["intersection_numbers"])
    assert ci.vol_j_norm == float(r["vol_j_norm"])
    ds = np.load(d / "dataset.npz")
    n = ci.ncoords
    X = np.concatenate([ds["X_train"], ds["X_val"]])
    w = np.concatenate([ds["y_train"][:, 0], ds["y_val"][:, 0]])
    kap = CompleteIntersection.from_basis(basis, cymetric_derivatives=True).kappa(X[:, :n] + 1j * X[:, n:], w)
    assert kap == pytest.approx(float(r["kappa"]), rel=1e-13)
    assert ci.kappa(X[:, :n] + 1j * X[:, n:], w) == pytest.approx(float(r["kappa"]), rel=1e-6)


def test_basis_matches_cymetric_pickle():
    _, _, basis = _ref("cymetric_tetraquadric")
    ours = tetraquadric().basis(kappa=float(basis["KAPPA"]))
    assert set(ours) == set(basis)
    for k, v in basis.items():
        np.testing.assert_array_equal(np.asarray(ours[k]), np.asarray(v), err_msg=k)
        assert np.asarray(ours[k]).dtype == np.asarray(v).dtype, k
    _, _, b2 = _ref("cymetric_cicy_p5_33")
    ci = manifold_from_basis(b2)
    assert isinstance(ci, CompleteIntersection)
    assert set(ci.basis(1.0)) == set(b2)
    for k in ("DQDZB0", "DQDZF0", "DQDZB1", "DQDZF1", "QB1", "QF1", "INTNUMS", "AMBIENT"):
        np.testing.assert_array_equal(ci.basis(1.0)[k], b2[k], err_msg=k)


def test_intersection_numbers_closed_forms():
    assert intersection_tensor([4], [[5]]).item() == 5  # quintic
    assert intersection_tensor([5], [[3, 3]]).item() == 9
    d = intersection_tensor([2, 2], [[3], [3]])  # bicubic
    assert d[0, 0, 1] == d[0, 1, 1] == 3 and d[0, 0, 0] == d[1, 1, 1] == 0
    d = intersection_tensor([1, 1, 1, 1], [[2], [2], [2], [2]])
    assert d[0, 1, 2] == 2 and d[0, 0, 1] == 0 and d.sum() == 48
    # mixed determinant: n! det G for equal arguments, multilinear
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 3, 3)) + 1j * rng.standard_normal((5, 3, 3))
    G = a @ np.conj(np.swapaxes(a, 1, 2))
    np.testing.assert_allclose(mixed_determinant([G, G, G]), 6 * np.real(np.linalg.det(G)), rtol=1e-12)
    H = G[::-1].copy()
    lc = np.zeros((3, 3, 3))
    for p in itertools.permutations(range(3)):
        lc[p] = np.linalg.det(np.eye(3)[list(p)])
    direct = np.real(np.einsum("xab,xcd,xef,ace,bdf->x", G, G, H, lc, lc))
    np.testing.assert_allclose(mixed_determinant_counts(np.stack([G, H]), [2, 1]), direct, rtol=1e-12)


def _mc_intersections(ci, n, seed):
    """Monte-Carlo int_X J_a J_b J_c.. with the weights; standard errors over planes."""
    z, pid = ci.sample_points(n, seed=seed, return_planes=True)
    geo = ci.geometry(z)
    G = ci.pulled_back_blocks(z, geo["pullbacks"])
    _, inv = np.unique(pid, return_inverse=True)
    out = []
    for combo in itertools.combinations_with_replacement(range(ci.nproj), ci.nfold):
        D = mixed_determinant_counts(G, np.bincount(combo, minlength=ci.nproj))
        f = geo["weights"] * D / geo["omega_sq"] / math.factorial(ci.nfold)
        s, c = np.bincount(inv, f), np.bincount(inv)
        est = f.mean()
        se = np.sqrt(np.sum((s - est * c) ** 2)) / c.sum()
        out.append((combo, int(ci.intersection_numbers[combo]), est, se))
    return out


@pytest.mark.parametrize(
    "make,n",
    [
        (lambda: tetraquadric(), 8000),
        (lambda: bicubic(), 4000),
        (lambda: generic_cicy([5], [[3, 3]], seed=13), 600),
        (lambda: generic_cicy([1, 4], [[1, 1], [4, 1]], seed=3), 500),
    ],
    ids=["tetraquadric", "bicubic", "cicy_p5_33", "cicy_p1p4"],
)
def test_sampling_is_unbiased(make, n):
    """Every intersection number within 3 standard errors (cymetric's PointGenerator misses by up to 80)."""
    ci = make()
    for combo, d, est, se in _mc_intersections(ci, n, seed=7):
        assert abs(est - d) <= 3 * se + 1e-9 * max(1, d), (combo, d, est, se)


def test_sampling_reproducible_and_on_variety():
    ci = generic_cicy([5], [[3, 3]], seed=13)
    a = ci.sample_points(60, seed=5)
    b = ci.sample_points(60, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ci.sample_points(60, seed=6))
    assert ci.residual(a).max() < 1e-12
    tq = tetraquadric()
    z = tq.sample_points(500, seed=1)
    np.testing.assert_array_equal(z, tq.sample_points(500, seed=np.random.default_rng(1)))
    assert tq.residual(z).max() < 1e-12
    one = tq.one_indices(z)  # exactly one coordinate 1 per factor
    assert one.shape == (500, 4)


def test_dataset_round_trip_and_reference_load(tmp_path):
    for m, n in ((tetraquadric(), 200), (generic_cicy([1, 4], [[1, 1], [4, 1]], seed=3), 60)):
        ds = make_dataset(m, n, seed=3)
        ds.save(tmp_path / m.name)
        back = CYDataset.load(tmp_path / m.name)
        assert isinstance(back.manifold, CompleteIntersection)
        np.testing.assert_array_equal(back.X_train, ds.X_train)
        np.testing.assert_array_equal(back.y_val, ds.y_val)
        np.testing.assert_array_equal(back.pullbacks_val, ds.pullbacks_val)
        assert back.kappa == ds.kappa
    for name in NAMES:
        d, r, basis = _ref(name)
        ds = CYDataset.load(d)
        raw = np.load(d / "dataset.npz")
        np.testing.assert_array_equal(ds.X_train, raw["X_train"])
        np.testing.assert_array_equal(ds.y_train, raw["y_train"])
        np.testing.assert_array_equal(ds.pullbacks_val, raw["val_pullbacks"])
        assert ds.kappa == float(basis["KAPPA"])


def test_validation_errors_and_warning():
    with pytest.warns(UserWarning, match="not Calabi-Yau"):
        generic_cicy([2, 2], [[2], [3]])
    with pytest.raises(ValueError, match="multi-homogeneous"):
        CompleteIntersection([np.array([[2, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 2]])], [np.ones(2)], [2, 2])
    with pytest.raises(ValueError, match="kmoduli"):
        tetraquadric(kmoduli=[1, 1, 1])
    with pytest.raises(ValueError, match="`chart` must be a chart row of 5 distinct integers"):
        tetraquadric().sample_points(10, chart=(0, 1))
    with pytest.raises(ValueError, match="not on the variety"):
        tetraquadric().geometry(tetraquadric().patch_normalise(np.ones((2, 8)) + 0.3j * np.arange(8)))
    cfg = parse_configuration("1|1,1;4|4,1")
    np.testing.assert_array_equal(cfg["ambient"], [1, 4])
    np.testing.assert_array_equal(cfg["configuration"], [[1, 1], [4, 1]])
    with pytest.raises(ValueError, match="n1\\|q11"):
        parse_configuration("5:3,3")
    tq = tetraquadric(kmoduli=[1, 2, 3, 4])
    # J_t^3 = 3! sum_{a<b<c} d_abc t_a t_b t_c, d_abc = 2
    assert tq.volume_k == pytest.approx(12 * (1 * 2 * 3 + 1 * 2 * 4 + 1 * 3 * 4 + 2 * 3 * 4), rel=1e-14)


def test_single_projective_space_is_the_k1_m1_case():
    """A hypersurface in one P^n through CompleteIntersection gives Hypersurface's numbers."""
    from cyntk.geometry import dwork_quintic

    hs = dwork_quintic(psi=0.3)
    ci = CompleteIntersection([hs.monomials], [hs.coefficients], [4], hs.kmoduli)
    z = hs.sample_points(300, seed=4)
    a, b = hs.geometry(z), ci.geometry(z)
    np.testing.assert_array_equal(a["charts"], b["charts"])
    for key in ("pullbacks", "omega", "omega_sq", "fs_metric_pb", "det_fs", "weights"):
        assert _rel(b[key], a[key]) < 1e-13, key
    assert ci.vol_j_norm == hs.vol_j_norm and ci.weight_constant == 6 * hs.degree
    assert ci.kappa(z) == pytest.approx(hs.kappa(z), rel=1e-13)
    hb, cb = hs.basis(0.5), ci.basis(0.5)
    assert set(hb) == set(cb)
    for k in hb:
        np.testing.assert_array_equal(np.asarray(hb[k]), np.asarray(cb[k]), err_msg=k)
