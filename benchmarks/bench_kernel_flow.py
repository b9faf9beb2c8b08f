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
  timed below 1e5 unless ``--eval`` / ``--no-eval`` says otherwise;
* ``cpu``: CPU seconds (user + system, all threads) of the step and of the
  evaluation: on a machine shared with other jobs, ``cpu / threads`` is the
  wall time the step would take on that many dedicated cores;
* ``peak``: peak resident memory of the process that ran the flow (``VmHWM``;
  every configuration runs in its own subprocess, which reads the point set
  sampled beforehand by the parent from an npz file), and ``base``: its
  resident memory before the first step (Python, TensorFlow, the data and the
  model).

Kernels: ``gaussian`` (GaussianFSKernel, sigma = 0.02, SGD learning rate 1e-4),
``relu`` (the paper's infinite-width ReLU NTK, W_std = 80.52, b_std = 5.716,
depth 1; learning rate 2.5e-10 / N, so that the step keeps the metric
positive-definite and is a normal step, not a rejected one) and ``primal``
(the empirical NTK of a multiplicative metric model with a 3 x 64 gelu network,
trained in primal form: gradient descent on the linearised network, O(N) per
step).

Baseline: the implementation before the tile interface (``OldKernelProduct``,
``OldGaussianFSKernel``, ``OldReLUNTK`` below, copied into this script):
one kernel call per 256 x 256 tile with validation, the Gaussian through
``fs_distance_matrix`` and the ReLU NTK through the generic recursion with
``sin(arccos c)``, one thread-pool task per tile. At ``--ratio-size`` (default
1e4, where the old code is affordable) each kernel runs in one subprocess that
alternates old and new flow steps of the same model (the old product swapped
in) and old and new train products ``Theta(x, x) v``, and prints the best of
each, their CPU-time and wall-time ratios, and the largest relative difference
of the two products. The parent also checks the tiled product against the
dense untiled block at ``--baseline-size`` (exactness).

Run:
    python benchmarks/bench_kernel_flow.py                        # 2500 and 1e4, ratios at 1e4
    python benchmarks/bench_kernel_flow.py --big                  # + 1e5 (gaussian, relu, primal)
    python benchmarks/bench_kernel_flow.py --sizes 100000 --kernels relu --no-ratio
Flags: --sizes, --kernels, --primal (sizes of the primal form), --big, --threads,
--tile-size, --steps, --eval / --no-eval (evaluation timing; default only below
1e5), --ratio-size, --no-ratio, --json (write the results), --data-dir
(point-set cache).
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


# ------------------------------------------------------------------ the old implementation
# (before the tile interface; kept here, not in the package, as the baseline)


