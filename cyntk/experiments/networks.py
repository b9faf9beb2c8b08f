"""Network experiments: the finite-network baseline, Figure 4, and the after-kernel.

* :func:`run_baseline` -- the paper's finite-network comparison: a 3 x 64 ReLU
  multiplicative model trained ~50 epochs on 1e5 quintic points gains a factor
  10-100 in the validation sigma loss (paper section 3.2).
* :func:`run_fig4` -- Figure 4: the multiplicative model (3 x 128 gelu, 50
  epochs) with :class:`~cyntk.callbacks.MetricNTKCallback` on 10 + 10 fixed
  points: pooled spectra at epoch 0 and at the end, Wasserstein distance W1 to
  epoch 0 vs epoch; plus a lazy-regime control (one very wide hidden layer,
  plain SGD with a tiny learning rate) whose kernel barely moves and whose sigma
  measure barely improves.
* :func:`run_afterkernel` -- beyond the paper: freeze the empirical metric-NTK
  of the network at epochs 0, 5 and 50 ("after-kernels") and run the frozen
  kernel flow (:class:`~cyntk.flows.kernel_model.KernelModel`, starting from
  the network's metric at that checkpoint) on chart-fixed points: does a kernel
  learned by the network generalise when frozen?

Gains are ratios ``before / after`` of the mean per-point sigma loss
``|1 - det g/(kappa |Omega|^2)|`` on validation/test points, and of cymetric's
sigma measure (``sigma_val``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike

from cyntk.experiments._flow_fit import fit_flow
from cyntk.geometry import fermat_quintic, make_dataset, to_real

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure

    from cyntk.geometry import CYDataset
    from cyntk.models import MeasuresCallback, MultiplicativeModel

__all__ = [
    "make_network",
    "train_multiplicative",
    "sigma_loss_of",
    "run_baseline",
    "run_fig4",
    "plot_fig4",
    "run_afterkernel",
    "plot_afterkernel",
]


def make_network(
    n_in: int, n_out: int, hidden: Sequence[int] = (64, 64, 64), activation: str = "gelu", seed: int = 0
) -> keras.Sequential:
    """The cymetric notebook's network: Dense hidden layers and a bias-free linear output."""
    import keras

    keras.utils.set_random_seed(int(seed))
    layers = [keras.Input((n_in,))]
    layers += [keras.layers.Dense(int(h), activation=activation) for h in hidden]
    layers += [keras.layers.Dense(n_out, use_bias=False)]
    return keras.Sequential(layers)


def sigma_loss_of(g: ArrayLike, omega_sq: ArrayLike, kappa: float) -> float:
    """Mean per-point sigma loss ``|1 - det g/(kappa |Omega|^2)|`` (NumPy, float64)."""
    det = np.real(np.linalg.det(np.asarray(g, dtype=np.complex128)))
    return float(np.mean(np.abs(1.0 - det / (kappa * np.asarray(omega_sq)))))


def train_multiplicative(
    ds: CYDataset,
    *,
    hidden: Sequence[int] = (64, 64, 64),
    activation: str = "gelu",
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    optimizer: Literal["adam", "sgd"] = "adam",
    seed: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
    measure_every: int = 1,
    loss_weights: Mapping[str, float] | None = None,
) -> tuple[MultiplicativeModel, keras.callbacks.History, MeasuresCallback]:
    """Train cyntk's multiplicative model with cymetric's losses on a dataset.

    The default loss weights are those of cymetric's ``train_model`` in its
    batch-64 pass (conventions §9): sigma, Kähler and transition at
    1, volk off. cymetric adds one pass per epoch with a single large batch in
    which only volk (and sigma) is trained -- 2 of ~1409 steps per epoch -- so
    that the Monte-Carlo volume integral is reasonable; we omit it, because
    volk evaluated on 64-point batches is too noisy to train with (it slows the
    sigma loss by an order of magnitude, see cyntk.models).

    Args:
        loss_weights: dict of loss weights (default ``{"volk": 0.0}`` on top of
            cymetric's ``sigma = kaehler = transition = 1``).

    Returns:
        ``(model, keras_history, measures_callback)``; the measures callback
        holds ``sigma_val`` per epoch and ``initial`` (before training).
    """
    import keras

    from cyntk.models import MeasuresCallback, MultiplicativeModel

    n = ds.manifold.nfold
    net = make_network(2 * ds.manifold.ncoords, n * n, hidden, activation, seed)
    model = MultiplicativeModel(net, ds, **({"volk": 0.0} if loss_weights is None else dict(loss_weights)))
    opt = keras.optimizers.Adam(learning_rate) if optimizer == "adam" else keras.optimizers.SGD(learning_rate)
    model.compile(optimizer=opt)
    meas = MeasuresCallback(ds, measures=("sigma",), initial=True, every=measure_every)
    hist = model.fit(
        ds.X_train, ds.y_train, epochs=epochs, batch_size=batch_size, callbacks=[meas, *callbacks], verbose=verbose
    )
    return model, hist, meas


