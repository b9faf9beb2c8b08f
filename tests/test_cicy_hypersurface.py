"""Hypersurfaces in one P^n are the K = 1, m = 1 case of CompleteIntersection (issue 18).

One code path computes both: a :class:`Hypersurface` and the
:class:`CompleteIntersection` built from the same polynomial give identical points
for a seed and the same geometry; the sampling stream is the one of cyntk's
hypersurface sampler before the unification (pinned points below, recorded with
that code at commit 12e983e, so stored datasets and experiment stores stay valid).
"""

import numpy as np
import pytest

from cyntk.geometry import CompleteIntersection, Hypersurface, dwork_quintic, fermat_quintic, tetraquadric
from cyntk.geometry.polynomials import eval_monomials, power_table
from cyntk.models._cicy_spec import is_cicy_like

# first, second and last point of fermat_quintic().sample_points(3000, seed=0) before the unification
PINNED_QUINTIC = [
    [-0.34615521897705437 - 0.15248698243616468j, 0.7292334859479539 - 0.2935767902040481j,
     0.22465638228341023 - 0.1858190949802071j, -0.9870536375375699 + 0.061337104825364655j, 1 + 0j],
    [-0.20551797300245342 - 0.2282220294861186j, 1 + 0j, -0.10446109796077353 - 0.05181796053480331j,
     -0.4156000896562237 + 0.6280373547131793j, 0.7760687079249736 - 0.6233552589674827j],
    [0.8081127295744392 - 0.5797571423428187j, 1 + 0j, 0.06384795494208982 + 0.5068390805504089j,
     -0.0057405142331533356 - 0.05796541279484464j, -0.5441616028320271 + 0.0022573942033782507j],
]  # fmt: skip
# first point of dwork_quintic(0.3 + 0.1j).sample_points(2000, seed=1) and of
# fermat_quintic().sample_points(500, seed=4, chart=(1, 3)) before the unification
PINNED_DWORK = [1 + 0j, 0.6252190758154763 + 0.7132454605354547j, -0.31251395542626786 + 0.08076463403173671j,
                0.3443226989328183 - 0.10344517332192216j, 0.8601234063507178 + 0.472070270476727j]  # fmt: skip
PINNED_CHART = [0.2332983595507759 - 0.13734875519101594j, 1 + 0j, -0.09478822516055585 + 0.7795252856952761j,
                -0.3528622802693731 + 0.9055308085365681j, 0.10656528709656209 - 0.2865523520742949j]  # fmt: skip


def _as_ci(h):
    return CompleteIntersection([h.monomials], [h.coefficients], h.ambient, h.kmoduli, name=h.name)


def test_hypersurface_is_the_single_factor_single_equation_case():
    q = fermat_quintic()
    assert isinstance(q, CompleteIntersection)
    assert (q.nproj, q.nhyper, q.nfold, q.degree, q.vol_j_norm) == (1, 1, 3, 5, 5.0)
    assert q.weight_constant == 6 * 5 and q.all_ts.tolist() == [[1]]
    assert q.monomials.shape == (5, 5) and q.coefficients.shape == (5,)
    assert not is_cicy_like(q) and is_cicy_like(_as_ci(q)) and is_cicy_like(tetraquadric())
    assert q.with_kmoduli(2.0).intersection_number == pytest.approx(5 * 8.0)
    assert isinstance(q.with_kmoduli(2.0), Hypersurface)


def test_sampling_stream_is_the_historical_one():
    z = fermat_quintic().sample_points(3000, seed=0)
    np.testing.assert_allclose(z[[0, 1, -1]], PINNED_QUINTIC, rtol=0, atol=1e-13)
    np.testing.assert_allclose(dwork_quintic(0.3 + 0.1j).sample_points(2000, seed=1)[0], PINNED_DWORK, atol=1e-13)
    np.testing.assert_allclose(fermat_quintic().sample_points(500, seed=4, chart=(1, 3))[0], PINNED_CHART, atol=1e-13)


