"""Execute the notebooks in place, so that they are committed (and rendered in the docs) with their outputs.

Usage: ``python tools/execute_notebooks.py [notebooks/0*.ipynb ...]`` (default: every notebook).

Runs each notebook top to bottom at quick scale (``CYNTK_SCALE=quick``, the scale the test suite
executes them at) in a temporary working directory, with matplotlib's inline backend so that figures
are stored, drops the start-up lines TensorFlow's C++ runtime writes to stderr, and writes the
notebook back only when every cell ran without an error (atomically: never half-written).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]

#: start-up lines of TensorFlow's C++ runtime on stderr (not part of what a notebook shows)
_CHATTER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog"
    r"|[IWE]\d{4} \d\d:\d\d:\d\d"
    r"|To enable the following instructions)"
)


def _without_runtime_chatter(output):
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return output
    kept = "".join(line for line in output["text"].splitlines(keepends=True) if not _CHATTER.match(line))
    if not kept.strip():
        return None
    output["text"] = kept
    return output


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        client = nbclient.NotebookClient(
            nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": work}}
        )
        client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    if errors:
        raise RuntimeError(f"{path.name}: a cell raised {errors[0].get('ename')}: {errors[0].get('evalue')}")
    for cell in nb.cells:  # the working directory is temporary: keep outputs, drop volatile metadata
        cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in map(_without_runtime_chatter, cell.outputs) if o is not None]
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    os.environ.setdefault("CYNTK_SCALE", "quick")
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend: figures become outputs
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        print(f"{path.name}: executing ...", flush=True)
        print(f"{path.name}: done in {execute(path):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
