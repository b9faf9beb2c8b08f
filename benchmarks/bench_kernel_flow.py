"""Exact frozen-kernel flow steps: the TensorFlow engine against the NumPy engine it replaced, and scaling out.

One exact step of a KernelModel flow (eq. 3.5, full batch, no clusters) costs
one N x N kernel product ``u = Theta(x, x) d_alpha`` (half the tiles by
symmetry) plus O(N) work. This script measures, in one run:

1. **engine** (in this process): the product of the exact step at each size
   (Gaussian-FS sigma = 0.1 and the paper's ReLU NTK W_std = 80.52,
   b_std = 5.716, depth 1) with the TF engine (:class:`cyntk.flows.tf_product.TFKernelProduct`)
   with XLA tiles (``xla``) and with its default tiles on this device
   (``auto``: NumPy tiles on a CPU, XLA on a GPU), and with the NumPy engine it replaced, loaded from git
   (``git show ad85f1f:cyntk/flows/product.py`` into a temporary module), on
   the same points and vectors: wall and CPU seconds, the ratio old / new,
   the largest relative difference of the two products, and the peak resident
   memory added by each product (``VmHWM`` after resetting it through
   ``/proc/self/clear_refs``);
2. **devices**: one full ``fit`` step (``epochs=1, batch_size=N``) of the
   Gaussian-FS flow in a fresh process on one CPU device, and under
   ``MirroredStrategy`` over 2 logical CPU devices of the same cores;
3. **workers**: the same step in 1 process (2 tile threads) and in 2 local
   worker processes (``MultiWorkerMirroredStrategy``, ``TF_CONFIG`` on
   127.0.0.1, 1 tile thread each) on the same cores: the distribution
   overhead is ``t(2 workers) / t(1 process) - 1``;
4. **cost model**: from the measured throughput of the TF tiles (kernel
   entries per second per CPU device), the predicted seconds of one exact
   step at 1e6 and 1e7 points on k devices: ``(N^2 / 2) / (k * rate)`` plus
   the all-reduce of the (N, 9) float64 update (ring all-reduce,
   ``2 (k-1)/k * 72 N`` bytes at ``--link-gbps``). No GPU was available to
   the session that wrote this script: GPU rates must be measured on a GPU
   (run this script there: the same code, the TF engine places its tiles
   on the GPU).

Run:
    python benchmarks/bench_kernel_flow.py                 # 1e4 points; devices and workers at 1e4
    python benchmarks/bench_kernel_flow.py --sizes 10000 100000 --scale-size 20000
Flags: --sizes, --kernels (gaussian relu), --scale-size (points of parts 2, 3;
0 skips them), --no-old (skip the git baseline), --tile-size, --link-gbps,
--json FILE.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OLD_COMMIT = "ad85f1f"  # the last commit with the NumPy thread pool as KernelModel's engine


# ---------------------------------------------------------------------------- helpers
def rss_reset():
    """Reset the peak resident memory (Linux); returns the current resident size in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status("VmRSS")


