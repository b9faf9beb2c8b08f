"""Overhead of MetricNTKCallback as a fraction of the training epoch time.

Setup of Figure 4 of arXiv:2310.19870: cymetric's multiplicative model
``g = G + G * H(nn(x))`` with a 3 x 128 gelu network (cymetric's default losses:
sigma, Kaehler, transition, volk; Adam 1e-3), trained on Fermat-quintic points
with batch 64; the callback records the empirical metric-NTK on 10 train + 10
test points after every epoch (every=1), with TensorBoard logging and the
npz/JSON history written after every record. A second configuration tracks
100 + 100 points.

What is measured, per configuration:

* ``epoch``: median wall time of a training epoch *without* the callback
  (epochs after the first, which includes tracing);
* ``callback``: median wall time spent inside the callback's hooks per tracked
  epoch (kernel, spectra, measures, TensorBoard, history file), epochs after the
  first record (which includes tracing the kernel functions; reported
  separately as ``first``);
* ``overhead = callback / epoch`` (target <= 2% for 10 + 10 points);
* for reference also the median epoch time *with* the callback (its
  difference to ``epoch`` is noisy on a shared machine, hence the direct
  measurement above).

Run:  python benchmarks/bench_callback.py [--points 100000] [--epochs 3]
          [--sizes 10 100] [--batch-size 64] [--losses all|sigma]
Fewer points for a quick run, e.g. ``--points 20000 --epochs 3``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cyntk.callbacks import MetricNTKCallback  # noqa: E402
from cyntk.geometry import fermat_quintic, make_dataset  # noqa: E402
from cyntk.models import MultiplicativeModel  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch (on_epoch_begin to on_epoch_end of this callback)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t)


class TimedMetricNTKCallback(MetricNTKCallback):
    """MetricNTKCallback that measures the wall time spent in its hooks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hook_times = []  # (label, seconds) per tracked epoch-end / start record

    def on_epoch_begin(self, epoch, logs=None):
        t = time.perf_counter()
        super().on_epoch_begin(epoch, logs)
        dt = time.perf_counter() - t
        if dt > 1e-4:
            self.hook_times.append(("begin", dt))

    def on_epoch_end(self, epoch, logs=None):
        t = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.hook_times.append(("end", time.perf_counter() - t))


def make_model(ds, losses, seed):
    keras.utils.set_random_seed(seed)
    net = keras.Sequential(
        [keras.Input((2 * ds.manifold.ncoords,))]
        + [keras.layers.Dense(128, activation="gelu") for _ in range(3)]
        + [keras.layers.Dense(9, use_bias=False)]
    )
    kw = {} if losses == "all" else dict(kaehler=0.0, transition=0.0, volk=0.0)
    model = MultiplicativeModel(net, ds, **kw)
    model.compile(keras.optimizers.Adam(1e-3))
    return model


def run(ds, args, n_track):
    """Train ``args.epochs`` epochs; returns (epoch times, callback or None)."""
    model = make_model(ds, args.losses, args.seed)
    timer = EpochTimer()
    callbacks = []
    cb = None
    if n_track:
        log_dir = tempfile.mkdtemp(prefix="bench_callback_")
        cb = TimedMetricNTKCallback(n_track, n_track, data=ds, seed=0, log_dir=log_dir)
        callbacks.append(cb)
    # the timer goes last so its epoch window encloses the NTK callback's on_epoch_end
    model.fit(
        ds.X_train, ds.y_train, epochs=args.epochs, batch_size=args.batch_size, callbacks=callbacks + [timer], verbose=0
    )
    return timer.times, cb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=100_000, help="training points per epoch")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="numbers of tracked train (= test) points")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--losses",
        choices=["all", "sigma"],
        default="all",
        help="cymetric's default loss terms, or the sigma loss only",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch includes tracing)")

    t = time.perf_counter()
    ds = make_dataset(fermat_quintic(), int(round(args.points / 0.9)), seed=args.seed, progress=False)
    print(
        f"data: {len(ds.X_train)} train points ({time.perf_counter() - t:.1f} s); batch "
        f"{args.batch_size}, {int(np.ceil(len(ds.X_train) / args.batch_size))} steps/epoch; "
        f"3x128 gelu multiplicative model, losses={args.losses}, {args.epochs} epochs"
    )

    base, _ = run(ds, args, 0)
    epoch = statistics.median(base[1:])
    print(f"without callback: epoch times {['%.2f' % x for x in base]} s -> median {epoch:.2f} s")
    rows = []
    for n in args.sizes:
        times, cb = run(ds, args, n)
        hooks = [dt for kind, dt in cb.hook_times]
        first = hooks[0]
        later = statistics.median(hooks[1:]) if len(hooks) > 1 else first
        ntk = cb.history.scalar("ntk_seconds")
        with_cb = statistics.median(times[1:])
        rows.append((n, epoch, later, first, float(np.median(ntk[1:])), with_cb))
        print(
            f"{n:>3} + {n:<3} points: callback per epoch {later * 1e3:.1f} ms (first record "
            f"{first:.2f} s incl. tracing; kernel+spectra+measures {np.median(ntk[1:]) * 1e3:.1f} ms), "
            f"overhead {100 * later / epoch:.2f}% of the epoch; epoch with callback {with_cb:.2f} s"
        )
    print("\nsummary (median over epochs after the first):")
    print(f"{'points':>10} {'epoch [s]':>10} {'callback [ms]':>14} {'overhead':>9}")
    for n, ep, cbt, _, _, _ in rows:
        print(f"{f'{n}+{n}':>10} {ep:>10.2f} {cbt * 1e3:>14.1f} {100 * cbt / ep:>8.2f}%")


if __name__ == "__main__":
    main()
