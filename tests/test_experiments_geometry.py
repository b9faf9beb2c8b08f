"""Figure 2 and Figure 3 (right) experiments at tiny scale, and the power-law fit."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from cyntk.experiments import (
    fit_power_law,
    load_json,
    plot_fig2,
    plot_fig3_distances,
    run_fig2,
    run_fig3_distances,
    save_figure,
    save_json,
)


def test_power_law_fit_recovers_known_exponent():
    n = np.geomspace(100, 1e5, 8)
    a, b = fit_power_law(n, 0.97 * n ** (-1 / 6))
    np.testing.assert_allclose([a, b], [0.97, -1 / 6], rtol=1e-12)
    rng = np.random.default_rng(0)
    a2, b2 = fit_power_law(n, 2.0 * n**-0.3 * np.exp(0.01 * rng.standard_normal(8)))
    assert abs(b2 + 0.3) < 0.02 and abs(a2 - 2.0) < 0.2
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2], [1, -1])


def test_fig2_tiny(tmp_path):
    r = run_fig2(n_points=120, n_clusters=4, n_batches=2, seed=1)
    assert r["distance"].shape == (120, 120)
    for key in ("labels_batched", "labels_full", "labels_birch"):
        assert r[key].shape == (120,) and set(r[key].tolist()) == set(range(4))
    for v in r["silhouette"].values():
        assert np.isfinite(v) and -1 <= v <= 1
    assert sorted(r["order_full"].tolist()) == list(range(120))
    save_figure(plot_fig2(r), tmp_path / "fig2.png")
    assert (tmp_path / "fig2.png").stat().st_size > 1000
    save_json(r, tmp_path / "fig2.json")
    assert load_json(tmp_path / "fig2.json")["silhouette"]["full"] == pytest.approx(r["silhouette"]["full"])


def test_fig3_distances_tiny(tmp_path):
    r = run_fig3_distances(sizes=(50, 200, 800), seed=2)
    assert r["mean"].shape == (3,)
    assert np.all(r["min"] <= r["mean"]) and np.all(r["mean"] <= r["max"])
    # nearest-neighbour distances shrink with N, with an exponent near -1/6
    assert np.all(np.diff(r["mean"]) < 0)
    assert -0.35 < r["b"] < -0.08
    save_figure(plot_fig3_distances(r), tmp_path / "fig3.png")
    assert (tmp_path / "fig3.png").stat().st_size > 1000


def test_reproduce_writes_files_and_resumes(tmp_path, monkeypatch):
    from cyntk.experiments import distances
    from cyntk.experiments.runner import ResultStore, reproduce

    store = ResultStore(tmp_path / "partial")
    first = run_fig3_distances(sizes=(40, 80), seed=5, store=store)
    assert len(list((tmp_path / "partial").glob("*.npz"))) == 2

    def boom(*a, **k):
        raise AssertionError("a finished item was recomputed")

    monkeypatch.setattr(distances, "fs_nearest", boom)
    again = run_fig3_distances(sizes=(40, 80), seed=5, store=ResultStore(tmp_path / "partial"))
    np.testing.assert_array_equal(first["mean"], again["mean"])
    monkeypatch.undo()

    lines = []
    reproduce(["fig2"], output=tmp_path / "out", overrides={"fig2": dict(n_points=60, n_clusters=3)}, log=lines.append)
    for f in ("result.json", "result.npz", "fig2.png"):
        assert (tmp_path / "out" / "fig2" / f).is_file()
    reproduce(["fig2"], output=tmp_path / "out", log=lines.append)
    assert "already done" in lines[-1]
    with pytest.raises(ValueError, match="Unknown experiment"):
        reproduce(["fig9"], output=tmp_path / "out")
