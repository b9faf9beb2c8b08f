"""Running experiments by name at a given scale, resumably.

Every experiment is registered with its ``run`` and ``plot`` functions and the
keyword arguments of each scale ('quick': minutes on 2 CPU cores; 'paper': the
paper's sizes, hours on 2 cores). :func:`reproduce` writes, per experiment,
``<out>/<name>/result.json`` (all numbers), ``result.npz`` (arrays) and
``<name>.png``, each atomically, and the three as one *file set*: before the
first is replaced, ``manifest.json`` is rewritten to say "incomplete"; after the
last, it records the size and SHA-256 of each. An experiment counts as "already
done" only when its manifest is complete and every file matches it; an
interrupted write is reported and recomputed. A finished experiment is not run
again unless ``force=True`` (an interrupted ``--force`` run leaves the earlier
result intact until the new one is being written); experiments that loop over
many settings receive a :class:`ResultStore` and save every finished item, so an
interrupted paper-scale run continues where it stopped.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cyntk.experiments._io import save_figure, save_json, to_jsonable
from cyntk.geometry import (
    CorruptFileError,
    IncompleteFileSetError,
    atomic_write,
    begin_file_set,
    check_file_set,
    finish_file_set,
    read_json,
    read_npz,
    remove_stale_temporaries,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The manifest of an experiment's result set.
MANIFEST = "manifest.json"

__all__ = ["Experiment", "EXPERIMENTS", "register", "reproduce", "ResultStore", "load_result"]


class ResultStore:
    """Per-item results persisted atomically in a directory (one ``.npz`` per key).

    Long experiments call ``store.get(key)`` before computing an item and
    ``store.put(key, dict_of_arrays_and_floats)`` after, so a rerun skips what
    is done. ``ResultStore(None)`` keeps nothing (in-memory only).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = None if directory is None else Path(directory)
        self._mem: dict[str, dict[str, Any]] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(key))
        return cast(Path, self.directory) / f"{safe}.npz"  # called only when a directory is set

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self._mem:
            return self._mem[key]
        if self.directory is not None and self._path(key).is_file():
            try:
                f = read_npz(self._path(key), what=f"the saved item {key!r}", fix="it is recomputed now.")
            except CorruptFileError as exc:
                warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
                return None
            value = {k: (v.item() if v.ndim == 0 else v) for k, v in f.items()}
            self._mem[key] = value
            return value
        return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._mem[key] = value
        if self.directory is not None:
            arrays = {k: np.asarray(v) for k, v in value.items()}
            # numpy's stub types **arrays as if a key could be its `allow_pickle: bool`
            atomic_write(self._path(key), lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]


@dataclass
class Experiment:
    """A registered experiment: ``run(**kwargs, store=...)`` -> dict, ``plot(result)`` -> figure."""

    name: str
    run: Callable[..., Mapping[str, Any]]
    plot: Callable[[dict[str, Any]], Figure] | None
    scales: dict[str, dict[str, Any]]
    description: str = ""
    uses_store: bool = False
    summary: Callable[[dict[str, Any]], str] | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    EXPERIMENTS[exp.name] = exp
    return exp