def _fs_sigma(ds: CYDataset) -> tuple[float, float]:
    from cyntk.models import FSModel

    fs = FSModel(ds)
    return fs.measures(ds.X_val, ds.y_val, which=("sigma",))["sigma"], sigma_loss_of(
        fs.predict(ds.X_val, verbose=0), ds.omega_sq_val, ds.kappa
    )


def run_baseline(
    *,
    n_points: int = 100_000,
    epochs: int = 50,
    hidden: Sequence[int] = (64, 64, 64),
    activation: str = "relu",
    batch_size: int = 64,
    seed: int = 0,
    verbose: int = 0,
) -> dict[str, Any]:
    """Finite-network baseline (paper: gain 10-100 in the validation sigma loss).

    Returns:
        dict with ``sigma_val`` per epoch (E,), ``sigma_val_initial`` (network
        at initialisation), ``sigma_val_fs`` (Fubini-Study), the validation
        sigma *loss* before/after, and the gains relative to the
        initialisation.
    """
    ds = make_dataset(fermat_quintic(), n_points, seed=seed)
    model, hist, meas = train_multiplicative(
        ds, hidden=hidden, activation=activation, epochs=epochs, batch_size=batch_size, seed=seed, verbose=verbose
    )
    sig = np.asarray(meas.history["sigma_val"])
    fs_measure, fs_loss = _fs_sigma(ds)
    loss_after = sigma_loss_of(model.predict(ds.X_val, verbose=0), ds.omega_sq_val, ds.kappa)
    init = cast("dict[str, float]", meas.initial)["sigma_val"]
    return {
        "n_points": n_points,
        "epochs": epochs,
        "sigma_val": sig,
        "sigma_val_initial": init,
        "sigma_val_fs": fs_measure,
        "sigma_loss_val_fs": fs_loss,
        "sigma_loss_val_after": loss_after,
        "gain_sigma_val": init / sig[-1],
        "gain_sigma_val_vs_fs": fs_measure / sig[-1],
        "gain_sigma_loss_val_vs_fs": fs_loss / loss_after,
        "paper_gain": "10-100",
        "train_loss": np.asarray(hist.history["loss"]),
    }


