"""Figure 3 (left) and Table 1: how much do frozen-kernel flows gain, and where?

For each kernel (infinite-width ReLU NTK, Gaussian in the FS distance, Delta =
nearest train point) a :class:`~cyntk.flows.kernel_model.KernelModel` flows
the metric for ``steps`` full-batch Euler steps of eq. 3.5 on chart-fixed
quintic train points, starting from the pulled-back Fubini-Study metric. The
*gain* on a point set is ``sigma_loss(before) / sigma_loss(after)`` (mean
per-point sigma loss ``|1 - det g/(kappa |Omega|^2)|``), measured on

* the train points themselves (distance 0),
* perturbed copies of the train points at growing noise levels (the paper adds
  Gaussian noise and evaluates "approximately on the CY"; here every perturbed
  point is projected back onto the quintic with
  :meth:`~cyntk.geometry.Hypersurface.project` and kept only if it stays in the
  train chart, so the sigma loss is evaluated on genuine points of X), plotted
  against the mean FS distance between perturbed and original points,
* independent test points in the same chart.

Paper (Figure 3 left, Table 1): train gains ~1e6 for the Gaussian and Delta
kernels and ~5 for the ReLU NTK; every kernel gains only ~5 on test points.
Table 1 hyperparameters: ReLU 2500 points, dt 0.1, (W_std, b_std) = (80.52,
5.716) (the table's labels read sigma_b = 80.52, sigma_w = 5.716; DESIGN.md and
the neural-tangents reference use W_std = 80.52); Gaussian 2500 points, dt
0.1583, sigma = 30; Delta 1000 points, dt 0.3162.

``hyperparameters="paper"`` uses Table 1 with the non-positive-definite guard in
``"backoff"`` mode (a step that would break positivity is halved until it does
not; the number of halvings is reported), because in cymetric's normalisation of
g these step sizes break positivity at the first step. ``"search"`` runs
:func:`~cyntk.flows.search.flow_search` (Bayesian optimisation, a fresh point
set per trial) for dt, its geometric decay and the kernel parameters first, with
dt read as a per-point mean (:data:`SEARCH_REDUCTION`). ``reduction`` chooses
the reading of dt: summed over the train points (eq. 3.5 as printed) or the
per-point mean (dt / N).

The full Table 1 (paper, Table 1's dt under both readings, schedules searched
for the train and for the test gain, float32) is :func:`run_table1`, in
:mod:`cyntk.experiments.table1`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from cyntk.experiments._flow_fit import fit_flow
from cyntk.geometry import fermat_quintic, fs_distance, fs_nearest, to_real

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

    from cyntk.experiments.runner import ResultStore
    from cyntk.flows.kernel_model import KernelModel
    from cyntk.geometry import Hypersurface
    from cyntk.kernels import DeltaKernel, GaussianFSKernel, InfiniteWidthKernel

__all__ = [
    "PAPER_TABLE1",
    "SEARCH_SPACES",
    "make_kernel",
    "noised_points",
    "run_kernel_gains",
    "plot_kernel_gains",
    "gains_table",
    "sigma_loss_float32",
    "kernel_mass_scale",
    "run_table1",
    "plot_table1",
]

#: Table 1 of the paper (with DESIGN.md's reading of the ReLU standard deviations).
PAPER_TABLE1 = {
    "relu": {"n_points": 2500, "learning_rate": 0.1, "W_std": 80.52, "b_std": 5.716},
    "gaussian": {"n_points": 2500, "learning_rate": 0.1583, "sigma": 30.0},
    "delta": {"n_points": 1000, "learning_rate": 0.3162},
}

#: Bayesian-search bounds (log10 of the normalised step and kernel parameters). The searched
#: ``learning_rate`` is multiplied by :func:`kernel_mass_scale` (points / mean kernel row sum) and
#: read as a per-point mean (``reduction="mean"``, :data:`SEARCH_REDUCTION`): one step moves each
#: point by about ``learning_rate`` x a kernel-weighted average of the loss gradient, whatever the
#: number of points, the kernel's width (sigma) or scale (W_std), so the search does not have to
#: find the ridge between dt and those. The step at step s is ``dt * decay_rate**s``; decay rates
#: down to 0.3 let the search find the decaying steps that the non-smooth sigma loss |1 - eta|
#: needs (a constant dt leaves every eta oscillating around 1 with an amplitude ~ dt x that
#: point's rate).
SEARCH_SPACES = {
    "relu": {"log10_learning_rate": (-5.0, -1.0), "log10_W_std": (-0.5, 2.0), "decay_rate": (0.3, 1.0)},
    "gaussian": {"log10_learning_rate": (-5.0, -1.0), "log10_sigma": (-2.5, 1.5), "decay_rate": (0.3, 1.0)},
    "delta": {"log10_learning_rate": (-5.0, -1.0), "decay_rate": (0.3, 1.0)},
}
#: The loss reduction of searched flows.
SEARCH_REDUCTION: Literal["sum", "mean"] = "mean"

KERNEL_LABELS = {"relu": "ReLU NTK", "gaussian": "Gaussian", "delta": "Delta"}


def make_kernel(name: str, **params: float) -> InfiniteWidthKernel | GaussianFSKernel | DeltaKernel:
    """The kernel called ``name`` ('relu', 'gaussian', 'delta') with its parameters."""
    from cyntk.kernels import DeltaKernel, GaussianFSKernel, InfiniteWidthKernel

    if name == "relu":
        return InfiniteWidthKernel(
            activation="relu",
            W_std=params.get("W_std", 80.52),
            b_std=params.get("b_std", 5.716),
            depth=int(params.get("depth", 1)),
        )
    if name == "gaussian":
        return GaussianFSKernel(sigma=params.get("sigma", 30.0))
    if name == "delta":
        return DeltaKernel()
    raise ValueError(f"Unknown kernel {name!r}; expected 'relu', 'gaussian' or 'delta'.")


def noised_points(
    manifold: Hypersurface, z: np.ndarray, noise: float, chart: Sequence[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Perturb points by complex Gaussian noise of std ``noise`` and project them back onto X.

    Returns:
        ``(points, index)``: the projected points that converged and stayed in
        ``chart``, and the index of their original point.
    """
    eps = noise * (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape)) / np.sqrt(2)
    w, ok = manifold.project(z + eps)
    ch = manifold.charts(w) if len(w) else np.zeros((0, 2), int)
    keep = ok & (ch[:, 0] == chart[0]) & (ch[:, 1] == chart[1])
    return w[keep], np.nonzero(keep)[0]


