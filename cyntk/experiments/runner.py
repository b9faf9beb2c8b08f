"""Running experiments by name at a given scale, resumably.

Every experiment is registered with its ``run`` and ``plot`` functions and the
keyword arguments of each scale ('quick': minutes on 2 CPU cores; 'paper': the
paper's sizes, hours on 2 cores). :func:`reproduce` writes, per experiment,
``<out>/<name>/result.json`` (all numbers), ``result.npz`` (arrays) and
``<name>.png`` atomically. A finished experiment is not run again unless
``force=True``; experiments that loop over many settings receive a
:class:`ResultStore` and save every finished item, so an interrupted paper-scale
run continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cyntk.experiments._io import save_figure, save_json, to_jsonable
from cyntk.geometry import atomic_write

__all__ = ["Experiment", "EXPERIMENTS", "register", "reproduce", "ResultStore", "load_result"]


class ResultStore:
    """Per-item results persisted atomically in a directory (one ``.npz`` per key).

    Long experiments call ``store.get(key)`` before computing an item and
    ``store.put(key, dict_of_arrays_and_floats)`` after, so a rerun skips what
    is done. ``ResultStore(None)`` keeps nothing (in-memory only).
    """

    def __init__(self, directory=None):
        self.directory = None if directory is None else Path(directory)
        self._mem = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(key))
        return self.directory / f"{safe}.npz"

    def get(self, key):
        if key in self._mem:
            return self._mem[key]
        if self.directory is not None and self._path(key).is_file():
            with np.load(self._path(key), allow_pickle=False) as f:
                value = {k: (f[k].item() if f[k].ndim == 0 else f[k]) for k in f.files}
            self._mem[key] = value
            return value
        return None

    def put(self, key, value: dict):
        self._mem[key] = value
        if self.directory is not None:
            arrays = {k: np.asarray(v) for k, v in value.items()}
            atomic_write(self._path(key), lambda fh: np.savez(fh, **arrays))


@dataclass
class Experiment:
    """A registered experiment: ``run(**kwargs, store=...)`` -> dict, ``plot(result)`` -> figure."""

    name: str
    run: Callable
    plot: Callable | None
    scales: dict
    description: str = ""
    uses_store: bool = False
    summary: Callable | None = None
    tags: tuple = field(default_factory=tuple)


EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    EXPERIMENTS[exp.name] = exp
    return exp


def _split_arrays(result: dict):
    arrays, scalars = {}, {}
    for k, v in result.items():
        if isinstance(v, np.ndarray) and v.size > 64:
            arrays[k] = v
        else:
            scalars[k] = v
    return arrays, scalars


def load_result(directory, name):
    """Load a saved experiment result (JSON numbers merged with the npz arrays)."""
    d = Path(directory) / name
    res = json.loads((d / "result.json").read_text())
    if (d / "result.npz").is_file():
        with np.load(d / "result.npz", allow_pickle=False) as f:
            res.update({k: f[k] for k in f.files})
    return res


def reproduce(names, *, scale: str = "quick", output="cyntk-results", force: bool = False,
              overrides: dict | None = None, log=print) -> dict:
    """Run experiments by name and write their numbers and figures.

    Args:
        names: experiment names (see ``EXPERIMENTS``) or ``['all']``.
        scale: 'quick' or 'paper'.
        output: output directory.
        force: recompute experiments that already have a result.
        overrides: extra keyword arguments per experiment name.
        log: function used for progress lines.

    Returns:
        dict name -> result dict.
    """
    _load_registry()
    if isinstance(names, str):
        names = [names]
    if "all" in names:
        names = list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"Unknown experiment(s) {unknown}; expected names from {sorted(EXPERIMENTS)} or 'all'.")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        exp = EXPERIMENTS[name]
        if scale not in exp.scales:
            raise ValueError(f"`scale` must be one of {sorted(exp.scales)} for {name}; received {scale!r}.")
        d = out / name
        if (d / "result.json").is_file() and not force:
            log(f"[{name}] already done at {d} (use --force to recompute)")
            results[name] = load_result(out, name)
            continue
        kwargs = dict(exp.scales[scale])
        kwargs.update((overrides or {}).get(name, {}))
        if exp.uses_store:
            kwargs["store"] = ResultStore(d / "partial")
        log(f"[{name}] running at scale '{scale}': {exp.description}")
        t0 = time.perf_counter()
        res = exp.run(**kwargs)
        res = dict(res)
        res["wall_seconds"] = time.perf_counter() - t0
        res["scale"] = scale
        arrays, scalars = _split_arrays(res)
        d.mkdir(parents=True, exist_ok=True)
        if arrays:
            atomic_write(d / "result.npz", lambda fh: np.savez_compressed(fh, **arrays))
        save_json(scalars, d / "result.json")
        if exp.plot is not None:
            save_figure(exp.plot(res), d / f"{name}.png")
        log(f"[{name}] done in {res['wall_seconds']:.1f} s -> {d}")
        if exp.summary is not None:
            log("    " + exp.summary(res))
        results[name] = res
    return results


def _load_registry():
    """Import the experiment modules so they register themselves."""
    from cyntk.experiments import registry  # noqa: F401


def summarise(results: dict) -> dict:
    """JSON-ready scalars of several results."""
    return {k: to_jsonable(_split_arrays(v)[1]) for k, v in results.items()}
