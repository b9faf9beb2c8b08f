"""Empirical metric-NTKs under tf.distribute strategies, run as separate processes by tests/test_ntk_distributed.py.

Usage::

    python tests/distribute_ntk.py OUT.npz CASE [--cymetric DIR]

The CPU is split into 2 logical devices before TensorFlow starts and every
case computes the same quantity twice in this process: on one device, outside
any strategy (the reference), and across the 2 replicas of a
``MirroredStrategy`` (inside its scope, or with ``strategy=``), storing both
as ``<name>/one`` and ``<name>/two`` (and facts as ``<name>/...``). Cases:

* ``ntk`` -- :func:`metric_ntk` and :func:`metric_ntk_vp` of a float64
  multiplicative metric model (structured path) and of a real network
  (generic path), each built outside and inside the scope, on 7 points
  (not divisible by 2), 7 x 5 and 1 x 5 point sets; the devices that computed
  the rows are recorded.
* ``entk`` -- a KernelModel with an EmpiricalNTKKernel whose network is built
  inside the scope, dual and primal, fitted for 2 epochs.
* ``cymetric`` -- cymetric's MultFSModel (float32) built inside the scope.
* ``workers`` -- as ``ntk`` (the multiplicative model, built inside the scope)
  under a ``MultiWorkerMirroredStrategy`` whose cluster ``TF_CONFIG`` describes
  (one process per worker, each started with its own ``TF_CONFIG``).
* ``callback`` -- a Keras network trained data-parallel inside the scope with a
  MetricNTKCallback whose kernels are split across the replicas
  (``ntk_kwargs={"strategy": strategy}``).
* ``train`` -- a MultiplicativeModel trained data-parallel inside the scope with
  a MetricNTKCallback: by default it splits its kernels across the replicas;
  with ``ntk_kwargs={"strategy": None}`` it computes them whole.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out, case = argv[0], argv[1]
    cymetric_dir = argv[argv.index("--cymetric") + 1] if "--cymetric" in argv else None

    import tensorflow as tf

    if case == "workers":  # one device per worker process, the cluster from TF_CONFIG
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        from cyntk.flows.distribute import logical_cpus

        logical_cpus(2)
        strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    cases = {
        "ntk": _ntk,
        "entk": _entk,
        "cymetric": _cymetric,
        "callback": _callback,
        "train": _train,
        "workers": _workers,
    }
    results = cases[case](strategy, cymetric_dir, out)
    import numpy as np

    np.savez(out, **{k: np.asarray(v) for k, v in results.items()})


def _multiplicative(M, seed=1, width=6):
    """g = G + G * H(net(x)) in float64 (``M``: a manifold, or a CYDataset for the losses' kappa)."""
    import keras

    from cyntk.models import MultiplicativeModel

    keras.utils.set_random_seed(seed)
    net = keras.Sequential(
        [
            keras.Input((10,), dtype="float64"),
            keras.layers.Dense(width, activation="tanh", dtype="float64"),
            keras.layers.Dense(9, kernel_initializer=keras.initializers.RandomNormal(stddev=0.1), dtype="float64"),
        ]
    )
    return MultiplicativeModel(net, M, kaehler=0.0, transition=0.0, volk=0.0, dtype="float64")


def _network(seed=2):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((10,), dtype="float64"),
            keras.layers.Dense(5, activation="gelu", dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )


def _ntk(strategy, _cymetric_dir, _out):
    import numpy as np
    import tensorflow as tf

    from cyntk.geometry import fermat_quintic, to_real
    from cyntk.kernels import metric_ntk, metric_ntk_vp
    from cyntk.kernels.ntk import _Engine

    M = fermat_quintic()
    x = to_real(M.sample_points(12, seed=3))
    x7, x5 = x[:7], x[7:]
    rng = np.random.default_rng(0)
    res = {}

    devices = set()  # the devices on which rows were computed
    kernel, push = _Engine.kernel, _Engine._push

    def recording(fn):
        def wrapped(self, *args):
            devices.add(tf.constant(0.0).device)
            return fn(self, *args)

        return wrapped

    _Engine.kernel, _Engine._push = recording(kernel), recording(push)

    def calls(model, v7, names, **kw):
        chunk = {"chunk_size": kw.get("chunk_size")}
        every = {
            "sym": lambda **s: metric_ntk(model, x7, **kw, **s),
            "rect": lambda **s: metric_ntk(model, x7, x5, **kw, **s),
            "one": lambda **s: metric_ntk(model, x7[:1], x5, **kw, **s),
            "vp": lambda **s: metric_ntk_vp(model, x7, v7, x5, **chunk, **s),
            "vp_sym": lambda **s: metric_ntk_vp(model, x7, v7, **chunk, **s),
        }
        return {name: every[name] for name in names}

    for kind, build, m, names, kw in (
        ("mult", lambda: _multiplicative(M), 9, ("sym", "rect", "one", "vp", "vp_sym"), {"chunk_size": 2}),
        ("generic", _network, 3, ("sym", "rect", "vp"), {"implementation": "generic", "output": "vector"}),
    ):
        v7 = rng.standard_normal((7, m))
        plain = build()
        with strategy.scope():
            built = build()  # mirrored variables, the same initial values
        res[f"{kind}/weights_equal"] = all(
            np.array_equal(a.numpy(), b.numpy()) for a, b in zip(plain.variables, built.variables)
        )
        devices.clear()
        for name, fn in calls(plain, v7, names, **kw).items():
            res[f"{kind}/{name}/one"] = fn()
        res[f"{kind}/devices_one"] = len(devices)
        devices.clear()
        with strategy.scope():  # the scope's replicas: a model built outside, and one built inside
            for name, fn in calls(plain, v7, names, **kw).items():
                res[f"{kind}/{name}/two"] = fn()
            for name, fn in calls(built, v7, names, **kw).items():
                res[f"{kind}/{name}/built"] = fn()
        res[f"{kind}/devices_two"] = len(devices)
        for name, fn in calls(plain, v7, ("sym", "vp"), **kw).items():  # strategy= outside the scope
            res[f"{kind}/{name}/explicit"] = fn(strategy=strategy)
    _Engine.kernel, _Engine._push = kernel, push
    return res


def _entk(strategy, _cymetric_dir, _out):
    import keras
    import numpy as np

    from cyntk.flows import KernelModel
    from cyntk.geometry import fermat_quintic, to_real
    from cyntk.kernels import EmpiricalNTKKernel

    M = fermat_quintic()
    x_all = to_real(M.sample_points(24, seed=5, chart=(0, 1)))
    x, x_test = x_all[:16], x_all[16:]
    y = KernelModel.targets(M, x)
    res = {}
    for form, lr in (("dual", 2.0**-9), ("primal", 2.0**-9)):
        for label, scope in (("one", None), ("two", strategy)):
            if scope is None:
                net = _multiplicative(M)
                model = KernelModel(EmpiricalNTKKernel(net), x, M, seed=0, tile_size=16, form=form)
                model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
            else:
                with scope.scope():  # the network, its kernel and the flow all built inside the scope
                    net = _multiplicative(M)
                    model = KernelModel(EmpiricalNTKKernel(net), x, M, seed=0, tile_size=16, form=form)
                    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
            hist = model.fit(x, y, batch_size=len(x), epochs=2, shuffle=False, verbose=0)
            state = [model.alpha, model.u_train] if form == "dual" else list(model.delta_theta)
            res[f"{form}/state/{label}"] = np.concatenate([np.ravel(v.numpy()) for v in state])
            res[f"{form}/loss/{label}"] = np.asarray(hist.history["loss"])
            res[f"{form}/predict/{label}"] = model.predict(x_test, batch_size=len(x_test), verbose=0)
            res[f"{form}/replicas/{label}"] = model.distribute_strategy.num_replicas_in_sync
    return res


def _cymetric(strategy, cymetric_dir, out):
    import pickle

    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, cymetric_dir)
    import cymetric.models.helper as helper
    import cymetric.models.models as models
    from cymetric.pointgen.pointgen import PointGenerator

    from cyntk.geometry import fermat_quintic, to_real
    from cyntk.kernels import metric_ntk, metric_ntk_path, metric_ntk_vp

    # the quintic's basis written by cymetric itself
    folder = os.path.dirname(os.path.abspath(out))
    generator = PointGenerator(5 * np.eye(5, dtype=np.int64), np.ones(5), np.ones(1), np.array([4]))
    generator.prepare_basis(folder, kappa=1.0)
    with open(os.path.join(folder, "basis.pickle"), "rb") as fh:
        basis = helper.prepare_basis(pickle.load(fh))

    def build():
        tf.keras.utils.set_random_seed(0)
        nn = tf.keras.Sequential(
            [tf.keras.Input((10,)), tf.keras.layers.Dense(16, activation="gelu"), tf.keras.layers.Dense(9)]
        )
        return models.MultFSModel(nn, basis, alpha=[1.0] * 5)

    x = to_real(fermat_quintic().sample_points(7, seed=4))
    v = np.random.default_rng(1).standard_normal((7, 9))
    plain = build()
    res = {"sym/one": metric_ntk(plain, x), "vp/one": metric_ntk_vp(plain, x, v)}
    with strategy.scope():
        built = build()
        res["sym/two"] = metric_ntk(built, x)
        res["vp/two"] = metric_ntk_vp(built, x, v)
    res["path"] = metric_ntk_path(built)
    return res


