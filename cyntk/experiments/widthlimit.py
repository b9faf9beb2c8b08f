"""Width limit: how far is a network's empirical metric-NTK from its infinite-width kernel?

The paper's thesis is that a finite network learns because its metric-NTK moves
away from the frozen infinite-width kernel. This experiment measures that
distance directly for the Figure-4 architecture -- cyntk's multiplicative model
with a 3-hidden-layer gelu network and a bias-free linear readout of the 9
metric components -- in the NTK parameterisation
(:func:`cyntk.kernels.ntk_networks.ntk_mlp`, exact gelu), the one with a
width-independent limit:

* at initialisation, for widths 64..4096 and several seeds, the relative
  Frobenius distance ``||Theta - Theta_inf||_F / ||Theta_inf||_F`` and the
  kernel alignment ``<Theta, Theta_inf>_F / (||Theta||_F ||Theta_inf||_F)``
  between the empirical metric-NTK ``Theta`` (:func:`cyntk.kernels.metric_ntk`)
  and ``Theta_inf`` (:class:`cyntk.kernels.infinite_metric.InfiniteWidthMetricKernel`)
  on ``n_track`` fixed validation points; a least-squares fit of
  ``log distance = a + p log width`` gives the exponent ``p`` (theory: the
  NTK's fluctuations fall like ``width^-1/2``);
* during training (cymetric's losses with volk off, as in Figure 4) at each
  width of ``train_widths``: the same distance per epoch, the distance to the
  network's own epoch-0 kernel (how far the kernel moved) and ``sigma_val``.

Why the NTK parameterisation: Keras' Glorot initialisation (used by Figure 4)
shrinks the first layer's weight variance like ``2/(10 + width)``, so that
network has no width-independent limit to compare with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cyntk.models import MultiplicativeModel
    from cyntk.models._spec import ManifoldLike

__all__ = ["kernel_distances", "run_widthlimit", "plot_widthlimit"]


def kernel_distances(theta: ArrayLike, reference: ArrayLike) -> tuple[float, float]:
    """``(||theta - reference||_F / ||reference||_F, <theta, reference>_F / (||theta||_F ||reference||_F))``."""
    theta = np.asarray(theta, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if theta.shape != reference.shape:
        raise ValueError(
            f"`theta` and `reference` must have the same shape; received {theta.shape} and {reference.shape}."
        )
    nr = np.linalg.norm(reference)
    nt = np.linalg.norm(theta)
    return (float(np.linalg.norm(theta - reference) / nr), float(np.sum(theta * reference) / (nt * nr)))


def _model(
    manifold_or_ds: ManifoldLike,
    width: int,
    depth: int,
    W_std: float,
    b_std: float,
    seed: int,
    loss_weights: Mapping[str, float] | None = None,
) -> MultiplicativeModel:
    from cyntk.kernels import ntk_mlp
    from cyntk.models import MultiplicativeModel

    n = 3
    net = ntk_mlp(
        10,
        int(width),
        depth,
        activation="gelu",
        W_std=W_std,
        b_std=b_std,
        readout_bias=False,
        n_outputs=n * n,
        seed=int(seed),
    )
    return MultiplicativeModel(
        net, manifold_or_ds, dtype="float64", **({"volk": 0.0} if loss_weights is None else dict(loss_weights))
    )


def _fit_exponent(widths: ArrayLike, dist: ArrayLike) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.log(widths), np.log(dist), 1)
    return float(slope), float(intercept)


def run_widthlimit(
    *,
    widths: Iterable[int] = (64, 128, 256, 512, 1024, 2048, 4096),
    n_seeds: int = 3,
    n_track: int = 10,
    depth: int = 3,
    W_std: float = 1.5,
    b_std: float = 0.1,
    train_widths: Iterable[int] = (64, 256, 1024),
    n_points: int = 10_000,
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    optimizer: Literal["adam", "sgd"] = "adam",
    loss_weights: Mapping[str, float] | None = None,
    seed: int = 0,
    verbose: int = 0,
) -> dict[str, Any]:
    """Distance of the empirical metric-NTK to its infinite-width limit vs width, at init and in training.

    Args:
        widths: hidden widths at initialisation.
        n_seeds: initialisations per width (the distance is averaged).
        n_track: points on which the kernels are compared (validation points).
        depth: hidden layers (Figure 4: 3).
        W_std, b_std: scales of the NTK-parameterised layers (the readout has
            no bias).
        train_widths: widths trained for ``epochs`` epochs (empty: none).
        n_points: points of the quintic dataset.
        epochs, batch_size, learning_rate, optimizer: training (``'adam'`` or ``'sgd'``).
        loss_weights: the model's loss weights (default: cymetric's with volk
            off, ``sigma = kaehler = transition = 1``, as in Figure 4).
        seed: base seed (dataset, networks).

    Returns:
        dict with ``widths`` (W,), ``init_frobenius`` (W, S), ``init_alignment``
        (W, S), their means, the fitted ``exponent`` and ``prefactor`` of
        ``mean distance = prefactor width^exponent``, and per trained width
        ``w`` the arrays ``train/<w>/frobenius``, ``train/<w>/alignment``,
        ``train/<w>/moved`` (distance to epoch 0) and ``train/<w>/sigma_val``
        (epochs 0..E).
    """
    import keras

    from cyntk.geometry import fermat_quintic, make_dataset
    from cyntk.kernels import InfiniteWidthMetricKernel, metric_ntk
    from cyntk.models import MeasuresCallback

    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"`widths` must hold at least two widths to fit an exponent; received {widths}.")
    ds = make_dataset(fermat_quintic(), int(n_points), seed=seed)
    x = np.asarray(ds.X_val[:n_track], dtype=np.float64)
    limit = InfiniteWidthMetricKernel(_model(ds, 8, depth, W_std, b_std, seed))(x)
    out: dict[str, Any] = {
        "widths": np.asarray(widths),
        "n_track": n_track,
        "depth": depth,
        "W_std": W_std,
        "b_std": b_std,
        "n_seeds": n_seeds,
        "theta_inf_norm": float(np.linalg.norm(limit)),
    }
    frob = np.zeros((len(widths), n_seeds))
    align = np.zeros((len(widths), n_seeds))
    for i, w in enumerate(widths):
        # one model per width (its kernel engine is traced once); every seed redraws all its
        # weights from N(0, 1), the initialisation of the NTK parameterisation
        model = _model(ds, w, depth, W_std, b_std, seed=seed, loss_weights=loss_weights)
        for s in range(n_seeds):
            rng = np.random.default_rng([seed, i, s])
            for v in model.network.trainable_variables:
                v.assign(rng.standard_normal(v.shape))
            frob[i, s], align[i, s] = kernel_distances(metric_ntk(model, x), limit)
            if verbose:
                print(f"width {w} seed {s}: distance {frob[i, s]:.4f} alignment {align[i, s]:.6f}", flush=True)
    out["init_frobenius"], out["init_alignment"] = frob, align
    out["init_frobenius_mean"] = frob.mean(axis=1)
    out["init_alignment_mean"] = align.mean(axis=1)
    out["exponent"], log_a = _fit_exponent(widths, out["init_frobenius_mean"])
    out["prefactor"] = float(np.exp(log_a))
    out["exponent_misalignment"] = _fit_exponent(widths, 1.0 - out["init_alignment_mean"])[0]

    out["train_widths"] = np.asarray([int(w) for w in train_widths])
    for w in out["train_widths"]:
        model = _model(ds, w, depth, W_std, b_std, seed=seed + 1, loss_weights=loss_weights)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate)
            if optimizer == "adam"
            else keras.optimizers.SGD(learning_rate)
        )
        theta0 = metric_ntk(model, x)
        rec: dict[str, list[float]] = {"frobenius": [], "alignment": [], "moved": []}

        def record(theta: np.ndarray, rec: dict[str, list[float]] = rec, theta0: np.ndarray = theta0) -> None:
            f, a = kernel_distances(theta, limit)
            rec["frobenius"].append(f)
            rec["alignment"].append(a)
            rec["moved"].append(kernel_distances(theta, theta0)[0])

        record(theta0)

        class _Track(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                record(metric_ntk(self.model, x))

        meas = MeasuresCallback(ds, measures=("sigma",), initial=True)
        model.fit(
            ds.X_train,
            ds.y_train,
            epochs=int(epochs),
            batch_size=int(batch_size),
            callbacks=[meas, _Track()],
            verbose=verbose,
        )
        for key, vals in rec.items():
            out[f"train/{w}/{key}"] = np.asarray(vals)
        out[f"train/{w}/sigma_val"] = np.r_[
            cast("dict[str, float]", meas.initial)["sigma_val"], meas.history["sigma_val"]
        ]
        out[f"train/{w}/sigma_gain"] = float(
            cast("dict[str, float]", meas.initial)["sigma_val"] / meas.history["sigma_val"][-1]
        )
    return out


def plot_widthlimit(result: dict[str, Any]) -> Figure:
    """Left: distance to Theta_inf vs width at init with the fit; right: distance and sigma_val vs epoch."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    w = np.asarray(result["widths"], dtype=float)
    frob = np.asarray(result["init_frobenius"])
    for s in range(frob.shape[1]):
        a.loglog(w, frob[:, s], "o", color="C0", alpha=0.35, ms=4)
    a.loglog(w, result["init_frobenius_mean"], "o-", color="C0", label="relative Frobenius (mean)")
    a.loglog(w, result["prefactor"] * w ** result["exponent"], "k--", label=f"fit: width^{result['exponent']:.3f}")
    a.loglog(w, 1.0 - np.asarray(result["init_alignment_mean"]), "s-", color="C1", label="1 - alignment")
    a.set_xlabel("hidden width")
    a.set_ylabel("distance of the metric-NTK to Theta_inf")
    a.set_title("at initialisation")
    a.legend(fontsize=8)
    b2 = b.twinx()
    for i, tw in enumerate(result.get("train_widths", [])):
        f = result[f"train/{tw}/frobenius"]
        b.plot(np.arange(len(f)), f, "o-", color=f"C{i}", label=f"width {tw}: to Theta_inf")
        b.plot(np.arange(len(f)), result[f"train/{tw}/moved"], ":", color=f"C{i}", label=f"width {tw}: to epoch 0")
        b2.semilogy(np.arange(len(f)), result[f"train/{tw}/sigma_val"], "x--", color=f"C{i}", alpha=0.6)
    b.set_xlabel("epoch")
    b.set_ylabel("relative Frobenius distance")
    b2.set_ylabel("sigma_val (x, dashed)")
    b.set_title("during training")
    b.legend(fontsize=7)
    fig.tight_layout()
    return fig