def _loss(model: KernelModel, x: np.ndarray, y: np.ndarray) -> float:
    return float(model.evaluate(x, y, batch_size=max(1, min(len(x), 4096)), verbose=0, return_dict=True)["loss"])


def sigma_loss_float32(g: np.ndarray, omega_sq: np.ndarray, kappa: float) -> float:
    """Mean sigma loss ``|1 - det g / (kappa |Omega|^2)|`` computed in float32 arithmetic.

    ``g`` is rounded to complex64 and its determinant taken in single precision
    (LAPACK), ``|Omega|^2`` and ``kappa`` are rounded to float32: the loss that a
    float32 implementation (TensorFlow's default) reports for the same metric.
    Even a metric with ``eta = 1`` exactly in float64 scores ~1e-7 here, which
    bounds every gain measured in float32.

    Parameters
    ----------
    g : np.ndarray
        (P, n, n) complex hermitian metrics.
    omega_sq : np.ndarray
        (P,) ``|Omega|^2`` at the same points.
    kappa : float
        The sigma loss's normalisation.

    Returns
    -------
    float
        The mean over the points (accumulated in float64).
    """
    g32 = np.asarray(g).astype(np.complex64)
    det = np.real(np.linalg.det(g32)).astype(np.float32)
    eta = det / (np.float32(kappa) * np.asarray(omega_sq, dtype=np.float32))
    return float(np.mean(np.abs(np.float32(1.0) - eta), dtype=np.float64))


def kernel_mass_scale(kernel: Any, x: np.ndarray, n_rows: int = 256) -> float:
    """Number of points over the kernel's mean row sum on them: the step normaliser of the searches.

    With ``reduction="mean"`` and ``dt = learning_rate * kernel_mass_scale``,
    one step of eq. 3.5 moves g at a point by ``learning_rate`` times a
    kernel-weighted average of the loss gradient (1 for the Delta kernel,
    whose rows sum to 1, is the number of points).

    Parameters
    ----------
    kernel : Kernel
        A cyntk kernel (component-diagonal, or full: its mean diagonal component is used).
    x : np.ndarray
        (N, 2N_c) real train points.
    n_rows : int
        Rows sampled (the first ``n_rows`` points; the points are i.i.d.).

    Returns
    -------
    float
        ``N / mean_i sum_j K(x_i, x_j)``.

    Raises
    ------
    ValueError
        If the mean row sum is not a finite positive number.
    """
    K = np.asarray(kernel(x[: max(1, min(int(n_rows), len(x)))], x), dtype=np.float64)
    if K.ndim == 4:
        K = np.einsum("abii->ab", K) / K.shape[-1]
    mass = float(np.mean(K.sum(axis=1)))
    if not (np.isfinite(mass) and mass > 0):
        raise ValueError(
            f"the kernel's mean row sum must be a finite number > 0 to normalise the step; received {mass!r} "
            f"for {type(kernel).__name__}."
        )
    return len(x) / mass


