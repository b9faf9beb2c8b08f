"""Tiny-scale `widthlimit`: distances to the infinite-width metric-NTK, fit and figure."""

from __future__ import annotations

import numpy as np
import pytest

from cyntk.experiments.widthlimit import kernel_distances, plot_widthlimit, run_widthlimit


def test_kernel_distances():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3, 2, 2))
    assert kernel_distances(a, a) == (0.0, pytest.approx(1.0))
    f, al = kernel_distances(2 * a, a)
    assert f == pytest.approx(1.0) and al == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        kernel_distances(a, a[:2])


def test_widthlimit_tiny_runs_and_wider_is_closer():
    r = run_widthlimit(
        widths=(16, 256),
        n_seeds=2,
        n_track=3,
        train_widths=(16,),
        n_points=300,
        epochs=1,
        batch_size=128,
        loss_weights=dict(kaehler=0.0, transition=0.0, volk=0.0),
    )
    assert r["init_frobenius"].shape == (2, 2)
    assert np.all(np.isfinite(r["init_frobenius"])) and np.all(r["init_alignment"] <= 1 + 1e-12)
    # fluctuations ~ width^-1/2: 16x wider is clearly closer (seeded; expected ratio ~4)
    assert r["init_frobenius_mean"][1] < r["init_frobenius_mean"][0] / 1.5
    assert -1.5 < r["exponent"] < 0.0
    assert r["train/16/frobenius"].shape == (2,) and r["train/16/moved"][0] == 0.0
    assert r["train/16/sigma_val"].shape == (2,) and np.isfinite(r["train/16/sigma_gain"])
    plot_widthlimit(r)
