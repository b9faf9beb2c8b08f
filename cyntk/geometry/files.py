"""Files that are written as a unit and read with errors that name them.

Three tools, used by every part of cyntk that writes or reads user files:

* :func:`atomic_write` writes one file atomically (temporary sibling +
  ``os.replace``). Temporary siblings carry the writer's process id, so the
  leftovers of a killed process are removed by the next write into the same
  directory (:func:`remove_stale_temporaries`).
* A *file set* (a dataset directory, an experiment result, ...) is several
  files that belong together. :func:`begin_file_set` writes a manifest that
  says "incomplete" before the first file is replaced; :func:`finish_file_set`
  rewrites it, last, with the size and SHA-256 of every member.
  :func:`check_file_set` then tells a complete set from an interrupted or
  modified one, so nothing half-written is ever taken as complete.
* :func:`read_npz`, :func:`read_json` and :func:`read_pickle` read a user file
  completely and turn every low-level failure (truncated zip, flipped bytes,
  truncated pickle, empty JSON) into a :class:`CorruptFileError` that names the
  file, what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

__all__ = [
    "CorruptFileError",
    "IncompleteFileSetError",
    "atomic_write",
    "remove_stale_temporaries",
    "begin_file_set",
    "finish_file_set",
    "check_file_set",
    "read_npz",
    "read_json",
    "read_pickle",
]

#: Format tag of file-set manifests.
MANIFEST_FORMAT = "cyntk.file_set/1"

_TMP_RE = re.compile(r"^\..+\.pid(\d+)\.[^.]+\.tmp$")


class CorruptFileError(ValueError):
    """A user file exists but cannot be read (truncated, corrupted, wrong format)."""


class IncompleteFileSetError(ValueError):
    """A group of files is incomplete or does not match its manifest."""


# ------------------------------------------------------------------ writing
def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files left in ``directory`` by killed :func:`atomic_write` calls.

    Only files named like cyntk's temporaries whose writing process no longer
    exists are removed.

    Returns:
        the removed paths.
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if m and not _pid_alive(int(m.group(1))):
            try:
                if entry.is_dir(follow_symlinks=False):
                    import shutil

                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[Any]], object], mode: str = "wb") -> None:
    """Write ``path`` atomically: ``writer(fileobj)`` fills a temporary sibling that is renamed.

    An interrupted write (exception, Ctrl-C) removes its temporary file; one
    left by a killed process is removed by the next write into the directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; use the usual permissions
    try:
        with os.fdopen(fd, mode) as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(path: Path, content: dict[str, Any]) -> None:
    text = json.dumps(content, indent=2, default=str)
    atomic_write(path, lambda fh: fh.write(text), "w")


def begin_file_set(manifest: str | os.PathLike[str], info: dict[str, Any] | None = None) -> Path:
    """Mark a file set as being written: call before replacing any of its files.

    Args:
        manifest: path of the manifest (a JSON file inside the set's directory).
        info: extra JSON-serialisable entries kept in the manifest.

    Returns:
        the manifest path.
    """
    manifest = Path(manifest)
    content: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "complete": False,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    content.update(info or {})
    _write_manifest(manifest, content)
    return manifest


def finish_file_set(
    manifest: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]], info: dict[str, Any] | None = None
) -> Path:
    """Mark a file set complete: write, last, the size and SHA-256 of every member.

    Args:
        manifest: path of the manifest.
        files: member file names, relative to the manifest's directory.
        info: extra JSON-serialisable entries kept in the manifest.

    Returns:
        the manifest path.
    """
    manifest = Path(manifest)
    members = {}
    for name in files:
        p = manifest.parent / name
        members[str(name)] = {"size": p.stat().st_size, "sha256": _digest(p)}
    content: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "complete": True,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    content.update(info or {})
    content["files"] = members
    _write_manifest(manifest, content)
    return manifest


