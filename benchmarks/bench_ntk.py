"""Benchmark of the empirical metric-NTK engine (cyntk.kernels.metric_ntk).

Network: the 3x128 gelu MLP R^10 -> R^9 of ``reference/ntk/empirical_mlp.npz``
(Keras Dense stack, float32, 35,593 parameters), full 9x9 blocks, kernel of P
points with themselves, P = 20, 200, 1000. Paths compared in the same run:

* ``structured`` -- cyntk's Dense fast path (Gram-matrix Hadamard products);
* ``generic``    -- cyntk's per-variable Jacobian contraction (any model);
* ``naive``      -- ``tape.jacobian`` of all P*9 outputs w.r.t. all parameters,
  concatenated into J (9P, 35593), then ``J J^T`` (the usual baseline);
* ``multiplicative`` -- the metric-NTK of cyntk's MultiplicativeModel
  ``g = G + G * H(nn)`` on the Fermat quintic with this network as ``nn``
  (structured path: ``M(x) Theta_nn M(x')^T``).

Every configuration runs in its own child process, so the peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child) belongs to that
configuration alone. Reported per configuration: the first call (including
tracing), the best of two further calls ("warm", wall clock and process CPU
time; on a shared machine the CPU time is the steadier figure), the peak RSS and
its increase over the RSS just before the first call, and the 1-minute load
average. The naive baseline materialises
(9P, P, 128)-sized pfor intermediates and is skipped when its estimated memory
exceeds ``--naive-max-gb`` (it runs out of memory at P = 1000 on small machines).

Usage::

    .venv/bin/python benchmarks/bench_ntk.py                 # all paths, P = 20 200 1000
    .venv/bin/python benchmarks/bench_ntk.py --sizes 20 200 --paths structured naive
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

PATHS = ("structured", "generic", "naive", "multiplicative")
MULTIPLICATIVE_SIZES = (200, 1000)


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB


def _points(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 5)) + 1j * rng.standard_normal((n, 5))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return np.concatenate([z.real, z.imag], axis=1)


def _network(dtype="float32"):
    import keras

    keras.utils.set_random_seed(0)
    layers = [keras.Input((10,), dtype=dtype)]
    layers += [keras.layers.Dense(128, activation="gelu", dtype=dtype) for _ in range(3)]
    layers += [keras.layers.Dense(9, dtype=dtype)]
    return keras.Sequential(layers)


def _naive_fn(model):
    import tensorflow as tf

    @tf.function
    def naive(x):
        n = tf.shape(x)[0]
        with tf.GradientTape() as tape:
            f = tf.reshape(model(x, training=False), [-1])  # (9P,)
        jac = tape.jacobian(f, model.trainable_variables, experimental_use_pfor=True)
        J = tf.concat([tf.reshape(j, [9 * n, -1]) for j in jac], axis=1)  # (9P, #params)
        K = tf.matmul(J, J, transpose_b=True)
        return tf.transpose(tf.reshape(K, [n, 9, n, 9]), [0, 2, 1, 3])

    return lambda x: naive(tf.constant(x, tf.float32)).numpy()


def child(path: str, n_points: int) -> dict:
    """Run one configuration in this process and return its measurements."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np  # noqa: F401

    from cyntk.kernels import metric_ntk

    net = _network()
    if path == "multiplicative":
        from cyntk.geometry import fermat_quintic, to_real
        from cyntk.models import MultiplicativeModel

        manifold = fermat_quintic()
        x = to_real(manifold.sample_points(n_points, seed=0))
        model = MultiplicativeModel(net, manifold)
        model(x[:2])
        run = lambda: metric_ntk(model, x, implementation="structured")
    elif path == "naive":
        x = _points(n_points)
        fn = _naive_fn(net)
        run = lambda: fn(x)
    else:
        x = _points(n_points)
        run = lambda: metric_ntk(net, x, implementation=path)
    base = _rss_gb()
    t0, c0 = time.perf_counter(), time.process_time()
    out = run()
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    warm = []
    for _ in range(2):
        t0, c0 = time.perf_counter(), time.process_time()
        out = run()
        warm.append((time.perf_counter() - t0, time.process_time() - c0))
    warm_s, warm_cpu = min(warm)
    return {
        "path": path,
        "P": n_points,
        "first_s": first,
        "warm_s": warm_s,
        "first_cpu_s": first_cpu,
        "warm_cpu_s": warm_cpu,
        "load": os.getloadavg()[0],
        "peak_gb": _rss_gb(),
        "base_gb": base,
        "shape": list(out.shape),
        "dtype": str(out.dtype),
    }


def _naive_estimate_gb(n_points: int) -> float:
    # pfor over 9P outputs keeps several (9P, P, 128) float32 cotangents alive
    return 4 * 9 * n_points * n_points * 128 * 4 / 1024**3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200, 1000])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument(
        "--naive-max-gb", type=float, default=6.0, help="skip the naive baseline when its estimated memory exceeds this"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "P"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return

    results = {}
    for n in args.sizes:
        for path in args.paths:
            if path == "multiplicative" and n not in MULTIPLICATIVE_SIZES:
                continue
            if path == "naive" and _naive_estimate_gb(n) > args.naive_max_gb:
                print(
                    f"[skip] naive P={n}: estimated {_naive_estimate_gb(n):.1f} GB of pfor "
                    f"intermediates > --naive-max-gb {args.naive_max_gb} (it would run out of memory)",
                    flush=True,
                )
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--child", path, str(n)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"[timeout] {path} P={n} after {args.timeout:.0f} s", flush=True)
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                print(f"[failed] {path} P={n} (exit {proc.returncode}, out of memory?): {' | '.join(tail)}", flush=True)
                continue
            res = json.loads(lines[-1])
            results[(path, n)] = res
            print(
                f"{path:>14s} P={n:5d}: first {res['first_s']:8.3f} s  warm {res['warm_s']:8.3f} s "
                f"(CPU {res['warm_cpu_s']:.2f} s)  peak RSS {res['peak_gb']:5.2f} GB "
                f"(+{res['peak_gb'] - res['base_gb']:.2f})  {tuple(res['shape'])} {res['dtype']}  "
                f"[load avg {res['load']:.1f}]",
                flush=True,
            )

    print("\nSummary (warm time; ratio = naive / path, > 1 means faster than naive):")
    print(f"{'path':>14s} {'P':>6s} {'first s':>9s} {'warm s':>9s} {'peak GB':>8s} {'vs naive':>9s}")
    for (path, n), res in sorted(results.items(), key=lambda kv: (kv[0][1], PATHS.index(kv[0][0]))):
        naive = results.get(("naive", n))
        ratio = f"{naive['warm_s'] / res['warm_s']:8.1f}x" if naive else "   n/a"
        print(f"{path:>14s} {n:6d} {res['first_s']:9.3f} {res['warm_s']:9.3f} {res['peak_gb']:8.2f} {ratio:>9s}")


if __name__ == "__main__":
    main()
