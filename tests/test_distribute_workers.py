"""Kernel flows across 2 worker processes (MultiWorkerMirroredStrategy on 127.0.0.1), a lost worker, and resuming.

Each worker is a fresh process (tests/distribute_flows.py) started with its
``TF_CONFIG``; the single-process reference runs the same code in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import distribute_flows  # noqa: E402  (tests/ is on sys.path)
from _ports import free_ports  # noqa: E402
from test_distribute_mirrored import assert_same_flows  # noqa: E402

from cyntk.flows.distribute import tf_config  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def launch_workers(tmp_path, tag, args, extra=None):
    """Start 2 workers; ``extra[i]``: more arguments for worker i. Returns their Popen objects."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config(workers, i)}
        cmd = [sys.executable, os.path.join(HERE, "distribute_flows.py"), str(tmp_path / f"{tag}{i}.npz")]
        cmd += ["--strategy", "multiworker", *args, *((extra or {}).get(i, []))]
        log = open(tmp_path / f"{tag}{i}.log", "w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, text=True))
    return procs


def wait_all(procs, timeout=600):
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_two_workers_equal_one_process(tmp_path):
    args = ["--cases", "gauss,relu_clusters", "--epochs", "2", "--points", "40"]
    procs = launch_workers(tmp_path, "w", args)
    distribute_flows.main([str(tmp_path / "single.npz"), *args])
    codes = wait_all(procs)
    logs = [(tmp_path / f"w{i}.log").read_text()[-3000:] for i in range(2)]
    assert codes == [0, 0], logs
    ref = np.load(tmp_path / "single.npz")
    for i in range(2):
        out = np.load(tmp_path / f"w{i}.npz")
        assert int(out["gauss/replicas"]) == 2
        assert_same_flows(ref, out)


@pytest.mark.slow
def test_a_killed_worker_gives_a_clear_error_and_the_flow_resumes(tmp_path):
    """Worker 1 dies after epoch 2 of 4; worker 0 stops with WorkerLostError; both restart and finish."""
    args = ["--cases", "gauss", "--epochs", "4", "--points", "40", "--backup", str(tmp_path / "backup")]
    procs = launch_workers(tmp_path, "a", args, extra={1: ["--fail-at-epoch", "2"]})
    codes = wait_all(procs)
    log0 = (tmp_path / "a0.log").read_text()
    assert codes[1] == 3 and codes[0] != 0, log0[-3000:]
    assert "WorkerLostError" in log0 and "BackupAndRestore" in log0 and "2 steps were completed" in log0, log0[-3000:]
    procs = launch_workers(tmp_path, "b", args)  # the same command again: resumes from the backups
    codes = wait_all(procs)
    assert codes == [0, 0], (tmp_path / "b0.log").read_text()[-3000:]
    distribute_flows.main([str(tmp_path / "single.npz"), *args[:-2]])
    ref = np.load(tmp_path / "single.npz")
    out = np.load(tmp_path / "b0.npz")
    assert len(out["gauss/loss"]) == 2  # epochs 3 and 4 only: the first two came from the backup
    for k in ("gauss/alpha", "gauss/u_train", "gauss/predict"):
        scale = np.abs(ref[k]).max()
        assert np.abs(ref[k] - out[k]).max() <= 1e-12 * scale, k