def _split_arrays(result: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for k, v in result.items():
        if isinstance(v, np.ndarray) and v.size > 64:
            arrays[k] = v
        else:
            scalars[k] = v
    return arrays, scalars


def load_result(directory: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Load a saved experiment result (JSON numbers merged with the npz arrays).

    Raises:
        FileNotFoundError: no result.
        IncompleteFileSetError: the result set was not written completely or was modified.
        CorruptFileError: a file of the set cannot be read.
    """
    d = Path(directory) / name
    fix = f"recompute it with `cyntk reproduce {name} --force -o {directory}`."
    status, reason, _ = check_file_set(d / MANIFEST)
    if status == "incomplete":
        raise IncompleteFileSetError(f"the result of {name} at {d} is incomplete: {reason}; {fix}")
    res = read_json(d / "result.json", what=f"the numbers of {name}", fix=fix)
    if not isinstance(res, dict):
        raise CorruptFileError(f"{d / 'result.json'} must hold a JSON object; received {type(res).__name__}. {fix}")
    if (d / "result.npz").is_file():
        res.update(read_npz(d / "result.npz", what=f"the arrays of {name}", fix=fix))
    return res


def _members(d: Path, name: str, exp: Experiment) -> list[str]:
    files = ["result.json"] + (["result.npz"] if (d / "result.npz").is_file() else [])
    if exp.plot is not None:
        files.append(f"{name}.png")
    return files


def _png_complete(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(-12, 2)
            tail = fh.read(12)
    except OSError:
        return False
    return head == b"\x89PNG\r\n\x1a\n" and tail[4:8] == b"IEND"


def _previous_result(out: Path, name: str, exp: Experiment, log: Callable[[str], object]) -> dict[str, Any] | None:
    """The verified earlier result of ``name`` or None (saying why it is not used)."""
    d = out / name
    status, reason, _ = check_file_set(d / MANIFEST)
    if status == "complete":
        return load_result(out, name)
    if status == "incomplete":
        log(f"[{name}] the result at {d} is incomplete ({reason}); recomputing it")
        return None
    if not (d / "result.json").is_file():
        return None
    # written before manifests existed: adopt it only when every file reads completely
    try:
        res = load_result(out, name)
        if exp.plot is not None and not _png_complete(d / f"{name}.png"):
            raise CorruptFileError(f"{d / f'{name}.png'} is missing or truncated")
    except (CorruptFileError, FileNotFoundError) as exc:
        log(f"[{name}] the result at {d} is incomplete ({exc}); recomputing it")
        return None
    finish_file_set(d / MANIFEST, _members(d, name, exp), {"experiment": name, "adopted": True})
    log(
        f"[{name}] result at {d} predates manifests; all its files read completely, so it is kept "
        f"(use --force if it may come from an interrupted run)"
    )
    return res


def reproduce(
    names: str | Sequence[str],
    *,
    scale: str = "quick",
    output: str | os.PathLike[str] = "cyntk-results",
    force: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str], object] = print,
) -> dict[str, dict[str, Any]]:
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
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"`names` must be an experiment name or a non-empty list of names (see "
            f"EXPERIMENTS, or 'all'); received {names!r}."
        )
    if not isinstance(scale, str):
        raise TypeError(f"`scale` must be 'quick' or 'paper'; received {scale!r}.")
    if "all" in names:
        names = list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"Unknown experiment(s) {unknown}; expected names from {sorted(EXPERIMENTS)} or 'all'.")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        exp = EXPERIMENTS[name]
        if scale not in exp.scales:
            raise ValueError(f"`scale` must be one of {sorted(exp.scales)} for {name}; received {scale!r}.")
        d = out / name
        remove_stale_temporaries(d)
        previous = None if force else _previous_result(out, name, exp, log)
        if previous is not None:
            log(f"[{name}] already done at {d} (verified against {MANIFEST}; use --force to recompute)")
            results[name] = previous
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
        begin_file_set(d / MANIFEST, {"experiment": name, "scale": scale})
        if arrays:
            atomic_write(d / "result.npz", lambda fh: np.savez_compressed(fh, **arrays))  # type: ignore[arg-type]
        elif (d / "result.npz").is_file():
            (d / "result.npz").unlink()  # arrays of an earlier run do not belong to this one
        save_json(scalars, d / "result.json")
        if exp.plot is not None:
            save_figure(exp.plot(res), d / f"{name}.png")
        finish_file_set(d / MANIFEST, _members(d, name, exp), {"experiment": name, "scale": scale})
        log(f"[{name}] done in {res['wall_seconds']:.1f} s -> {d}")
        if exp.summary is not None:
            log("    " + exp.summary(res))
        results[name] = res
    return results


def _load_registry() -> None:
    """Import the experiment modules so they register themselves."""
    from cyntk.experiments import registry  # noqa: F401


def summarise(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """JSON-ready scalars of several results."""
    return {k: to_jsonable(_split_arrays(v)[1]) for k, v in results.items()}
