"""The ``cyntk`` command line.

Sub-commands import what they need lazily, so ``cyntk sample`` never imports
TensorFlow. Every failure is reported as one line naming the argument or path,
with exit code 2 (1 for an unexpected internal error, 130 for Ctrl-C) and no
traceback; ``cyntk --debug ...`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

__all__ = ["main", "build_parser"]


def _chart(text: str) -> tuple[int, int]:
    try:
        k, j = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--chart must be 'PATCH,ELIM' (two integers); received {text!r}") from None
    return k, j


def _int_at_least(flag: str, low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= {low}; received {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= {low}; received {value}")
        return value

    return parse


def _float_in(
    flag: str, low: float, high: float | None, *, low_open: bool = False, high_open: bool = True
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number; received {text!r}") from None
        ok = (
            value == value
            and (value > low if low_open else value >= low)
            and (high is None or (value < high if high_open else value <= high))
        )
        if not ok:
            lo = f"{'(' if low_open else '['}{low:g}"
            hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"{flag} must be in {lo}, {hi}; received {text!r}")
        return value

    return parse


def _complex(text: str) -> complex:
    try:
        value = complex(text.replace(" ", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--psi must be a complex number such as 0.5 or 0.1+0.2j; received {text!r}"
        ) from None
    if value != value or abs(value) == float("inf"):
        raise argparse.ArgumentTypeError(f"--psi must be finite; received {text!r}")
    return value


def _check_output(path: str | os.PathLike[str], flag: str = "--output") -> None:
    """Refuse an output directory that cannot be created or written, before any work is done."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path} is an existing file; give a directory path.")
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError(f"{flag} {path}: {probe} is a file, so the directory cannot be created.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(
            f"{flag} {path}: {probe} is not writable (permission denied or read-only); choose a writable location."
        )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cyntk", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="sample points on a Calabi-Yau and write a cymetric dataset directory")
    s.add_argument(
        "manifold",
        help="quintic | dwork | quartic (K3) | cubic (torus) | tetraquadric | bicubic | cicy (with --configuration)",
    )
    s.add_argument(
        "-n", "--n-points", type=_int_at_least("--n-points", 2), default=100_000, help="total points (train + val)"
    )
    s.add_argument("-o", "--output", required=True, help="output directory (dataset.npz, basis.pickle)")
    s.add_argument("--psi", type=_complex, default=None, help="Dwork parameter psi (dwork only)")
    s.add_argument(
        "--kmoduli",
        type=_float_in("--kmoduli", 0.0, None, low_open=True),
        default=None,
        help="Kaehler parameter t (default 1)",
    )
    s.add_argument("--seed", type=_int_at_least("--seed", 0), default=2021, help="RNG seed (default 2021)")
    s.add_argument(
        "--val-split", type=_float_in("--val-split", 0.0, 1.0), default=0.1, help="validation fraction (default 0.1)"
    )
    s.add_argument(
        "--chart", type=_chart, default=None, help="keep only points in chart 'PATCH,ELIM' (fixed-chart sampling)"
    )
    s.add_argument(
        "--configuration",
        default=None,
        help="cicy only: 'n1|q11,q12;n2|q21,q22' (factor dimension | equation degrees), e.g. '5|3,3', "
        "or a JSON file with 'ambient' and 'configuration'",
    )
    s.add_argument(
        "--coefficient-seed",
        type=_int_at_least("--coefficient-seed", 0),
        default=None,
        help="tetraquadric/bicubic/cicy: seed of the random coefficients (defaults 11/0/0)",
    )
    s.set_defaults(func=_cmd_sample)

    d = sub.add_parser("demo", help="a small end-to-end study on the Fermat quintic (a few minutes)")
    d.add_argument("-o", "--output", default="cyntk-demo", help="output directory (default cyntk-demo)")
    d.add_argument(
        "--scale",
        choices=["default", "tiny"],
        default="default",
        help="'default' (a few minutes on 2 cores) or 'tiny' (seconds, for smoke tests)",
    )
    d.add_argument("--seed", type=_int_at_least("--seed", 0), default=0, help="seed of every random choice (default 0)")
    d.set_defaults(func=_cmd_demo)

    r = sub.add_parser("reproduce", help="reproduce the paper's figures and tables (resumable)")
    r.add_argument(
        "experiments", nargs="+", help="experiment names (fig2, fig3, ...; 'cyntk reproduce list' lists them) or 'all'"
    )
    r.add_argument(
        "--scale",
        choices=["quick", "paper"],
        default="quick",
        help="'quick' (minutes on 2 cores) or 'paper' (the paper's sizes: hours on 2 cores)",
    )
    r.add_argument("-o", "--output", default="cyntk-results", help="output directory (default cyntk-results)")
    r.add_argument("--force", action="store_true", help="recompute experiments that already have results")
    r.set_defaults(func=_cmd_reproduce)
    return parser


