"""Table 1 / Figure 3 (left) of the paper as one table: the paper, its step sizes read two ways, searched schedules.

Rows: the infinite-width ReLU NTK, the Gaussian kernel ``exp(-d/2 sigma)`` in
the FS distance with the paper's sigma = 30 and with a searched sigma, and the
Delta (nearest train point) kernel. Columns, each a train / test gain of the
mean sigma loss ``|1 - eta|`` after 50 Euler steps of eq. 3.5
(:class:`~cyntk.flows.KernelModel`, SGD):

* the paper's (Figure 3 left: train ~1e6 for Gaussian and Delta, ~5 for ReLU;
  test ~5),
* Table 1's dt with the update summed over the train points (eq. 3.5 as
  printed, ``reduction="sum"``) and as a per-point mean (``reduction="mean"``,
  dt / N), both with the step-halving guard (``on_non_positive="backoff"``),
* dt, a geometric decay ``dt_s = dt * decay**s`` and the kernel's parameters
  chosen by Bayesian optimisation (:func:`~cyntk.flows.search.flow_search`, a
  fresh point set per trial) for the *train* gain (train column) and,
  separately, for the *test* gain (test column); the gains reported come from a
  new flow on a new point set with the chosen values, not from the trials; the
  searched step is normalised by the number of points over the kernel's mean
  row sum (:func:`~cyntk.experiments.kernel_flows.kernel_mass_scale`), and the
  table shows the resulting per-point-mean dt,
* the train gain of the train-searched flow evaluated in float32 arithmetic
  (:func:`~cyntk.experiments.kernel_flows.sigma_loss_float32`) and the float32
  floor: a metric with ``eta = 1`` exactly in float64 still scores ~1e-7 in
  float32, so no float32 implementation can report train gains much above
  ``sigma_before / floor``.

Why a decaying step: the sigma loss is not smooth at ``eta = 1``; with a
constant dt every train point's eta ends up oscillating around 1 with an
amplitude ~ dt x that point's rate, and the rates spread by ~30x over the
points, so no constant dt gains more than ~30 in 50 steps. A geometric decay
shrinks the oscillation with the step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cyntk.experiments.kernel_flows import (
    PAPER_TABLE1,
    SEARCH_REDUCTION,
    SEARCH_SPACES,
    _flatten,
    _flow_one,
    _unflatten,
    kernel_mass_scale,
    make_kernel,
)
from cyntk.geometry import fermat_quintic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cyntk.experiments.runner import ResultStore

__all__ = [
    "TABLE1_ROWS",
    "TABLE1_RUNS",
    "PAPER_GAINS",
    "ROW_SEARCH_SPACES",
    "run_table1",
    "plot_table1",
    "table1_markdown",
]

#: Rows of the table: label, kernel, fixed kernel parameters, whether Table 1 gives hyperparameters.
TABLE1_ROWS = {
    "relu": {"label": "ReLU NTK", "kernel": "relu", "fixed": {"b_std": 5.716}, "paper": True},
    "gaussian30": {"label": "Gaussian, σ = 30", "kernel": "gaussian", "fixed": {"sigma": 30.0}, "paper": True},
    "gaussian": {"label": "Gaussian, σ searched", "kernel": "gaussian", "fixed": {}, "paper": False},
    "delta": {"label": "Delta", "kernel": "delta", "fixed": {}, "paper": True},
}
#: Flows per row: Table 1's dt summed / per-point mean; searched for the train / test gain.
TABLE1_RUNS = ("paper_sum", "paper_mean", "search_train", "search_test")
#: The paper's gains (Figure 3 left and its text), train and test.
PAPER_GAINS = {
    "train": {"relu": 5.0, "gaussian30": 1e6, "gaussian": 1e6, "delta": 1e6},
    "test": {"relu": 5.0, "gaussian30": 5.0, "gaussian": 5.0, "delta": 5.0},
}
#: Bayesian-search bounds per row (per-point mean reading of dt, see ``SEARCH_SPACES``).
ROW_SEARCH_SPACES = {
    "relu": SEARCH_SPACES["relu"],
    "gaussian30": {k: v for k, v in SEARCH_SPACES["gaussian"].items() if k != "log10_sigma"},
    "gaussian": SEARCH_SPACES["gaussian"],
    "delta": SEARCH_SPACES["delta"],
}


def _n_points(kernel: str, points_scale: float) -> int:
    return max(20, int(round(PAPER_TABLE1[kernel]["n_points"] * points_scale)))


def _search(row, *, n, n_test, chart, steps, trials, seed, objective, store, key):
    """Best parameters of a flow search (cached in ``store``), with the trials' scores."""
    from cyntk.flows.search import flow_search

    cached = None if store is None else store.get(key)
    if cached is not None:
        return cached
    spec = TABLE1_ROWS[row]
    res = flow_search(
        lambda **p: make_kernel(spec["kernel"], **{**spec["fixed"], **p}),
        fermat_quintic(),
        ROW_SEARCH_SPACES[row],
        n_train=n,
        n_test=n_test,
        chart=chart,
        steps=steps,
        init_points=trials[0],
        n_iter=trials[1],
        seed=seed,
        objective=objective,
        model_kwargs={"reduction": SEARCH_REDUCTION},
        run_eagerly=True,  # no tracing per trial
        step_scale=kernel_mass_scale,
    )
    out = {f"param_{k}": float(v) for k, v in res.best_params.items()}
    out.update(
        best_target=float(res.best_target),
        trial_target=np.array([t["target"] for t in res.trials]),
        trial_train_gain=np.array([t["train_gain"] for t in res.trials]),
        trial_test_gain=np.array([t["test_gain"] for t in res.trials]),
        trial_steps=np.array([t["steps"] for t in res.trials]),
        trial_decay_rate=np.array([t["params"].get("decay_rate", 1.0) for t in res.trials]),
    )
    if store is not None:
        store.put(key, out)
    return out