def _old_classes():
    from cyntk.flows.product import KernelProduct
    from cyntk.geometry import fs_distance_matrix, to_complex
    from cyntk.kernels.base import Kernel

    class OldGaussianFSKernel(Kernel):
        component_diagonal = True
        pairwise = True

        def __init__(self, sigma):
            self.sigma = sigma

        def _block(self, x1, x2):
            z1 = to_complex(x1)
            z2 = None if x2 is None else to_complex(x2)
            d = fs_distance_matrix(z1, z2, chunk_size=2048)
            if z2 is None:
                d = 0.5 * (d + d.T)
            return np.exp(-d / (2.0 * self.sigma))

    def relu_expectations(q1, q2, k, same):
        norm = np.sqrt(np.outer(q1, q2))
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.where(norm > 0, k / np.where(norm > 0, norm, 1.0), 0.0)
        cos = np.clip(cos, -1.0, 1.0)
        if same:
            np.fill_diagonal(cos, 1.0)
        theta = np.arccos(cos)
        e_phi = norm * (np.sin(theta) + (np.pi - theta) * cos) / (2.0 * np.pi)
        e_dphi = (np.pi - theta) / (2.0 * np.pi)
        return e_phi, e_dphi

    class OldReLUNTK(Kernel):
        component_diagonal = True
        pairwise = True

        def __init__(self, W_std, b_std, depth):
            self.w2, self.b2, self.depth = W_std**2, b_std**2, depth

        def _block(self, x1, x2):
            w2, b2 = self.w2, self.b2
            same = x2 is None
            x2 = x1 if same else x2
            d = x1.shape[1]
            q1 = w2 * np.sum(x1 * x1, axis=1) / d + b2
            q2 = q1 if same else w2 * np.sum(x2 * x2, axis=1) / d + b2
            k = w2 * (x1 @ x2.T) / d + b2
            if same:
                np.fill_diagonal(k, q1)
            ntk = k.copy()
            for _ in range(self.depth):
                e_phi, e_dphi = relu_expectations(q1, q2, k, same)
                k_new = w2 * e_phi + b2
                ntk = k_new + w2 * e_dphi * ntk
                q1 = w2 * q1 / 2.0 + b2
                q2 = q1 if same else w2 * q2 / 2.0 + b2
                k = k_new
                if same:
                    np.fill_diagonal(k, q1)
            return ntk

    class OldKernelProduct(KernelProduct):
        """The tile loop before the tile interface: one kernel call and one task per tile."""

        def _tiled(self, x1, x2, v, symmetric):
            import concurrent.futures

            from threadpoolctl import threadpool_limits

            t = self.tile_size
            s1 = [slice(s, min(s + t, len(x1))) for s in range(0, len(x1), t)]
            s2 = s1 if symmetric else [slice(s, min(s + t, len(x2))) for s in range(0, len(x2), t)]
            if symmetric:
                tasks = [(i, j) for i in range(len(s1)) for j in range(i, len(s1))]
            else:
                tasks = [(i, j) for i in range(len(s1)) for j in range(len(s2))]

            def work(task):
                i, j = task
                a, b = s1[i], s2[j]
                if symmetric and i == j:
                    blk = self.check_block(self.kernel(x1[a], None), a.stop - a.start, a.stop - a.start)
                    return i, self._apply_block(blk, v[b]), None, None
                blk = self.check_block(self.kernel(x1[a], x2[b]), a.stop - a.start, b.stop - b.start)
                if symmetric:
                    return i, self._apply_block(blk, v[b]), j, self._apply_block_t(blk, v[a])
                return i, self._apply_block(blk, v[b]), None, None

            out = np.zeros((len(x1), self.m))

            def accumulate(res):
                i, ui, j, uj = res
                out[s1[i]] += ui
                if j is not None:
                    out[s1[j]] += uj

            if self.n_threads <= 1 or len(tasks) == 1:
                with threadpool_limits(limits=1, user_api="blas"):
                    for task in tasks:
                        accumulate(work(task))
                return out
            with (
                threadpool_limits(limits=1, user_api="blas"),
                concurrent.futures.ThreadPoolExecutor(max_workers=self.n_threads) as pool,
            ):
                pending = set()
                for task in tasks:
                    pending.add(pool.submit(work, task))
                    if len(pending) >= 2 * self.n_threads:
                        done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                        for f in done:
                            accumulate(f.result())
                for f in concurrent.futures.as_completed(pending):
                    accumulate(f.result())
            return out

    return OldGaussianFSKernel, OldReLUNTK, OldKernelProduct


def _old_product(name, m, tile, threads):
    OldGaussianFSKernel, OldReLUNTK, OldKernelProduct = _old_classes()
    kernel = OldGaussianFSKernel(0.02) if name == "gaussian" else OldReLUNTK(80.52, 5.716, 1)
    return OldKernelProduct(kernel, m, tile_size=tile, n_threads=threads)


# ------------------------------------------------------------------ benchmark
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
    from cyntk.flows.kernel_model import KernelModel
    from cyntk.geometry import fermat_quintic, to_real

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
    net = keras.Sequential(
        [keras.Input((10,))]
        + [keras.layers.Dense(64, activation="gelu") for _ in range(3)]
        + [keras.layers.Dense(9, use_bias=False, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))]
    )
    model = MultiplicativeModel(net, M, dtype="float64")
    return EmpiricalNTKKernel(model)


def _model(kind, n, threads, tile, data_dir):
    import keras

    from cyntk.flows.kernel_model import KernelModel

    M, x, y, xe, ye = _data(n, path=_data_path(n, data_dir))
    if kind == "primal":
        kernel, form = _primal_model(M), "primal"
    else:
        kernel, form = _kernel(kind), "dual"
    model = KernelModel(kernel, x, M, form=form, tile_size=tile, n_threads=threads, on_non_positive="stop")
    # a step that keeps the metric positive-definite (the ReLU NTK's entries are ~W_std^2 = 6.5e3)
    model.compile(optimizer=keras.optimizers.SGD(2.5e-10 / n if kind == "relu" else 1e-4))
    return model, x, y, xe, ye


