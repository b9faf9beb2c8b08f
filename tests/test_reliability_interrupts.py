"""Real interruptions (SIGINT, SIGKILL) of `cyntk` subprocesses while they write result sets.

Each run is the real command line (``cyntk.cli.main``) in a child process. A
small wrapper records the stage the child has reached (marker files) and stalls
at the stage a test picks, so the signal arrives at a known moment:

* ``cyntk sample``: before anything is written, after ``dataset.npz``, after
  ``basis.pickle``;
* ``cyntk reproduce`` (a toy experiment registered in the child, so no
  TensorFlow start-up): during the computation, in the middle of writing
  ``result.npz``, between ``result.npz`` and ``result.json``, during plotting.

After every interruption the earlier complete result must still load, an
interrupted set must be reported incomplete (never loaded as complete), no
hidden temporary file may survive the next run, and a rerun must finish.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cyntk.geometry import CYDataset, IncompleteFileSetError

SAMPLE_CHILD = r"""
import os, sys, time
from pathlib import Path
import cyntk.geometry.dataset as D
from cyntk.cli import main

marks, stall = Path(os.environ["MARKS"]), os.environ.get("STALL", "")

def mark(stage):
    (marks / stage).touch()
    if stage == stall:
        time.sleep(60)

orig_write, orig_from_points = D.atomic_write, D.CYDataset.from_points.__func__

def atomic_write(path, writer, mode="wb"):
    orig_write(path, writer, mode)
    mark("wrote_" + Path(path).name)

def from_points(cls, *args, **kwargs):
    out = orig_from_points(cls, *args, **kwargs)
    mark("sampled")
    return out

D.atomic_write = atomic_write
D.CYDataset.from_points = classmethod(from_points)
sys.exit(main(sys.argv[1:]))
"""

REPRODUCE_CHILD = r"""
import os, sys, time, types
from pathlib import Path
import cyntk
# the real runner and CLI, without importing the TensorFlow-based experiments
pkg = types.ModuleType("cyntk.experiments")
pkg.__path__ = [str(Path(cyntk.__file__).parent / "experiments")]
sys.modules["cyntk.experiments"] = pkg
sys.modules["cyntk.experiments.registry"] = types.ModuleType("cyntk.experiments.registry")
import numpy as np
from cyntk.experiments import runner
from cyntk.cli import main

marks, stall = Path(os.environ["MARKS"]), os.environ.get("STALL", "")

def mark(stage):
    (marks / stage).touch()
    if stage == stall:
        time.sleep(60)

def run(n_points, seed):
    mark("run")
    rng = np.random.default_rng(seed)
    return {"n_points": n_points, "distances": rng.random((n_points, n_points))}

def plot(res):
    mark("plot")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(res["distances"][0])
    return fig

orig_write, orig_json = runner.atomic_write, runner.save_json

def atomic_write(path, writer, mode="wb"):
    path = Path(path)
    def slow(fh):
        if stall == "mid_" + path.name:
            fh.write(b"PK\x03\x04 half of an archive")
            fh.flush()
            mark("mid_" + path.name)
        writer(fh)
    orig_write(path, slow, mode)

def save_json(obj, path):
    mark("before_json")
    return orig_json(obj, path)

