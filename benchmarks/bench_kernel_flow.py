"""Exact frozen-kernel flow steps: the TensorFlow engine against the NumPy engine it replaced, and scaling out.

One exact step of a KernelModel flow (eq. 3.5, full batch, no clusters) costs
one N x N kernel product ``u = Theta(x, x) d_alpha`` (half the tiles by
symmetry) plus O(N) work. This script measures, in one run:

1. **engine** (in this process): the product of the exact step at each size
   (Gaussian-FS sigma = 0.1 and the paper's ReLU NTK W_std = 80.52,
   b_std = 5.716, depth 1) with the TF engine (:class:`cyntk.flows.tf_product.TFKernelProduct`)
   with each kind of tile of ``--tiles``: XLA tiles (``xla``), NumPy tiles
   (``numpy``: the fused tiles of :mod:`cyntk.flows.host_tiles` for the
   Gaussian-FS kernel) and its default on this device (``auto``: XLA on a GPU;
   on a CPU, NumPy tiles for the Gaussian-FS kernel and XLA for the ReLU NTK),
   and with the NumPy engine it replaced, loaded from git
   (``git show ad85f1f:cyntk/flows/product.py`` into a temporary module), on
   the same points and vectors: wall and CPU seconds, the ratio old / new,
   the largest relative difference of the two products, and the peak resident
   memory added by each product (``VmHWM`` after resetting it through
   ``/proc/self/clear_refs``);
2. **scaling out** (``--scale-size`` points, fresh processes): flow steps of
   the Gaussian-FS flow (``KernelModel.fit``, full batch, one step per epoch)
   in 1 process (2 tile threads), under ``MirroredStrategy`` over 2 logical
   CPU devices of the same cores (1 tile thread each), and in 2 local worker
   processes (``MultiWorkerMirroredStrategy``, ``TF_CONFIG`` on 127.0.0.1, 1
   tile thread each). Each is timed two ways: ``step``, the median train step
   (Keras' batch callbacks), and ``epoch``, the wall time per epoch, which
   adds what Keras does per epoch and ``fit``'s start (one distributed
   iterator per ``fit``: ``KernelModel.fit`` feeds array inputs under a
   strategy as a repeated dataset; ``CYNTK_FIT_ARRAYS_PER_EPOCH=1`` restores
   Keras' per-epoch iterators, seconds each). Both feeds are run (``--feeds
   arrays dataset``: arrays, and a repeated ``tf.data`` dataset with
   ``steps_per_epoch``). The distribution overhead is
   ``t(2 replicas) / t(1 process) - 1``; ``alpha_sum`` checks that every run
   made the same steps;
3. **cost model**: from the measured throughput of the TF engine's tiles (kernel
   entries per CPU-second, the best kind of tile at the largest size), the
   predicted seconds of one exact
   step at 1e6 and 1e7 points on k devices: ``(N^2 / 2) / (k * rate)`` plus
   the all-reduce of the (N, 9) float64 update (ring all-reduce,
   ``2 (k-1)/k * 72 N`` bytes at ``--link-gbps``). No GPU was available to
   the sessions that wrote this script: GPU rates must be measured on a GPU
   (run this script there: the same code, the TF engine places its tiles
   on the GPU).

Run:
    python benchmarks/bench_kernel_flow.py                 # 1e4 points; devices and workers at 1e4
    python benchmarks/bench_kernel_flow.py --sizes 10000 100000 --scale-size 20000
Flags: --sizes, --kernels (gaussian relu), --tiles (xla auto numpy), --scale-size
(points of part 2; 0 skips it), --scale-steps, --feeds (arrays dataset), --pools
(TF intra,inter-op threads of part 2's processes), --no-old (skip the git
baseline), --tile-size, --link-gbps, --json FILE.
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
    # the empirical NTK kernel moved to its own module since
    src = src.replace(
        "from cyntk.kernels.ntk import EmpiricalNTKKernel", "from cyntk.kernels.empirical import EmpiricalNTKKernel"
    )
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
def engines(sizes, kernels, tile_size, use_old, tiles=("xla", "auto")):
    from cyntk.flows.tf_product import TFKernelProduct

    Old = old_engine() if use_old else None
    rows = []
    for name in kernels:
        k = kernel(name)
        # xla: TF tiles (XLA) on this device; numpy: NumPy tiles (fused host tiles where a kernel has one);
        # auto: KernelModel's default here
        variants = {t: TFKernelProduct(k, 9, tile_size=tile_size, tiles=t) for t in tiles}
        for eng in variants.values():
            eng.matvec(*(points(2048, 1),) * 2, np.ones((2048, 9)), same=True)  # compile the tiles
        for n in sizes:
            x = points(n)
            v = np.random.default_rng(0).standard_normal((n, 9))
            row = dict(kernel=name, n=n, **{f"{t}_tiles": eng.tiles for t, eng in variants.items()})
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
mode, n, cpus, threads, steps, feed, pools = sys.argv[1:8]
n, cpus, threads, steps = int(n), int(cpus), int(threads), int(steps)
import keras, numpy as np, tensorflow as tf
if pools != "default":  # TF's own thread pools (intra, inter): before anything starts TF's context
    intra, inter = (int(p) for p in pools.split(","))
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
from cyntk.flows.distribute import logical_cpus
if cpus > 1:
    logical_cpus(cpus)
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
if feed == "dataset":  # one iterator for every epoch (Keras re-creates the distributed iterator of arrays each epoch)
    data = dict(x=tf.data.Dataset.from_tensor_slices((x, y)).batch(n).repeat(), steps_per_epoch=1)
else:
    data = dict(x=x, y=y, batch_size=n, shuffle=False)
times = []
class Timer(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self.t = time.perf_counter()
    def on_train_batch_end(self, batch, logs=None):
        times.append(time.perf_counter() - self.t)
model.fit(epochs=1, verbose=0, **data)  # traces the step, compiles the tiles
t0, c0 = time.perf_counter(), time.process_time()
model.fit(epochs=steps, verbose=0, callbacks=[Timer()], **data)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
result = {"epoch": wall / steps, "step": float(np.median(times)), "cpu": cpu / steps,
          "alpha_sum": float(np.sum(model.alpha.numpy()))}
print("RESULT", json.dumps(result))
"""


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _children(mode, n, cpus, threads, steps, n_proc=1, feed="arrays", pools="default"):
    """Runs the child in ``n_proc`` processes; returns the slowest one's result (CPU seconds summed)."""
    from cyntk.flows.distribute import tf_config

    workers = [f"127.0.0.1:{p}" for p in _free_ports(n_proc)]
    procs = []
    for i in range(n_proc):
        env = dict(os.environ)
        if mode == "workers":
            env["TF_CONFIG"] = tf_config(workers, i)
        args = [sys.executable, "-c", CHILD, mode, str(n), str(cpus), str(threads), str(steps), feed, pools]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
        if p.returncode or not line:
            raise RuntimeError(f"child {mode} failed:\n{err[-3000:]}")
        results.append(json.loads(line[0][6:]))
    out = {k: max(r[k] for r in results) for k in ("epoch", "step")}
    out["cpu"] = sum(r["cpu"] for r in results)
    out["alpha_sum"] = results[0]["alpha_sum"]
    return out