def _timed(fn):
    t0, c0 = time.perf_counter(), _cpu_s()
    out = fn()
    return time.perf_counter() - t0, _cpu_s() - c0, out


def child(kind, n, threads, tile, steps, data_dir, do_eval):
    """Run one configuration and print a JSON line."""
    t0 = time.perf_counter()
    model, x, y, xe, ye = _model(kind, n, threads, tile, data_dir)
    t_build = time.perf_counter() - t0
    base = _rss_mb()
    times, cpu = [], []
    for _ in range(steps):
        w, c, _ = _timed(lambda: model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0))
        times.append(w)
        cpu.append(c)
    t_eval = cpu_eval = loss = None
    if do_eval:
        for _ in range(steps):  # the first evaluation also traces the test step
            t_eval, cpu_eval, res = _timed(lambda: model.evaluate(xe, ye, batch_size=n, verbose=0, return_dict=True))
        loss = res["loss"]
    peak = _peak_mb()
    print(
        json.dumps(
            {
                "kernel": kind,
                "n": n,
                "build_s": t_build,
                "steps_s": times,
                "step_s": times[-1],
                "eval_s": t_eval,
                "step_cpu_s": cpu[-1],
                "eval_cpu_s": cpu_eval,
                "load_avg": os.getloadavg()[0],
                "base_mb": base,
                "peak_mb": peak,
                "eval_loss": loss,
                "threads": threads,
                "tile": tile,
            }
        ),
        flush=True,
    )


def compare(kind, n, threads, tile, data_dir, repeats=2):
    """Old vs new implementation in this process: flow steps and train products, alternated."""
    model, x, y, _, _ = _model(kind, n, threads, tile, data_dir)
    new = model._product
    old = _old_product(kind, new.m, tile, threads)
    v = np.random.default_rng(0).standard_normal((n, new.m))

    def step():
        model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)

    step()  # traces the train step
    res = {"step": {"old": [], "new": []}, "product": {"old": [], "new": []}}
    u = {}
    for _ in range(repeats):
        for name, prod in (("old", old), ("new", new)):
            model._product = prod
            w, c, _ = _timed(step)
            res["step"][name].append((w, c))
            w, c, u[name] = _timed(lambda: prod.matvec(x, x, v, same=True))
            res["product"][name].append((w, c))
    model._product = new
    out = {
        "kernel": kind,
        "n": n,
        "threads": threads,
        "tile": tile,
        "load_avg": os.getloadavg()[0],
        "rel_diff": float(np.abs(u["new"] - u["old"]).max() / np.abs(u["old"]).max()),
    }
    for what, r in res.items():
        for name, vals in r.items():
            out[f"{what}_{name}_wall_s"] = min(w for w, _ in vals)
            out[f"{what}_{name}_cpu_s"] = min(c for _, c in vals)
    print(json.dumps(out), flush=True)


def dense_check(n, threads, tile):
    """Tiled products (train set with itself and evaluation x train) vs the dense untiled blocks."""
    from cyntk.flows.product import KernelProduct

    out = {}
    _, x, _, xe, _ = _data(n)
    v = np.random.default_rng(0).standard_normal((n, 9))
    for name in KERNELS:
        kernel = _kernel(name)
        u, ue = kernel(x, None) @ v, kernel(xe, x) @ v
        prod = KernelProduct(kernel, 9, tile_size=tile, n_threads=threads)
        u2, ue2 = prod.matvec(x, x, v, same=True), prod.matvec(xe, x, v)
        out[name] = float(max(np.abs(u - u2).max() / np.abs(u).max(), np.abs(ue - ue2).max() / np.abs(ue).max()))
    return out


def _run_child(args, a):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        *args,
        "--threads",
        str(a.threads),
        "--tile-size",
        str(a.tile_size),
        "--data-dir",
        a.data_dir,
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        print(f"# {' '.join(args)} FAILED: {proc.stderr.strip().splitlines()[-3:]}", flush=True)
        return None
    return json.loads(lines[-1])


