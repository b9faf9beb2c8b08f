"""Unreadable, modified and half-written dataset files give named errors, never silent results.

Each corruption a user meets (truncated archive, flipped bytes, truncated pickle,
empty JSON, swapped columns, a basis of another Kähler class, a file replaced
after the set was written) must raise an error that names the file, what is
wrong and what to do; a directory written by cymetric (no manifest) still loads.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from cyntk.geometry import (
    CorruptFileError,
    CYDataset,
    IncompleteFileSetError,
    atomic_write,
    begin_file_set,
    check_file_set,
    fermat_quintic,
    finish_file_set,
    make_dataset,
    read_json,
    read_npz,
    read_pickle,
    remove_stale_temporaries,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds") / "quintic"
    make_dataset(fermat_quintic(), 120, seed=5).save(d)
    return d


def _copy(saved, tmp_path, manifest=True):
    d = tmp_path / "copy"
    shutil.copytree(saved, d)
    if not manifest:
        (d / "cyntk.json").unlink()
    return d


def _flip(path, at=0.5):
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    for k in range(i, min(i + 16, len(data))):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path, frac=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * frac)])


CORRUPTIONS = [
    ("dataset.npz", _truncate, "dataset.npz"),
    ("dataset.npz", lambda p: _truncate(p, 0.0), "dataset.npz"),
    ("dataset.npz", _flip, "dataset.npz"),
    ("dataset.npz", lambda p: _flip(p, 0.02), "dataset.npz"),
    ("basis.pickle", _truncate, "basis.pickle"),
    ("basis.pickle", _flip, "basis.pickle"),
    ("basis.pickle", lambda p: p.write_bytes(b""), "basis.pickle"),
]


@pytest.mark.parametrize("manifest", [True, False], ids=["cyntk", "cymetric-style"])
@pytest.mark.parametrize("member, damage, named", CORRUPTIONS)
def test_corrupt_member_is_named(saved, tmp_path, manifest, member, damage, named):
    d = _copy(saved, tmp_path, manifest)
    damage(d / member)
    with pytest.raises((CorruptFileError, IncompleteFileSetError, ValueError)) as info:
        CYDataset.load(d)
    msg = str(info.value)
    assert named in msg
    assert ("re-create" in msg) or ("recompute" in msg)
    if manifest:  # the manifest catches it before anything is parsed
        assert isinstance(info.value, IncompleteFileSetError)
    else:
        assert type(info.value) in (CorruptFileError, ValueError)


def test_empty_or_interrupted_manifest(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / "cyntk.json").write_text("")
    with pytest.raises(IncompleteFileSetError, match=r"cyntk.json cannot be read"):
        CYDataset.load(d)
    begin_file_set(d / "cyntk.json")
    with pytest.raises(IncompleteFileSetError, match=r"never finished: it was interrupted"):
        CYDataset.load(d)


def test_swapped_y_columns_and_pullbacks_are_caught(saved, tmp_path):
    d = _copy(saved, tmp_path, manifest=False)  # a cymetric directory: no manifest to lean on
    f = dict(np.load(d / "dataset.npz"))
    good = dict(f)
    f["y_train"] = f["y_train"][:, ::-1].copy()
    np.savez_compressed(d / "dataset.npz", **f)
    with pytest.raises(ValueError, match=r"y_train\[:, 0\] \(weights\) disagree.*columns are swapped"):
        CYDataset.load(d)
    f = dict(good)
    f["val_pullbacks"] = f["val_pullbacks"] * (1 + 1e-3)
    np.savez_compressed(d / "dataset.npz", **f)
    with pytest.raises(ValueError, match=r"val_pullbacks disagree"):
        CYDataset.load(d)
    CYDataset.load(d, check_points=False)  # the expert opt-out
    np.savez_compressed(d / "dataset.npz", **good)
    assert CYDataset.load(d).n_train == 108


def test_basis_of_another_kahler_class_is_not_paired_silently(saved, tmp_path):
    d = _copy(saved, tmp_path)
    other = tmp_path / "t2"
    make_dataset(fermat_quintic(kmoduli=2.0), 120, seed=5).save(other)
    shutil.copy(other / "basis.pickle", d / "basis.pickle")  # same points, other kappa/basis
    with pytest.raises(IncompleteFileSetError, match="basis.pickle"):
        CYDataset.load(d)


def test_cymetric_reference_directory_still_loads(cymetric_reference_dir):
    assert check_file_set(cymetric_reference_dir / "cyntk.json")[0] == "absent"
    ds = CYDataset.load(cymetric_reference_dir)
    assert ds.n_train > 0 and np.isfinite(ds.kappa)


def test_readers_name_the_file(tmp_path):
    bad = tmp_path / "x.bin"
    for content in (b"", b"PK\x03\x04 nonsense", b"\x80\x05garbage", b"{"):
        bad.write_bytes(content)
        for reader in (read_npz, read_json, read_pickle):
            with pytest.raises(CorruptFileError, match=r"x.bin: cannot read .*; re-create it"):
                reader(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    with pytest.raises(CorruptFileError, match="is a directory"):
        read_npz(tmp_path)


def test_file_set_and_stale_temporaries(tmp_path):
    d = tmp_path / "set"
    atomic_write(d / "a.txt", lambda fh: fh.write("one"), "w")
    finish_file_set(d / "manifest.json", ["a.txt"])
    assert check_file_set(d / "manifest.json")[0] == "complete"
    (d / "a.txt").write_text("two")  # same size, other content
    status, reason, _ = check_file_set(d / "manifest.json")
    assert status == "incomplete" and "SHA-256" in reason
    # a temporary file of a process that no longer exists is removed; a live one's is kept
    dead = 2**22 + 12345
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
    stale = d / f".a.txt.pid{dead}.abc.tmp"
    live = d / f".a.txt.pid{os.getpid()}.abc.tmp"
    stale.write_text("half")
    live.write_text("half")
    assert remove_stale_temporaries(d) == [stale]
    assert live.exists()
    live.unlink()
    stale.write_text("half")
    atomic_write(d / "b.txt", lambda fh: fh.write("x"), "w")  # every write sweeps first
    assert not stale.exists()
    assert json.loads((d / "manifest.json").read_text())["complete"] is True