def _float32_floor(model: KernelModel, y: np.ndarray) -> float:
    """Float32 sigma loss of the base metric rescaled to eta = 1 (in float64) at the train points."""
    from cyntk.geometry import hermitian_from_components

    g0 = hermitian_from_components(np.asarray(model.g0_train.numpy()))
    det = np.real(np.linalg.det(g0))
    exact = g0 * ((model.kappa * y[:, 1] / det) ** (1.0 / g0.shape[-1]))[:, None, None]
    return sigma_loss_float32(exact, y[:, 1], model.kappa)


def _flow_one(
    name: str,
    params: Mapping[str, float],
    *,
    manifold: Hypersurface,
    steps: int,
    chart: Sequence[int],
    n_test: int,
    noise_levels: Iterable[float],
    seed: int,
    backoff: bool,
    reduction: str = "sum",
    loss: str = "sigma",
    normalise_step: bool = False,
) -> dict[str, Any]:
    import keras

    from cyntk.flows.kernel_model import KernelModel

    rng = np.random.default_rng(np.random.SeedSequence([seed, sorted(PAPER_TABLE1).index(name)]))
    n = int(params["n_points"])
    z = manifold.sample_points(n + n_test, seed=rng, chart=chart)
    z_tr, z_te = z[:n], z[n:]
    x_tr, x_te = to_real(z_tr), to_real(z_te)
    y_tr, y_te = KernelModel.targets(manifold, x_tr), KernelModel.targets(manifold, x_te)
    kparams = {k: v for k, v in params.items() if k not in ("n_points", "learning_rate", "decay_rate")}
    kernel = make_kernel(name, **kparams)
    # a normalised step (searched flows): dt = learning_rate * N / mean kernel row sum on these points
    step_scale = kernel_mass_scale(kernel, x_tr) if normalise_step else 1.0
    params = {**params, "learning_rate": float(params["learning_rate"]) * step_scale}
    model = KernelModel(
        kernel,
        x_tr,
        manifold,
        loss=loss,
        reduction=reduction,
        **(dict(on_non_positive="backoff", max_backoffs=80) if backoff else dict(on_non_positive="stop")),
    )
    lr = float(params["learning_rate"])
    if params.get("decay_rate") is not None:  # dt_s = dt * decay**s (the sigma loss |1 - eta| is not smooth)
        lr = keras.optimizers.schedules.ExponentialDecay(lr, 1, float(params["decay_rate"]))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
    sets = [("train", x_tr, y_tr, 0.0), ("test", x_te, y_te, float(fs_nearest(z_te, z_tr)[0].mean()))]
    for s in noise_levels:
        w, idx = noised_points(manifold, z_tr, s, chart, rng)
        if len(w) < 5:
            continue
        xw = to_real(w)
        sets.append((f"noise{s:g}", xw, KernelModel.targets(manifold, xw), float(fs_distance(w, z_tr[idx]).mean())))
    before = {k: _loss(model, x, y) for k, x, y, _ in sets}
    # the model keeps its last valid metric; record where the flow broke down
    hist = keras.callbacks.History()
    completed, broke = fit_flow(model, x_tr, y_tr, steps, callbacks=[hist])
    failed = completed + 1 if broke else 0
    after = {k: _loss(model, x, y) for k, x, y, _ in sets}
    train_after_f32 = sigma_loss_float32(model.predict(x_tr, batch_size=n, verbose=0), y_tr[:, 1], model.kappa)
    noise_keys = [k for k, *_ in sets if k.startswith("noise")]
    return {
        "params": {k: float(v) for k, v in params.items()},
        "reduction": reduction,
        "step_scale": step_scale,
        "steps_done": len(hist.history.get("loss", [])),
        "failed_at_step": failed,
        "backoffs": float(np.sum(hist.history.get("backoffs", [0.0]))),
        "loss_history": np.asarray(hist.history.get("loss", [np.nan])),
        "train_before": before["train"],
        "train_after": after["train"],
        "train_gain": before["train"] / after["train"],
        "train_after_float32": train_after_f32,
        "train_gain_float32": before["train"] / train_after_f32,
        "float32_floor": _float32_floor(model, y_tr),
        "test_before": before["test"],
        "test_after": after["test"],
        "test_gain": before["test"] / after["test"],
        "test_distance": sets[1][3],
        "noise_levels": np.array([float(k[5:]) for k in noise_keys]),
        "noise_distance": np.array([d for k, _, _, d in sets if k.startswith("noise")]),
        "noise_gain": np.array([before[k] / after[k] for k in noise_keys]),
    }