def run_table1(
    *,
    rows: Iterable[str] = tuple(TABLE1_ROWS),
    runs: Iterable[str] = TABLE1_RUNS,
    points_scale: float = 1.0,
    steps: int = 50,
    chart: Sequence[int] = (0, 1),
    n_test: int = 500,
    noise_levels: Iterable[float] = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    search_trials: tuple[int, int] = (4, 8),
    seed: int = 0,
    store: ResultStore | None = None,
) -> dict[str, Any]:
    """Table 1 / Figure 3 (left): gains of frozen-kernel flows, the paper's way and searched.

    Parameters
    ----------
    rows : iterable of str
        Any of :data:`TABLE1_ROWS` ('relu', 'gaussian30', 'gaussian', 'delta').
    runs : iterable of str
        Any of :data:`TABLE1_RUNS`: 'paper_sum', 'paper_mean' (Table 1's dt,
        summed / per-point mean; rows with Table 1 hyperparameters only),
        'search_train', 'search_test' (schedules searched for that gain).
    points_scale : float
        Multiplies Table 1's numbers of train points (2500 / 2500 / 1000).
    steps : int
        Euler steps per flow (the paper: 50).
    chart : sequence of int
        The fixed chart ``(patch, eliminated)`` of all points.
    n_test : int
        Independent test points per flow and per search trial.
    noise_levels : iterable of float
        Noise of the perturbed train points of the searched flows (Figure 3 left).
    search_trials : tuple of int
        (random, suggested) trials of each Bayesian search.
    seed : int
        Base seed of the points and the searches.
    store : ResultStore or None
        Saves every finished search and flow; a rerun continues where it stopped.

    Returns
    -------
    dict
        ``rows`` (row -> run -> flow result, see
        :func:`~cyntk.experiments.kernel_flows.run_kernel_gains`), ``searches``
        (row -> objective -> best parameters and trial scores), ``paper``
        (:data:`PAPER_GAINS`), ``float32_floor``, ``steps`` and the markdown
        ``table``.
    """
    rows, runs = list(rows), list(runs)
    bad = [r for r in rows if r not in TABLE1_ROWS] + [r for r in runs if r not in TABLE1_RUNS]
    if bad:
        raise ValueError(f"`rows` must be among {tuple(TABLE1_ROWS)} and `runs` among {TABLE1_RUNS}; received {bad}.")
    M = fermat_quintic()
    noise_levels = tuple(float(s) for s in noise_levels)
    out: dict[str, Any] = {"rows": {}, "searches": {}}
    for row in rows:
        spec = TABLE1_ROWS[row]
        kernel = spec["kernel"]
        n = _n_points(kernel, points_scale)
        tag = f"{seed}_{n}_{n_test}_{steps}"
        out["rows"][row], out["searches"][row] = {}, {}
        for run in runs:
            if run.startswith("paper") and not spec["paper"]:
                continue
            key = f"{row}_{run}_{tag}"
            cached = None if store is None else store.get(key)
            if cached is not None:
                out["rows"][row][run] = _unflatten(cached)
                if run.startswith("search"):
                    out["searches"][row][run[7:]] = store.get(f"{row}_{run}_trials_{tag}")
                continue
            if run.startswith("paper"):
                params = {**PAPER_TABLE1[kernel], **spec["fixed"], "n_points": n}
                reduction, noise, backoff = run[6:], (), True
            else:
                objective = f"{run[7:]}_gain"
                found = _search(
                    row,
                    n=n,
                    n_test=n_test,
                    chart=chart,
                    steps=steps,
                    trials=search_trials,
                    seed=seed,
                    objective=objective,
                    store=store,
                    key=f"{row}_{run}_trials_{tag}",
                )
                out["searches"][row][run[7:]] = found
                params = {k[6:]: v for k, v in found.items() if k.startswith("param_")}
                params = {**params, **spec["fixed"], "n_points": n}
                reduction, noise, backoff = SEARCH_REDUCTION, noise_levels, False
            normalise = run.startswith("search")
            res = _flow_one(
                kernel,
                params,
                manifold=M,
                steps=steps,
                chart=chart,
                n_test=n_test,
                noise_levels=noise,
                seed=seed,
                backoff=backoff,
                reduction=reduction,
                normalise_step=normalise,
            )
            if store is not None:
                store.put(key, _flatten(res))
            out["rows"][row][run] = res
    floors = [r["float32_floor"] for rr in out["rows"].values() for r in rr.values()]
    out["float32_floor"] = float(np.median(floors)) if floors else float("nan")
    out["paper"] = PAPER_GAINS
    out["steps"] = steps
    out["table"] = table1_markdown(out)
    return out


