"""Hostile inputs to the public geometry API and the CLI (property-based, with hypothesis).

Every call either works (and then returns finite numbers) or raises
``ValueError``/``TypeError`` whose message names the offending argument: never
another exception type, a NaN result or a hang (each example runs under an
alarm). Example counts are small so the whole file runs in seconds.
"""

from __future__ import annotations

import contextlib
import signal
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from cyntk.cli import main  # noqa: E402
from cyntk.geometry import (  # noqa: E402
    CYDataset,
    Hypersurface,
    fermat_quintic,
    fs_distance,
    get_manifold,
    make_dataset,
    to_real,
)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
QUINTIC = fermat_quintic()
GOOD = QUINTIC.sample_points(8, seed=0)


@contextlib.contextmanager
def no_hang(seconds=20):
    def alarm(signum, frame):
        raise TimeoutError(f"call did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def works_or_names(fn, names):
    """Call ``fn``; it must return finite numbers or raise ValueError/TypeError naming one of ``names``."""
    with no_hang(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn()
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            assert any(n in msg for n in names), f"{type(exc).__name__} does not name {names}: {msg}"
            return None
    _assert_finite(out)
    return out


def _assert_finite(out):
    if isinstance(out, dict):
        for v in out.values():
            _assert_finite(v)
    elif isinstance(out, CYDataset):
        assert np.isfinite(out.kappa)
        for k in ("weights_train", "omega_sq_train", "pullbacks_train"):
            assert np.all(np.isfinite(getattr(out, k))), k
    elif isinstance(out, np.ndarray) and np.issubdtype(out.dtype, np.number):
        assert np.all(np.isfinite(out))


# ------------------------------------------------------------------ strategies
DTYPES = st.sampled_from(
    [np.float64, np.float32, np.complex128, np.complex64, np.int64, np.bool_, np.uint8, "U3", object]
)
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e308, 1e-308, 2.0])


@st.composite
def hostile_arrays(draw, max_dims=3, max_side=6):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))
    if dtype == object:  # noqa: E721 (dtype is a hypothesis-drawn dtype spec, compared by value)
        return np.array([None] * int(np.prod(shape)), dtype=object).reshape(shape)
    if dtype == "U3":
        return np.full(shape, "ab")
    base = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape)
    if draw(st.booleans()) and base.size:
        base.flat[draw(st.integers(0, base.size - 1))] = draw(SPECIAL)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return base.astype(dtype)


