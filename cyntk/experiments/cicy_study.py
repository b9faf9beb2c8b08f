"""Beyond the paper: the Figure-4 study on complete intersections (issue 18, item 4).

Does the network side of the paper's picture -- the metric-NTK of a
multiplicative network moves during training, mostly early, while the sigma
measure improves by an order of magnitude; a lazy (wide, tiny-step) network
keeps its kernel and does not learn -- hold on the manifolds cymetric users study
beyond the quintic? :func:`run_cicy_fig4` trains the Figure-4 network (3 x 128
gelu multiplicative model, Adam 1e-3) with :class:`~cyntk.callbacks.MetricNTKCallback`
on 10 + 10 fixed points on each of several manifolds -- the bicubic in P^2 x P^2,
the tetraquadric in (P^1)^4 and, as the reference, the Fermat quintic -- with the
same losses on all of them, plus the lazy-regime control of Figure 4 (one hidden
layer of 2048, plain SGD 1e-4) on each.

Losses: sigma and Kähler (weight 1); the transition loss is off for every
manifold here, the quintic included (the study was first run before cyntk had
cymetric's transition loss on products, and keeps its numbers comparable; that is
the one difference from :func:`cyntk.experiments.networks.run_fig4`, which also
trains the transition loss); volk is off as in ``train_multiplicative``.

The frozen-kernel half (``frozen=True``): on ``n_flow`` train and ``n_flow``
validation points sampled in one chart (the chart row most common among the
dataset's points, ``M.sample_points(n, chart=row)``), :class:`~cyntk.flows.KernelModel`
flows ``flow_steps`` steps of eq. 3.5 (sigma loss, SGD) with

(a) the empirical metric-NTK of the same network frozen at initialisation (its
    base metric: the untrained network; primal form, i.e. gradient descent on the
    network linearised at initialisation), and
(b) the Gaussian-FS kernel on the product FS distance ``sqrt(sum_F t_F d_F^2)``
    (base metric: Fubini--Study),

with the step size (and for (b) the kernel width) chosen on the grid by the
*train* gain (no validation data used); the validation gain at that choice and
the best validation gain over the grid (an optimistic bound) are reported. The
network's own gain is measured on the same validation points
(``sigma(untrained) / sigma(trained)``). All sigma values here are per-point means of
``|1 - det g / (kappa |Omega|^2)|`` with the dataset's kappa.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cyntk.experiments._flow_fit import fit_flow
from cyntk.geometry import bicubic, fermat_quintic, make_dataset, tetraquadric, to_real

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cyntk.experiments.runner import ResultStore
    from cyntk.geometry import CYDataset

__all__ = ["CICY_STUDY_MANIFOLDS", "run_cicy_fig4", "plot_cicy_fig4"]

#: Manifolds the study knows (name -> factory).
# values typed Any: make_dataset is annotated for Hypersurface, which is now a CompleteIntersection subclass
CICY_STUDY_MANIFOLDS: dict[str, Callable[[], Any]] = {
    "bicubic": bicubic,
    "tetraquadric": tetraquadric,
    "quintic": fermat_quintic,
}

# sigma and Kähler at weight 1; transition off on every manifold (see the module docstring)
_LOSS_WEIGHTS = {"sigma": 1.0, "kaehler": 1.0, "transition": 0.0, "volk": 0.0}


def _fs_sigma_val(ds: CYDataset) -> float:
    from cyntk.models import FSModel

    return float(FSModel(ds).measures(ds.X_val, ds.y_val, which=("sigma",))["sigma"])


def _sigma_mean(g: np.ndarray, omega_sq: np.ndarray, kappa: float) -> float:
    """Per-point mean of ``|1 - det g / (kappa |Omega|^2)|`` (the KernelModel's sigma loss)."""
    det = np.real(np.linalg.det(np.asarray(g, dtype=np.complex128)))
    return float(np.mean(np.abs(1.0 - det / (kappa * np.asarray(omega_sq, dtype=np.float64)))))


def _flow_points(ds: CYDataset, n_flow: int, seed: int) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Train and validation points (n_flow each) in the chart row most common among the dataset's points."""
    from cyntk.geometry import to_complex

    M = ds.manifold
    charts = M.charts(to_complex(np.asarray(ds.X_train, dtype=np.float64)))
    rows, counts = np.unique(charts, axis=0, return_counts=True)
    row = tuple(int(v) for v in rows[np.argmax(counts)])
    z = M.sample_points(2 * n_flow, seed=np.random.default_rng(seed + 17), chart=row)
    x = to_real(z)
    return row, x[:n_flow], x[n_flow:]


def _frozen_flows(
    ds: CYDataset,
    ntk0: Any,
    network: Any,
    *,
    n_flow: int,
    flow_steps: int,
    learning_rates: Sequence[float],
    gaussian_sigmas: Sequence[float],
    seed: int,
) -> dict[str, Any]:
    """The frozen-kernel half of the study on one manifold (module docstring)."""

    import keras

    from cyntk.flows.kernel_model import KernelModel
    from cyntk.kernels import GaussianFSKernel

    M, kappa = ds.manifold, float(ds.kappa)
    row, x_tr, x_va = _flow_points(ds, n_flow, seed)
    y_tr, y_va = KernelModel.targets(M, x_tr), KernelModel.targets(M, x_va)

    def net_sigma(x: np.ndarray, y: np.ndarray) -> float:
        g = network(np.asarray(x, dtype=np.float32), training=False)
        return _sigma_mean(keras.ops.convert_to_numpy(g), y[:, 1], kappa)

    def flow(kernel: Any, form: str) -> list[tuple[float, float, float, float, float]]:
        out = []
        for lr in learning_rates:
            km = KernelModel(kernel, x_tr, M, kappa=kappa, on_non_positive="stop", form=form)
            km.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))

            def ev(x: np.ndarray, y: np.ndarray) -> float:
                return _sigma_mean(km.predict(x, batch_size=len(x), verbose=0), y[:, 1], kappa)

            b_tr, b_va = ev(x_tr, y_tr), ev(x_va, y_va)
            fit_flow(km, x_tr, y_tr, flow_steps)
            out.append((b_tr / ev(x_tr, y_tr), b_va / ev(x_va, y_va), float(lr), b_tr, b_va))
        return out

    res: dict[str, Any] = {"flow_chart": np.asarray(row), "n_flow": int(n_flow), "flow_steps": int(flow_steps)}
    runs: dict[str, list[tuple[float | None, tuple[float, float, float, float, float]]]] = {
        "ntk0": [(None, r) for r in flow(ntk0, "primal")]
    }
    runs["gauss"] = [(sg, r) for sg in gaussian_sigmas for r in flow(GaussianFSKernel(float(sg)), "dual")]
    for name, grid in runs.items():
        width, best = max(grid, key=lambda item: item[1][0])  # chosen by the train gain
        res.update(
            {
                f"{name}_train_gain": float(best[0]),
                f"{name}_val_gain": float(best[1]),
                f"{name}_learning_rate": float(best[2]),
                f"{name}_sigma_val_initial": float(best[4]),
                f"{name}_best_val_gain": float(max(r[1] for _, r in grid)),
            }
        )
        if width is not None:
            res[f"{name}_width"] = float(width)
    # the network on the same validation points: untrained (the NTK flow's base metric) -> trained
    trained = net_sigma(x_va, y_va)
    res["network_flow_sigma_val_initial"] = res["ntk0_sigma_val_initial"]
    res["network_flow_sigma_val"] = trained
    res["network_flow_val_gain"] = float(res["ntk0_sigma_val_initial"] / trained)
    return res


