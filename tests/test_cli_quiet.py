"""The CLI keeps TensorFlow's start-up lines off the terminal, and shows them with --debug."""

from __future__ import annotations

import os
import subprocess
import sys

NOISE = ("oneDNN custom operations", "Could not find cuda drivers", "absl::InitializeLog")


def _run(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "cyntk", *args], capture_output=True, text=True, env=env, timeout=300)


def test_tensorflow_start_up_is_quiet_and_errors_still_show():
    r = _run("reproduce", "no_such_experiment")
    assert r.returncode == 2
    assert not any(n in r.stderr for n in NOISE), r.stderr
    # the one-line error is still printed after the quiet import
    assert r.stderr.strip().splitlines() == [
        line for line in r.stderr.strip().splitlines() if line.startswith("cyntk reproduce: error:")
    ]
    assert "no_such_experiment" in r.stderr
