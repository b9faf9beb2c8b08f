"""Datasets of the tetraquadric, the bicubic and two cubics in P^5 written by ``cyntk sample`` and
by the real cymetric (../shared/cymetric, unmodified) load in each other's conventions.

cymetric -> cyntk: ``CYDataset.load`` returns the stored arrays bit for bit and its recomputed
pullbacks agree with cymetric's (complex64 derivative factors limit this to ~1e-6).
cyntk -> cymetric: cymetric's point generator built from cyntk's ``basis.pickle`` recomputes
the stored ``val_pullbacks``, |Omega|^2, weights (up to its normalisation constant) and kappa.
"""

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from cyntk.cli import main as cli_main
from cyntk.geometry import CompleteIntersection, CYDataset

REPO = Path(__file__).resolve().parents[1]
CYMETRIC = Path(os.environ.get("CYNTK_CYMETRIC", REPO.parent / "shared" / "cymetric"))

CASES = {
    "tetraquadric": dict(cli=["tetraquadric"], ambient=[1, 1, 1, 1], conf=[[2], [2], [2], [2]], seed=11),
    "bicubic": dict(cli=["bicubic"], ambient=[2, 2], conf=[[3], [3]], seed=0),
    "cicy_p5_33": dict(cli=["cicy", "--configuration", "5|3,3"], ambient=[5], conf=[[3, 3]], seed=0),
}


@pytest.fixture(scope="module")
def cym():
    if not (CYMETRIC / "cymetric" / "pointgen" / "pointgen_cicy.py").is_file():
        pytest.skip(
            f"the real cymetric is absent ({CYMETRIC}); put its snapshot in ../shared/cymetric or set CYNTK_CYMETRIC"
        )
    pytest.importorskip("sympy")
    pytest.importorskip("joblib")
    old = os.environ.get("LOKY_MAX_CPU_COUNT")
    os.environ["LOKY_MAX_CPU_COUNT"] = "1"  # one joblib job: sequential and reproducible
    sys.path.insert(0, str(CYMETRIC))
    try:
        from cymetric.pointgen.pointgen import PointGenerator
        from cymetric.pointgen.pointgen_cicy import CICYPointGenerator

        yield PointGenerator, CICYPointGenerator
    finally:
        sys.path.remove(str(CYMETRIC))
        if old is None:
            os.environ.pop("LOKY_MAX_CPU_COUNT", None)
        else:
            os.environ["LOKY_MAX_CPU_COUNT"] = old


_GENERATORS = {}


def _generator(cym, ci):
    """cymetric's generator for ``ci`` (constructed once per variety: sympy work is slow)."""
    key = (ci.ambient.tobytes(), ci.configuration.tobytes(), ci.coefficients[0].tobytes())
    if key in _GENERATORS:
        return _GENERATORS[key]
    PointGenerator, CICYPointGenerator = cym
    if ci.nhyper == 1:
        pg = PointGenerator(ci.monomials[0], ci.coefficients[0].real, ci.kmoduli, ci.ambient, verbose=0)
    else:
        pg = CICYPointGenerator(
            [m for m in ci.monomials], [c.real for c in ci.coefficients], ci.kmoduli, ci.ambient, verbose=0
        )
    _GENERATORS[key] = pg
    return pg


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


@pytest.mark.parametrize("name", list(CASES))
def test_cyntk_dataset_in_cymetric(name, cym, tmp_path):
    case = CASES[name]
    out = tmp_path / name
    assert cli_main(["sample", *case["cli"], "-n", "60", "-o", str(out), "--seed", "3"]) == 0
    with open(out / "basis.pickle", "rb") as fh:
        basis = pickle.load(fh)
    ds = np.load(out / "dataset.npz")
    ci = CompleteIntersection.from_basis(basis)
    pg = _generator(cym, ci)
    n = ci.ncoords
    zv = ds["X_val"][:, :n] + 1j * ds["X_val"][:, n:]
    zt = ds["X_train"][:, :n] + 1j * ds["X_train"][:, n:]
    z = np.concatenate([zt, zv])
    y = np.concatenate([ds["y_train"], ds["y_val"]])
    # cymetric's conventions on cyntk's points: same charts, pullbacks, |Omega|^2
    np.testing.assert_array_equal(pg._find_max_dQ_coords(z).reshape(len(z), -1), ci.charts(z)[:, ci.nproj :])
    assert _rel(pg.pullbacks(zv), ds["val_pullbacks"]) < 1e-5
    om = pg.holomorphic_volume_form(z)
    assert _rel(np.abs(om) ** 2, y[:, 1]) < 1e-5
    # weights: cymetric's formula |Omega|^2 / mean_m D_m up to one constant factor
    raw = pg.point_weight(z, normalize_to_vol_j=False)
    ratio = y[:, 0] / raw
    assert np.ptp(ratio) / np.median(ratio) < 1e-5
    assert np.median(ratio) == pytest.approx(ci.weight_constant, rel=1e-5)
    np.testing.assert_array_equal(np.asarray(basis["INTNUMS"]), pg.intersection_tensor)
    kappa = pg.compute_kappa(z, y[:, 0], y[:, 1])
    assert kappa == pytest.approx(float(basis["KAPPA"]), rel=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_cymetric_dataset_in_cyntk(name, cym, tmp_path):
    from cyntk.geometry import generic_cicy

    case = CASES[name]
    ci = generic_cicy(case["ambient"], case["conf"], seed=case["seed"])
    pg = _generator(cym, ci)
    pg._set_seed(5)
    out = tmp_path / f"cym_{name}"
    kappa = pg.prepare_dataset(40, str(out), val_split=0.25)
    pg.prepare_basis(str(out), kappa=kappa)
    ds = CYDataset.load(out)
    raw = np.load(out / "dataset.npz")
    np.testing.assert_array_equal(ds.X_train, raw["X_train"])
    np.testing.assert_array_equal(ds.X_val, raw["X_val"])
    np.testing.assert_array_equal(ds.y_train, raw["y_train"])
    np.testing.assert_array_equal(ds.y_val, raw["y_val"])
    np.testing.assert_array_equal(ds.pullbacks_val, raw["val_pullbacks"])
    assert ds.kappa == kappa
    assert isinstance(ds.manifold, CompleteIntersection)
    assert ds.manifold.nfold == 3
    assert _rel(ds.pullbacks_train, pg.pullbacks(ds.points_train)) < 1e-5
    assert _rel(ds.manifold.weights(ds.points_val), raw["y_val"][:, 0]) < 1e-5