def run_kernel_gains(
    *,
    kernels: Iterable[str] = ("relu", "gaussian", "delta"),
    hyperparameters: Literal["paper", "search"] | Mapping[str, Mapping[str, float]] = "paper",
    points_scale: float = 1.0,
    steps: int = 50,
    chart: Sequence[int] = (0, 1),
    n_test: int = 500,
    noise_levels: Iterable[float] = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    search_trials: tuple[int, int] = (4, 8),
    seed: int = 0,
    store: ResultStore | None = None,
    reduction: Literal["sum", "mean"] | None = None,
) -> dict[str, Any]:
    """Gain of the sigma loss vs distance to the train set for frozen-kernel flows.

    Args:
        kernels: any of 'relu', 'gaussian', 'delta'.
        hyperparameters: 'paper' (Table 1), 'search' (Bayesian optimisation
            first, :data:`SEARCH_SPACES`) or a dict kernel -> params (with
            ``n_points``, ``learning_rate`` and optionally ``decay_rate``: the
            step at step s is ``learning_rate * decay_rate**s``).
        points_scale: multiply Table 1's numbers of train points (quick runs).
        steps: Euler steps (the paper: 50).
        chart: the fixed chart of all points.
        n_test: independent test points.
        noise_levels: std of the complex Gaussian perturbations of train points.
        search_trials: (random, suggested) trials of the Bayesian search; each
            trial draws fresh points, as many as the final flow uses (the
            summed update of eq. 3.5 scales with the number of train points).
        seed: base seed.
        store: optional ResultStore (per-kernel results are saved and reused).
        reduction: the reading of dt in eq. 3.5: ``"sum"`` (the update sums
            over the train points) or ``"mean"`` (per-point mean, dt / N);
            default ``"sum"``, and :data:`SEARCH_REDUCTION` for ``"search"``.

    Returns:
        dict kernel -> result dict (gains, distances, parameters, history).
    """
    M = fermat_quintic()
    if reduction is None:
        reduction = SEARCH_REDUCTION if hyperparameters == "search" else "sum"
    if reduction not in ("sum", "mean"):
        raise ValueError(f"`reduction` must be 'sum' or 'mean'; received {reduction!r}.")
    out = {}
    for name in kernels:
        key = f"{name}_{hyperparameters if isinstance(hyperparameters, str) else 'custom'}_{reduction}_{seed}"
        cached = None if store is None else store.get(key)
        if cached is not None:
            out[name] = _unflatten(cached)
            continue
        if isinstance(hyperparameters, dict):
            params = dict(hyperparameters[name])
        elif hyperparameters == "paper":
            params = dict(PAPER_TABLE1[name])
        elif hyperparameters == "search":
            n_pts = max(20, int(round(PAPER_TABLE1[name]["n_points"] * points_scale)))
            params = _searched(name, M, chart, steps, search_trials, (n_pts, n_test), seed, reduction)
        else:
            raise ValueError(f"`hyperparameters` must be 'paper', 'search' or a dict; received {hyperparameters!r}.")
        if not isinstance(hyperparameters, dict) or "n_points" not in params:
            params["n_points"] = max(20, int(round(PAPER_TABLE1[name]["n_points"] * points_scale)))
        res = _flow_one(
            name,
            params,
            manifold=M,
            steps=steps,
            chart=chart,
            n_test=n_test,
            noise_levels=noise_levels,
            seed=seed,
            backoff=hyperparameters == "paper",
            reduction=reduction,
            normalise_step=hyperparameters == "search",
        )
        if store is not None:
            store.put(key, _flatten(res))
        out[name] = res
    return {
        "kernels": out,
        "hyperparameters": hyperparameters if isinstance(hyperparameters, str) else "custom",
        "steps": steps,
        "paper": {
            "train_gain": {"relu": 5.0, "gaussian": 1e6, "delta": 1e6},
            "test_gain": {"relu": 5.0, "gaussian": 5.0, "delta": 5.0},
        },
    }