@st.composite
def near_points(draw):
    """Points on, near and far from the quintic, in both layouts, patch-normalised or not."""
    eps = draw(st.sampled_from([0.0, 1e-12, 1e-6, 1e-3, 0.3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    z = GOOD + eps * (rng.standard_normal(GOOD.shape) + 1j * rng.standard_normal(GOOD.shape))
    if draw(st.booleans()):
        z = z * (0.5 + 0.3j)
    return to_real(z) if draw(st.booleans()) else z


ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(max_magnitude=10),
    st.lists(st.integers(-3, 8), max_size=3).map(tuple),
)


# ------------------------------------------------------------------ geometry
@SETTINGS
@given(mono=hostile_arrays(max_dims=2), coef=hostile_arrays(max_dims=2), kmod=st.one_of(ODD, hostile_arrays(1, 3)))
def test_hypersurface_constructor(mono, coef, kmod):
    works_or_names(lambda: Hypersurface(mono, coef, kmod), ("monomials", "coefficients", "kmoduli"))


@SETTINGS
@given(z=st.one_of(hostile_arrays(), near_points()), check=st.booleans())
def test_geometry_at_hostile_points(z, check):
    out = works_or_names(lambda: QUINTIC.geometry(z, check_variety=check), ("`z`",))
    if out is not None and check:
        r = np.abs(QUINTIC.Q(out["points"])) / QUINTIC.monomial_scale(out["points"])
        assert r.max() <= 1e-4


@SETTINGS
@given(points=st.one_of(hostile_arrays(), near_points()), val_split=ODD)
def test_dataset_from_points(points, val_split):
    works_or_names(lambda: CYDataset.from_points(QUINTIC, points, val_split=val_split), ("`points`", "`val_split`"))


@SETTINGS
@given(
    n=st.one_of(st.integers(2, 200), st.integers(2, 200), ODD),
    val_split=st.one_of(ODD, st.floats(0, 0.99)),
    seed=st.one_of(st.integers(0, 10), ODD),
    chart=st.one_of(st.none(), ODD, st.tuples(ODD, ODD)),
)
def test_make_dataset_options(n, val_split, seed, chart):
    if isinstance(n, int) and 1000 < n < 10**11:
        n = n % 1000  # keep real sampling small; huge requests must be refused up front
    works_or_names(
        lambda: make_dataset(QUINTIC, n, val_split=val_split, seed=seed, chart=chart),
        ("`n_points`", "`val_split`", "`seed`", "`chart`", "`points`"),
    )


@SETTINGS
@given(name=st.one_of(st.sampled_from(["quintic", "dwork", "cubic", "k3"]), ODD), psi=ODD, kmoduli=ODD)
def test_get_manifold_options(name, psi, kmoduli):
    works_or_names(lambda: get_manifold(name, psi=psi, kmoduli=kmoduli), ("manifold name", "`psi`", "`kmoduli`"))


@SETTINGS
@given(z1=st.one_of(hostile_arrays(), near_points()), z2=st.one_of(hostile_arrays(), near_points()))
def test_fs_distance_inputs(z1, z2):
    works_or_names(lambda: fs_distance(z1, z2), ("`z1`", "`z2`"))


def test_huge_requests_are_refused_with_the_estimate():
    with pytest.raises(ValueError, match=r"`n_points` = 1000000000000 needs about .* GiB"):
        QUINTIC.sample_points(10**12)
    with pytest.raises(ValueError, match=r"`n_points` = 1000000000000 needs about .* GiB"):
        make_dataset(QUINTIC, 10**12)


def test_degenerate_setups_warn_or_refuse():
    with pytest.warns(UserWarning, match=r"psi\^5 = 1.*singular"):
        get_manifold("dwork", psi=1.0)
    with pytest.warns(UserWarning, match=r"psi\^5 = 1"):
        get_manifold("dwork", psi=np.exp(2j * np.pi / 5))
    with pytest.warns(UserWarning, match="not a Calabi-Yau"):
        Hypersurface(4 * np.eye(5, dtype=int), np.ones(5))
    with pytest.raises(ValueError, match=r"`val_split` = 0.9 leaves no training point"):
        CYDataset.from_points(QUINTIC, GOOD[:2], val_split=0.9)


def test_points_off_the_variety_refused_everywhere():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 5)) + 1j * rng.standard_normal((6, 5))
    z /= z[np.arange(6), np.argmax(np.abs(z), axis=1)][:, None]
    for call, name in (
        (lambda: QUINTIC.geometry(z), "`z`"),
        (lambda: QUINTIC.weights(z), "`z`"),
        (lambda: QUINTIC.kappa(z), "`z`"),
        (lambda: CYDataset.from_points(QUINTIC, z), "`points`"),
    ):
        with pytest.raises(ValueError, match=name + r".*not on the variety.*check_variety=False"):
            call()
    # the expert opt-out computes anyway
    assert np.all(np.isfinite(QUINTIC.geometry(z, check_variety=False)["weights"]))


# ------------------------------------------------------------------ CLI
FLAGS = ["-n", "--seed", "--val-split", "--psi", "--kmoduli", "--chart"]


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    manifold=st.sampled_from(["quintic", "dwork", "cubic", "octic", ""]),
    options=st.lists(
        st.tuples(
            st.sampled_from(FLAGS),
            st.one_of(
                st.sampled_from(
                    ["-1", "0", "1", "0.5", "nan", "inf", "1e30", "2,1", "0,0", "1+1j", "abc", "", "99999999999999"]
                ),
                st.text(max_size=5),
            ),
        ),
        max_size=3,
    ),
)
def test_cli_sample_hostile_options(tmp_path_factory, capfd, manifold, options):
    out = tmp_path_factory.mktemp("cli")
    argv = ["sample", manifold, "-o", str(out / "ds")]
    for flag, value in options:
        argv += [flag, value] if not value.startswith("-") else [f"{flag}={value}"]
    if "-n" not in dict(options):
        argv += ["-n", "20"]
    argv_n = dict(options).get("-n", "20")
    if argv_n.strip().isdigit() and 200 < int(argv_n) < 10**11:
        return  # a real, large sampling run: not a hostile input
    with no_hang(60):
        rc = main(argv)
    err = capfd.readouterr().err
    assert rc in (0, 2), (argv, rc, err)
    assert "Traceback" not in err
    if rc:
        last = err.strip().splitlines()[-1]
        assert last.startswith("cyntk"), last
        assert any(f in last for f in FLAGS + ["--n-points", "--output", "manifold", "psi", str(out)]), last


def test_cli_output_path_errors_are_one_line(tmp_path, capfd):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for target in (blocker, blocker / "below"):
        assert main(["sample", "quintic", "-n", "10", "-o", str(target)]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--output" in err[0] and str(blocker) in err[0], err
    assert main(["sample", "quintic", "-n", "10", "-o", str(tmp_path / "ok"), "--seed", "-1"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed" in err[0] and "-1" in err[0]
    assert main(["sample", "quintic", "-n", "10", "--val-split", "0.95", "-o", str(tmp_path / "ok")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--val-split" in err[0]
    assert main(["--debug", "sample", "quintic", "-n", "10", "-o", str(blocker)]) == 2
    assert "Traceback" in capfd.readouterr().err
