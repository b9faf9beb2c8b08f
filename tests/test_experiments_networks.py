"""The network and kernel-flow experiments at a tiny scale, and `cyntk demo` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cyntk.experiments.kernel_flows import plot_table1, run_table1
from cyntk.experiments.networks import (
    plot_afterkernel,
    plot_fig4,
    run_afterkernel,
    run_baseline,
    run_fig4,
    sigma_loss_of,
)
from cyntk.geometry import fermat_quintic


def test_sigma_loss_of_matches_a_direct_formula():
    M = fermat_quintic()
    z = M.sample_points(40, seed=1)
    geo = M.geometry(z)
    g = M.fs_metric_pb(z)
    kappa = 0.0175
    want = np.mean(np.abs(1 - np.real(np.linalg.det(g)) / (kappa * geo["omega_sq"])))
    assert sigma_loss_of(g, geo["omega_sq"], kappa) == pytest.approx(want, rel=1e-12)
    # the identity-corrected metric g * (kappa |Omega|^2 / det g)^(1/3) has zero loss
    scale = (kappa * geo["omega_sq"] / np.real(np.linalg.det(g))) ** (1 / 3)
    assert sigma_loss_of(g * scale[:, None, None], geo["omega_sq"], kappa) < 1e-12


def test_table1_tiny_gains_are_finite_tabulated_and_resumed(tmp_path):
    from cyntk.experiments.runner import ResultStore

    kw = dict(
        rows=("delta",),
        runs=("paper_sum", "search_train"),
        points_scale=0.02,
        n_test=10,
        steps=2,
        noise_levels=(1e-2,),
        search_trials=(1, 0),
        store=ResultStore(tmp_path),
    )
    r = run_table1(**kw)
    runs = r["rows"]["delta"]
    assert set(runs) == {"paper_sum", "search_train"}
    for run, v in runs.items():
        for q in ("train_gain", "test_gain", "train_gain_float32", "float32_floor"):
            assert np.isfinite(v[q]) and v[q] > 0, (run, q)
        assert v["params"]["n_points"] == 20
    assert runs["paper_sum"]["reduction"] == "sum" and runs["paper_sum"]["params"]["learning_rate"] == 0.3162
    assert runs["search_train"]["reduction"] == "mean"
    assert 0.3 <= runs["search_train"]["params"]["decay_rate"] <= 1.0
    assert r["searches"]["delta"]["train"]["trial_target"].shape == (1,)
    # a float64-exact metric scores ~1e-7 in float32
    assert 1e-9 < r["float32_floor"] < 1e-6
    assert "| Delta | 20 |" in r["table"] and "float32 floor" in r["table"]
    # the store resumes: the same numbers without recomputation
    again = run_table1(**kw)
    assert again["rows"]["delta"]["search_train"]["train_gain"] == runs["search_train"]["train_gain"]
    plot_table1(r)


def test_table1_markdown_has_one_row_per_kernel_and_dashes_where_the_paper_gives_no_values():
    from cyntk.experiments.table1 import TABLE1_ROWS, table1_markdown

    def flow(gain, **params):
        return {
            "params": {"n_points": 100.0, "learning_rate": 0.5, **params},
            "train_gain": gain,
            "test_gain": 1.5,
            "train_gain_float32": min(gain, 3e6),
            "train_before": 0.45,
            "failed_at_step": 0,
            "backoffs": 0.0,
        }

    rows = {k: {"search_train": flow(2e11, decay_rate=0.6), "search_test": flow(3.0)} for k in TABLE1_ROWS}
    rows["delta"]["paper_sum"] = dict(flow(0.5), failed_at_step=7)
    table = table1_markdown(
        {
            "rows": rows,
            "steps": 50,
            "float32_floor": 1e-7,
            "paper": {"train": dict.fromkeys(TABLE1_ROWS, 1e6), "test": dict.fromkeys(TABLE1_ROWS, 5.0)},
        }
    )
    lines = table.splitlines()
    assert len([ln for ln in lines if ln.startswith("| ") and "kernel" not in ln]) == 4
    assert "Δt 0.5·0.60^s" in table and "2.0e11" in table
    assert "not positive-definite at step 7" in table
    gauss = next(ln for ln in lines if ln.startswith("| Gaussian, σ searched"))
    assert gauss.count("| — |") == 1 and "— | — |" in gauss
    assert "float32 floor" in table and "4e+06" in table


def test_baseline_tiny_reports_consistent_gains():
    r = run_baseline(n_points=1200, epochs=2, hidden=(16,), batch_size=64)
    assert r["sigma_val"].shape == (2,) and np.all(np.isfinite(r["sigma_val"]))
    assert r["gain_sigma_val"] == pytest.approx(r["sigma_val_initial"] / r["sigma_val"][-1])
    assert 0.2 < r["sigma_val_fs"] < 0.6  # FS on the quintic: ~0.4 (cymetric 0.3979)
    assert r["train_loss"].shape == (2,)


def test_fig4_tiny_tracks_the_kernel_and_the_lazy_control_moves_less(tmp_path):
    r = run_fig4(n_points=1500, epochs=2, hidden=(16, 16), n_track=4, lazy_width=256, log_dir=str(tmp_path))
    assert r["epochs"].shape == r["wasserstein"].shape and len(r["epochs"]) == 3
    assert r["wasserstein"][0] == 0.0 and np.all(np.isfinite(r["wasserstein"]))
    assert r["spectrum_first"].ndim == 1 and len(r["spectrum_first"]) == len(r["spectrum_last"])
    # a wide network with plain SGD at a tiny learning rate is lazy: its kernel moves far less
    assert r["lazy_w1_final"] < 0.1 * r["w1_final"]
    assert abs(r["lazy_sigma_gain"] - 1) < abs(r["sigma_gain"] - 1)
    assert list(tmp_path.iterdir())  # TensorBoard event files
    plot_fig4(r)


def test_afterkernel_tiny_returns_one_gain_per_checkpoint():
    r = run_afterkernel(
        n_points=1200,
        epochs=2,
        checkpoints=(0, 2),
        hidden=(8,),
        n_flow_train=24,
        n_flow_test=12,
        steps=3,
        learning_rates=(1e-4, 1e-2),
    )
    for k in ("train_gain", "test_gain", "learning_rate", "network_sigma_val"):
        assert r[k].shape == (2,) and np.all(np.isfinite(r[k])), k
    assert np.all(r["train_gain"] >= 1.0)  # the best step size is chosen by train gain (1 = no step)
    assert set(r["learning_rate"]) <= {1e-4, 1e-2}
    plot_afterkernel(r)


def test_cyntk_demo_tiny_writes_every_promised_file(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "cyntk.cli", "demo", "--scale", "tiny", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5/5" in proc.stdout and str(out) in proc.stdout  # progress and where it wrote
    for f in (
        "summary.md",
        "results.json",
        "figures/fig4_metric_ntk.png",
        "figures/fig3_left_kernel_gains.png",
        "figures/fig2_clustering.png",
        "figures/fig3_right_distances.png",
        "data/dataset.npz",
        "data/basis.pickle",
    ):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").rglob("*"))
    res = json.loads((out / "results.json").read_text())
    assert res["scale"] == "tiny" and res["data"]["kappa"] > 0
    for k in ("gaussian", "delta", "relu"):
        assert np.isfinite(res["kernel_flows"][k]["train_gain"])
    assert "sigma" in (out / "summary.md").read_text().lower()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and "figures/fig2_clustering.png" in manifest["files"]