def run_fig4(
    *,
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
    log_dir: str | None = None,
    verbose: int = 0,
) -> dict[str, Any]:
    """Figure 4 with a lazy-regime control.

    Returns:
        dict with ``epochs`` (R,), ``wasserstein`` (R,) (W1 of the pooled
        train-test spectrum to epoch 0), ``frobenius`` (R,), ``spectrum_first``,
        ``spectrum_last``, ``sigma_val`` (E,), and the same with the prefix
        ``lazy_`` for the control.
    """
    from cyntk.callbacks import MetricNTKCallback

    ds = make_dataset(fermat_quintic(), n_points, seed=seed)
    out: dict[str, Any] = {"n_points": n_points, "epochs_trained": epochs, "hidden": list(hidden), "n_track": n_track}
    runs: list[tuple[str, dict[str, Any]]] = [
        ("", dict(hidden=hidden, activation=activation, learning_rate=1e-3, optimizer="adam"))
    ]
    if lazy:
        runs.append(
            (
                "lazy_",
                dict(hidden=(lazy_width,), activation=activation, learning_rate=lazy_learning_rate, optimizer="sgd"),
            )
        )
    for prefix, kw in runs:
        sub = None if log_dir is None else f"{log_dir}/{prefix or 'paper_'}run"
        cb = MetricNTKCallback(n_track, n_track, data=ds, seed=seed, log_dir=sub)
        model, hist, meas = train_multiplicative(
            ds, epochs=epochs, batch_size=batch_size, seed=seed, callbacks=[cb], verbose=verbose, **kw
        )
        h = cb.history
        out[prefix + "epochs"] = np.asarray(h.epochs)
        out[prefix + "wasserstein"] = h.scalar("ntk_wasserstein_train_test")
        out[prefix + "frobenius"] = h.scalar("ntk_frobenius_train_test")
        out[prefix + "spectrum_first"] = h.spectrum("pooled_train_test", h.epochs[0])
        out[prefix + "spectrum_last"] = h.spectrum("pooled_train_test", h.epochs[-1])
        out[prefix + "sigma_val"] = np.asarray(meas.history["sigma_val"])
        out[prefix + "sigma_val_initial"] = cast("dict[str, float]", meas.initial)["sigma_val"]
        out[prefix + "w1_final"] = float(out[prefix + "wasserstein"][-1])
        out[prefix + "sigma_gain"] = float(
            cast("dict[str, float]", meas.initial)["sigma_val"] / meas.history["sigma_val"][-1]
        )
    return out


