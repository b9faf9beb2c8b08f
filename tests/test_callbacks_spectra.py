"""Spectra, Wasserstein distances, evolution measures, history files and Figure 4 plots
of cyntk.callbacks (NumPy only: no training here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from conftest import tol
from cyntk.callbacks import (
    MetricNTKHistory,
    block_eigenvalues,
    figure_to_rgba,
    full_spectrum,
    kernel_distance,
    kernel_matrix,
    kernel_target_alignment,
    log_spectrum,
    plot_figure4,
    plot_spectrum_histograms,
    plot_wasserstein,
    pooled_block_spectrum,
    relative_frobenius_change,
    wasserstein,
)

F64 = tol("float64")


def approx64(x):
    """pytest.approx with the float64 tolerances of conftest.tol."""
    return pytest.approx(x, rel=F64["rtol"], abs=F64["atol"])


def gram_kernel(rng, p1, p2=None, m=4, features=12):
    """Theta[a, b, I, J] = sum_k F1[a, I, k] F2[b, J, k] (a Gram kernel, PSD when p2 is None)."""
    f1 = rng.standard_normal((p1, m, features))
    f2 = f1 if p2 is None else rng.standard_normal((p2, m, features))
    return np.einsum("aIk,bJk->abIJ", f1, f2)


# ----------------------------------------------------------------------------- Wasserstein
@pytest.mark.parametrize("sizes", [(50, 50), (37, 81)])
def test_w1_equals_scipy(rng, sizes):
    u, v = rng.standard_normal(sizes[0]), 2.0 + 0.5 * rng.standard_normal(sizes[1])
    assert wasserstein(u, v, 1) == approx64(scipy.stats.wasserstein_distance(u, v))


@pytest.mark.parametrize("p", [1, 2, 3])
def test_wasserstein_of_shifted_spectrum_is_the_shift(rng, p):
    u = rng.standard_normal(200) ** 3
    for c in (0.3, -1.7):
        assert wasserstein(u + c, u, p) == pytest.approx(abs(c), rel=1e-10)
    assert wasserstein(u, u.copy(), p) == 0.0


def test_wasserstein_reports_w_p_not_its_power(rng):
    import ot

    u, v = rng.standard_normal(40), rng.standard_normal(40) * 3
    assert wasserstein(u, v, 2) == approx64(np.sqrt(ot.wasserstein_1d(u, v, p=2)))
    # W_2 for two-point samples {0, 1} vs {0, 3}: sqrt((0 + 4) / 2)
    assert wasserstein([0.0, 1.0], [0.0, 3.0], 2) == approx64(np.sqrt(2.0))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(p=0.5), "`p` must be a finite number >= 1"),
        (dict(u=[np.nan, 1.0]), "`u` must be finite"),
        (dict(v=[]), "`v` must contain at least one value"),
    ],
)
def test_wasserstein_bad_input(bad, match):
    args = dict(u=[0.0, 1.0], v=[1.0, 2.0], p=1)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        wasserstein(**args)


# ----------------------------------------------------------------------------- spectra
def test_pooled_spectrum_of_symmetric_block(rng):
    m, p = 3, 6
    theta = gram_kernel(rng, p, m=m)
    spec = pooled_block_spectrum(theta)
    assert spec.shape == (m * m * p,)
    per = spec.reshape(m, m, p)
    for i in range(m):
        np.testing.assert_allclose(per[i, i], np.linalg.eigvalsh(theta[:, :, i, i]), rtol=1e-9, atol=1e-9)
        assert np.all(per[i, i] >= -1e-9)  # PSD diagonal component blocks
        for j in range(m):
            ref = np.sort(np.linalg.eigvals(theta[:, :, i, j]).real)
            np.testing.assert_allclose(per[i, j], ref, rtol=1e-8, atol=1e-9)
            np.testing.assert_allclose(per[i, j], per[j, i], rtol=1e-8, atol=1e-9)  # M_JI = M_IJ^T
    np.testing.assert_array_equal(spec, pooled_block_spectrum(theta, symmetric=True))  # auto-detected
    np.testing.assert_allclose(pooled_block_spectrum(theta, symmetric=False), spec, rtol=1e-8, atol=1e-9)


def test_pooled_spectrum_of_train_test_block(rng):
    m = 2
    theta = gram_kernel(rng, 5, 5, m=m)
    spec = pooled_block_spectrum(theta)
    eig = block_eigenvalues(theta)
    np.testing.assert_allclose(spec, np.sort(eig.real, axis=-1).reshape(-1), **F64)
    sv = pooled_block_spectrum(theta, "singular_values")
    np.testing.assert_allclose(
        sv.reshape(m, m, 5)[0, 1], np.sort(np.linalg.svd(theta[:, :, 0, 1], compute_uv=False)), **F64
    )
    rect = gram_kernel(rng, 5, 3, m=m)
    assert pooled_block_spectrum(rect, "singular_values").shape == (m * m * 3,)
    with pytest.raises(ValueError, match="kind='eigenvalues' needs square blocks"):
        pooled_block_spectrum(rect)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        pooled_block_spectrum(theta, "eigvals")


def test_full_spectrum_is_that_of_the_gram_matrix(rng):
    theta = gram_kernel(rng, 7, m=3)
    k = kernel_matrix(theta)
    assert k.shape == (21, 21)
    assert k[2 * 3 + 1, 4 * 3 + 2] == theta[2, 4, 1, 2]
    spec = full_spectrum(theta)
    np.testing.assert_allclose(spec, np.linalg.eigvalsh(k), rtol=1e-9, atol=1e-9)
    assert spec.min() > -1e-9 * spec.max()
    assert spec.sum() == pytest.approx(np.trace(k), rel=1e-10)
    with pytest.raises(ValueError, match="square symmetric block"):
        full_spectrum(gram_kernel(rng, 4, 3))


def test_kernel_validation(rng):
    with pytest.raises(ValueError, match=r"shape \(P1, P2, m, m\)"):
        pooled_block_spectrum(np.zeros((3, 3, 2)))
    with pytest.raises(TypeError, match="real array"):
        full_spectrum(np.zeros((2, 2, 1, 1), complex))
    theta = gram_kernel(rng, 3, m=2)
    theta[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        pooled_block_spectrum(theta)


# ----------------------------------------------------------------------------- measures
def test_distances_between_kernels(rng):
    a = gram_kernel(rng, 5, m=2)
    assert relative_frobenius_change(a, a.copy()) == 0.0
    assert kernel_distance(a, a.copy()) == 0.0
    assert relative_frobenius_change(3 * a, a) == approx64(2.0)
    assert kernel_distance(3 * a, a) == pytest.approx(0.0, abs=1e-14)  # scale invariant
    b = rng.standard_normal(a.shape)
    cos = np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))
    assert kernel_distance(b, a) == pytest.approx(1 - cos, rel=1e-12)
    assert kernel_distance(-a, a) == approx64(2.0)
    with pytest.raises(ValueError, match="same shape"):
        kernel_distance(a, a[:4])
    with pytest.raises(ValueError, match="identically zero"):
        relative_frobenius_change(a, np.zeros_like(a))


def test_kernel_target_alignment(rng):
    p, m = 6, 2
    y = rng.standard_normal((p, m))
    yy = np.einsum("aI,bJ->abIJ", y, y)
    assert kernel_target_alignment(yy, y) == approx64(1.0)
    theta = gram_kernel(rng, p, m=m)
    k, v = kernel_matrix(theta), y.reshape(-1)
    assert kernel_target_alignment(theta, y) == approx64(v @ k @ v / (np.linalg.norm(k) * v @ v))
    assert 0 < kernel_target_alignment(theta, y) <= 1
    with pytest.raises(ValueError, match=r"`y` must have shape \(P, m\) = \(6, 2\)"):
        kernel_target_alignment(theta, y[:, :1])


def test_log_spectrum():
    out = log_spectrum([1e-3, -10.0, 0.0, 1e-30], floor=1e-12)
    np.testing.assert_allclose(out, [-3.0, 1.0, -12.0, -12.0], **F64)
    with pytest.raises(ValueError, match="`floor` must be a finite number > 0"):
        log_spectrum([1.0], 0.0)


# ----------------------------------------------------------------------------- history
def make_history(rng, epochs=(0, 1, 3)):
    h = MetricNTKHistory(meta={"wasserstein_p": 1.0, "spectrum_kinds": {"train_test": "eigenvalues"}})
    theta = gram_kernel(rng, 4, m=2)
    h.arrays["theta_reference"] = theta.astype(np.float32)
    h.arrays["x_train"] = rng.standard_normal((2, 3))
    base = rng.standard_normal(16)
    for e in epochs:
        spec = base + 0.1 * e
        h.append(
            e,
            {"ntk_wasserstein_train_test": wasserstein(spec, base), "ntk_seconds": 0.01},
            {"pooled_train_test": spec, "full_train_train": np.abs(spec[:8])},
        )
    return h


def test_history_round_trip(rng, tmp_path):
    h = make_history(rng)
    path = h.save(tmp_path / "sub" / "history")  # suffix added, folder created
    assert path.name == "history.npz"
    summary = json.loads((tmp_path / "sub" / "history.json").read_text())
    assert summary["epochs"] == [0, 1, 3] and summary["meta"]["wasserstein_p"] == 1.0
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [
        "history.json",
        "history.npz",
        "history_reference.npz",
    ]  # no temporary files left
    g = MetricNTKHistory.load(path)
    assert g.epochs == h.epochs and g.meta["wasserstein_p"] == 1.0
    for k in h.scalars:
        np.testing.assert_array_equal(g.scalar(k), h.scalar(k))
    for k in h.spectra:
        for e in h.epochs:
            np.testing.assert_array_equal(g.spectrum(k, e), h.spectrum(k, e))
    for k in h.arrays:
        np.testing.assert_array_equal(g.arrays[k], h.arrays[k])
        assert g.arrays[k].dtype == h.arrays[k].dtype
    # W_1 of the shifted spectra is the shift
    np.testing.assert_allclose(g.scalar("ntk_wasserstein_train_test"), [0.0, 0.1, 0.3], rtol=1e-12)


def test_history_reference_written_once(rng, tmp_path):
    h = make_history(rng)
    h.save(tmp_path / "h.npz")
    ref = tmp_path / "h_reference.npz"
    ref.write_bytes(b"sentinel")  # an unchanged kernel is not rewritten
    h.append(5, {"ntk_seconds": 0.0}, {k: v[-1] for k, v in h.spectra.items()})
    h.save(tmp_path / "h.npz")
    assert ref.read_bytes() == b"sentinel"
    h.arrays["theta_reference"] = h.arrays["theta_reference"] * 2
    h.save(tmp_path / "h.npz")
    assert ref.read_bytes() != b"sentinel"


def test_history_errors_and_truncate(rng, tmp_path):
    h = make_history(rng)
    with pytest.raises(ValueError, match="epochs must increase"):
        h.append(3, {}, {k: v[-1] for k, v in h.spectra.items()})
    with pytest.raises(ValueError, match="has 3 values at epoch 9 but 16 before"):
        h.append(9, {}, {"pooled_train_test": np.zeros(3), "full_train_train": np.zeros(8)})
    assert h.truncate(1) == [3] and h.epochs == [0, 1] and len(h.spectra["pooled_train_test"]) == 2
    h.append(2, {"new_key": 1.0}, {k: v[-1] for k, v in h.spectra.items()})
    assert np.isnan(h.scalar("new_key")[:2]).all() and h.scalar("new_key")[2] == 1.0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MetricNTKHistory.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="is not a cyntk metric-NTK history"):
        MetricNTKHistory.load(tmp_path / "other.npz")


# ----------------------------------------------------------------------------- plots
def test_plot_figure4_from_saved_history(rng, tmp_path):
    path = make_history(rng).save(tmp_path / "history.npz")
    fig = plot_figure4(path, "train_test", scale="linear", bins=10)
    left, right = fig.axes
    heights = [sum(p.get_height() for p in container) for container in left.containers]
    assert heights == [16, 16]  # epoch 0 and epoch 3, 16 values each
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["epoch 0", "epoch 3"]
    x, y = right.lines[0].get_data()
    np.testing.assert_array_equal(x, [0, 1, 3])
    np.testing.assert_allclose(y, [0.0, 0.1, 0.3], rtol=1e-12)
    img = figure_to_rgba(plot_figure4(path, "train_test"), dpi=40)  # default: log10 |value| histogram
    assert img.dtype == np.uint8 and img.ndim == 4 and img.shape[0] == 1 and img.shape[-1] == 4
    assert img[..., :3].std() > 0  # not a blank image


def test_plot_helpers_errors(rng):
    h = make_history(rng)
    with pytest.raises(ValueError, match="`block`='test_test' with `spectrum`='pooled' is not in"):
        plot_spectrum_histograms(h, "test_test")
    with pytest.raises(ValueError, match="`spectrum` must be one of"):
        plot_wasserstein(h, spectrum="other")
    with pytest.raises(TypeError, match="`history` must be a MetricNTKHistory"):
        plot_figure4(42)
    with pytest.raises(ValueError, match="`history` is empty"):
        plot_figure4(MetricNTKHistory())
    fig = plot_spectrum_histograms(h, "train_train", spectrum="full", epochs=[0, 1, 3])
    assert len(fig.axes[0].containers) == 3


@pytest.mark.parametrize("values", [np.linspace(-1.0, 3.0, 57) ** 3, np.full(9, 0.25)])
def test_tensorboard_buckets_match_tf_summary_histogram(values):
    """The NumPy bucketing written to TensorBoard is tf.summary.histogram's (TensorBoard's own code)."""
    summary_v2 = pytest.importorskip("tensorboard.plugins.histogram.summary_v2")
    if not hasattr(summary_v2, "_buckets"):
        pytest.skip("this TensorBoard version has no summary_v2._buckets to compare with")
    import tensorflow as tf

    from cyntk.callbacks.metric_ntk import _histogram_buckets

    ref = summary_v2._buckets(tf.constant(values), tf.constant(7)).numpy()
    np.testing.assert_allclose(_histogram_buckets(values, 7), ref, rtol=1e-12, atol=1e-15)