def _workers(strategy, _cymetric_dir, _out):
    import numpy as np

    from cyntk.geometry import fermat_quintic, to_real
    from cyntk.kernels import metric_ntk, metric_ntk_vp

    M = fermat_quintic()
    x = to_real(M.sample_points(12, seed=3))
    x7, x5 = x[:7], x[7:]
    v7 = np.random.default_rng(0).standard_normal((7, 9))
    with strategy.scope():
        model = _multiplicative(M)
    res = {"replicas": strategy.num_replicas_in_sync}
    for name, fn in (
        ("sym", lambda: metric_ntk(model, x7, chunk_size=2)),
        ("rect", lambda: metric_ntk(model, x7, x5, chunk_size=2)),
        ("vp", lambda: metric_ntk_vp(model, x7, v7, x5)),
    ):
        res[f"{name}/one"] = fn()  # outside the scope: this process alone
        with strategy.scope():
            res[f"{name}/two"] = fn()
    return res


def _callback(strategy, _cymetric_dir, out):
    import keras
    import numpy as np

    from cyntk.callbacks import MetricNTKCallback
    from cyntk.kernels import metric_ntk

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5))
    y = np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    res = {}
    for label, scope in (("one", None), ("split", strategy)):
        computed = []

        def counted(model, pts, **kw):
            computed.append(len(pts))
            return metric_ntk(model, pts, **kw)

        def build():
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [
                    keras.Input((5,), dtype="float64"),
                    keras.layers.Dense(16, activation="tanh", dtype="float64"),
                    keras.layers.Dense(2, dtype="float64"),
                ]
            )
            model.compile(keras.optimizers.SGD(0.05), loss="mse")
            return model

        if scope is None:
            model = build()
        else:
            with scope.scope():
                model = build()
        cb = MetricNTKCallback(
            x[:5],
            x[5:10],
            log_dir=os.path.join(os.path.dirname(out), label),
            save_kernels=True,
            ntk_fn=counted,
            ntk_kwargs={"strategy": strategy} if scope is not None else None,
        )
        model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0, callbacks=[cb])
        res[f"calls/{label}"] = len(computed)
        res[f"epochs/{label}"] = np.asarray(cb.history.epochs)
        res[f"replicas/{label}"] = model.distribute_strategy.num_replicas_in_sync
    return res


