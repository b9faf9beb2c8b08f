"""Point sampling speed: cyntk's batched sampler vs a per-line np.roots baseline.

Measures points per second for 1e4 and 1e5 Fermat-quintic points *with* weights,
pullbacks and |Omega|^2 (everything a dataset needs), and peak Python-heap memory
(tracemalloc sees NumPy allocations). The baseline, run in the same process, is
cymetric's algorithm written the straightforward way: one ``np.roots`` call per
random line (cymetric parallelises this loop over worker processes).

Tetraquadric (one (2,2,2,2) equation in (P^1)^4, ``--tetraquadric N``, default 1e5): cyntk's
unbiased mixture sampler with weights, pullbacks and Omega, side by side in the same run with the
real cymetric's ``PointGenerator`` (from ../shared/cymetric or $CYNTK_CYMETRIC; points, weights,
pullbacks and Omega of the same manifold, one joblib job as on this machine's data sheets).

Run:  python benchmarks/bench_sampling.py [--sizes 10000 100000] [--repeat 3] [--tetraquadric 100000]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from cyntk.geometry import fermat_quintic


def cyntk_sample(M, n, seed):
    z = M.sample_points(n, seed=seed, progress=False)
    geo = M.geometry(z)
    return geo["weights"], geo["pullbacks"], geo["omega_sq"]


def baseline_sample(M, n, seed):
    """Per-line loop with np.roots (the reference algorithm, one line at a time)."""
    rng = np.random.default_rng(seed)
    d, N = M.degree, M.ncoords
    pts = []
    for _ in range(int(n / d) + 1):
        v = rng.standard_normal((2, 2 * N))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        p, q = v[0, 0::2] + 1j * v[0, 1::2], v[1, 0::2] + 1j * v[1, 1::2]
        # coefficients of sum_i (p_i + t q_i)^5, highest power first
        coeffs = np.zeros(d + 1, dtype=complex)
        for i in range(N):
            coeffs += np.polynomial.polynomial.polypow([p[i], q[i]], d)[::-1]
        for t in np.roots(coeffs):
            pts.append(p + t * q)
    z = np.array(pts)[:n]
    z = z / z[np.arange(len(z)), np.argmax(np.abs(z), 1)][:, None]
    geo = M.geometry(z)
    return geo["weights"], geo["pullbacks"], geo["omega_sq"]


def measure(fn, *args, repeat=3):
    best = np.inf
    for r in range(repeat):
        t0 = time.perf_counter()
        fn(*args, seed=r)
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn(*args, seed=99)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak


def tetraquadric_side_by_side(n, repeat):
    """cyntk vs cymetric's PointGenerator on the tetraquadric (same coefficients), seconds."""
    import os
    import sys
    from pathlib import Path

    from cyntk.geometry import tetraquadric

    M = tetraquadric()

    def run_cyntk(seed):
        z = M.sample_points(n, seed=seed, progress=False)
        geo = M.geometry(z)
        return geo["weights"], geo["pullbacks"], geo["omega"]

    run_cyntk(0) if n <= 1000 else M.geometry(M.sample_points(1000, seed=0))  # warm-up
    tc = min(_time(run_cyntk, r) for r in range(repeat))
    print(f"tetraquadric {n} points (weights, pullbacks, Omega): cyntk {tc:.2f} s ({n / tc:.0f} points/s)")
    root = Path(os.environ.get("CYNTK_CYMETRIC", Path(__file__).resolve().parents[2] / "shared" / "cymetric"))
    if not (root / "cymetric" / "pointgen" / "pointgen.py").is_file():
        print(f"cymetric not found at {root}: no side-by-side ratio (set CYNTK_CYMETRIC)")
        return
    os.environ.setdefault("LOKY_MAX_CPU_COUNT", "1")
    sys.path.insert(0, str(root))
    from cymetric.pointgen.pointgen import PointGenerator

    pg = PointGenerator(M.monomials[0], M.coefficients[0].real, M.kmoduli, M.ambient, verbose=0)

    def run_cymetric(seed):
        pg._set_seed(seed)
        z = pg.generate_points(n)
        w = pg.point_weight(z)
        pb = pg.pullbacks(z)
        om = pg.holomorphic_volume_form(z)
        return w, pb, om

    tm = _time(run_cymetric, 1)
    print(
        f"tetraquadric {n} points (weights, pullbacks, Omega): cymetric PointGenerator {tm:.2f} s "
        f"({n / tm:.0f} points/s, joblib jobs: LOKY_MAX_CPU_COUNT={os.environ['LOKY_MAX_CPU_COUNT']})"
    )
    print(f"ratio cymetric / cyntk = {tm / tc:.2f}")


def _time(fn, seed):
    t0 = time.perf_counter()
    fn(seed)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--tetraquadric",
        type=int,
        default=100_000,
        help="tetraquadric points for the side-by-side with cymetric (0: skip)",
    )
    args = ap.parse_args()
    M = fermat_quintic()
    cyntk_sample(M, 1000, seed=0)  # warm-up
    print(f"{'points':>8} {'impl':>9} {'seconds':>9} {'points/s':>11} {'peak MB':>8} {'speed-up':>9}")
    for n in args.sizes:
        tb, mb = measure(baseline_sample, M, n, repeat=1)
        tc, mc = measure(cyntk_sample, M, n, repeat=args.repeat)
        print(f"{n:>8d} {'baseline':>9} {tb:9.3f} {n / tb:11.0f} {mb / 2**20:8.1f} {1.0:9.2f}")
        print(f"{n:>8d} {'cyntk':>9} {tc:9.3f} {n / tc:11.0f} {mc / 2**20:8.1f} {tb / tc:9.2f}")
    if args.tetraquadric:
        tetraquadric_side_by_side(args.tetraquadric, args.repeat)


if __name__ == "__main__":
    main()