def plot_fig4(result: dict[str, Any]) -> Figure:
    """Left: pooled spectrum histograms (log10 |lambda|) at epoch 0 and last; right: W1 vs epoch."""
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    for key, label, color in (("spectrum_first", "epoch 0", "C0"), ("spectrum_last", "last epoch", "C1")):
        v = np.log10(np.abs(result[key]) + 1e-300)
        a.hist(v, bins=40, alpha=0.55, color=color, label=label)
    a.set_xlabel("log10 |eigenvalue| (pooled per-(I,J) blocks)")
    a.set_ylabel("count")
    a.set_title(f"Figure 4 left: metric-NTK spectrum ({result['n_track']}+{result['n_track']} points)")
    a.legend()
    b.plot(result["epochs"], result["wasserstein"], "o-", label=f"{'x'.join(map(str, result['hidden']))} Adam")
    if "lazy_epochs" in result:
        b.plot(result["lazy_epochs"], result["lazy_wasserstein"], "s-", label="lazy control (wide, SGD tiny lr)")
    b.set_xlabel("epoch")
    b.set_ylabel("W1(spectrum_t, spectrum_0)")
    b.set_yscale("symlog", linthresh=1e-6)
    b.set_title("Figure 4 right: Wasserstein distance to epoch 0")
    b.legend(fontsize=8)
    e = np.arange(1, len(result["sigma_val"]) + 1)
    c.semilogy(np.r_[0, e], np.r_[result["sigma_val_initial"], result["sigma_val"]], "o-", label="feature learning")
    if "lazy_sigma_val" in result:
        c.semilogy(
            np.r_[0, e], np.r_[result["lazy_sigma_val_initial"], result["lazy_sigma_val"]], "s-", label="lazy control"
        )
    c.set_xlabel("epoch")
    c.set_ylabel("sigma_val")
    c.set_title("validation sigma measure")
    c.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_afterkernel(
    *,
    n_points: int = 20_000,
    epochs: int = 50,
    checkpoints: Iterable[int] = (0, 5, 50),
    hidden: Sequence[int] = (64, 64, 64),
    activation: str = "gelu",
    n_flow_train: int = 300,
    n_flow_test: int = 300,
    chart: Sequence[int] = (0, 1),
    steps: int = 50,
    learning_rates: Sequence[float] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    batch_size: int = 64,
    seed: int = 0,
    form: Literal["primal", "dual"] = "primal",
    verbose: int = 0,
) -> dict[str, Any]:
    """Empirical NTKs of a training network, frozen at checkpoints, used as flow kernels.

    The network (multiplicative model) trains on ``n_points`` points; at each
    checkpoint epoch its empirical metric-NTK is frozen
    (:class:`~cyntk.kernels.EmpiricalNTKKernel`). A KernelModel then flows
    ``steps`` Euler steps from the network's metric at that checkpoint on
    ``n_flow_train`` chart-fixed points; the best step size of
    ``learning_rates`` (by train gain, no test data used) is kept, and train
    and test gains are reported. The grid spans several decades because the
    trained network's NTK is orders of magnitude larger than at initialisation
    (a step that breaks positive-definiteness stops that flow at step 0: gain 1).
    ``form="primal"`` (default) runs each flow as gradient descent on the
    network linearised at the checkpoint, O(N) per step and equal to the dual
    kernel flow (tested); ``"dual"`` sums the kernel over the train points.

    Returns:
        dict with ``checkpoints`` (C,), ``train_gain`` (C,), ``test_gain`` (C,),
        ``learning_rate`` (C,), ``network_sigma_val`` at each checkpoint.
    """
    import keras

    from cyntk.flows.kernel_model import KernelModel
    from cyntk.kernels import EmpiricalNTKKernel

    M = fermat_quintic()
    ds = make_dataset(M, n_points, seed=seed)
    rng = np.random.default_rng(seed + 17)
    z = M.sample_points(n_flow_train + n_flow_test, seed=rng, chart=chart)
    x_tr, x_te = to_real(z[:n_flow_train]), to_real(z[n_flow_train:])
    y_tr, y_te = KernelModel.targets(M, x_tr), KernelModel.targets(M, x_te)
    checkpoints = sorted(int(c) for c in checkpoints)
    kernels = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if epoch in checkpoints and epoch not in kernels:
                kernels[epoch] = EmpiricalNTKKernel(self.model)

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            last = self.params["epochs"]
            if last in checkpoints and last not in kernels:
                kernels[last] = EmpiricalNTKKernel(self.model)

    model, hist, meas = train_multiplicative(
        ds,
        hidden=hidden,
        activation=activation,
        epochs=max(checkpoints),
        batch_size=batch_size,
        seed=seed,
        callbacks=[Snapshot()],
        verbose=verbose,
    )
    sig = [cast("dict[str, float]", meas.initial)["sigma_val"]] + list(meas.history["sigma_val"])
    train_gain, test_gain, lrs = [], [], []
    for c in checkpoints:
        best = None
        for lr in learning_rates:
            km = KernelModel(kernels[c], x_tr, M, kappa=ds.kappa, on_non_positive="stop", form=form)
            km.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
            ev = lambda x, y: km.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["loss"]
            b_tr, b_te = ev(x_tr, y_tr), ev(x_te, y_te)
            fit_flow(km, x_tr, y_tr, steps)
            g_tr, g_te = b_tr / ev(x_tr, y_tr), b_te / ev(x_te, y_te)
            if best is None or g_tr > best[0]:
                best = (g_tr, g_te, lr)
        best = cast("tuple[float, float, float]", best)  # learning_rates is not empty
        train_gain.append(best[0])
        test_gain.append(best[1])
        lrs.append(best[2])
    return {
        "checkpoints": np.asarray(checkpoints),
        "train_gain": np.asarray(train_gain),
        "test_gain": np.asarray(test_gain),
        "learning_rate": np.asarray(lrs),
        "network_sigma_val": np.asarray([sig[c] for c in checkpoints]),
    }


def plot_afterkernel(result: dict[str, Any]) -> Figure:
    """Train/test gains of flows with after-kernels frozen at each checkpoint."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    c = result["checkpoints"]
    ax.semilogy(c, result["train_gain"], "o-", label="train points")
    ax.semilogy(c, result["test_gain"], "s-", label="test points")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xlabel("epoch at which the empirical NTK is frozen")
    ax.set_ylabel("gain of the sigma loss (frozen-kernel flow)")
    ax.set_title("After-kernels: does a learned kernel generalise when frozen?", fontsize=10)
    ax.legend()
    return fig