def _f(x, fmt="8.2f"):
    return format(x, fmt) if x is not None else " " * int(fmt.split(".")[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[2500, 10000])
    p.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    p.add_argument(
        "--primal", type=int, nargs="*", default=[], help="sizes for the empirical-NTK primal form (e.g. 100000)"
    )
    p.add_argument("--big", action="store_true", help="add N = 1e5 for the kernels and the primal form")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument(
        "--steps", type=int, default=None, help="flow steps per configuration (default 2 below 1e5, 1 from 1e5)"
    )
    p.add_argument(
        "--eval",
        dest="do_eval",
        action="store_true",
        default=None,
        help="also time model.evaluate (default: below 1e5 only)",
    )
    p.add_argument("--no-eval", dest="do_eval", action="store_false")
    p.add_argument("--ratio-size", type=int, default=10000)
    p.add_argument("--no-ratio", action="store_true")
    p.add_argument("--baseline-size", type=int, default=2500)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--data-dir", default=os.environ.get("TMPDIR", "/tmp"), help="where the sampled point sets are cached (npz)"
    )
    p.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    p.add_argument("--compare", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        n = int(a.child[1])
        steps = a.steps or (2 if n < 100_000 else 1)
        do_eval = a.do_eval if a.do_eval is not None else n < 100_000
        child(a.child[0], n, a.threads, a.tile_size, steps, a.data_dir, do_eval)
        return
    if a.compare:
        compare(a.compare[0], int(a.compare[1]), a.threads, a.tile_size, a.data_dir)
        return

    sizes = sorted(set(a.sizes + ([100_000] if a.big else [])))
    primal = sorted(set(a.primal + ([100_000] if a.big else [])))
    print(
        f"# KernelModel flow benchmark: {a.threads} threads, tile {a.tile_size}, "
        f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    configs = [(k, n) for n in sizes for k in a.kernels] + [("primal", n) for n in primal]
    for n in sorted({n for _, n in configs} | ({a.ratio_size} if not a.no_ratio else set())):
        _data(n, path=_data_path(n, a.data_dir))  # sample once, outside the measurement
    dense = dense_check(a.baseline_size, a.threads, a.tile_size)
    for k, err in dense.items():
        print(
            f"# exactness {k} N={a.baseline_size}: tiled vs dense untiled products, max rel. diff {err:.1e}", flush=True
        )
    ratios = []
    if not a.no_ratio:
        print(
            f"# old vs new implementation, same process, N_train = {a.ratio_size} "
            "(best of 2; cpu = user + system seconds of all threads)",
            flush=True,
        )
        print(
            f"{'kernel':9s} {'what':8s} {'old s':>8s} {'old cpu':>8s} {'new s':>8s} "
            f"{'new cpu':>8s} {'x cpu':>6s} {'x wall':>6s} {'rel diff':>9s}",
            flush=True,
        )
        for kind in a.kernels:
            r = _run_child(["--compare", kind, str(a.ratio_size)], a)
            if r is None:
                continue
            ratios.append(r)
            for what in ("step", "product"):
                ow, oc = r[f"{what}_old_wall_s"], r[f"{what}_old_cpu_s"]
                nw, nc = r[f"{what}_new_wall_s"], r[f"{what}_new_cpu_s"]
                print(
                    f"{kind:9s} {what:8s} {ow:8.2f} {oc:8.2f} {nw:8.2f} {nc:8.2f} {oc / nc:6.2f} "
                    f"{ow / nw:6.2f} {r['rel_diff']:9.1e}",
                    flush=True,
                )
    results = []
    print(
        f"{'kernel':9s} {'N':>7s} {'step s':>8s} {'cpu s':>8s} {'eval s':>8s} {'cpu s':>8s} "
        f"{'peak MB':>8s} {'base MB':>8s} {'load':>5s} {'dense block GB':>14s}",
        flush=True,
    )
    for kind, n in configs:
        args = ["--child", kind, str(n)]
        if a.steps:
            args += ["--steps", str(a.steps)]
        if a.do_eval is not None:
            args += ["--eval" if a.do_eval else "--no-eval"]
        r = _run_child(args, a)
        if r is None:
            continue
        results.append(r)
        dense_gb = n * n * 8 * (81 if kind == "primal" else 1) / 1e9
        print(
            f"{kind:9s} {n:7d} {r['step_s']:8.2f} {r['step_cpu_s']:8.2f} {_f(r['eval_s'])} "
            f"{_f(r['eval_cpu_s'])} {r['peak_mb']:8.0f} {r['base_mb']:8.0f} "
            f"{r['load_avg']:5.1f} {dense_gb:14.2f}",
            flush=True,
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"dense_check": dense, "ratios": ratios, "results": results, "threads": a.threads, "tile": a.tile_size},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
