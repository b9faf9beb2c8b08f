"""Frozen-kernel metric flow (KernelModel): seconds per step and peak memory vs N.

For every kernel and size N (N_train = N_eval = N, Fermat quintic, chart (0, 1)):

* ``step``: seconds of one full-batch flow step (``model.fit(..., epochs=1,
  batch_size=N)``, i.e. eq. 3.5 once: one N x N kernel product over the train
  points, half of it by symmetry, plus the O(N) loss, gradient and
  positive-definiteness check). The first step of a model also traces the
  Keras step function; with ``--steps 2`` (default below 1e5) the second
  step is reported, otherwise the first (tracing costs ~1 s);
* ``eval``: seconds of ``model.evaluate`` on the N evaluation points (one
  N x N product, no symmetry; the second evaluation when ``--steps 2``);
* ``cpu``: CPU seconds (user + system, all threads) of the step and of the
  evaluation: on a machine shared with other jobs, ``cpu / threads`` is the
  wall time the step would take on that many dedicated cores;
* ``peak``: peak resident memory of the process that ran the flow (``VmHWM``;
  every configuration runs in its own subprocess, which reads the point set
  sampled beforehand by the parent from an npz file), and ``base``: its
  resident memory before the first step (Python, TensorFlow, the data and the
  model).

Kernels: ``gaussian`` (GaussianFSKernel, sigma = 0.02), ``relu`` (the paper's
infinite-width ReLU NTK, W_std = 80.52, b_std = 5.716, depth 1) and ``primal``
(the empirical NTK of a multiplicative metric model with a 3 x 64 gelu network,
trained in primal form: gradient descent on the linearised network, O(N) per
step).

Baseline, in this (parent) process: the dense, untiled product at the smallest
size -- the whole N x N kernel block formed at once (as the paper did per
cluster) and multiplied with the coefficients. The table prints each flow step
against it, scaled by N^2 (relative cost per kernel entry), and the memory the
dense block alone would need.

Run:
    python benchmarks/bench_kernel_flow.py                         # 2500 and 1e4
    python benchmarks/bench_kernel_flow.py --sizes 100000 --steps 1   # the 1e5 case
    nohup python benchmarks/bench_kernel_flow.py --sizes 100000 --kernels gaussian relu \\
        --primal 100000 > bench_1e5.log 2>&1 &
Flags: --sizes, --kernels, --primal (sizes of the primal form), --threads,
--tile-size, --steps, --json (write the results), --data-dir (point-set cache).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

KERNELS = ("gaussian", "relu")


def _kernel(name):
    from cyntk.kernels.analytic import InfiniteWidthKernel
    from cyntk.kernels.fs import GaussianFSKernel

    if name == "gaussian":
        return GaussianFSKernel(0.02)
    return InfiniteWidthKernel("relu", W_std=80.52, b_std=5.716, depth=1)


def _data(n, seed=0, path=None):
    """Fermat quintic, N train and N evaluation points in chart (0, 1), and y = [w, |Omega|^2].

    With ``path`` the points are read from / written to an npz file, so that the
    flow's subprocess does not pay (in time or peak memory) for the sampling.
    """
    from cyntk.geometry import fermat_quintic, to_real
    from cyntk.kernels.kernel_model import KernelModel

    M = fermat_quintic()
    if path is not None and os.path.exists(path):
        d = np.load(path)
        x, y = d["x"], d["y"]
    else:
        x = to_real(M.sample_points(2 * n, seed=seed, chart=(0, 1), progress=False))
        y = KernelModel.targets(M, x)
        if path is not None:
            np.savez(path, x=x, y=y)
    return M, x[:n], y[:n], x[n:], y[n:]


def _data_path(n, data_dir):
    return os.path.join(data_dir, f"quintic_chart01_{2 * n}.npz")


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb():
    """Peak resident memory of this process (``VmHWM``; ``ru_maxrss`` where /proc is missing).

    ``VmHWM`` belongs to the process image, whereas Linux carries ``ru_maxrss``
    over from the parent across fork + exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s():
    """CPU seconds (user + system) used by this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _primal_model(M):
    import keras

    from cyntk.kernels.ntk import EmpiricalNTKKernel
    from cyntk.models import MultiplicativeModel

    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((10,))] + [keras.layers.Dense(64, activation="gelu")
                                                   for _ in range(3)]
                           + [keras.layers.Dense(9, use_bias=False, kernel_initializer=
                                                 keras.initializers.RandomNormal(stddev=0.01))])
    model = MultiplicativeModel(net, M, dtype="float64")
    return EmpiricalNTKKernel(model)


def child(kind, n, threads, tile, steps, data_dir):
    """Run one configuration and print a JSON line."""
    import keras

    from cyntk.kernels.kernel_model import KernelModel

    t0 = time.perf_counter()
    M, x, y, xe, ye = _data(n, path=_data_path(n, data_dir))
    t_data = time.perf_counter() - t0
    if kind == "primal":
        kernel, form = _primal_model(M), "primal"
    else:
        kernel, form = _kernel(kind), "dual"
    t0 = time.perf_counter()
    model = KernelModel(kernel, x, M, form=form, tile_size=tile, n_threads=threads,
                        on_non_positive="stop")
    model.compile(optimizer=keras.optimizers.SGD(1e-4))
    t_build = time.perf_counter() - t0
    base = _rss_mb()
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), _cpu_s()
        model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
        times.append(time.perf_counter() - t0)
        cpu.append(_cpu_s() - c0)
    for _ in range(steps):          # the first evaluation also traces the test step
        t0, c0 = time.perf_counter(), _cpu_s()
        res = model.evaluate(xe, ye, batch_size=n, verbose=0, return_dict=True)
        t_eval, cpu_eval = time.perf_counter() - t0, _cpu_s() - c0
    peak = _peak_mb()
    print(json.dumps({"kernel": kind, "n": n, "data_s": t_data, "build_s": t_build,
                      "steps_s": times, "step_s": times[-1], "eval_s": t_eval,
                      "step_cpu_s": cpu[-1], "eval_cpu_s": cpu_eval,
                      "load_avg": os.getloadavg()[0],
                      "base_mb": base, "peak_mb": peak, "eval_loss": res["loss"],
                      "threads": threads, "tile": tile}), flush=True)


def baseline(n, threads, tile):
    """Dense untiled product vs the tiled one (same kernel, same points) at size n."""
    from cyntk.kernels._flow import KernelProduct

    out = {}
    _, x, _, xe, _ = _data(n)
    v = np.random.default_rng(0).standard_normal((n, 9))
    for name in KERNELS:
        kernel = _kernel(name)
        t0 = time.perf_counter()
        K = kernel(x, None)
        u = K @ v
        Ke = kernel(xe, x)
        ue = Ke @ v
        dense = time.perf_counter() - t0
        del K, Ke
        prod = KernelProduct(kernel, 9, tile_size=tile, n_threads=threads)
        t0 = time.perf_counter()
        u2 = prod.matvec(x, x, v, same=True)
        ue2 = prod.matvec(xe, x, v)
        tiled = time.perf_counter() - t0
        err = max(np.abs(u - u2).max() / np.abs(u).max(), np.abs(ue - ue2).max() / np.abs(ue).max())
        out[name] = {"dense_s": dense, "tiled_s": tiled, "rel_diff": float(err)}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[2500, 10000])
    p.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    p.add_argument("--primal", type=int, nargs="*", default=[],
                   help="sizes for the empirical-NTK primal form (e.g. 100000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=None,
                   help="flow steps per configuration (default 2 below 1e5, 1 from 1e5)")
    p.add_argument("--baseline-size", type=int, default=2500)
    p.add_argument("--json", default=None)
    p.add_argument("--data-dir", default=os.environ.get("TMPDIR", "/tmp"),
                   help="where the sampled point sets are cached (npz)")
    p.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        steps = a.steps or (2 if int(a.child[1]) < 100_000 else 1)
        child(a.child[0], int(a.child[1]), a.threads, a.tile_size, steps, a.data_dir)
        return

    print(f"# KernelModel flow benchmark: {a.threads} threads, tile {a.tile_size}, "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}", flush=True)
    base = baseline(a.baseline_size, a.threads, a.tile_size)
    for k, b in base.items():
        print(f"# baseline {k} N={a.baseline_size}: dense untiled train+eval products "
              f"{b['dense_s']:.2f} s ({2 * a.baseline_size ** 2 * 8 / 2**20:.0f} MiB of blocks), "
              f"tiled {b['tiled_s']:.2f} s (x{b['dense_s'] / b['tiled_s']:.2f}), max rel. diff "
              f"{b['rel_diff']:.1e}", flush=True)
    configs = [(k, n) for n in a.sizes for k in a.kernels] + [("primal", n) for n in a.primal]
    results = []
    print(f"{'kernel':9s} {'N':>7s} {'step s':>8s} {'cpu s':>8s} {'eval s':>8s} {'cpu s':>8s} "
          f"{'peak MB':>8s} {'base MB':>8s} {'step/dense':>11s} {'dense block GB':>14s}", flush=True)
    for n in sorted({n for _, n in configs}):
        _data(n, path=_data_path(n, a.data_dir))          # sample once, outside the measurement
    for kind, n in configs:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, str(n),
               "--threads", str(a.threads), "--tile-size", str(a.tile_size),
               "--data-dir", a.data_dir]
        if a.steps:
            cmd += ["--steps", str(a.steps)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            print(f"{kind:9s} {n:7d} FAILED: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        r = json.loads(lines[-1])
        results.append(r)
        ref = base.get(kind, {}).get("dense_s")
        # dense baseline per step: (train + eval) products at the baseline size scaled by N^2;
        # compare with the step plus the evaluation
        scaled = ""
        if ref is not None:
            scaled = f"{(r['step_s'] + r['eval_s']) / (ref * (n / a.baseline_size) ** 2):11.2f}"
        dense_gb = n * n * 8 * (81 if kind == "primal" else 1) / 1e9
        print(f"{kind:9s} {n:7d} {r['step_s']:8.2f} {r.get('step_cpu_s', np.nan):8.2f} "
              f"{r['eval_s']:8.2f} {r.get('eval_cpu_s', np.nan):8.2f} {r['peak_mb']:8.0f} "
              f"{r['base_mb']:8.0f} {scaled:>11s} {dense_gb:14.2f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"baseline": base, "results": results, "threads": a.threads,
                       "tile": a.tile_size}, f, indent=1)


if __name__ == "__main__":
    main()
