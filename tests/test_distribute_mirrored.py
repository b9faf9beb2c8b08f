"""Kernel flows under tf.distribute.MirroredStrategy over 2 logical CPU devices equal the single-device flows.

The strategy needs the logical devices configured before TensorFlow starts, so
the distributed flows run in a fresh process (tests/distribute_flows.py); the
single-device reference runs the same script's code in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import distribute_flows  # noqa: E402  (tests/ is on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))
#: dual and primal, clustered and not, Gaussian-FS, ReLU NTK (TF tiles), erf NTK (NumPy tiles), Delta, empirical NTK
#: (unclustered Gaussian-FS and clustered ReLU: tests/test_distribute_workers.py)
CASES = "gauss_clusters,relu,erf,delta,entk_dual,entk_primal,gauss_mean"


def run_script(out, *args, env=None, timeout=600):
    cmd = [sys.executable, os.path.join(HERE, "distribute_flows.py"), str(out), *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def assert_same_flows(reference, other, rtol=1e-12):
    """Every stored array of ``other`` equals ``reference``'s to ``rtol`` relative (to its largest entry)."""
    keys = [k for k in reference.files if not k.endswith("/replicas")]
    assert keys and set(keys) <= set(other.files)
    for k in keys:
        a, b = reference[k], other[k]
        assert a.shape == b.shape, k
        scale = np.abs(a).max()
        assert np.abs(a - b).max() <= rtol * scale, (k, np.abs(a - b).max() / scale)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_equals_one_device(tmp_path):
    single, mirrored = tmp_path / "single.npz", tmp_path / "mirrored.npz"
    proc = run_script(
        mirrored, "--strategy", "mirrored", "--cpus", "2", "--cases", CASES, "--points", "40", "--epochs", "2"
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    distribute_flows.main([str(single), "--cases", CASES, "--points", "40", "--epochs", "2"])
    ref, dist = np.load(single), np.load(mirrored)
    for case in CASES.split(","):
        assert int(dist[f"{case}/replicas"]) == 2 and int(ref[f"{case}/replicas"]) == 1
        assert np.all(np.diff(ref[f"{case}/loss"]) < 0), case  # the flows move (and lower the loss)
    assert_same_flows(ref, dist)
