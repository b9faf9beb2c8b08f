"""The ``cyntk`` command line.

Sub-commands import what they need lazily, so ``cyntk sample`` never imports
TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["main", "build_parser"]


def _chart(text):
    try:
        k, j = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--chart must be 'PATCH,ELIM' (two integers); received {text!r}")
    return k, j


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyntk", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="sample points on a Calabi-Yau and write a cymetric dataset directory")
    s.add_argument("manifold", help="quintic | dwork | quartic (K3) | cubic (torus)")
    s.add_argument("-n", "--n-points", type=int, default=100_000, help="total points (train + val)")
    s.add_argument("-o", "--output", required=True, help="output directory (dataset.npz, basis.pickle)")
    s.add_argument("--psi", type=complex, default=None, help="Dwork parameter psi (dwork only)")
    s.add_argument("--kmoduli", type=float, default=None, help="Kaehler parameter t (default 1)")
    s.add_argument("--seed", type=int, default=2021, help="RNG seed (default 2021)")
    s.add_argument("--val-split", type=float, default=0.1, help="validation fraction (default 0.1)")
    s.add_argument("--chart", type=_chart, default=None,
                   help="keep only points in chart 'PATCH,ELIM' (fixed-chart sampling)")
    s.set_defaults(func=_cmd_sample)

    d = sub.add_parser("demo", help="a small end-to-end study on the Fermat quintic (a few minutes)")
    d.add_argument("-o", "--output", default="cyntk-demo", help="output directory (default cyntk-demo)")
    d.add_argument("--scale", choices=["default", "tiny"], default="default",
                   help="'default' (a few minutes on 2 cores) or 'tiny' (seconds, for smoke tests)")
    d.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    d.set_defaults(func=_cmd_demo)

    r = sub.add_parser("reproduce", help="reproduce the paper's figures and tables (resumable)")
    r.add_argument("experiments", nargs="+",
                   help="experiment names (fig2, fig3, ...; 'cyntk reproduce list' lists them) or 'all'")
    r.add_argument("--scale", choices=["quick", "paper"], default="quick",
                   help="'quick' (minutes on 2 cores) or 'paper' (the paper's sizes: hours on 2 cores)")
    r.add_argument("-o", "--output", default="cyntk-results", help="output directory (default cyntk-results)")
    r.add_argument("--force", action="store_true", help="recompute experiments that already have results")
    r.set_defaults(func=_cmd_reproduce)
    return parser


def _cmd_sample(args) -> int:
    from cyntk.geometry import get_manifold, make_dataset

    manifold = get_manifold(args.manifold, psi=args.psi, kmoduli=args.kmoduli)
    t0 = time.perf_counter()
    ds = make_dataset(manifold, args.n_points, val_split=args.val_split, seed=args.seed,
                      chart=args.chart, progress=True)
    out = ds.save(args.output)
    dt = time.perf_counter() - t0
    print(f"{manifold.name}: {ds.n_train} train + {ds.n_val} val points in {dt:.2f} s")
    print(f"kappa = {ds.kappa:.10g}, Vol_CY = {ds.vol_cy:.6g}, Vol_K(FS) = {manifold.intersection_number:g}")
    print(f"wrote {out}/dataset.npz and {out}/basis.pickle")
    return 0


def _cmd_demo(args) -> int:
    from cyntk.experiments.demo import run_demo

    out = os.path.abspath(args.output)
    print(f"cyntk demo: writing to {out}")
    run_demo(out, scale=args.scale, seed=args.seed)
    print(f"cyntk demo: results in {out} (summary.md, results.json, figures/, tensorboard/)")
    return 0


def _cmd_reproduce(args) -> int:
    from cyntk.experiments.runner import EXPERIMENTS, _load_registry, reproduce

    _load_registry()
    if args.experiments == ["list"]:
        for name, exp in EXPERIMENTS.items():
            print(f"{name:12s} {exp.description}")
        return 0
    if args.scale == "paper":
        print("paper scale: this can take hours on 2 CPU cores; progress is saved as it goes, "
              "and rerunning the same command resumes.")
    reproduce(args.experiments, scale=args.scale, output=args.output, force=args.force)
    print(f"results in {args.output}/")
    return 0


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # keep TensorFlow start-up chatter out
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        print(f"cyntk {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
