"""MetricNTKCallback under ``tf.distribute.MirroredStrategy`` over two logical CPU devices.

Logical devices must be configured before TensorFlow initialises, so the run
happens in a fresh interpreter (``subprocess``): the same float64 network is
trained with and without the strategy; the kernel must be computed once per
record (not once per replica), written once, and equal the one recorded without
a strategy to 1e-10.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from _ports import free_ports

SCRIPT = textwrap.dedent(
    r"""
    import json, os, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from cyntk.callbacks import MetricNTKCallback
    from cyntk.callbacks.distribute import current_strategy, is_chief
    from cyntk.kernels import metric_ntk

    out = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5))
    y = np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((5,), dtype="float64"), keras.layers.Dense(16, activation="tanh", dtype="float64"),
             keras.layers.Dense(2, dtype="float64")]
        )
        model.compile(keras.optimizers.SGD(0.05), loss="mse")
        return model

    def run(name, strategy):
        calls = []

        def counted(model, pts, **kw):
            calls.append(len(pts))
            return metric_ntk(model, pts, **kw)

        if strategy is None:
            model = build()
        else:
            with strategy.scope():
                model = build()
        log_dir = os.path.join(out, name)
        cb = MetricNTKCallback(x[:4], x[4:8], log_dir=log_dir, save_kernels=True, ntk_fn=counted)
        hist = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0, callbacks=[cb])
        return {
            "calls": len(calls),
            "epochs": cb.history.epochs,
            "logged": hist.history["ntk_frobenius_train_test"],
            "chief": is_chief(current_strategy(model)),
            "replicas": getattr(strategy, "num_replicas_in_sync", 1),
        }

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"plain": run("plain", None), "mirrored": run("mirrored", strategy)}
    print("RESULT " + json.dumps(result))
    """
)


def test_mirrored_strategy_records_the_same_kernel_once(tmp_path):
    import numpy as np

    from cyntk.callbacks import MetricNTKHistory

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    plain, mirrored = result["plain"], result["mirrored"]
    assert mirrored["replicas"] == 2 and mirrored["chief"]
    # one kernel per record (epoch 0 and after each of the 2 epochs), not one per replica
    assert plain["calls"] == mirrored["calls"] == 3
    assert plain["epochs"] == mirrored["epochs"] == [0, 1, 2]
    np.testing.assert_allclose(mirrored["logged"], plain["logged"], rtol=1e-10, atol=1e-14)
    # written once: one event file, one history, one kernel file per record
    for name in ("plain", "mirrored"):
        run_dir = tmp_path / name / "metric_ntk"
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1, name
        assert MetricNTKHistory.load(run_dir / "history.npz").epochs == [0, 1, 2]
        assert sorted(p.name for p in (run_dir / "kernels").iterdir()) == [f"epoch_{e:06d}.npz" for e in (0, 1, 2)]
    for e in (0, 1, 2):
        a = np.load(tmp_path / "plain" / "metric_ntk" / "kernels" / f"epoch_{e:06d}.npz")["theta"]
        b = np.load(tmp_path / "mirrored" / "metric_ntk" / "kernels" / f"epoch_{e:06d}.npz")["theta"]
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10 * np.abs(a).max())
    assert plain["epochs"] == mirrored["epochs"]


WORKER = textwrap.dedent(
    r"""
    import json, os, sys
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # the cluster comes from TF_CONFIG
    import keras
    import numpy as np

    from cyntk.callbacks import MetricNTKCallback

    x = np.random.default_rng(0).standard_normal((8, 5))
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((5,), dtype="float64"), keras.layers.Dense(16, activation="tanh", dtype="float64"),
             keras.layers.Dense(2, dtype="float64")]
        )
    # model=: the reference kernel is recorded (and, on the chief, written) right away
    cb = MetricNTKCallback(x[:4], x[4:8], log_dir=sys.argv[1], save_kernels=True, model=model)
    theta = cb.tracker.last_record.theta
    print("RESULT " + json.dumps({"pid": os.getpid(), "epochs": cb.history.epochs, "theta": theta.tolist()}))
    """
)


@pytest.mark.slow
def test_multi_worker_only_the_chief_writes(tmp_path):
    """Two MultiWorkerMirroredStrategy workers on localhost: both compute the same kernel, only worker 0 writes.

    (Keras 3.15's ``fit`` under this strategy fails on numpy and tf.data input alike before any callback
    runs, so the record is made through ``model=``, outside ``fit``.)
    """
    import numpy as np

    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2, host="localhost")]}
    procs = []
    for index in (0, 1):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg")
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, err[-3000:]
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
        results.append(json.loads(line[len("RESULT ") :]))
    chief, other = results
    assert chief["epochs"] == other["epochs"] == [0]
    np.testing.assert_array_equal(np.asarray(chief["theta"]), np.asarray(other["theta"]))
    run_dir = tmp_path / "metric_ntk"
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1 and f".{chief['pid']}." in events[0].name  # written by the chief only
    assert sorted(p.name for p in (run_dir / "kernels").iterdir()) == ["epoch_000000.npz"]
    assert not list(run_dir.glob("history.*.npz"))  # the non-chief did not set an older history aside
