"""Small helpers shared by the experiments: JSON-safe results and atomic figure files."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cyntk.geometry import atomic_write, read_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["to_jsonable", "save_json", "load_json", "save_figure"]


def to_jsonable(obj: Any) -> Any:
    """Convert NumPy scalars/arrays (recursively) into plain Python for JSON."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else (float("inf") if obj > 0 else float("-inf"))
    return obj


def save_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(to_jsonable(obj), indent=2)
    atomic_write(path, lambda fh: fh.write(text), "w")
    return Path(path)


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; an unreadable one raises ``CorruptFileError`` naming it."""
    return read_json(path, what="a JSON result file", fix="re-create it (rerun with --force).")


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 130) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))
    return Path(path)