@pytest.mark.parametrize("make", [fermat_quintic, lambda: dwork_quintic(0.2 - 0.1j, kmoduli=1.5)])
def test_hypersurface_and_complete_intersection_agree_exactly(make):
    h = make()
    ci = _as_ci(h)
    z, lines = h.sample_points(400, seed=3, return_planes=True)
    z2, lines2 = ci.sample_points(400, seed=3, return_planes=True)
    np.testing.assert_array_equal(z, z2)
    np.testing.assert_array_equal(lines, lines2)
    assert np.all(np.diff(lines) >= 0)
    gh, gc = h.geometry(z), ci.geometry(z)
    for key in ("charts", "pullbacks", "omega", "omega_sq", "fs_metric_pb", "det_fs", "weights"):
        np.testing.assert_array_equal(gh[key], gc[key], err_msg=key)
    assert "mixed_dets" not in gh
    np.testing.assert_array_equal(h.Q(z), ci.Q(z)[:, 0])
    np.testing.assert_array_equal(h.dQdz(z), ci.dQdz(z)[:, 0])
    assert h.kappa(z) == ci.kappa(z)
    # the single-equation interface: j_elim instead of a chart matrix
    j = (gh["charts"][:, 0] + 1) % h.ncoords
    j = np.where(j == gh["charts"][:, 1], (j + 1) % h.ncoords, j)
    charts = np.stack([gh["charts"][:, 0], j], 1)
    np.testing.assert_array_equal(h.pullbacks(z, j), ci.pullbacks(z, charts))
    np.testing.assert_array_equal(h.omega(z, j), ci.omega(z, charts))
    np.testing.assert_array_equal(h.fs_metric_pb(z, 2.0, j), ci.fs_metric_pb(z, [2.0], charts))
    np.testing.assert_array_equal(h.good_coordinates(charts[:, 0], j), ci.good_coordinates(charts))
    b1, b2 = h.basis(0.5), ci.basis(0.5)
    assert b1.keys() == b2.keys()
    for key in b1:
        np.testing.assert_array_equal(b1[key], b2[key], err_msg=key)


def test_monomial_kernel_rounds_like_numpys_scalar_complex_product():
    """The rounding that keeps hypersurface sampling bit-for-bit (cyntk.geometry.polynomials)."""
    h = dwork_quintic(0.3 + 0.2j)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3000, 5)) + 1j * rng.standard_normal((3000, 5))
    for exps, coefs in ((h.monomials[None], h.coefficients[None]), h.derivative_basis()):
        ref = np.sum(np.prod(np.power(z[:, None, None, :], exps[None]), axis=-1) * coefs[None], axis=-1)
        np.testing.assert_array_equal(eval_monomials(z, exps, coefs), ref)
    val, scale = eval_monomials(z, h.monomials[None], h.coefficients[None], with_scale=True)
    direct = np.sum(np.abs(h.coefficients) * np.prod(np.abs(z)[:, None, :] ** h.monomials[None], axis=-1), axis=-1)
    np.testing.assert_allclose(scale[:, 0], direct, rtol=1e-13)


def test_power_table_is_numpys_complex_power_bit_for_bit():
    rng = np.random.default_rng(1)
    z = (rng.standard_normal(4000) + 1j * rng.standard_normal(4000)) * np.exp(rng.uniform(-30, 30, 4000))
    special = [0, -0.0, complex(-0.0, -0.0), -3, -2j, np.inf, complex(0, np.inf), complex(np.nan, 1), 1e300, 1e-300]
    z = np.concatenate([z, np.array(special, dtype=complex)])
    with np.errstate(all="ignore"):
        ref = np.power(z[:, None], np.arange(13))
    re, im = power_table(z, 12)
    for got, want in ((re, ref.real), (im, ref.imag)):
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        assert np.all(same & (np.signbit(got) == np.signbit(want)))


def test_chart_selection_pairs_in_one_factor_full_rows_on_products():
    z = fermat_quintic().sample_points(50, seed=1, chart=(2, 0))
    np.testing.assert_array_equal(fermat_quintic().charts(z), np.tile([2, 0], (50, 1)))
    with pytest.raises(ValueError, match="`chart` must be a chart row of 5"):
        tetraquadric().sample_points(10, chart=(0, 1))
    with pytest.raises(TypeError, match="`seed`"):
        tetraquadric().sample_points(10, seed=1.5)


def test_cymetric_rounding_option_on_the_quintic_reference():
    """``from_basis(cymetric_derivatives=True)``, as for complete intersections: cymetric's complex64 tables."""
    import pickle
    from pathlib import Path

    d = Path(__file__).resolve().parent / "data" / "cymetric_quintic"
    with open(d / "basis.pickle", "rb") as fh:
        basis = pickle.load(fh)
    r = np.load(d / "points_reference.npz")
    exact = Hypersurface.from_basis(basis)
    rounded = Hypersurface.from_basis(basis, cymetric_derivatives=True)
    z = r["points"]
    for h in (exact, rounded):
        rel = np.max(np.abs(h.dQdz(z) - r["dQdz"])) / np.max(np.abs(r["dQdz"]))
        assert rel < (1e-14 if h is rounded else 1e-6)
        np.testing.assert_allclose(h.weights(z), r["weights"], rtol=1e-6)