def run_cicy_fig4(
    *,
    manifolds: Sequence[str] = ("bicubic", "tetraquadric", "quintic"),
    n_points: int = 100_000,
    epochs: int = 50,
    hidden: Sequence[int] = (128, 128, 128),
    activation: str = "gelu",
    n_track: int = 10,
    batch_size: int = 64,
    lazy: bool = True,
    lazy_width: int = 2048,
    lazy_learning_rate: float = 1e-4,
    seed: int = 0,
    frozen: bool = True,
    n_flow: int = 200,
    flow_steps: int = 20,
    flow_learning_rates: Sequence[float] = (1e-5, 1e-4, 1e-3, 1e-2),
    gaussian_sigmas: Sequence[float] = (0.05, 0.15, 0.5),
    verbose: int = 0,
    store: ResultStore | None = None,
) -> dict[str, Any]:
    """The Figure-4 study on each manifold of ``manifolds`` (module docstring).

    Args:
        manifolds: names among :data:`CICY_STUDY_MANIFOLDS`.
        n_points: points of each manifold's dataset (10 % validation).
        epochs: training epochs.
        hidden: hidden widths of the multiplicative model's network.
        activation: its activation.
        n_track: tracked train and test points of the callback (each).
        batch_size: training batch size.
        lazy: also train the lazy-regime control.
        lazy_width: width of the control's single hidden layer.
        lazy_learning_rate: its SGD learning rate.
        seed: seed of the data, the networks and the tracked points.
        frozen: also run the frozen-kernel flows (module docstring) next to the feature-learning network.
        n_flow: chart-fixed train points of the flows, and as many validation points.
        flow_steps: SGD steps of eq. 3.5 per flow.
        flow_learning_rates: step sizes tried (chosen by the train gain).
        gaussian_sigmas: widths of the Gaussian-FS kernel tried (chosen by the train gain).
        verbose: Keras verbosity.
        store: :class:`~cyntk.experiments.runner.ResultStore` (a paper-scale run resumes per manifold and run).

    Returns:
        dict with ``manifolds`` and, per manifold ``m`` and run prefix ``p`` (``""`` or ``"lazy_"``),
        ``m/p epochs`` (R,), ``m/p wasserstein`` (R,) (W1 of the pooled train-test spectrum to epoch 0),
        ``m/p frobenius`` (R,) (relative kernel distance to epoch 0), ``m/p spectrum_first``,
        ``m/p spectrum_last``, ``m/p sigma_val`` (E,), ``m/p sigma_val_initial``, ``m/p w1_final``,
        ``m/p sigma_gain``; and ``m/nfold``, ``m/kappa``, ``m/sigma_val_fs``. With ``frozen``:
        ``m/flow_chart``, ``m/network_flow_val_gain`` (the network on the flows' validation points),
        and for ``k`` in ``ntk0`` (empirical NTK at initialisation), ``gauss`` (Gaussian-FS):
        ``m/k_train_gain``, ``m/k_val_gain``, ``m/k_best_val_gain``, ``m/k_learning_rate``,
        ``m/k_sigma_val_initial`` (and ``m/gauss_width``).
    """
    from cyntk.callbacks import MetricNTKCallback
    from cyntk.experiments.networks import train_multiplicative

    unknown = [m for m in manifolds if m not in CICY_STUDY_MANIFOLDS]
    if unknown or not manifolds:
        raise ValueError(
            f"`manifolds` must be a non-empty list of names among {sorted(CICY_STUDY_MANIFOLDS)}; received "
            f"{list(manifolds)!r}."
        )
    out: dict[str, Any] = {
        "manifolds": list(manifolds),
        "n_points": int(n_points),
        "epochs_trained": int(epochs),
        "hidden": [int(h) for h in hidden],
        "n_track": int(n_track),
        "loss_weights": dict(_LOSS_WEIGHTS),
    }
    runs: list[tuple[str, dict[str, Any]]] = [
        ("", dict(hidden=tuple(hidden), activation=activation, learning_rate=1e-3, optimizer="adam"))
    ]
    if lazy:
        runs.append(
            (
                "lazy_",
                dict(hidden=(lazy_width,), activation=activation, learning_rate=lazy_learning_rate, optimizer="sgd"),
            )
        )
    for name in manifolds:
        ds = None
        for prefix, kw in runs:
            key = f"{name}/{prefix or 'feature_'}run"
            got = store.get(key) if store is not None else None
            want_frozen = frozen and prefix == ""
            if got is None or (want_frozen and "ntk0_val_gain" not in got):
                if ds is None:
                    ds = make_dataset(CICY_STUDY_MANIFOLDS[name](), n_points, seed=seed, progress=False)
                cb = MetricNTKCallback(n_track, n_track, data=ds, seed=seed)
                snap = _initial_ntk_callback() if want_frozen else None
                model, _, meas = train_multiplicative(
                    ds,
                    epochs=epochs,
                    batch_size=batch_size,
                    seed=seed,
                    callbacks=[cb] + ([snap] if snap is not None else []),
                    verbose=verbose,
                    loss_weights=_LOSS_WEIGHTS,
                    **kw,
                )
                h = cb.history
                initial = cast("dict[str, float]", meas.initial)["sigma_val"]
                sig = np.asarray(meas.history["sigma_val"], dtype=np.float64)
                got = {
                    "epochs": np.asarray(h.epochs),
                    "wasserstein": h.scalar("ntk_wasserstein_train_test"),
                    "frobenius": h.scalar("ntk_frobenius_train_test"),
                    "spectrum_first": h.spectrum("pooled_train_test", h.epochs[0]),
                    "spectrum_last": h.spectrum("pooled_train_test", h.epochs[-1]),
                    "sigma_val": sig,
                    "sigma_val_initial": float(initial),
                    "w1_final": float(h.scalar("ntk_wasserstein_train_test")[-1]),
                    "sigma_gain": float(initial / sig[-1]),
                }
                if prefix == "":
                    got.update(nfold=ds.manifold.nfold, kappa=float(ds.kappa), sigma_val_fs=_fs_sigma_val(ds))
                if snap is not None:
                    got.update(
                        _frozen_flows(
                            ds,
                            snap.kernel,
                            model,
                            n_flow=n_flow,
                            flow_steps=flow_steps,
                            learning_rates=flow_learning_rates,
                            gaussian_sigmas=gaussian_sigmas,
                            seed=seed,
                        )
                    )
                if store is not None:
                    store.put(key, got)
            for k, v in got.items():
                shared = k in ("nfold", "kappa", "sigma_val_fs", "flow_chart", "n_flow", "flow_steps")
                if prefix == "" and (shared or k.startswith(("ntk0_", "gauss_", "network_flow_"))):
                    if frozen or not k.startswith(("ntk0_", "gauss_", "network_flow_", "flow_", "n_flow")):
                        out[f"{name}/{k}"] = v
                else:
                    out[f"{name}/{prefix}{k}"] = v
    return out


