"""MetricNTKCallback inside the real cymetric (../shared/cymetric): overhead and φ-model records.

1. Overhead on cymetric's notebook recipe: ``MultFSModel`` (3 x 64 gelu, Adam),
   trained with cymetric's ``train_model`` (two ``fit`` calls per epoch:
   batch 64 without volk, then batch 50000 with volk) on a dataset made by
   cymetric's ``PointGenerator``; the callback tracks 10 + 10 points with
   TensorBoard and its history file. Measured in the same process: the median
   wall time of an epoch without the callback and the time spent inside the
   callback per record (first record, which traces, reported apart).
   Target: overhead <= 2 %.
2. ``PhiFSModel`` record for 10 + 10 points: cyntk's structured potential
   path (the kernel of phi differentiated twice on each side) against a
   per-point Jacobian loop of the whole model (what one writes without cyntk:
   for every point, ``GradientTape.jacobian`` of its 9 components), and
   against cyntk's traced per-point loop (the generic fallback). Ratios in one
   process; the structured kernel equals the loop's to float32 precision.

Run:  python benchmarks/bench_cymetric.py [--points 100000] [--epochs 3]
Needs ../shared/cymetric (or CYNTK_CYMETRIC) and sympy, joblib, wolframclient.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
CYMETRIC = Path(os.environ.get("CYNTK_CYMETRIC", REPO.parent / "shared" / "cymetric"))
sys.path.insert(0, str(CYMETRIC))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cyntk.callbacks import MetricNTKCallback  # noqa: E402
from cyntk.kernels import metric_ntk  # noqa: E402


class Timed(MetricNTKCallback):
    """The callback, timing its own hooks."""

    def __init__(self, *a, **k):
        self.spent = []
        super().__init__(*a, **k)

    def _record(self, label, logs):
        t = time.perf_counter()
        super()._record(label, logs)
        self.spent.append(time.perf_counter() - t)


class EpochTimer(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_begin(self, logs=None):
        self._t = time.perf_counter()

    def on_train_end(self, logs=None):
        self.times.append(time.perf_counter() - self._t)


def network(n_out, width=64, seed=0):
    tf.keras.utils.set_random_seed(seed)
    nn = tf.keras.Sequential(
        [tf.keras.Input((10,))]
        + [tf.keras.layers.Dense(width, activation="gelu") for _ in range(3)]
        + [tf.keras.layers.Dense(n_out, use_bias=False)]
    )
    return nn


def dataset(n, out):
    from cymetric.pointgen.pointgen import PointGenerator

    pg = PointGenerator(5 * np.eye(5, dtype=np.int64), np.ones(5), np.ones(1), np.array([4]))
    kappa = pg.prepare_dataset(n, str(out), val_split=0.1)
    pg.prepare_basis(str(out), kappa=kappa)
    return kappa


def overhead(data, basis, epochs, helper, models):
    """Per-epoch wall time of train_model (both fit calls) without / with the callback."""
    epoch_times, cb_times = {}, None
    for with_cb in (False, True):
        model = models.MultFSModel(network(9), basis, alpha=[1.0] * 5)
        calls = []
        fit = model.fit

        def timed_fit(*a, _fit=fit, _calls=calls, **k):  # time each of train_model's fit calls
            t = time.perf_counter()
            out = _fit(*a, **k)
            _calls.append(time.perf_counter() - t)
            return out

        model.fit = timed_fit
        cbs = []
        if with_cb:
            tmp = tempfile.mkdtemp(prefix="cyntk-bench-")
            cb = Timed(10, 10, data=data, seed=0, log_dir=tmp, model=model)
            cbs.append(cb)
        helper.train_model(
            model,
            data,
            optimizer=tf.keras.optimizers.Adam(),
            epochs=epochs,
            batch_sizes=[64, 50000],
            verbose=0,
            callbacks=cbs,
        )
        epoch_times[with_cb] = [calls[2 * e] + calls[2 * e + 1] for e in range(epochs)]
        if with_cb:
            cb_times = cb.spent
    return epoch_times[False], cb_times, epoch_times[True]


def per_point_loop(model, x):
    """Eager per-point Jacobians of the 9 components of the whole model (no cyntk)."""
    from cyntk.kernels.recognise import output_components

    comps = output_components("metric")
    rows = []
    for xi in x:
        with tf.GradientTape(persistent=True) as tape:
            c = comps(model(tf.constant(xi[None], tf.float32), training=False))[0]
        # pfor cannot convert cymetric's pullbacks: the loop of backward passes
        jac = tape.jacobian(c, model.trainable_variables, experimental_use_pfor=False)
        rows.append(np.concatenate([np.reshape(j.numpy(), (c.shape[0], -1)) for j in jac], 1))
    J = np.stack(rows)
    return np.einsum("aip,bjp->abij", J, J)


def phi_records(data, basis, models, repeats=3):
    x = np.concatenate([data["X_train"][:10], data["X_val"][:10]])
    model = models.PhiFSModel(network(1), basis, alpha=[1.0] * 5)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = time.perf_counter()
        ref = None
        try:
            ref = per_point_loop(model, x)
            out["eager_loop"] = time.perf_counter() - t
        except Exception as err:  # noqa: BLE001 - pfor inside the eager jacobian may fail too
            out["eager_loop_error"] = f"{type(err).__name__}"
        t = time.perf_counter()
        gen = metric_ntk(model, x, implementation="generic")
        out["generic_first"] = time.perf_counter() - t
        out["generic"] = min(_time(lambda: metric_ntk(model, x, implementation="generic")) for _ in range(repeats))
        t = time.perf_counter()
        st = metric_ntk(model, x)
        out["structured_first"] = time.perf_counter() - t
        out["structured"] = min(_time(lambda: metric_ntk(model, x)) for _ in range(repeats))
    base = ref if ref is not None else gen
    out["max_rel_diff"] = float(np.max(np.abs(st - base)) / np.max(np.abs(base)))
    return out


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=100_000, help="points made by cymetric (90%% train)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args(argv)
    if not (CYMETRIC / "cymetric").is_dir():
        sys.exit(f"bench_cymetric: the real cymetric is absent at {CYMETRIC}")
    import cymetric.models.helper as helper
    import cymetric.models.models as models

    out = Path(tempfile.mkdtemp(prefix="cyntk-cymetric-"))
    t = time.perf_counter()
    kappa = dataset(args.points, out)
    print(
        f"cymetric PointGenerator (seed 2021, its constructor's): {args.points} points with weights, "
        f"|Omega|^2 and val pullbacks in {time.perf_counter() - t:.1f} s; kappa = {float(np.real(kappa)):.7f}"
    )
    data = dict(np.load(out / "dataset.npz"))
    basis = helper.prepare_basis(np.load(out / "basis.pickle", allow_pickle=True))

    res = phi_records(data, basis, models)
    print("PhiFSModel record, 10 + 10 points (seconds):")
    for k, v in res.items():
        print(f"  {k:18s} {v:.4g}" if isinstance(v, float) else f"  {k:18s} {v}")
    if "eager_loop" in res:
        print(f"  ratio eager per-point loop / structured: {res['eager_loop'] / res['structured']:.1f}x")
    print(f"  ratio traced per-point loop / structured: {res['generic'] / res['structured']:.1f}x")

    if not args.skip_overhead:
        plain, cb, with_cb = overhead(data, basis, args.epochs, helper, models)
        t_plain = statistics.median(plain[1:])  # epochs after the first (which traces)
        t_with = statistics.median(with_cb[1:])
        steady = statistics.median(cb[2:]) if len(cb) > 2 else cb[-1]
        print(f"MultFSModel + train_model, {len(data['X_train'])} train points, 10 + 10 tracked points:")
        print(
            f"  epoch (both fits) without callback: {', '.join(f'{t:.1f}' for t in plain)} s; "
            f"median after the first {t_plain:.2f} s"
        )
        print(f"  epoch with callback: {', '.join(f'{t:.1f}' for t in with_cb)} s; median {t_with:.2f} s")
        print(
            f"  callback per record: reference (at construction, traces) {cb[0]:.3f} s, first epoch "
            f"{cb[1]:.3f} s, then median {steady:.3f} s"
        )
        print(f"  overhead = record / epoch = {100 * steady / t_plain:.2f} %")


if __name__ == "__main__":
    main()