def check_file_set(
    manifest: str | os.PathLike[str], *, checksums: bool = True
) -> tuple[Literal["complete", "absent", "legacy", "incomplete"], str, dict[str, Any]]:
    """Whether the file set of ``manifest`` is complete and unmodified.

    Args:
        manifest: path of the manifest.
        checksums: compare SHA-256 digests as well as sizes.

    Returns:
        ``(status, reason, content)`` with status ``"complete"``, ``"absent"``
        (no manifest), ``"legacy"`` (a JSON file without this format tag:
        written before manifests existed) or ``"incomplete"`` (interrupted
        write, missing or modified member, unreadable manifest); ``reason`` is
        a sentence for the user; ``content`` the manifest dict (or ``{}``).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        return "absent", f"{manifest} does not exist", {}
    try:
        content = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return "incomplete", f"its manifest {manifest} cannot be read ({exc})", {}
    if not isinstance(content, dict):
        return "incomplete", f"its manifest {manifest} does not hold a JSON object", {}
    if content.get("format") != MANIFEST_FORMAT:
        return "legacy", f"{manifest} predates cyntk's file-set manifests", content
    if not content.get("complete"):
        return (
            "incomplete",
            f"{manifest} says its writing (started {content.get('started', '?')}) never finished: it was interrupted",
            content,
        )
    members = content.get("files", {})
    if not isinstance(members, dict) or not all(isinstance(e, dict) for e in members.values()):
        return "incomplete", f"its manifest {manifest} does not list its files properly", content
    for name, entry in members.items():
        p = manifest.parent / name
        if not p.is_file():
            return "incomplete", f"member {p} is missing", content
        if p.stat().st_size != entry.get("size"):
            return (
                "incomplete",
                f"member {p} has {p.stat().st_size} bytes but the manifest records "
                f"{entry.get('size')} (it was changed or truncated after the set was written)",
                content,
            )
        if checksums and _digest(p) != entry.get("sha256"):
            return (
                "incomplete",
                f"member {p} does not match the SHA-256 in {manifest.name} (it was modified after the set was written)",
                content,
            )
    return "complete", "complete", content


# ------------------------------------------------------------------ reading
def _fail(path: Path, what: str, exc: BaseException, fix: str) -> CorruptFileError:
    detail = " ".join(str(exc).split()).rstrip(".")
    return CorruptFileError(
        f"{path}: cannot read {what}: {type(exc).__name__}: {detail}. "
        f"The file is truncated, corrupted or not in the expected format; {fix}"
    )


def _require_file(path: str | os.PathLike[str], what: str, fix: str) -> Path:
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise CorruptFileError(f"{path} is a directory; expected {what}. {fix}")
        raise FileNotFoundError(f"{path} does not exist; expected {what}. {fix}")
    return path


def read_npz(
    path: str | os.PathLike[str], *, what: str = "a NumPy .npz archive", fix: str = "re-create it."
) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, read completely (``allow_pickle=False``).

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptFileError: the file cannot be read (named, with ``fix``).
    """
    path = _require_file(path, what, fix)
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("the file is a single .npy array, not an .npz archive")
            return {k: np.asarray(f[k]) for k in f.files}
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        ValueError,
        OSError,
        KeyError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise _fail(path, what, exc, fix) from exc


def read_json(path: str | os.PathLike[str], *, what: str = "a JSON file", fix: str = "re-create it.") -> Any:
    """The parsed content of a JSON file.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptFileError: empty, truncated or invalid JSON (named, with ``fix``).
    """
    path = _require_file(path, what, fix)
    try:
        text = path.read_text()
        if not text.strip():
            raise ValueError("the file is empty")
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, OSError) as exc:
        raise _fail(path, what, exc, fix) from exc


def read_pickle(path: str | os.PathLike[str], *, what: str = "a pickle file", fix: str = "re-create it.") -> Any:
    """The object stored in a pickle file.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptFileError: truncated or invalid pickle (named, with ``fix``).
    """
    path = _require_file(path, what, fix)
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        OSError,
        AttributeError,
        ImportError,
        IndexError,
        TypeError,
        KeyError,
        UnicodeDecodeError,
        MemoryError,
        OverflowError,
    ) as exc:
        raise _fail(path, what, exc, fix) from exc
