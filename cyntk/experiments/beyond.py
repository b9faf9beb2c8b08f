"""Beyond the paper: the cubic torus (exact answer known) and kernel flows without clustering.

* :func:`run_torus` -- on the Fermat cubic torus the Ricci-flat metric is known
  in closed form, ``g_exact = kappa |Omega|^2`` (n = 1: the 1 x 1 metric *is*
  its determinant), so the error of any metric is the pointwise relative error
  ``|g - g_exact| / g_exact = |1 - eta|`` with ``eta = det g / (kappa
  |Omega|^2)``, i.e. the per-point sigma loss. We measure it on the same
  chart-fixed test points for the Fubini--Study metric, a multiplicative network
  trained with cymetric's losses (error per epoch), and the frozen-kernel flows
  (Gaussian-FS, Delta, infinite-width ReLU NTK; error per flow step on train
  and test points).
* :func:`run_noclustering` -- the paper clustered its points (clusters of
  ~1e3) because a 9 x 9 x N x N kernel did not fit, and extrapolated from
  there. :class:`~cyntk.flows.kernel_model.KernelModel` computes the kernel
  products in tiles, so we flow 1e3 ... 1e5 quintic points exactly, without
  clustering, and compare with the paper's per-cluster flows at the same N.

Hyperparameters are never tuned on the points they are evaluated on: each
kernel's step size is chosen on a fresh *tuning* point set of the same size
(best train loss after the same number of steps over a log grid), then the
flow is run on new train points and evaluated on independent test points.
For the no-clustering study the Gaussian width scales with the mean
nearest-neighbour FS distance mu(N) of the train points (``sigma =
sigma_over_nn * mu(N)``), so a kernel row has O(1) effective neighbours at every
N and one step size (tuned at the smallest N) serves all N.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from cyntk.experiments._flow_fit import fit_flow
from cyntk.geometry import fermat_cubic, fermat_quintic, fs_nearest, make_dataset, to_complex, to_real

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cyntk.experiments.runner import ResultStore

__all__ = [
    "TORUS_KERNELS",
    "TORUS_LR_GRIDS",
    "kernel_row_mass",
    "run_torus",
    "plot_torus",
    "run_noclustering",
    "plot_noclustering",
]

#: Kernels of the torus study and their fixed (non-step-size) parameters.
TORUS_KERNELS = {
    "gaussian": {"sigma_over_nn": 0.5},
    "delta": {},
    "relu": {"W_std": 1.0, "b_std": 1.0, "depth": 1},
}

#: Step-size grids of the torus kernels (the ReLU NTK's entries are O(|x|^2), and the
#: summed update of eq. 3.5 grows with the number of points it couples).
TORUS_LR_GRIDS = {
    "gaussian": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "delta": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "relu": (1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4),
}


def _relative_error(g, omega_sq, kappa):
    """Pointwise ``|1 - det g / (kappa |Omega|^2)|`` (P,) (float64)."""
    det = np.real(np.linalg.det(np.asarray(g, dtype=np.complex128)))
    return np.abs(1.0 - det / (kappa * np.asarray(omega_sq, dtype=np.float64)))


def _predict(model, x, chunk=8192):
    """``model(x)`` in chunks, as a NumPy array (no Keras predict loop: no retracing per model)."""
    return np.concatenate([np.asarray(model(x[s : s + chunk], training=False)) for s in range(0, len(x), chunk)])


def _kernel(name, params, mu):
    from cyntk.experiments.kernel_flows import make_kernel

    if name == "gaussian":
        return make_kernel("gaussian", sigma=float(params.get("sigma", params["sigma_over_nn"] * mu)))
    return make_kernel(name, **{k: v for k, v in params.items() if k != "sigma_over_nn"})


def _flow(
    name,
    params,
    M,
    x_tr,
    kappa,
    lr,
    steps,
    decay,
    *,
    x_eval=(),
    clusters=None,
    cluster_batch_size=10_000,
    seed=0,
    track=False,
    strategy=None,
):
    """One KernelModel flow; returns (model, per-step train losses, per-step eval errors, failed).

    ``strategy``: a ``tf.distribute`` strategy whose replicas share every
    kernel product (the model is built in its scope), or None.
    """
    import contextlib

    import keras

    from cyntk.flows.kernel_model import KernelModel

    mu = float(fs_nearest(to_complex(x_tr))[0].mean())
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = KernelModel(
            _kernel(name, params, mu),
            x_tr,
            M,
            kappa=kappa,
            on_non_positive="stop",
            clusters=clusters,
            cluster_batch_size=cluster_batch_size,
            seed=seed,
        )
        sched = keras.optimizers.schedules.ExponentialDecay(float(lr), 1, float(decay))
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=sched))
    y_tr = KernelModel.targets(M, x_tr)
    errs = {i: [] for i in range(len(x_eval))}

    class Track(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for i, (xe, ye) in enumerate(x_eval):
                errs[i].append(float(np.mean(_relative_error(_predict(self.model, xe), ye[:, 1], kappa))))

    hist = keras.callbacks.History()
    t0 = time.perf_counter()
    done, _ = fit_flow(model, x_tr, y_tr, steps, callbacks=[hist] + ([Track()] if track and x_eval else []))
    failed = 0 if done >= int(steps) else done + 1  # "stop" ends fit at the first invalid step
    return {
        "model": model,
        "losses": np.asarray(hist.history.get("loss", []), dtype=float),
        "errors": errs,
        "failed_at_step": failed,
        "mu": mu,
        "fit_seconds": time.perf_counter() - t0,
    }


def kernel_row_mass(
    kernel: Callable[[np.ndarray, np.ndarray], ArrayLike], x: np.ndarray, n_rows: int = 256, seed: int = 0
) -> float:
    """Mean row sum ``mean_a sum_b Theta(x_a, x_b)`` over ``n_rows`` random rows.

    For a positive kernel the row sum bounds its largest eigenvalue (Gershgorin),
    which sets the largest stable Euler step of eq. 3.5; dividing the step by it
    makes one step size serve every N.
    """
    idx = np.random.default_rng(seed).choice(len(x), size=min(int(n_rows), len(x)), replace=False)
    return float(np.mean(np.sum(np.asarray(kernel(x[idx], x)), axis=1)))


def _tune_lr(name, params, M, chart, n, kappa, steps, decay, grid, rng):
    """Best step size on a fresh tuning set: lowest final train loss over ``grid`` (finite runs)."""
    from cyntk.flows.kernel_model import KernelModel

    x = to_real(M.sample_points(n, seed=rng, chart=chart))
    y = KernelModel.targets(M, x)
    scores = []
    for lr in grid:
        r = _flow(name, params, M, x, kappa, lr, steps, decay)
        final = float(r["model"].evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["loss"])
        scores.append(final if (r["failed_at_step"] == 0 and np.isfinite(final)) else np.inf)
    scores = np.asarray(scores)
    if not np.isfinite(scores).any():
        raise FloatingPointError(
            f"every step size of the grid {list(grid)} broke the {name} flow "
            "(non-positive metric); widen the grid toward smaller steps."
        )
    return float(grid[int(np.argmin(scores))]), scores


# ------------------------------------------------------------------------------- torus
def _torus_network(ds, hidden, activation, epochs, learning_rate, seed, callbacks, verbose):
    """Multiplicative model with projective input features, sigma + transition losses, cosine-decayed Adam.

    On a curve every metric is Kähler (the Kähler loss vanishes identically) and
    the volume term is redundant with sigma, so only sigma and transition are
    trained; ProjectiveFeatures makes the correction a function on P^2.
    """
    import keras

    from cyntk.models import MultiplicativeModel, ProjectiveFeatures

    keras.utils.set_random_seed(int(seed))
    N = ds.manifold.ncoords
    net = keras.Sequential(
        [keras.Input((2 * N,)), ProjectiveFeatures()]
        + [keras.layers.Dense(int(h), activation=activation) for h in hidden]
        + [keras.layers.Dense(1, use_bias=False)]
    )
    model = MultiplicativeModel(net, ds, kaehler=0.0, volk=0.0)
    batch = 64
    steps = max(1, epochs * int(np.ceil(ds.n_train / batch)))
    model.compile(
        keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(float(learning_rate), steps, alpha=0.01))
    )
    model.fit(ds.X_train, ds.y_train, batch_size=batch, epochs=epochs, callbacks=callbacks, verbose=verbose)
    return model


def run_torus(
    *,
    n_points: int = 20_000,
    epochs: int = 20,
    hidden: Sequence[int] = (64, 64, 64),
    activation: str = "gelu",
    learning_rate: float = 1e-2,
    n_flow: int = 1000,
    n_test: int = 500,
    steps: int = 50,
    decay_rate: float = 0.9,
    lr_grid: Sequence[float] | None = None,
    kernels: Iterable[str] = ("gaussian", "delta", "relu"),
    chart: Sequence[int] = (0, 1),
    seed: int = 0,
    verbose: int = 0,
    log: Callable[[str], object] | None = print,
) -> dict[str, Any]:
    """Network and kernel flows on the cubic torus against the exact metric ``kappa |Omega|^2``.

    Args:
        n_points: points of the network's dataset (90 % train, 10 % val).
        epochs, hidden, activation, learning_rate: the multiplicative
            network (ProjectiveFeatures input, Adam with cosine decay from
            ``learning_rate``, batch 64, sigma and transition losses: on a curve
            the Kähler loss vanishes and volk duplicates sigma).
        n_flow, n_test: kernel-flow train points and test points (one chart).
        steps: full-batch Euler steps (eq. 3.5) of each kernel flow, step
            size ``lr * decay_rate**s``.
        lr_grid: step sizes tried on a fresh tuning set per kernel (default
            :data:`TORUS_LR_GRIDS`; a sequence applies to every kernel).
        kernels: any of :data:`TORUS_KERNELS`.
        chart: the fixed chart (patch, eliminated coordinate).
        seed: base seed.

    Returns:
        dict with ``kappa``; ``fs/test_error`` (mean relative error of FS on
        the test points); ``network/val_error`` (E+1,) per epoch (0 = init),
        ``network/test_error``, ``network/test_error_max``; per kernel
        ``<k>/train_error`` and ``<k>/test_error`` (steps+1,) per step,
        ``<k>/learning_rate``, ``<k>/lr_scores`` and ``<k>/failed_at_step``.
        Errors are means of ``|g - g_exact| / g_exact``.
    """
    from cyntk.flows.kernel_model import KernelModel
    from cyntk.models import FSModel

    log = log or (lambda *a: None)
    M = fermat_cubic()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    ds = make_dataset(M, int(n_points), seed=seed)
    kappa = float(ds.kappa)
    z_te = M.sample_points(int(n_test), seed=rng, chart=chart)
    x_te = to_real(z_te)
    y_te = KernelModel.targets(M, x_te)
    out = {
        "kappa": kappa,
        "n_points": int(n_points),
        "epochs": int(epochs),
        "n_flow": int(n_flow),
        "n_test": int(n_test),
        "steps": int(steps),
        "kernels": list(kernels),
    }
    out["fs/test_error"] = float(np.mean(_relative_error(_predict(FSModel(ds), x_te), y_te[:, 1], kappa)))

    # network: error on the validation set per epoch, and on the kernel test points at the end
    import keras

    val_err = []

    class ValError(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.on_epoch_end(-1)

        def on_epoch_end(self, epoch, logs=None):
            g = _predict(self.model, ds.X_val)
            val_err.append(float(np.mean(_relative_error(g, ds.omega_sq_val, kappa))))

    log(f"torus: multiplicative network {hidden} {activation}, {epochs} epochs on {n_points} points")
    model = _torus_network(ds, hidden, activation, int(epochs), learning_rate, seed, [ValError()], verbose)
    e_te = _relative_error(_predict(model, x_te), y_te[:, 1], kappa)
    out.update(
        {
            "network/val_error": np.asarray(val_err),
            "network/test_error": float(e_te.mean()),
            "network/test_error_max": float(e_te.max()),
        }
    )

    for k in kernels:
        if k not in TORUS_KERNELS:
            raise ValueError(f"`kernels` entries must be in {sorted(TORUS_KERNELS)}; received {k!r}.")
        params = TORUS_KERNELS[k]
        grid = TORUS_LR_GRIDS[k] if lr_grid is None else lr_grid
        lr, scores = _tune_lr(k, params, M, chart, n_flow, kappa, steps, decay_rate, grid, rng)
        log(f"torus: {k} kernel flow, dt = {lr:g} (tuned on fresh points)")
        x_tr = to_real(M.sample_points(int(n_flow), seed=rng, chart=chart))
        y_tr = KernelModel.targets(M, x_tr)
        r = _flow(k, params, M, x_tr, kappa, lr, steps, decay_rate, x_eval=[(x_tr, y_tr), (x_te, y_te)], track=True)
        km, errs, failed, mu = r["model"], r["errors"], r["failed_at_step"], r["mu"]
        init = [
            float(np.mean(_relative_error(_predict(km.base_model, xe), ye[:, 1], kappa)))
            for xe, ye in [(x_tr, y_tr), (x_te, y_te)]
        ]
        out.update(
            {
                f"{k}/train_error": np.r_[init[0], errs[0]],
                f"{k}/test_error": np.r_[init[1], errs[1]],
                f"{k}/learning_rate": lr,
                f"{k}/lr_scores": scores,
                f"{k}/failed_at_step": failed,
                f"{k}/nn_distance": mu,
            }
        )
    out["wall_s"] = time.perf_counter() - t0
    return out


def plot_torus(result: dict[str, Any]) -> Figure:
    """Relative error to the exact torus metric: network per epoch, kernel flows per step."""
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4))
    ve = np.asarray(result["network/val_error"])
    a0.semilogy(np.arange(len(ve)), ve, "o-", label="multiplicative network (val)")
    a0.axhline(result["fs/test_error"], color="k", ls=":", label="Fubini-Study")
    a0.set_xlabel("epoch")
    a0.set_ylabel(r"mean $|g-g_{exact}|/g_{exact}$")
    a0.set_title("cubic torus: network")
    a0.legend()
    for i, k in enumerate(result["kernels"]):
        c = f"C{i + 1}"
        tr, te = np.asarray(result[f"{k}/train_error"]), np.asarray(result[f"{k}/test_error"])
        a1.semilogy(np.arange(len(tr)), tr, "-", color=c, label=f"{k} train")
        a1.semilogy(np.arange(len(te)), te, "--", color=c, label=f"{k} test")
    a1.axhline(result["network/test_error"], color="C0", ls="-.", label="network (test points)")
    a1.axhline(result["fs/test_error"], color="k", ls=":", label="Fubini-Study")
    a1.set_xlabel("flow step")
    a1.set_title("cubic torus: frozen-kernel flows")
    a1.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- no clustering
def _train_points(M, seed, i, n, chart):
    """Train points of size index i: a child stream of ``SeedSequence(seed)``, independent of the
    test and tuning points drawn from ``default_rng(seed)`` (``default_rng([seed, 0])`` is *the same*
    stream as ``default_rng(seed)``, which once made the smallest train set equal the test set)."""
    child = np.random.SeedSequence(int(seed)).spawn(int(i) + 1)[int(i)]
    return to_real(M.sample_points(int(n), seed=np.random.default_rng(child), chart=chart))


_NOCL_FIELDS = ("train_gain", "test_gain", "seconds_per_step", "failed_at_step", "learning_rate")


def run_noclustering(
    *,
    sizes: Sequence[int] = (1000, 3000, 10_000),
    kernels: Iterable[str] = ("gaussian", "delta"),
    n_test: int = 500,
    steps: int = 50,
    decay_rate: float = 0.85,
    sigma_over_nn: float = 0.5,
    cluster_size: int = 1000,
    cluster_batch_size: int = 10_000,
    lr_grid: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    chart: Sequence[int] = (0, 1),
    seed: int = 0,
    store: ResultStore | None = None,
    log: Callable[[str], object] | None = print,
    strategy: Any = None,
) -> dict[str, Any]:
    """Exact kernel flows on 1e3 ... 1e5 quintic points, with and without the paper's clustering.

    The flows run on KernelModel's TensorFlow engine (XLA tiles on the visible
    device); with ``strategy`` (a ``tf.distribute`` strategy: several GPUs,
    logical CPU devices, or workers configured by ``TF_CONFIG``) every kernel
    product is split across its replicas.

    Args:
        sizes: numbers of train points N.
        kernels: 'gaussian' (``sigma = sigma_over_nn * mu(N)``) and/or 'delta'.
        n_test: independent test points (same chart, the same set for every N).
        steps, decay_rate: Euler steps of eq. 3.5 with step ``lr * decay**s``.
        cluster_size: the clustered flows use ``max(1, N // cluster_size)``
            FS clusters (batched agglomerative clustering, paper section 3.1),
            each flowed separately; skipped when that is a single cluster.
        cluster_batch_size: mini-batch size of the clustering (paper: 1e4).
        lr_grid: step sizes tried on a fresh tuning set at the smallest N; at
            every N the step is divided by the kernel's mean row sum relative to
            the smallest N (:func:`kernel_row_mass`, a Gershgorin bound of the
            largest kernel eigenvalue), so the flow is equally stable at every N.
        store: optional ResultStore: per-(kernel, N, clustering) results are
            saved as they finish, so an interrupted run resumes.
        strategy: optional ``tf.distribute`` strategy for the flows (see above).

    Returns:
        dict with ``sizes`` and, per kernel and mode ``exact``/``clustered``,
        ``<k>/<mode>/train_gain``, ``test_gain``, ``seconds_per_step`` (of
        ``fit``), ``failed_at_step`` (0: all steps valid) and ``learning_rate``
        (len(sizes), NaN where not run), ``<k>/learning_rate`` (tuned at the
        smallest N) and ``<k>/nn_distance`` (mu(N)).
        Gains are before/after ratios of the mean per-point sigma loss.
    """
    from cyntk.flows.kernel_model import KernelModel

    log = log or (lambda *a: None)
    M = fermat_quintic()
    sizes = [int(s) for s in sizes]
    rng = np.random.default_rng(seed)
    ds_kappa = make_dataset(M, 20_000, seed=seed + 1).kappa
    kappa = float(ds_kappa)
    x_te = to_real(M.sample_points(int(n_test), seed=rng, chart=chart))
    y_te = KernelModel.targets(M, x_te)
    out = {
        "sizes": np.asarray(sizes),
        "kernels": list(kernels),
        "steps": int(steps),
        "kappa": kappa,
        "cluster_size": int(cluster_size),
    }
    for k in kernels:
        params = {"sigma_over_nn": sigma_over_nn} if k == "gaussian" else {}
        key = f"{k}_lr_{seed}"
        cached = None if store is None else store.get(key)
        if cached is None:
            lr, scores = _tune_lr(k, params, M, chart, sizes[0], kappa, steps, decay_rate, lr_grid, rng)
            x0 = _train_points(M, seed, 0, sizes[0], chart)
            mu0 = float(fs_nearest(to_complex(x0))[0].mean())
            cached = {"lr": lr, "scores": scores, "mass0": kernel_row_mass(_kernel(k, params, mu0), x0, seed=seed)}
            if store is not None:
                store.put(key, cached)
        lr, mass0 = float(cached["lr"]), float(cached["mass0"])
        out[f"{k}/learning_rate"] = lr
        res = {m: {q: np.full(len(sizes), np.nan) for q in _NOCL_FIELDS} for m in ("exact", "clustered")}
        mus = np.full(len(sizes), np.nan)
        for i, n in enumerate(sizes):
            for mode in ("exact", "clustered"):
                n_clusters = max(1, n // int(cluster_size))
                if mode == "clustered" and n_clusters == 1:
                    continue
                key = f"{k}_{mode}_{n}_{seed}"
                cached = None if store is None else store.get(key)
                if cached is None:
                    log(
                        f"no-clustering: {k} {mode} N={n}"
                        + (f" ({n_clusters} clusters)" if mode == "clustered" else "")
                    )
                    x_tr = _train_points(M, seed, i, n, chart)
                    y_tr = KernelModel.targets(M, x_tr)
                    mu = float(fs_nearest(to_complex(x_tr))[0].mean())
                    mass = kernel_row_mass(_kernel(k, params, mu), x_tr, seed=seed)
                    r = _flow(
                        k,
                        params,
                        M,
                        x_tr,
                        kappa,
                        lr * mass0 / mass,
                        steps,
                        decay_rate,
                        clusters=n_clusters if mode == "clustered" else None,
                        cluster_batch_size=cluster_batch_size,
                        seed=seed,
                        strategy=strategy,
                    )
                    km, failed = r["model"], r["failed_at_step"]
                    dt = r["fit_seconds"] / max(1, len(r["losses"]))
                    base = km.base_model
                    before_tr = float(np.mean(_relative_error(_predict(base, x_tr), y_tr[:, 1], kappa)))
                    after_tr = float(np.mean(_relative_error(_predict(km, x_tr), y_tr[:, 1], kappa)))
                    before_te = float(np.mean(_relative_error(_predict(base, x_te), y_te[:, 1], kappa)))
                    after_te = float(np.mean(_relative_error(_predict(km, x_te), y_te[:, 1], kappa)))
                    cached = {
                        "train_gain": before_tr / after_tr,
                        "test_gain": before_te / after_te,
                        "seconds_per_step": dt,
                        "mu": mu,
                        "failed_at_step": failed,
                        "learning_rate": lr * mass0 / mass,
                    }
                    if store is not None:
                        store.put(key, cached)
                for q in _NOCL_FIELDS:
                    res[mode][q][i] = float(cached[q])
                mus[i] = float(cached["mu"])
        for mode in res:
            for q, v in res[mode].items():
                out[f"{k}/{mode}/{q}"] = v
        out[f"{k}/nn_distance"] = mus
    return out


def plot_noclustering(result: dict[str, Any]) -> Figure:
    """Train and test gains vs N, exact (no clustering) vs per-cluster flows."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    n = np.asarray(result["sizes"], dtype=float)
    for i, k in enumerate(result["kernels"]):
        for mode, ls in (("exact", "-o"), ("clustered", "--s")):
            for ax, q in zip(axes, ("train_gain", "test_gain")):
                v = np.asarray(result[f"{k}/{mode}/{q}"], dtype=float)
                if np.isfinite(v).any():
                    ax.loglog(n, v, ls, color=f"C{i}", label=f"{k} {mode}")
    axes[0].set_title("train gain (50 steps)")
    axes[1].set_title("test gain")
    for ax in axes:
        ax.set_xlabel("N train points")
        ax.axhline(1.0, color="k", lw=0.5)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("sigma loss before / after")
    fig.tight_layout()
    return fig
