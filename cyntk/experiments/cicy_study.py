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

Losses: sigma and Kähler (weight 1); cymetric's transition loss is not
implemented for products of projective spaces in cyntk (the models refuse it), so
it is off for every manifold here, the quintic included (that is the one
difference from :func:`cyntk.experiments.networks.run_fig4`, which also trains the
transition loss); volk is off as in ``train_multiplicative``.

The frozen-kernel half of the question (``KernelModel`` flows on a CICY) is not
run: ``KernelModel`` serves hypersurfaces in one P^n only (see its error message).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cyntk.geometry import bicubic, fermat_quintic, make_dataset, tetraquadric

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

# sigma and Kähler at weight 1; transition is not available on products of projective spaces
_LOSS_WEIGHTS = {"sigma": 1.0, "kaehler": 1.0, "transition": 0.0, "volk": 0.0}


def _fs_sigma_val(ds: CYDataset) -> float:
    from cyntk.models import FSModel

    return float(FSModel(ds).measures(ds.X_val, ds.y_val, which=("sigma",))["sigma"])


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
        verbose: Keras verbosity.
        store: :class:`~cyntk.experiments.runner.ResultStore` (a paper-scale run resumes per manifold and run).

    Returns:
        dict with ``manifolds`` and, per manifold ``m`` and run prefix ``p`` (``""`` or ``"lazy_"``),
        ``m/p epochs`` (R,), ``m/p wasserstein`` (R,) (W1 of the pooled train-test spectrum to epoch 0),
        ``m/p frobenius`` (R,) (relative kernel distance to epoch 0), ``m/p spectrum_first``,
        ``m/p spectrum_last``, ``m/p sigma_val`` (E,), ``m/p sigma_val_initial``, ``m/p w1_final``,
        ``m/p sigma_gain``; and ``m/nfold``, ``m/kappa``, ``m/sigma_val_fs``.
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
            if got is None:
                if ds is None:
                    ds = make_dataset(CICY_STUDY_MANIFOLDS[name](), n_points, seed=seed, progress=False)
                cb = MetricNTKCallback(n_track, n_track, data=ds, seed=seed)
                _, _, meas = train_multiplicative(
                    ds,
                    epochs=epochs,
                    batch_size=batch_size,
                    seed=seed,
                    callbacks=[cb],
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
                if store is not None:
                    store.put(key, got)
            for k, v in got.items():
                out[f"{name}/{k}" if k in ("nfold", "kappa", "sigma_val_fs") else f"{name}/{prefix}{k}"] = v
    return out


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
        parts.append(text)
    return "\n    ".join(parts)


def plot_cicy_fig4(result: dict[str, Any]) -> Figure:
    """W1 to epoch 0, kernel distance to epoch 0 and sigma_val / sigma_val(0) vs epoch, per manifold."""
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
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