def _initial_ntk_callback() -> Any:
    """A Keras callback holding (``.kernel``) the network's empirical metric-NTK frozen at the start of training."""
    import keras

    from cyntk.kernels import EmpiricalNTKKernel

    class InitialNTK(keras.callbacks.Callback):
        kernel: Any = None

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            if self.kernel is None:
                self.kernel = EmpiricalNTKKernel(self.model)  # a snapshot of the untrained weights

    return InitialNTK()


def summarise_cicy_fig4(result: dict[str, Any]) -> str:
    """One line per manifold: W1 at the last epoch, kernel distance, sigma_val gain (lazy control alike)."""
    parts = []
    for m in result["manifolds"]:
        text = (
            f"{m}: W1 {result[f'{m}/w1_final']:.3g}, kernel distance {float(result[f'{m}/frobenius'][-1]):.3g}, "
            f"sigma_val {result[f'{m}/sigma_val_initial']:.3g} -> {float(result[f'{m}/sigma_val'][-1]):.3g} "
            f"(gain {result[f'{m}/sigma_gain']:.2f}; FS {result[f'{m}/sigma_val_fs']:.3g})"
        )
        if f"{m}/lazy_w1_final" in result:
            text += (
                f"; lazy W1 {result[f'{m}/lazy_w1_final']:.3g}, kernel distance "
                f"{float(result[f'{m}/lazy_frobenius'][-1]):.3g}, gain {result[f'{m}/lazy_sigma_gain']:.2f}"
            )
        if f"{m}/ntk0_val_gain" in result:
            text += (
                f"; frozen-kernel flows ({result[f'{m}/n_flow']} + {result[f'{m}/n_flow']} points in chart "
                f"{tuple(int(v) for v in result[f'{m}/flow_chart'])}, {result[f'{m}/flow_steps']} steps), "
                f"sigma_val gain: network {result[f'{m}/network_flow_val_gain']:.3g}, "
                f"NTK at init {result[f'{m}/ntk0_val_gain']:.3g} (best {result[f'{m}/ntk0_best_val_gain']:.3g}), "
                f"Gaussian-FS {result[f'{m}/gauss_val_gain']:.3g} (width {result[f'{m}/gauss_width']:g}, "
                f"best {result[f'{m}/gauss_best_val_gain']:.3g})"
            )
        parts.append(text)
    return "\n    ".join(parts)


