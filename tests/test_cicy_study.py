"""The Figure-4 study on complete intersections (cyntk.experiments.cicy_study), tiny scale."""

import numpy as np
import pytest

from cyntk.experiments.cicy_study import plot_cicy_fig4, run_cicy_fig4, summarise_cicy_fig4
from cyntk.experiments.runner import EXPERIMENTS, ResultStore


def test_registered_with_quick_and_paper_scales():
    import cyntk.experiments.registry  # noqa: F401  (registers everything)

    exp = EXPERIMENTS["cicyfig4"]
    assert set(exp.scales) >= {"quick", "paper"} and exp.uses_store
    assert "bicubic" in exp.scales["quick"]["manifolds"]
    assert set(exp.scales["paper"]["manifolds"]) == {"bicubic", "tetraquadric", "quintic"}


def test_tiny_run_on_the_bicubic(tmp_path):
    kw = dict(
        manifolds=("bicubic",),
        n_points=300,
        epochs=1,
        hidden=(16, 16),
        n_track=3,
        lazy_width=32,
        n_flow=12,
        flow_steps=2,
        flow_learning_rates=(1e-4, 1e-3),
        gaussian_sigmas=(0.3,),
    )
    store = ResultStore(tmp_path / "store")
    r = run_cicy_fig4(**kw, store=store)
    assert r["bicubic/nfold"] == 3 and r["bicubic/kappa"] > 0
    for p in ("", "lazy_"):
        np.testing.assert_array_equal(r[f"bicubic/{p}epochs"], [0, 1])
        assert r[f"bicubic/{p}wasserstein"][0] == 0 and np.all(np.isfinite(r[f"bicubic/{p}wasserstein"]))
        assert r[f"bicubic/{p}sigma_val"].shape == (1,) and r[f"bicubic/{p}sigma_gain"] > 0
        # 3 + 3 tracked points, 3 x 3 metric: 9 real components per point, pooled spectrum of the blocks
        assert r[f"bicubic/{p}spectrum_last"].size > 0
    # the lazy control (wide, SGD tiny step) moves its kernel far less than the feature-learning network
    assert r["bicubic/lazy_frobenius"][-1] < 0.1 * r["bicubic/frobenius"][-1]
    assert "bicubic: W1" in summarise_cicy_fig4(r)
    # the frozen-kernel half: flows on 12 + 12 points of one chart row, gains of every method reported
    row = r["bicubic/flow_chart"]
    assert len(row) == 3 and r["bicubic/n_flow"] == 12
    for k in ("network_flow", "ntk0", "gauss"):
        assert np.isfinite(r[f"bicubic/{k}_val_gain"]) and r[f"bicubic/{k}_val_gain"] > 0
    # the NTK flow starts from the untrained network, as the network's own gain does
    assert r["bicubic/ntk0_sigma_val_initial"] == r["bicubic/network_flow_sigma_val_initial"]
    assert r["bicubic/ntk0_best_val_gain"] >= r["bicubic/ntk0_val_gain"]
    assert r["bicubic/gauss_width"] == 0.3 and "NTK at init" in summarise_cicy_fig4(r)
    # a rerun with the store recomputes nothing and gives the same numbers
    again = run_cicy_fig4(**kw, store=store)
    np.testing.assert_array_equal(again["bicubic/wasserstein"], r["bicubic/wasserstein"])
    plot_cicy_fig4(r)


def test_unknown_manifold_is_refused():
    with pytest.raises(ValueError, match="`manifolds`.*bicubic"):
        run_cicy_fig4(manifolds=("k3",))