def _train(strategy, _cymetric_dir, out):
    import keras
    import numpy as np

    import cyntk.kernels
    from cyntk.callbacks import MetricNTKCallback
    from cyntk.callbacks.distribute import current_strategy, is_chief
    from cyntk.geometry import fermat_quintic, make_dataset
    from cyntk.kernels import metric_ntk

    ds = make_dataset(fermat_quintic(), 80, seed=0)
    res = {}
    # the callback's default engine (ntk_fn=None) is cyntk.kernels.metric_ntk, looked up at each record: a spy
    # records the strategy it is given. "two" opts out of the split, "split" is the default under a strategy
    for label, scope, ntk_kwargs in (
        ("one", None, None),
        ("two", strategy, {"strategy": None}),
        ("split", strategy, None),
    ):
        computed = []

        def counted(model, pts, **kw):
            computed.append(kw.get("strategy"))
            return metric_ntk(model, pts, **kw)

        cyntk.kernels.metric_ntk = counted

        def build():
            model = _multiplicative(ds, seed=0, width=12)  # the data set gives the sigma loss its kappa
            model.compile(keras.optimizers.SGD(1e-2))
            return model

        if scope is None:
            model = build()
        else:
            with scope.scope():
                model = build()
        cb = MetricNTKCallback(
            4,
            4,
            data=ds,
            seed=0,
            log_dir=os.path.join(os.path.dirname(out), label),
            save_kernels=True,
            ntk_kwargs=ntk_kwargs,
        )
        x, y = ds.X_train[:64], ds.y_train[:64]
        try:
            hist = model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0, callbacks=[cb])
        finally:
            cyntk.kernels.metric_ntk = metric_ntk
        res[f"weights/{label}"] = np.concatenate([np.ravel(v.numpy()) for v in model.trainable_variables])
        res[f"loss/{label}"] = np.asarray(hist.history["loss"])
        res[f"calls/{label}"] = len(computed)
        res[f"split_calls/{label}"] = sum(s is model.distribute_strategy for s in computed)
        res[f"epochs/{label}"] = np.asarray(cb.history.epochs)
        res[f"chief/{label}"] = is_chief(current_strategy(model))
        res[f"replicas/{label}"] = model.distribute_strategy.num_replicas_in_sync
        res[f"logged/{label}"] = np.asarray(hist.history["ntk_frobenius_train_test"])
    print("RESULT", json.dumps({k: np.asarray(v).tolist() for k, v in res.items() if k.startswith("calls")}))
    return res


if __name__ == "__main__":
    main()