def _searched(
    name: str,
    M: Hypersurface,
    chart: Sequence[int],
    steps: int,
    trials: tuple[int, int],
    points: tuple[int, int],
    seed: int,
    reduction: str = SEARCH_REDUCTION,
) -> dict[str, float]:
    from cyntk.flows.search import flow_search

    res = flow_search(
        lambda **p: make_kernel(name, **p),
        M,
        SEARCH_SPACES[name],
        n_train=points[0],
        n_test=points[1],
        chart=chart,
        steps=steps,
        init_points=trials[0],
        n_iter=trials[1],
        seed=seed,
        model_kwargs={"reduction": reduction},
        step_scale=kernel_mass_scale,
    )
    params = dict(res.best_params)
    params.setdefault("learning_rate", params.get("learning_rate"))
    return params


def _flatten(res: Mapping[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in res.items() if k != "params"}
    flat.update({f"param_{k}": v for k, v in res["params"].items()})
    return flat


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    res = {k: v for k, v in flat.items() if not k.startswith("param_")}
    res["params"] = {k[6:]: float(v) for k, v in flat.items() if k.startswith("param_")}
    return res


def gains_table(result: dict[str, Any]) -> str:
    """Markdown table of train/test gains next to the paper's."""
    rows = [
        "| kernel | points | dt | params | steps | train gain (paper) | test gain (paper) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["kernels"].items():
        p = dict(r["params"])
        npts, lr = int(p.pop("n_points")), p.pop("learning_rate")
        if "decay_rate" in p:
            lr = f"{lr:.4g}·{p.pop('decay_rate'):.3g}^s"
        else:
            lr = f"{lr:.4g}"
        extra = ", ".join(f"{k}={v:.4g}" for k, v in p.items()) or "-"
        rows.append(
            f"| {KERNEL_LABELS[name]} | {npts} | {lr} | {extra} | {int(r['steps_done'])} | "
            f"{r['train_gain']:.3g} ({result['paper']['train_gain'][name]:.0e}) | "
            f"{r['test_gain']:.3g} ({result['paper']['test_gain'][name]:.0f}) |"
        )
    return "\n".join(rows)


@overload
def plot_kernel_gains(result: dict[str, Any], ax: None = None) -> Figure: ...
@overload
def plot_kernel_gains(result: dict[str, Any], ax: Axes) -> Figure | SubFigure: ...


def plot_kernel_gains(result: dict[str, Any], ax: Axes | None = None) -> Figure | SubFigure:
    """Figure 3 (left): gain factor vs mean FS distance to the train points."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, (name, r) in enumerate(result["kernels"].items()):
        c = f"C{i}"
        d = np.concatenate([[1e-6], r["noise_distance"]])
        g = np.concatenate([[r["train_gain"]], r["noise_gain"]])
        ax.loglog(d, g, "o-", color=c, label=f"{KERNEL_LABELS[name]} (noised train points)")
        ax.loglog(
            [r["test_distance"]], [r["test_gain"]], "*", color=c, ms=12, label=f"{KERNEL_LABELS[name]} test points"
        )
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xlabel("mean FS distance to the train points (train points plotted at 1e-6)")
    ax.set_ylabel("gain factor of the sigma loss")
    ax.set_title(
        f"Figure 3 (left): {result['steps']} flow steps, {result['hyperparameters']} hyperparameters", fontsize=10
    )
    ax.legend(fontsize=7)
    return fig if fig is not None else ax.figure


def run_table1(**kwargs: Any) -> dict[str, Any]:
    """Table 1 / Figure 3 (left) as one table; see :func:`cyntk.experiments.table1.run_table1`."""
    from cyntk.experiments.table1 import run_table1 as run

    return run(**kwargs)


def plot_table1(result: dict[str, Any]) -> Figure:
    """The figure of :func:`run_table1`; see :func:`cyntk.experiments.table1.plot_table1`."""
    from cyntk.experiments.table1 import plot_table1 as plot

    return plot(result)