runner.atomic_write, runner.save_json = atomic_write, save_json
n = int(os.environ.get("NPTS", "30"))
runner.register(runner.Experiment("toy", run, plot, {"quick": dict(n_points=n, seed=n)}, "a toy"))
sys.exit(main(sys.argv[1:]))
"""


def _child(script, args, marks: Path, *, stall="", signum=None, env_extra=None, timeout=60):
    """Run a child; when ``signum`` is given, send it once the child stalls at ``stall``."""
    for f in marks.iterdir():
        f.unlink()
    env = dict(os.environ, MARKS=str(marks), STALL=stall, TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if signum is not None:
        deadline = time.monotonic() + timeout
        while not (marks / stall).exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"child ended (rc {proc.returncode}) before stage {stall!r}:\n{out}\n{err}")
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"child never reached stage {stall!r}")
            time.sleep(0.01)
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _hidden(directory: Path):
    return sorted(p.name for p in directory.rglob(".*"))


def _assert_one_line_interrupt(rc, err):
    assert rc == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert lines and "interrupted" in lines[-1] and lines[-1].startswith("cyntk ")


@pytest.fixture
def marks(tmp_path):
    d = tmp_path / "marks"
    d.mkdir()
    return d


def test_sample_killed_and_interrupted_at_every_stage(tmp_path, marks):
    out = tmp_path / "ds"
    args = ["sample", "quintic", "-n", "400", "-o", str(out), "--seed", "1"]
    rc, stdout, err = _child(SAMPLE_CHILD, args, marks)
    assert rc == 0, err
    first = CYDataset.load(out)
    kappa_t1 = first.kappa

    # a t = 2 set over the t = 1 directory, killed before anything was written: t = 1 intact
    t2 = args[:-2] + ["--seed", "2", "--kmoduli", "2"]
    rc, _, _ = _child(SAMPLE_CHILD, t2, marks, stall="sampled", signum=signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert CYDataset.load(out).kappa == kappa_t1

    # killed after dataset.npz (the case: old basis.pickle beside a new dataset.npz)
    rc, _, _ = _child(SAMPLE_CHILD, t2, marks, stall="wrote_dataset.npz", signum=signal.SIGKILL)
    assert rc == -signal.SIGKILL
    with pytest.raises(IncompleteFileSetError, match=r"incomplete.*interrupted.*re-create"):
        CYDataset.load(out)

    # Ctrl-C after basis.pickle, before the manifest: still incomplete, one-line message
    rc, _, err = _child(SAMPLE_CHILD, t2, marks, stall="wrote_basis.pickle", signum=signal.SIGINT)
    _assert_one_line_interrupt(rc, err)
    with pytest.raises(IncompleteFileSetError, match="incomplete"):
        CYDataset.load(out)

    # the rerun finishes the set; nothing hidden is left behind
    rc, stdout, err = _child(SAMPLE_CHILD, t2, marks)
    assert rc == 0, err
    ds = CYDataset.load(out)
    assert ds.manifold.kmoduli[0] == 2.0 and ds.kappa != kappa_t1
    assert f"kappa = {ds.kappa:.10g}" in stdout
    assert _hidden(out) == []


@pytest.mark.slow
def test_reproduce_killed_and_interrupted_at_every_stage(tmp_path, marks):
    out = tmp_path / "res"
    d = out / "toy"
    base = ["reproduce", "toy", "-o", str(out)]

    # Ctrl-C during the very first computation: nothing is taken as a result
    rc, _, err = _child(REPRODUCE_CHILD, base, marks, stall="run", signum=signal.SIGINT)
    _assert_one_line_interrupt(rc, err)
    assert not (d / "manifest.json").exists() and not (d / "result.json").exists()

    rc, stdout, err = _child(REPRODUCE_CHILD, base, marks)
    assert rc == 0, err
    assert "done" in stdout

    def loaded():
        code = (
            "import sys, types, json; from pathlib import Path; import cyntk;"
            "pkg = types.ModuleType('cyntk.experiments');"
            "pkg.__path__ = [str(Path(cyntk.__file__).parent / 'experiments')];"
            "sys.modules['cyntk.experiments'] = pkg;"
            "from cyntk.experiments.runner import load_result;"
            f"r = load_result({str(out)!r}, 'toy');"
            "print(json.dumps([int(r['n_points']), list(r['distances'].shape)]))"
        )
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout.strip(), p.stderr

    assert loaded()[:2] == (0, "[30, [30, 30]]")
    force = base + ["--force"]
    bigger = {"NPTS": "40"}

    # --force killed while computing: the earlier complete result is intact
    rc, _, _ = _child(REPRODUCE_CHILD, force, marks, stall="run", signum=signal.SIGKILL, env_extra=bigger)
    assert rc == -signal.SIGKILL
    assert loaded()[:2] == (0, "[30, [30, 30]]")

    # --force killed between result.npz and result.json: refused as incomplete, not mixed
    rc, _, _ = _child(REPRODUCE_CHILD, force, marks, stall="before_json", signum=signal.SIGKILL, env_extra=bigger)
    assert rc == -signal.SIGKILL
    rc, _, err = loaded()
    assert rc != 0 and "IncompleteFileSetError" in err and "never finished" in err

    # killed in the middle of writing result.npz: its temporary file is left ...
    rc, _, _ = _child(REPRODUCE_CHILD, force, marks, stall="mid_result.npz", signum=signal.SIGKILL, env_extra=bigger)
    assert rc == -signal.SIGKILL
    assert any(name.startswith(".result.npz.") for name in _hidden(d))

    # Ctrl-C while plotting
    rc, _, err = _child(REPRODUCE_CHILD, force, marks, stall="plot", signum=signal.SIGINT, env_extra=bigger)
    _assert_one_line_interrupt(rc, err)

    # ... and the rerun (no --force) says the set is incomplete, recomputes it and cleans up
    rc, stdout, err = _child(REPRODUCE_CHILD, base, marks, env_extra=bigger)
    assert rc == 0, err
    assert "incomplete" in stdout and "already done" not in stdout
    assert loaded()[:2] == (0, "[40, [40, 40]]")
    assert _hidden(d) == []
    assert (d / "toy.png").read_bytes()[:4] == b"\x89PNG"

    # now it is verified complete
    rc, stdout, _ = _child(REPRODUCE_CHILD, base, marks, env_extra=bigger)
    assert rc == 0 and "already done" in stdout and "verified" in stdout

    # a result written before manifests existed is adopted only if every file reads completely
    (d / "manifest.json").unlink()
    rc, stdout, _ = _child(REPRODUCE_CHILD, base, marks, env_extra=bigger)
    assert rc == 0 and "predates manifests" in stdout and "already done" in stdout
    (d / "manifest.json").unlink()
    png = (d / "toy.png").read_bytes()
    (d / "toy.png").write_bytes(png[: len(png) // 2])
    rc, stdout, _ = _child(REPRODUCE_CHILD, base, marks, env_extra=bigger)
    assert rc == 0 and "incomplete" in stdout and "toy.png" in stdout
    assert (d / "toy.png").read_bytes() == png or (d / "toy.png").stat().st_size > len(png) // 2
    # a member changed after the set was written is refused, then recomputed
    (d / "result.json").write_text("")
    rc, stdout, _ = _child(REPRODUCE_CHILD, base, marks, env_extra=bigger)
    assert rc == 0 and "incomplete" in stdout and "result.json" in stdout
    assert loaded()[:2] == (0, "[40, [40, 40]]")
    assert np.isfinite(os.path.getsize(d / "result.npz"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_plain_cyntk_sample_interrupted_while_sampling(tmp_path, signum):
    """The unmodified entry point, interrupted mid-run: the earlier dataset stays complete."""
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "cyntk", "sample", "quartic", "-o", str(out), "--seed", "4"]
    assert subprocess.run(cmd + ["-n", "300"], capture_output=True, timeout=60).returncode == 0
    before = CYDataset.load(out).points_train.copy()
    proc = subprocess.Popen(
        cmd + ["-n", "3000000", "--seed", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = ""
    while "sampling" not in seen:  # the progress bar has started
        ch = proc.stderr.read(1)
        assert ch, f"cyntk sample ended early: {seen}"
        seen += ch
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    if signum == signal.SIGINT:
        _assert_one_line_interrupt(proc.returncode, err.replace("\r", "\n"))
    else:
        assert proc.returncode == -signal.SIGKILL
    np.testing.assert_array_equal(CYDataset.load(out).points_train, before)
    assert _hidden(out) == []
