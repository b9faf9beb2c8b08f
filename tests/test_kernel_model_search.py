"""Bayesian optimisation of flow hyperparameters with a fresh point set per trial."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bayes_opt")

from cyntk.flows.search import flow_search  # noqa: E402
from cyntk.geometry import fermat_quintic  # noqa: E402
from cyntk.kernels.fs import GaussianFSKernel  # noqa: E402


class RecordingManifold:
    """The quintic, recording every point set it samples."""

    def __init__(self):
        self._m = fermat_quintic()
        self.samples = []

    def sample_points(self, n, **kwargs):
        z = self._m.sample_points(n, **kwargs)
        self.samples.append(z)
        return z

    def __getattr__(self, name):
        return getattr(self._m, name)


def test_every_trial_draws_fresh_points_and_the_best_trial_is_returned():
    M = RecordingManifold()
    seen = []

    def factory(sigma):
        seen.append(sigma)
        return GaussianFSKernel(sigma)

    res = flow_search(
        factory,
        M,
        {"log10_learning_rate": (-4.5, -3.0), "log10_sigma": (-2.0, -0.5)},
        n_train=60,
        n_test=30,
        steps=3,
        init_points=2,
        n_iter=2,
        seed=7,
        run_eagerly=True,
    )
    assert len(res.trials) == len(M.samples) == len(seen) == 4
    # fresh, distinct point sets, all in the requested chart
    for i in range(4):
        assert M.samples[i].shape == (90, 5)
        assert np.all(M._m.charts(M.samples[i]) == (0, 1))
        for j in range(i):
            assert not np.allclose(M.samples[i][:5], M.samples[j][:5])
    assert [t["seed"] for t in res.trials] == [[7, t] for t in range(4)]
    # log10_ parameters are passed exponentiated and within bounds
    for t, s in zip(res.trials, seen):
        assert t["params"]["sigma"] == s and 10**-2.0 <= s <= 10**-0.5
        assert 10**-4.5 <= t["params"]["learning_rate"] <= 1e-3
        assert np.isclose(t["target"], np.log10(t["test_gain"]))
        assert t["steps"] == 3
    best = max(res.trials, key=lambda t: t["target"])
    assert res.best_params == best["params"] and res.best_target == best["target"]


def test_search_rejects_bad_bounds():
    M = fermat_quintic()
    with pytest.raises(ValueError, match="learning_rate"):
        flow_search(GaussianFSKernel, M, {"sigma": (0.1, 1.0)})
    with pytest.raises(ValueError, match="low < high"):
        flow_search(GaussianFSKernel, M, {"learning_rate": (1e-3, 1e-4)})
    with pytest.raises(ValueError, match="decay_rate"):
        flow_search(GaussianFSKernel, M, {"learning_rate": (1e-4, 1e-3), "decay_rate": (0.5, 1.5)})


def test_train_objective_scores_the_train_gain_and_decaying_steps_are_searched():
    # objective="train_gain" ranks trials by the train gain; decay rates far below 0.8 are searched
    M = fermat_quintic()
    res = flow_search(
        lambda sigma: GaussianFSKernel(sigma),
        M,
        {"log10_learning_rate": (-2.0, 0.0), "log10_sigma": (-2.0, -1.5), "decay_rate": (0.3, 0.5)},
        n_train=40,
        n_test=20,
        steps=3,
        init_points=2,
        n_iter=0,
        seed=1,
        objective="train_gain",
        model_kwargs={"reduction": "mean"},
        run_eagerly=True,
    )
    assert len(res.trials) == 2
    for t in res.trials:
        assert np.isclose(t["target"], np.log10(t["train_gain"]))
        assert 0.3 <= t["params"]["decay_rate"] <= 0.5
    assert res.best_target == max(t["target"] for t in res.trials)
    assert max(t["train_gain"] for t in res.trials) > 1.0


def test_step_scale_multiplies_each_trials_step():
    from cyntk.experiments.kernel_flows import kernel_mass_scale
    from cyntk.geometry import to_real
    from cyntk.kernels import DeltaKernel

    M = fermat_quintic()
    x = to_real(M.sample_points(50, seed=2, chart=(0, 1)))
    # the Delta kernel's rows sum to 1: the scale is the number of points
    assert kernel_mass_scale(DeltaKernel(), x) == pytest.approx(50.0, rel=1e-12)
    # a very wide Gaussian is ~1 everywhere: the scale is ~1
    assert kernel_mass_scale(GaussianFSKernel(1e6), x) == pytest.approx(1.0, rel=1e-5)
    seen = []

    def tiny(kernel, x_train):
        seen.append(len(x_train))
        return 1e-12

    res = flow_search(
        lambda: DeltaKernel(),
        M,
        {"log10_learning_rate": (-1.0, 0.0)},
        n_train=30,
        n_test=10,
        steps=2,
        init_points=1,
        n_iter=0,
        run_eagerly=True,
        step_scale=tiny,
    )
    assert seen == [30] and res.trials[0]["step_scale"] == 1e-12
    assert abs(res.trials[0]["train_gain"] - 1.0) < 1e-6  # dt ~ 1e-12: the metric barely moves
    with pytest.raises(TypeError, match="step_scale"):
        flow_search(DeltaKernel, M, {"learning_rate": (1e-4, 1e-3)}, step_scale=2.0)
