"""Degenerate set-ups, off-variety points and damaged files at the Keras layers.

Models, KernelModel, the metric-NTK history and the experiment results: every
case raises a ValueError/TypeError naming the argument or file (or warns),
never a raw library error, a silent no-op or a NaN.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from cyntk.callbacks import MetricNTKHistory  # noqa: E402
from cyntk.experiments._io import load_json, save_json  # noqa: E402
from cyntk.experiments.runner import ResultStore  # noqa: E402
from cyntk.flows.kernel_model import KernelModel  # noqa: E402
from cyntk.geometry import (  # noqa: E402
    CorruptFileError,
    IncompleteFileSetError,
    fermat_quintic,
    to_real,
)
from cyntk.kernels.fs import GaussianFSKernel  # noqa: E402
from cyntk.models import FSModel  # noqa: E402

M = fermat_quintic()
CHART = (0, 1)
Z = M.sample_points(40, seed=3, chart=CHART)
X = to_real(Z)
RNG = np.random.default_rng(1)
OFF = Z + 0.3 * (RNG.standard_normal(Z.shape) + 1j * RNG.standard_normal(Z.shape))
OFF = OFF / OFF[np.arange(len(OFF)), np.argmax(np.abs(OFF), axis=1)][:, None]
X_OFF = to_real(OFF)


# ------------------------------------------------------------ degenerate models
def test_all_loss_weights_zero_refused_at_construction_and_later():
    with pytest.raises(ValueError, match=r"loss weights .* are all 0.*weight > 0"):
        FSModel(M, sigma=0, kaehler=0, transition=0, volk=0, ricci=0)
    model = FSModel(M, sigma=1, kaehler=0, transition=0, volk=0)
    with pytest.raises(ValueError, match=r"set_loss_weights\(sigma=0\) would make every loss weight 0"):
        model.set_loss_weights(sigma=0)
    assert model.loss_weights["sigma"] == 1.0


def test_model_call_checks_points_with_opt_out():
    model = FSModel(M, dtype="float64")
    g = np.asarray(model(X))
    assert g.shape == (40, 3, 3) and np.all(np.isfinite(g))
    with pytest.raises(ValueError, match=r"`x`: 40 of 40 point\(s\) are not on the model's manifold"):
        model(X_OFF)
    model.check_variety = False
    assert np.asarray(model(X_OFF)).shape == (40, 3, 3)


@pytest.fixture(scope="module")
def kernel_model():
    y = KernelModel.targets(M, X)
    model = KernelModel(GaussianFSKernel(0.2), X, M, tile_size=16, n_threads=1)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3))
    return model, y


@pytest.mark.parametrize(
    "sw, match",
    [
        (-np.ones(40), r"`sample_weight` must be >= 0.*ascend"),
        (np.r_[np.ones(39), np.nan], r"`sample_weight` must be finite"),
        (np.zeros(40), r"`sample_weight` is 0 for every point"),
        (np.ones(7), r"`sample_weight` must have one entry per point \(40\)"),
    ],
)
def test_kernel_model_sample_weight_refused(kernel_model, sw, match):
    model, y = kernel_model
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, sample_weight=sw, batch_size=40, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.evaluate(X, y, sample_weight=sw, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.train_on_batch(X, y, sample_weight=sw)


def test_kernel_model_targets_checks_points():
    with pytest.raises(ValueError, match=r"`x`: 40 of 40 point\(s\) are not on the variety"):
        KernelModel.targets(M, X_OFF)
    y = KernelModel.targets(M, X.astype(np.float32))  # float32 rounding is within tolerance
    assert np.allclose(y, KernelModel.targets(M, X), rtol=1e-5)


@settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=st.one_of(
        hnp.arrays(
            st.sampled_from([np.float64, np.float32, np.complex128, np.int64, np.bool_]),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12),
        ),
        st.sampled_from([X, X_OFF, X[:, :9], X[None], X.astype(np.float32)]),
        st.one_of(st.none(), st.text(max_size=3), st.lists(st.floats(), max_size=3)),
    )
)
def test_targets_hostile_inputs(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            y = KernelModel.targets(M, x)
        except (ValueError, TypeError) as exc:
            assert "`x`" in str(exc), str(exc)
            return
    assert np.all(np.isfinite(y)) and y.shape[1] == 2


# ------------------------------------------------------------ histories and results
def _history(tmp_path):
    h = MetricNTKHistory(meta={"p": 2})
    h.arrays["x_train"] = X[:4]
    h.arrays["theta_reference"] = np.arange(32.0).reshape(2, 2, 2, 4)
    h.append(0, {"ntk_a": 1.0}, {"s": np.ones(3)})
    h.append(1, {"ntk_a": 0.5}, {"s": np.ones(3) * 2})
    return h, h.save(tmp_path / "history.npz")


def test_history_kernels_belong_to_their_history(tmp_path):
    h, path = _history(tmp_path)
    back = MetricNTKHistory.load(path)
    assert back.epochs == [0, 1] and np.array_equal(back.arrays["theta_reference"], h.arrays["theta_reference"])
    back.append(2, {"ntk_a": 0.2}, {"s": np.ones(3)})
    back.save(path)  # re-saving keeps the recorded digest
    assert MetricNTKHistory.load(path).epochs == [0, 1, 2]
    ref = tmp_path / "history_reference.npz"
    # a kill between the kernel file and the history: new kernels beside the old history
    np.savez(ref, theta_reference=np.zeros((2, 2, 2, 4)))
    with pytest.raises(IncompleteFileSetError, match=r"history_reference.npz does not belong to .*history.npz"):
        MetricNTKHistory.load(path)
    ref.unlink()
    with pytest.raises(IncompleteFileSetError, match=r"history_reference.npz is missing"):
        MetricNTKHistory.load(path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_history_is_named(tmp_path, damage):
    _, path = _history(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        for k in range(len(data) // 3, len(data) // 3 + 32):
            data[k] ^= 0xFF
    else:
        data = b""
    path.write_bytes(bytes(data))
    with pytest.raises((CorruptFileError, ValueError)) as info:
        MetricNTKHistory.load(path)
    assert "history.npz" in str(info.value)


def test_result_files_and_store_items_are_named(tmp_path):
    save_json({"a": 1}, tmp_path / "result.json")
    assert load_json(tmp_path / "result.json") == {"a": 1}
    (tmp_path / "result.json").write_text("")
    with pytest.raises(CorruptFileError, match=r"result.json: cannot read .*empty.*--force"):
        load_json(tmp_path / "result.json")
    store = ResultStore(tmp_path / "partial")
    store.put("k1", {"v": np.arange(3.0), "s": 2.0})
    item = tmp_path / "partial" / "k1.npz"
    item.write_bytes(item.read_bytes()[:20])
    fresh = ResultStore(tmp_path / "partial")
    with pytest.warns(RuntimeWarning, match=r"k1.npz: cannot read .*recomputed now"):
        assert fresh.get("k1") is None


# ------------------------------------------------------------ constructors and options
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(max_magnitude=10),
    st.lists(st.integers(-2, 3), max_size=2),
)
OPTS = settings(
    max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _works_or_names(fn, names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn()
        except (ValueError, TypeError) as exc:
            assert any(n in str(exc) for n in names), f"{type(exc).__name__} names none of {names}: {exc}"
            return None


@OPTS
@given(kappa=ODD, sigma=ODD, volk=ODD, nonfinite=ODD, dtype=st.one_of(ODD, st.sampled_from(["float32", "float64"])))
def test_metric_model_options(kappa, sigma, volk, nonfinite, dtype):
    model = _works_or_names(
        lambda: FSModel(M, kappa=kappa, sigma=sigma, volk=volk, nonfinite=nonfinite, dtype=dtype),
        ("kappa", "sigma", "volk", "nonfinite", "dtype", "loss weight"),
    )
    if model is not None:
        assert np.all(np.isfinite(np.asarray(model(X[:3]))))


@OPTS
@given(sigma=ODD)
def test_gaussian_kernel_options(sigma):
    _works_or_names(lambda: GaussianFSKernel(sigma), ("sigma",))


@OPTS
@given(
    x=st.one_of(st.sampled_from([X, X_OFF, X[:, :9], X[:1], X.astype(np.complex128)]), ODD),
    tile_size=st.one_of(st.just(16), ODD),
    n_threads=st.one_of(st.just(1), ODD),
)
def test_kernel_model_options(x, tile_size, n_threads):
    _works_or_names(
        lambda: KernelModel(GaussianFSKernel(0.2), x, M, tile_size=tile_size, n_threads=n_threads),
        ("x_train", "tile_size", "n_threads"),
    )


@OPTS
@given(names=st.one_of(ODD, st.lists(st.text(max_size=6), max_size=2)), scale=ODD)
def test_reproduce_options(tmp_path_factory, names, scale):
    from cyntk.experiments.runner import EXPERIMENTS, reproduce

    listed = names if isinstance(names, list) else [names]
    if any(isinstance(n, str) and (n in EXPERIMENTS or n == "all") for n in listed):
        return  # a real experiment run is not a hostile input
    out = tmp_path_factory.mktemp("rep")
    _works_or_names(
        lambda: reproduce(names, scale=scale, output=out, log=lambda *_: None), ("experiment", "scale", "names")
    )