def scaling(n, steps=3, feeds=("arrays", "dataset"), pools="default"):
    """1 process vs 2 logical devices vs 2 local workers, for each way of feeding ``fit``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    half = max(1, cores // 2)
    rows = []
    for feed in feeds:
        out = {"n": n, "cores": cores, "feed": feed, "pools": pools}
        runs = {
            "one_process": ("single", 1, cores, 1),
            "two_logical_devices": ("mirrored", 2, half, 1),
            "two_workers": ("workers", 1, half, 2),
        }
        for label, (mode, cpus, threads, n_proc) in runs.items():
            out[label] = _children(mode, n, cpus, threads, steps, n_proc=n_proc, feed=feed, pools=pools)
        for label in ("two_logical_devices", "two_workers"):
            for key in ("step", "epoch"):
                out[f"{label}_{key}_overhead"] = out[label][key] / out["one_process"][key] - 1
        rows.append(out)
        print(json.dumps(out), flush=True)
    return rows


# ---------------------------------------------------------------------------- 4. cost model
def cost_model(rows, link_gbps):
    """Predicted seconds of one exact step at 1e6 and 1e7 points on k devices, from the largest measured size."""
    largest = max(r["n"] for r in rows)
    out = []
    for row in (r for r in rows if r["n"] == largest):
        rate = max(v for k, v in row.items() if k.endswith("_rate"))  # entries per CPU-second: one core
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
    p.add_argument("--tiles", nargs="+", default=["xla", "auto"], choices=["xla", "auto", "numpy"])
    p.add_argument("--scale-size", type=int, default=10_000)
    p.add_argument("--scale-steps", type=int, default=3)
    p.add_argument("--feeds", nargs="+", default=["arrays", "dataset"], choices=["arrays", "dataset"])
    p.add_argument("--pools", default="default", help="TF intra,inter-op threads of the scaling children")
    p.add_argument("--no-old", action="store_true")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--link-gbps", type=float, default=10.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    print(json.dumps({"devices": [d.name for d in tf.config.list_logical_devices()], "gpu": bool(gpus)}), flush=True)
    result = {"engines": engines(args.sizes, args.kernels, args.tile_size, not args.no_old, args.tiles)}
    if args.scale_size:
        result["scaling"] = scaling(args.scale_size, args.scale_steps, tuple(args.feeds), args.pools)
    result["cost_model"] = cost_model(result["engines"], args.link_gbps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