def _cmd_sample(args: argparse.Namespace) -> int:
    from cyntk.geometry import get_manifold, make_dataset

    _check_output(args.output)
    if int((1.0 - args.val_split) * args.n_points) < 1:
        raise ValueError(
            f"--val-split {args.val_split} leaves no training point of --n-points "
            f"{args.n_points}; use a smaller --val-split or more points."
        )
    manifold: Any  # a Hypersurface or a CompleteIntersection; make_dataset takes both
    if str(args.manifold).lower() in ("tetraquadric", "bicubic", "cicy"):
        from cyntk.geometry.cicy_manifolds import get_cicy

        manifold = get_cicy(
            args.manifold, configuration=args.configuration, kmoduli=args.kmoduli, seed=args.coefficient_seed
        )
    else:
        manifold = get_manifold(args.manifold, psi=args.psi, kmoduli=args.kmoduli)
    t0 = time.perf_counter()
    ds = make_dataset(
        manifold, args.n_points, val_split=args.val_split, seed=args.seed, chart=args.chart, progress=True
    )
    out = ds.save(args.output)
    dt = time.perf_counter() - t0
    print(f"{manifold.name}: {ds.n_train} train + {ds.n_val} val points in {dt:.2f} s")
    print(f"kappa = {ds.kappa:.10g}, Vol_CY = {ds.vol_cy:.6g}, Vol_K(FS) = {manifold.intersection_number:g}")
    print(f"wrote {out}/dataset.npz and {out}/basis.pickle")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from cyntk.experiments.demo import run_demo

    out = os.path.abspath(args.output)
    _check_output(out)
    print(f"cyntk demo: writing to {out}")
    run_demo(out, scale=args.scale, seed=args.seed)
    print(f"cyntk demo: results in {out} (summary.md, results.json, figures/, tensorboard/)")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    if args.experiments != ["list"]:
        _check_output(args.output)
    from cyntk.experiments.runner import EXPERIMENTS, _load_registry, reproduce

    _load_registry()
    if args.experiments == ["list"]:
        for name, exp in EXPERIMENTS.items():
            print(f"{name:12s} {exp.description}")
        return 0
    if args.scale == "paper":
        print(
            "paper scale: this can take hours on 2 CPU cores; progress is saved as it goes, "
            "and rerunning the same command resumes."
        )
    reproduce(args.experiments, scale=args.scale, output=args.output, force=args.force)
    print(f"results in {args.output}/")
    return 0


def _describe(exc: BaseException) -> str:
    """One line for an exception: OSErrors name their path, others keep their message."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
        if exc.filename2 is not None:
            text += f" -> {exc.filename2}"
        hint = {
            FileExistsError: " (an existing file is in the way; choose another path)",
            PermissionError: " (no permission; choose a writable location)",
            IsADirectoryError: " (a directory is in the way; choose another path)",
            NotADirectoryError: " (a file is in the way of a directory; choose another path)",
        }
        text += hint.get(type(exc), "")
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up lines (oneDNN, CUDA probing, absl preamble) kept off the terminal.

    TensorFlow's C++ runtime writes them straight to file descriptor 2 while it
    loads, before any Python logging setting applies (``TF_CPP_MIN_LOG_LEVEL``
    does not reach the absl preamble), so descriptor 2 points at ``/dev/null``
    for the duration of the import only: later warnings and errors are shown.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


#: sub-commands that never import TensorFlow
_NUMPY_COMMANDS = ("sample",)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow start-up chatter out
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2), already reported in one line
        return int(exc.code or 0)
    if args.command not in _NUMPY_COMMANDS and not args.debug:
        _import_tensorflow_quietly()

    def one_line_warning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        print(f"cyntk {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    show = warnings.showwarning
    if not args.debug:
        warnings.showwarning = one_line_warning
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print(
            f"cyntk {args.command}: interrupted; every completed result is kept and an interrupted "
            f"one is recognised as incomplete: rerun the same command to continue.",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI reports every failure as one line
        if args.debug:
            traceback.print_exc()
        expected = isinstance(exc, (ValueError, TypeError, KeyError, OSError, MemoryError))
        kind = "error" if expected else f"internal error ({type(exc).__name__}; rerun with --debug)"
        print(f"cyntk {args.command}: {kind}: {_describe(exc)}", file=sys.stderr)
        return 2 if expected else 1
    finally:
        warnings.showwarning = show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