def _gain(g: float) -> str:
    if not np.isfinite(g):
        return "n/a"
    return f"{g:.3g}" if 0.01 <= g < 1e4 else f"{g:.1e}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _schedule(res: dict[str, Any]) -> str:
    p = dict(res["params"])
    p.pop("n_points", None)
    dt = p.pop("learning_rate")
    decay = p.pop("decay_rate", None)
    text = f"Δt {dt:.3g}" + (f"·{decay:.2f}^s" if decay is not None and decay < 1 else "")
    extra = ", ".join(f"{'σ' if k == 'sigma' else k} {v:.3g}" for k, v in p.items() if k != "b_std")
    return text + (f", {extra}" if extra else "")


def _paper_cell(res: dict[str, Any] | None, steps: int) -> str:
    if res is None:
        return "—"
    note = ""
    if res["failed_at_step"]:
        note = f" (not positive-definite at step {int(res['failed_at_step'])})"
    elif res["backoffs"]:
        note = f" ({int(res['backoffs'])} halvings)"
    return f"{_gain(res['train_gain'])} / {_gain(res['test_gain'])}{note}"


def table1_markdown(result: dict[str, Any]) -> str:
    """The one markdown table of :func:`run_table1` (and its float32 note)."""
    steps = result["steps"]
    lines = [
        "| kernel | points | paper: train / test | Table 1 Δt, summed (eq. 3.5): train / test | "
        "Table 1 Δt, per-point mean: train / test | searched for train gain: train | "
        "searched for test gain: test | train gain in float32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in [r for r in TABLE1_ROWS if r in result["rows"]]:  # the paper's order, whatever the run order
        runs, spec = result["rows"][row], TABLE1_ROWS[row]
        any_run = next(iter(runs.values()), None)
        n = int(any_run["params"]["n_points"]) if any_run is not None else 0
        paper = f"{_gain(result['paper']['train'][row])} / {_gain(result['paper']['test'][row])}"
        if row == "gaussian":
            paper += " (σ = 30)"
        st, se = runs.get("search_train"), runs.get("search_test")
        train = "—" if st is None else f"**{_gain(st['train_gain'])}** ({_schedule(st)})"
        test = "—" if se is None else f"**{_gain(se['test_gain'])}** ({_schedule(se)})"
        f32 = "—" if st is None else _gain(st["train_gain_float32"])
        lines.append(
            f"| {spec['label']} | {n} | {paper} | {_paper_cell(runs.get('paper_sum'), steps)} | "
            f"{_paper_cell(runs.get('paper_mean'), steps)} | {train} | {test} | {f32} |"
        )
    floor = result.get("float32_floor", float("nan"))
    before = [r["train_before"] for rr in result["rows"].values() for r in rr.values()]
    if before and np.isfinite(floor):
        lines.append("")
        lines.append(
            f"{steps} steps; searched Δt are per-point means (reduction '{SEARCH_REDUCTION}'; searched as "
            f"Δt·(mean kernel row sum)/N), Δt_s = Δt·decay^s. float32 floor: "
            f"a metric with η = 1 exactly (float64) scores σ = {floor:.2g} in float32 arithmetic, so a float32 flow "
            f"cannot show train gains above ≈ {np.median(before) / floor:.1g} (σ before ≈ {np.median(before):.2f})."
        )
    return "\n".join(lines)


def plot_table1(result: dict[str, Any]) -> Figure:
    """Figure 3 (left) for the searched flows, and the train loss per step of every flow."""
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.6))
    for i, row in enumerate([r for r in TABLE1_ROWS if r in result["rows"]]):
        runs = result["rows"][row]
        c, label = f"C{i}", TABLE1_ROWS[row]["label"]
        st, se = runs.get("search_train"), runs.get("search_test")
        if st is not None:
            d = np.concatenate([[1e-6], np.atleast_1d(st["noise_distance"])])
            g = np.concatenate([[st["train_gain"]], np.atleast_1d(st["noise_gain"])])
            ax.loglog(d, g, "o-", color=c, label=f"{label}: train-searched, noised train points")
            ax2.semilogy(np.atleast_1d(st["loss_history"]), "-", color=c, label=f"{label}: searched (train)")
        if se is not None:
            ax.loglog([se["test_distance"]], [se["test_gain"]], "*", color=c, ms=12, label=f"{label}: test-searched")
        for run, ls in (("paper_sum", ":"), ("paper_mean", "--")):
            if run in runs:
                ax2.semilogy(np.atleast_1d(runs[run]["loss_history"]), ls, color=c, lw=1, label=f"{label}: {run}")
    floor = result.get("float32_floor", np.nan)
    if np.isfinite(floor):
        ax2.axhline(floor, color="k", ls="-.", lw=0.8, label="float32 floor")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xlabel("mean FS distance to the train points (train points at 1e-6)")
    ax.set_ylabel("gain factor of the sigma loss")
    ax.set_title(f"Figure 3 (left): {result['steps']} flow steps, searched schedules", fontsize=10)
    ax.legend(fontsize=6)
    ax2.set_xlabel("flow step")
    ax2.set_ylabel("mean sigma loss on the train points")
    ax2.set_title("train loss per step: searched (solid), Table 1 Δt summed (:) / mean (--)", fontsize=10)
    ax2.legend(fontsize=5, ncol=2)
    return fig
