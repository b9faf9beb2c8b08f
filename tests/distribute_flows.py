"""Short exact kernel flows under a tf.distribute strategy, run as a separate process by tests/test_distribute_*.py.

Usage::

    python tests/distribute_flows.py OUT.npz --strategy {none,mirrored,multiworker} [--cpus N]
        [--cases a,b,...] [--epochs E] [--backup DIR] [--fail-at-epoch K]

``--cpus N`` splits the CPU into N logical devices before TensorFlow starts
(MirroredStrategy then has N replicas); ``multiworker`` reads ``TF_CONFIG``.
Every case builds its KernelModel (and optimizer) inside the strategy's scope,
runs ``fit`` full batch for E epochs and stores the final ``alpha``,
``u_train`` (dual) or ``delta_theta`` (primal), the logged losses and the
metric predicted at held-out points. ``--backup DIR`` adds Keras'
``BackupAndRestore(DIR)``; ``--fail-at-epoch K`` makes the process exit
(``os._exit(3)``, as a killed worker) at the end of epoch K, after the backup
of that epoch was written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

CASES = (
    "gauss",
    "gauss_clusters",
    "relu",
    "relu_clusters",
    "relu3",
    "cosine",
    "delta",
    "erf",
    "entk_dual",
    "entk_primal",
    "gauss_mean",
)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--strategy", default="none", choices=("none", "mirrored", "multiworker"))
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--points", type=int, default=60)
    p.add_argument("--backup", default=None)
    p.add_argument("--fail-at-epoch", type=int, default=None)
    p.add_argument("--engine", default="tf")
    p.add_argument("--tile", type=int, default=16)
    p.add_argument("--tiles", default="xla")
    args = p.parse_args(argv)

    from cyntk.flows.distribute import logical_cpus

    if args.cpus > 1:
        logical_cpus(args.cpus)

    import keras
    import numpy as np
    import tensorflow as tf

    from cyntk.flows import KernelModel
    from cyntk.geometry import fermat_quintic, to_real
    from cyntk.kernels.analytic import InfiniteWidthKernel
    from cyntk.kernels.cosine import CosineNTKKernel
    from cyntk.kernels.empirical import EmpiricalNTKKernel
    from cyntk.kernels.fs import DeltaKernel, GaussianFSKernel
    from cyntk.models import MultiplicativeModel

    if args.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    elif args.strategy == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()

    M = fermat_quintic()
    z = M.sample_points(args.points + 16, seed=5, chart=(0, 1))
    x_all = to_real(z)
    x, x_test = x_all[: args.points], x_all[args.points :]
    y = KernelModel.targets(M, x)

    def metric_model(seed=1):
        old = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float64")
        try:
            keras.utils.set_random_seed(seed)
            net = keras.Sequential(
                [
                    keras.Input((10,)),
                    keras.layers.Dense(6, activation="tanh"),
                    keras.layers.Dense(9, kernel_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed)),
                ]
            )
            return MultiplicativeModel(net, M, dtype="float64")
        finally:
            keras.config.set_dtype_policy(old)

    def build(case, net):
        kw = dict(engine=args.engine, seed=0, tile_size=args.tile, tiles=args.tiles)
        if case == "gauss":
            return KernelModel(GaussianFSKernel(0.1), x, M, **kw), 2.0**-12
        if case == "gauss_clusters":
            return KernelModel(GaussianFSKernel(0.1), x, M, clusters=3, **kw), 2.0**-12
        if case == "gauss_mean":
            kw["tiles"] = "numpy"  # the same shards with the kernel's NumPy blocks as tiles
            return KernelModel(GaussianFSKernel(0.1), x, M, reduction="mean", **kw), 2.0**-10
        if case == "relu":
            return KernelModel(InfiniteWidthKernel("relu", W_std=1.5, b_std=0.2), x, M, **kw), 2.0**-16
        if case == "relu_clusters":
            k = InfiniteWidthKernel("relu", W_std=1.5, b_std=0.2)
            return KernelModel(k, x, M, clusters=np.arange(len(x)) % 2, **kw), 2.0**-16
        if case == "relu3":
            return KernelModel(InfiniteWidthKernel("relu", W_std=1.4, b_std=0.1, depth=3), x, M, **kw), 2.0**-16
        if case == "erf":
            return KernelModel(InfiniteWidthKernel("erf", W_std=1.4, b_std=0.1, depth=2), x, M, **kw), 2.0**-16
        if case == "cosine":
            return KernelModel(CosineNTKKernel(3.0, amplitude=1.0), x, M, **kw), 2.0**-12
        if case == "delta":
            return KernelModel(DeltaKernel(), x, M, **kw), 2.0**-12
        if case == "entk_dual":
            return KernelModel(EmpiricalNTKKernel(net), x, M, **kw), 2.0**-9
        if case == "entk_primal":
            return KernelModel(EmpiricalNTKKernel(net), x, M, form="primal", **kw), 2.0**-9
        raise ValueError(f"unknown case {case!r}")

    class FailAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if args.fail_at_epoch is not None and epoch + 1 == args.fail_at_epoch:
                sys.stdout.flush()
                os._exit(3)

    out = {}
    for case in args.cases.split(","):
        print("case", case, flush=True)
        # the empirical NTK's network is built outside the strategy here (its J (J^T v) runs per shard, in
        # TF); one built inside the scope works too (tests/distribute_ntk.py, case entk)
        net = metric_model() if case.startswith("entk") else None
        with strategy.scope():
            model, lr = build(case, net)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
        callbacks = []
        if args.backup:
            task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
            callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(args.backup, f"worker{task}", case)))
        callbacks.append(FailAt())
        hist = model.fit(x, y, batch_size=len(x), epochs=args.epochs, shuffle=False, verbose=0, callbacks=callbacks)
        if model.form == "dual":
            out[f"{case}/alpha"] = np.asarray(model.alpha.numpy())
            out[f"{case}/u_train"] = np.asarray(model.u_train.numpy())
        else:
            for i, v in enumerate(model.delta_theta):
                out[f"{case}/delta_theta_{i}"] = np.asarray(v.numpy())
        out[f"{case}/loss"] = np.asarray(hist.history["loss"])
        out[f"{case}/min_eigenvalue"] = np.asarray(hist.history["min_eigenvalue"])
        out[f"{case}/predict"] = np.asarray(model.predict(x_test, batch_size=len(x_test), verbose=0))
        out[f"{case}/replicas"] = np.asarray(strategy.num_replicas_in_sync)
    np.savez(args.out, **out)


if __name__ == "__main__":
    main()