def plot_cicy_fig4(result: dict[str, Any]) -> Figure:
    """W1 to epoch 0, kernel distance to epoch 0 and sigma_val / sigma_val(0) vs epoch, per manifold."""
    import matplotlib.pyplot as plt

    frozen = [m for m in result["manifolds"] if f"{m}/ntk0_val_gain" in result]
    fig, axes = plt.subplots(1, 4 if frozen else 3, figsize=(20 if frozen else 15, 4.2))
    a, b, c = axes[:3]
    if frozen:
        d = axes[3]
        labels = ("network", "NTK at init (frozen)", "Gaussian-FS (frozen)")
        keys = ("network_flow_val_gain", "ntk0_val_gain", "gauss_val_gain")
        w = 0.8 / len(keys)
        for j, (label, key) in enumerate(zip(labels, keys)):
            d.bar(np.arange(len(frozen)) + j * w, [result[f"{m}/{key}"] for m in frozen], w, label=label)
        d.axhline(1.0, color="k", lw=0.5)
        d.set_xticks(np.arange(len(frozen)) + w, frozen)
        d.set_ylabel("σ_val gain on chart-fixed validation points")
        d.set_title("network vs frozen kernels (same validation points)")
        d.legend(fontsize=7)
    for i, m in enumerate(result["manifolds"]):
        color = f"C{i}"
        for prefix, style, tag in (("", "o-", ""), ("lazy_", "s--", " lazy")):
            if f"{m}/{prefix}epochs" not in result:
                continue
            ep = np.asarray(result[f"{m}/{prefix}epochs"])
            a.plot(ep, result[f"{m}/{prefix}wasserstein"], style, color=color, label=m + tag, ms=4)
            b.plot(ep, result[f"{m}/{prefix}frobenius"], style, color=color, label=m + tag, ms=4)
            s = np.r_[result[f"{m}/{prefix}sigma_val_initial"], result[f"{m}/{prefix}sigma_val"]]
            c.semilogy(np.arange(len(s)), s / s[0], style, color=color, label=m + tag, ms=4)
        if f"{m}/sigma_val_fs" in result:
            c.axhline(result[f"{m}/sigma_val_fs"] / result[f"{m}/sigma_val_initial"], color=color, ls=":", lw=1)
    hidden = "x".join(map(str, result["hidden"]))
    a.set_yscale("symlog", linthresh=1e-6)
    a.set_title(f"W1(spectrum_t, spectrum_0), {hidden} gelu, {result['n_track']}+{result['n_track']} points")
    b.set_yscale("symlog", linthresh=1e-6)
    b.set_title("kernel distance ||Θ_t − Θ_0|| / ||Θ_0||")
    c.set_title("σ_val / σ_val(epoch 0) (dotted: Fubini–Study)")
    for ax in (a, b, c):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