def _status(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def timed(fn):
    rss0 = rss_reset()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0, max(0, _status("VmHWM") - rss0)


def old_engine():
    """The NumPy ``KernelProduct`` of commit ad85f1f, imported from git into a temporary module."""
    src = subprocess.run(
        ["git", "-C", ROOT, "show", f"{OLD_COMMIT}:cyntk/flows/product.py"], capture_output=True, text=True, check=True
    ).stdout
    # the kernel contract added since declares every tile method on the base class (stubs that raise):
    # the old engine's test for a fused tile_matvec reads the declaration instead (only the
    # infinite-width NTK had one then, and has it now)
    probe = 'callable(getattr(type(k), "tile_matvec", None))'
    if probe not in src:
        raise RuntimeError(f"unexpected source of cyntk/flows/product.py at {OLD_COMMIT}")
    src = src.replace(probe, "k.supports_fused_matvec")
    path = os.path.join(tempfile.mkdtemp(), "old_product.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("old_product", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.KernelProduct


def kernel(name):
    from cyntk.kernels.analytic import InfiniteWidthKernel
    from cyntk.kernels.fs import GaussianFSKernel

    if name == "gaussian":
        return GaussianFSKernel(0.1)
    return InfiniteWidthKernel("relu", W_std=80.52, b_std=5.716, depth=1)


def points(n, seed=0):
    from cyntk.geometry import fermat_quintic, to_real

    return to_real(fermat_quintic().sample_points(n, seed=seed, chart=(0, 1)))


# ---------------------------------------------------------------------------- 1. engines
def engines(sizes, kernels, tile_size, use_old):
    from cyntk.flows.tf_product import TFKernelProduct

    Old = old_engine() if use_old else None
    rows = []
    for name in kernels:
        k = kernel(name)
        variants = {
            "xla": TFKernelProduct(k, 9, tile_size=tile_size, tiles="xla"),  # TF tiles (XLA) on this device
            "auto": TFKernelProduct(k, 9, tile_size=tile_size),  # KernelModel's default here
        }
        for eng in variants.values():
            eng.matvec(*(points(2048, 1),) * 2, np.ones((2048, 9)), same=True)  # compile the tiles
        for n in sizes:
            x = points(n)
            v = np.random.default_rng(0).standard_normal((n, 9))
            row = dict(kernel=name, n=n, auto_tiles=variants["auto"].tiles)
            res = {}
            for label, eng in variants.items():
                res[label], wall, cpu, peak = timed(lambda eng=eng: eng.matvec(x, x, v, same=True))
                row.update({f"{label}_wall": wall, f"{label}_cpu": cpu, f"{label}_peak_mib": peak / 2**20})
                row[f"{label}_rate"] = n * n / 2 / cpu  # kernel entries per CPU second (one core's share)
            if Old is not None:
                old = Old(k, 9)
                u_old, w_old, c_old, m_old = timed(lambda: old.matvec(x, x, v, same=True))
                row.update(numpy_wall=w_old, numpy_cpu=c_old, numpy_peak_mib=m_old / 2**20)
                for label in variants:
                    row[f"{label}_wall_ratio"] = w_old / row[f"{label}_wall"]
                    row[f"{label}_cpu_ratio"] = c_old / row[f"{label}_cpu"]
                    row[f"{label}_max_rel_diff"] = float(np.abs(res[label] - u_old).max() / np.abs(u_old).max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# ---------------------------------------------------------------------------- 2, 3. scaling out
CHILD = r"""
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
mode, n, cpus, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
from cyntk.flows.distribute import logical_cpus
if cpus > 1:
    logical_cpus(cpus)
import keras, numpy as np, tensorflow as tf
from cyntk.flows import KernelModel
from cyntk.geometry import fermat_quintic, to_real
from cyntk.kernels.fs import GaussianFSKernel
if mode == "mirrored":
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
elif mode == "workers":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
else:
    strategy = tf.distribute.get_strategy()
M = fermat_quintic()
x = to_real(M.sample_points(n, seed=0, chart=(0, 1)))
y = KernelModel.targets(M, x)
with strategy.scope():
    model = KernelModel(GaussianFSKernel(0.1), x, M, n_threads=threads)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-6))
model.fit(x, y, batch_size=n, epochs=1, verbose=0, shuffle=False)  # traces the step, compiles the tiles
t0, c0 = time.perf_counter(), time.process_time()
model.fit(x, y, batch_size=n, epochs=steps, verbose=0, shuffle=False)
print("RESULT", json.dumps({"step": (time.perf_counter() - t0) / steps, "cpu": (time.process_time() - c0) / steps}))
"""


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _children(mode, n, cpus, threads, steps, n_proc=1):
    from cyntk.flows.distribute import tf_config

    workers = [f"127.0.0.1:{p}" for p in _free_ports(n_proc)]
    procs = []
    for i in range(n_proc):
        env = dict(os.environ)
        if mode == "workers":
            env["TF_CONFIG"] = tf_config(workers, i)
        args = [sys.executable, "-c", CHILD, mode, str(n), str(cpus), str(threads), str(steps)]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
        if p.returncode or not line:
            raise RuntimeError(f"child {mode} failed:\n{err[-3000:]}")
        results.append(json.loads(line[0][6:]))
    return max(r["step"] for r in results), sum(r["cpu"] for r in results)


def scaling(n, steps=2):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"n": n, "cores": cores}
    out["one_device"], _ = _children("single", n, 1, cores, steps)
    out["two_logical_devices"], _ = _children("mirrored", n, 2, max(1, cores // 2), steps)
    out["devices_overhead"] = out["two_logical_devices"] / out["one_device"] - 1
    out["two_workers"], _ = _children("workers", n, 1, max(1, cores // 2), steps, n_proc=2)
    out["workers_overhead"] = out["two_workers"] / out["one_device"] - 1
    print(json.dumps(out), flush=True)
    return out


# ---------------------------------------------------------------------------- 4. cost model
def cost_model(rows, link_gbps):
    """Predicted seconds of one exact step at 1e6 and 1e7 points on k devices, from the largest measured size."""
    largest = max(r["n"] for r in rows)
    out = []
    for row in (r for r in rows if r["n"] == largest):
        rate = max(row["xla_rate"], row["auto_rate"])  # entries per CPU-second: one CPU core as a "device"
        for n in (10**6, 10**7):
            for k in (1, 2, 8, 64):
                compute = n * n / 2 / (k * rate)
                comm = 0.0 if k == 1 else 2 * (k - 1) / k * 72 * n / (link_gbps * 1e9 / 8)
                out.append(dict(kernel=row["kernel"], n=n, devices=k, seconds=compute + comm, allreduce_s=comm))
                print(json.dumps({"cost_model": out[-1]}), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    p.add_argument("--kernels", nargs="+", default=["gaussian", "relu"], choices=["gaussian", "relu"])
    p.add_argument("--scale-size", type=int, default=10_000)
    p.add_argument("--no-old", action="store_true")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--link-gbps", type=float, default=10.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    print(json.dumps({"devices": [d.name for d in tf.config.list_logical_devices()], "gpu": bool(gpus)}), flush=True)
    result = {"engines": engines(args.sizes, args.kernels, args.tile_size, not args.no_old)}
    if args.scale_size:
        result["scaling"] = scaling(args.scale_size)
    result["cost_model"] = cost_model(result["engines"], args.link_gbps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
