"""Empirical metric-NTKs under tf.distribute: rows split across replicas equal the one-device result.

The strategies need their devices (2 logical CPUs) or cluster (``TF_CONFIG``)
configured before TensorFlow starts, so each case runs in fresh processes
(tests/distribute_ntk.py), which compute both the one-device reference (outside
any strategy) and the distributed result (inside ``strategy.scope()`` or with
``strategy=``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from _ports import free_ports  # noqa: E402

from cyntk.flows.distribute import tf_config  # noqa: E402

HERE = Path(__file__).resolve().parent
CYMETRIC = Path(os.environ.get("CYNTK_CYMETRIC", HERE.parents[1] / "shared" / "cymetric"))


def run_case(tmp_path, case, *args, env=None, timeout=300):
    """``tests/distribute_ntk.py OUT case`` in a fresh process; its arrays."""
    out = tmp_path / f"{case}.npz"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg", **(env or {})}
    env.pop("TF_CONFIG", None)
    cmd = [sys.executable, str(HERE / "distribute_ntk.py"), str(out), case, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return np.load(out)


def relative(a, b):
    """``max|a - b| / max|a|``."""
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_metric_ntk_and_vp_split_across_two_replicas_equal_one_device(tmp_path):
    """A multiplicative metric model (structured path) and a network (generic path), each built outside and
    inside the scope, on 7 points (not divisible by 2 replicas), 7 x 5 and 1 x 5 (fewer rows than replicas)."""
    res = run_case(tmp_path, "ntk")
    for kind in ("mult", "generic"):
        assert bool(res[f"{kind}/weights_equal"]), kind  # the model built in the scope has the same weights
        assert int(res[f"{kind}/devices_one"]) == 1 and int(res[f"{kind}/devices_two"]) == 2, kind
        names = [k[len(kind) + 1 : -4] for k in res.files if k.startswith(f"{kind}/") and k.endswith("/one")]
        assert set(names) >= {"sym", "rect", "vp"}
        for name in names:
            ref = res[f"{kind}/{name}/one"]
            assert np.all(np.isfinite(ref)) and np.abs(ref).max() > 0
            for how in ("two", "built", "explicit"):
                key = f"{kind}/{name}/{how}"
                if key in res.files:
                    assert res[key].shape == ref.shape and res[key].dtype == np.float64, key
                    assert relative(ref, res[key]) <= 1e-12, (key, relative(ref, res[key]))
        for how in ("two", "built", "explicit"):  # the gathered triangle is mirrored: exactly symmetric
            theta = res[f"{kind}/sym/{how}"]
            np.testing.assert_array_equal(theta, np.transpose(theta, (1, 0, 3, 2)))
    assert res["mult/one/one"].shape == (1, 5, 9, 9) and res["generic/sym/one"].shape == (7, 7, 3, 3)


def test_kernel_model_with_empirical_ntk_built_in_scope_equals_one_device(tmp_path):
    """Network, EmpiricalNTKKernel and KernelModel all built inside a 2-replica MirroredStrategy scope: the
    kernel reads the mirrored variables per replica; the dual and primal flows equal the one-device flows."""
    res = run_case(tmp_path, "entk")
    for form in ("dual", "primal"):
        assert int(res[f"{form}/replicas/one"]) == 1 and int(res[f"{form}/replicas/two"]) == 2
        assert np.all(np.diff(res[f"{form}/loss/one"]) < 0), form  # the flow moves
        for what in ("state", "loss", "predict"):
            ref, dist = res[f"{form}/{what}/one"], res[f"{form}/{what}/two"]
            assert relative(ref, dist) <= 1e-12, (form, what, relative(ref, dist))


def test_cymetric_multfs_model_built_in_scope(tmp_path):
    """The real cymetric's MultFSModel (float32) built inside the scope; its kernel and product across the
    replicas equal the one-device ones to float32 round-off."""
    if not (CYMETRIC / "cymetric" / "models").is_dir():
        pytest.skip(f"the real cymetric is absent ({CYMETRIC}); set CYNTK_CYMETRIC")
    for dep in ("sympy", "joblib", "wolframclient"):
        pytest.importorskip(dep, reason=f"cymetric.pointgen imports {dep} (pip install -e '.[test]')")
    res = run_case(tmp_path, "cymetric", "--cymetric", str(CYMETRIC))
    assert str(res["path"]).startswith("structured")
    for name in ("sym", "vp"):
        ref, dist = res[f"{name}/one"], res[f"{name}/two"]
        assert ref.dtype == dist.dtype == np.float32 and ref.shape == dist.shape
        assert relative(ref, dist) <= 1e-5, (name, relative(ref, dist))  # float32: eps 1.2e-7 times the sums


def test_callback_splits_its_kernels_across_the_replicas_during_fit(tmp_path):
    """A network trained under MirroredStrategy (2 logical CPUs) with a MetricNTKCallback whose kernels are
    split across the replicas (ntk_kwargs={'strategy': strategy}): one kernel per record, written once, equal
    to the records of a one-device run."""
    from cyntk.callbacks import MetricNTKHistory

    res = run_case(tmp_path, "callback")
    assert int(res["replicas/one"]) == 1 and int(res["replicas/split"]) == 2
    assert int(res["calls/one"]) == int(res["calls/split"]) == 3  # epochs 0, 1, 2: once each, not per replica
    one, split = (tmp_path / label / "metric_ntk" for label in ("one", "split"))
    assert len(list(split.glob("events.out.tfevents.*"))) == 1
    assert MetricNTKHistory.load(split / "history.npz").epochs == [0, 1, 2]
    kernels = sorted(p.name for p in (split / "kernels").iterdir())
    assert kernels == [f"epoch_{e:06d}.npz" for e in (0, 1, 2)]
    for name in kernels:
        a, b = np.load(one / "kernels" / name)["theta"], np.load(split / "kernels" / name)["theta"]
        assert a.dtype == b.dtype == np.float64 and a.shape == b.shape == (10, 10, 2, 2)
        assert relative(a, b) <= 1e-12, name  # data-parallel training: the same weights at every record


def test_training_with_the_callback_is_data_parallel_and_records_once(tmp_path):
    """A MultiplicativeModel trained under MirroredStrategy (2 logical CPUs) with a MetricNTKCallback: the same
    weights as on one device; the kernel computed once per record, split across the model's replicas by default
    (the engine receives strategy=model.distribute_strategy), whole with ntk_kwargs={'strategy': None}, and
    written once."""
    from cyntk.callbacks import MetricNTKHistory

    res = run_case(tmp_path, "train")
    assert int(res["split_calls/one"]) == 0 and int(res["split_calls/two"]) == 0  # none, and the opt-out
    assert int(res["split_calls/split"]) == 3  # the default under a 2-replica strategy: every record split
    for label in ("two", "split"):
        assert int(res[f"replicas/{label}"]) == 2 and bool(res[f"chief/{label}"])
        assert relative(res["weights/one"], res[f"weights/{label}"]) <= 1e-12, label
        assert int(res[f"calls/{label}"]) == int(res["calls/one"]) == 3, label  # epochs 0, 1, 2
        np.testing.assert_array_equal(res[f"epochs/{label}"], [0, 1, 2])
        np.testing.assert_allclose(res[f"logged/{label}"], res["logged/one"], rtol=1e-10, atol=1e-14)
        run_dir = tmp_path / label / "metric_ntk"
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
        assert MetricNTKHistory.load(run_dir / "history.npz").epochs == [0, 1, 2]
        kernels = sorted(p.name for p in (run_dir / "kernels").iterdir())
        assert kernels == [f"epoch_{e:06d}.npz" for e in (0, 1, 2)]
        for name in kernels:
            a = np.load(tmp_path / "one" / "metric_ntk" / "kernels" / name)["theta"]
            b = np.load(run_dir / "kernels" / name)["theta"]
            assert a.dtype == b.dtype == np.float64 and relative(a, b) <= 1e-12, (label, name)


@pytest.mark.slow
def test_metric_ntk_across_two_worker_processes(tmp_path):
    """MultiWorkerMirroredStrategy over 2 processes on 127.0.0.1: each worker's caller holds the whole kernel
    (rows gathered across the workers), equal to its own one-process result."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        env["TF_CONFIG"] = tf_config(workers, i)
        cmd = [sys.executable, str(HERE / "distribute_ntk.py"), str(tmp_path / f"w{i}.npz"), "workers"]
        log = open(tmp_path / f"w{i}.log", "w")  # closed after the wait
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    try:
        codes = [p.wait(timeout=300) for p, _ in procs]
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
            log.close()
    assert codes == [0, 0], [(tmp_path / f"w{i}.log").read_text()[-3000:] for i in range(2)]
    results = [np.load(tmp_path / f"w{i}.npz") for i in range(2)]
    for res in results:
        assert int(res["replicas"]) == 2
        for name in ("sym", "rect", "vp"):
            assert relative(res[f"{name}/one"], res[f"{name}/two"]) <= 1e-12, name
    for name in ("sym", "rect", "vp"):  # every worker holds the same result
        np.testing.assert_array_equal(results[0][f"{name}/two"], results[1][f"{name}/two"])


def test_strategy_argument_is_checked():
    import keras
    import tensorflow as tf

    from cyntk.kernels import metric_ntk, metric_ntk_vp

    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match="`strategy` must be None .* or a tf.distribute.Strategy; received str"):
        metric_ntk(net, x, strategy="mirrored")
    with pytest.raises(TypeError, match="`strategy`"):
        metric_ntk_vp(net, x, np.zeros((2, 2)), strategy=object())
    # the default strategy (one replica, this device) is a strategy too: the same numbers
    one = metric_ntk(net, x + 0.5)
    np.testing.assert_array_equal(metric_ntk(net, x + 0.5, strategy=tf.distribute.get_strategy()), one)
