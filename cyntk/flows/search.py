"""Bayesian optimisation of kernel-flow hyperparameters with a fresh point set per trial.

The paper (section 3.2) chose the step size dt and the kernel's parameters by
Bayesian optimisation and found that reusing one point set overfits the
hyperparameters to it. :func:`flow_search` therefore draws new train and test
points for every trial: trial ``t`` samples ``n_train + n_test`` points in the
fixed chart with the seed ``SeedSequence([seed, t])``, builds
``kernel_factory(**kernel_params)``, flows ``steps`` full-batch steps of eq.
(3.5) (:class:`~cyntk.flows.kernel_model.KernelModel`, SGD) and scores the
result on the test points. The optimiser is ``bayes_opt.BayesianOptimization``
(bayesian-optimization >= 3, Gaussian-process surrogate, its default
acquisition function).

Search space: ``pbounds`` maps names to ``(low, high)``. A name with the
prefix ``log10_`` is searched in log10 space and passed without the prefix,
exponentiated (``log10_sigma: (-3, 0)`` gives ``sigma`` in [1e-3, 1]). Names:

* ``learning_rate`` (required): the flow step dt (initial step with a decay);
* ``decay_rate`` (optional): the step at step s is
  ``learning_rate * decay_rate**s`` (``keras.optimizers.schedules.ExponentialDecay``
  on the SGD optimizer), any rate in (0, 1]. Give the search a wide range (say
  0.3 to 1): the sigma loss ``|1 - eta|`` is not smooth at its minimum, so with a
  constant step each point's eta ends up oscillating around 1 with an amplitude
  ~ dt x that point's rate, and only a step that decays geometrically lets
  the loss fall by many orders of magnitude in 50 steps;
* anything else is passed to ``kernel_factory``.

Objective (maximised): ``"test_gain"`` = log10(sigma_test before / after),
``"train_gain"`` likewise on the train points. Search each for its own gain: the
schedule that maximises one is not the one that maximises the other (a train
gain reported from a test-gain search is a side effect). A flow that would make the
metric non-positive-definite is stopped (``on_non_positive="stop"``) and
scored on its last valid metric; a non-finite score counts as ``penalty``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import keras
import numpy as np

from cyntk._validation import one_of, positive_int
from cyntk.flows.kernel_model import KernelModel
from cyntk.geometry import to_real

__all__ = ["flow_search", "FlowSearchResult", "OBJECTIVES"]

#: Accepted values of ``objective``.
OBJECTIVES = ("test_gain", "train_gain")


@dataclass
class FlowSearchResult:
    """Outcome of :func:`flow_search`.

    Attributes:
        best_params: the parameter values of the best trial (un-logged names).
        best_target: its objective (log10 of the gain).
        trials: one dict per trial: ``params`` (un-logged), ``target``,
            ``train_gain``, ``test_gain``, ``steps`` (steps actually flowed),
            ``seed`` (the trial's entropy ``[seed, t]``), ``step_scale`` (1
            without ``step_scale``).
    """

    best_params: dict
    best_target: float
    trials: list = field(default_factory=list)


def _split_bounds(pbounds):
    if not isinstance(pbounds, dict) or not pbounds:
        raise TypeError(f"`pbounds` must be a non-empty dict name -> (low, high); received {pbounds!r}.")
    out = {}
    for k, b in pbounds.items():
        try:
            lo, hi = (float(v) for v in b)
        except (TypeError, ValueError):
            raise TypeError(f"`pbounds[{k!r}]` must be a pair (low, high); received {b!r}.") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"`pbounds[{k!r}]` must satisfy low < high (finite); received {b!r}.")
        out[k] = (lo, hi)
    names = {k[len("log10_") :] if k.startswith("log10_") else k for k in out}
    if "learning_rate" not in names:
        raise ValueError(
            "`pbounds` must contain 'learning_rate' or 'log10_learning_rate' (the flow "
            f"step dt); received {sorted(out)}."
        )
    if "decay_rate" in out and not (0 < out["decay_rate"][0] and out["decay_rate"][1] <= 1):
        raise ValueError(f"`pbounds['decay_rate']` must lie in (0, 1]; received {out['decay_rate']}.")
    return out


def _unlog(params):
    out = {}
    for k, v in params.items():
        if k.startswith("log10_"):
            out[k[len("log10_") :]] = float(10.0**v)
        else:
            out[k] = float(v)
    return out


def flow_search(
    kernel_factory,
    manifold,
    pbounds,
    *,
    n_train=500,
    n_test=500,
    chart=(0, 1),
    steps=50,
    init_points=4,
    n_iter=8,
    seed=0,
    objective="test_gain",
    penalty=-3.0,
    model_kwargs=None,
    run_eagerly=False,
    verbose=False,
    step_scale=None,
) -> FlowSearchResult:
    """Bayesian optimisation of dt and kernel parameters, a fresh point set per trial.

    Args:
        kernel_factory: callable ``kernel_factory(**kernel_params) -> Kernel``
            (e.g. ``lambda sigma: GaussianFSKernel(sigma)``).
        manifold: a ``Hypersurface`` (needs ``sample_points``).
        pbounds: dict name -> (low, high); see the module docstring.
        n_train, n_test: points per trial (train / test).
        chart: the fixed chart ``(patch, eliminated)`` of all points.
        steps: full-batch flow steps per trial (the paper: 50).
        init_points: random trials before the Gaussian-process suggestions.
        n_iter: suggested trials.
        seed: base seed (trial t uses ``SeedSequence([seed, t])``; the
            optimiser uses ``random_state=seed``).
        objective: ``"test_gain"`` or ``"train_gain"``.
        penalty: score of a trial whose gain is not finite.
        model_kwargs: extra :class:`KernelModel` arguments (e.g.
            ``{"tile_size": 1024}``); ``on_non_positive`` defaults to ``"stop"``.
        run_eagerly: compile the trial models with ``run_eagerly`` (faster for
            small trials: no tracing per trial).
        verbose: print one line per trial.
        step_scale: optional callable ``step_scale(kernel, x_train) -> float``
            (> 0, finite): each trial's step is ``learning_rate * step_scale``,
            so the searched ``learning_rate`` is a normalised step. E.g. the
            number of points over the kernel's mean row sum makes one step move
            every point by about ``learning_rate`` times a local average of
            the loss gradient, whatever the kernel's width or scale, which
            takes the ridge between dt and a width parameter out of the
            search. The trials record the scale (``step_scale``); apply it to
            ``best_params["learning_rate"]`` for a flow on other points.

    Returns:
        :class:`FlowSearchResult`.
    """
    from bayes_opt import BayesianOptimization

    bounds = _split_bounds(pbounds)
    n_train = positive_int(n_train, "n_train")
    n_test = positive_int(n_test, "n_test")
    steps = positive_int(steps, "steps")
    objective = one_of(objective, "objective", OBJECTIVES)
    if step_scale is not None and not callable(step_scale):
        raise TypeError(
            f"`step_scale` must be None or callable (kernel, x_train) -> float; received {type(step_scale).__name__}."
        )
    if not callable(kernel_factory):
        raise TypeError(
            f"`kernel_factory` must be callable (params -> Kernel); received {type(kernel_factory).__name__}."
        )
    if not hasattr(manifold, "sample_points"):
        raise TypeError(
            f"`manifold` must be a cyntk Hypersurface (with sample_points); received {type(manifold).__name__}."
        )
    kwargs = {"on_non_positive": "stop", **(model_kwargs or {})}
    trials = []

    def trial(**raw):
        t = len(trials)
        params = _unlog(raw)
        lr = params.pop("learning_rate")
        decay = params.pop("decay_rate", None)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), t]))
        z = manifold.sample_points(n_train + n_test, seed=rng, chart=chart)
        x_tr, x_te = to_real(z[:n_train]), to_real(z[n_train:])
        y_tr, y_te = KernelModel.targets(manifold, x_tr), KernelModel.targets(manifold, x_te)
        kernel = kernel_factory(**params)
        scale = 1.0 if step_scale is None else float(step_scale(kernel, x_tr))
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"`step_scale` must return a finite number > 0; received {scale!r} in trial {t}.")
        model = KernelModel(kernel, x_tr, manifold, **kwargs)
        dt = lr * scale
        schedule = dt if decay is None else keras.optimizers.schedules.ExponentialDecay(dt, 1, decay)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), run_eagerly=run_eagerly)
        before = (
            model.evaluate(x_tr, y_tr, batch_size=n_train, verbose=0, return_dict=True)["loss"],
            model.evaluate(x_te, y_te, batch_size=n_test, verbose=0, return_dict=True)["loss"],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            hist = model.fit(x_tr, y_tr, batch_size=n_train, epochs=steps, shuffle=False, verbose=0)
        after = (
            model.evaluate(x_tr, y_tr, batch_size=n_train, verbose=0, return_dict=True)["loss"],
            model.evaluate(x_te, y_te, batch_size=n_test, verbose=0, return_dict=True)["loss"],
        )
        gains = (before[0] / after[0], before[1] / after[1])
        score = math.log10(gains[1] if objective == "test_gain" else gains[0])
        if not np.isfinite(score):
            score = float(penalty)
        done = len(hist.history.get("loss", []))
        rec = {
            "params": {"learning_rate": lr, **({} if decay is None else {"decay_rate": decay}), **params},
            "target": score,
            "train_gain": gains[0],
            "test_gain": gains[1],
            "steps": done,
            "seed": [int(seed), t],
            "step_scale": scale,
        }
        trials.append(rec)
        if verbose:
            print(f"trial {t}: {rec['params']} train gain {gains[0]:.3g} test gain {gains[1]:.3g} ({done} steps)")
        return score

    opt = BayesianOptimization(f=trial, pbounds=bounds, random_state=int(seed), verbose=0, allow_duplicate_points=True)
    opt.maximize(init_points=int(init_points), n_iter=int(n_iter))
    best = max(trials, key=lambda r: r["target"])
    return FlowSearchResult(best_params=dict(best["params"]), best_target=best["target"], trials=trials)
