"""`cyntk sample` writes a cymetric-compatible directory; bad input gives a clear error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from cyntk.cli import main
from cyntk.geometry import CYDataset, fermat_quintic


def test_sample_quintic_directory(tmp_path, capsys):
    rc = main(["sample", "quintic", "-n", "500", "-o", str(tmp_path / "q"), "--seed", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "kappa" in out
    ds = CYDataset.load(tmp_path / "q")
    assert ds.n_train == 450 and ds.n_val == 50
    assert ds.manifold.same_as(fermat_quintic())
    z = fermat_quintic().sample_points(500, seed=3)
    np.testing.assert_allclose(np.concatenate([ds.points_train, ds.points_val]), z)


def test_sample_dwork_fixed_chart(tmp_path):
    rc = main(
        [
            "sample",
            "dwork",
            "--psi",
            "0.5",
            "-n",
            "100",
            "--chart",
            "1,3",
            "--val-split",
            "0.2",
            "-o",
            str(tmp_path / "d"),
        ]
    )
    assert rc == 0
    ds = CYDataset.load(tmp_path / "d")
    assert ds.n_val == 20
    assert np.all(ds.charts_train == [1, 3]) and np.all(ds.charts_val == [1, 3])
    assert len(ds.manifold.monomials) == 6


def test_sample_bad_input_reports_argument(tmp_path, capsys):
    assert main(["sample", "octic", "-o", str(tmp_path)]) == 2
    assert "Unknown manifold name 'octic'" in capsys.readouterr().err
    assert main(["sample", "quintic", "--psi", "0.3", "-o", str(tmp_path)]) == 2
    assert "psi" in capsys.readouterr().err
    assert main(["sample", "quintic", "-n", "0", "-o", str(tmp_path)]) == 2
    assert "--n-points" in capsys.readouterr().err


def test_console_entry_point_module():
    r = subprocess.run([sys.executable, "-m", "cyntk", "sample", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--chart" in r.stdout
