"""MetricNTKTracker without Keras callbacks, the TensorBoard writer, the option groups and the chief rule."""

from __future__ import annotations

import ast
import json
import math
import pathlib
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from cyntk.callbacks import (
    MeasureOptions,
    MetricNTKCallback,
    MetricNTKHistory,
    MetricNTKTracker,
    MetricNTKWriter,
    NTKRecord,
    OutputOptions,
)
from cyntk.callbacks.distribute import is_chief
from cyntk.kernels import metric_ntk

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cyntk" / "callbacks"


def regression_problem(seed=0, n=48):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5))
    y = np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    return x, y


def regression_net(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.05), loss="mse")
    return model


# ----------------------------------------------------------------------------- custom loop
def test_tracker_in_a_custom_gradient_tape_loop(tmp_path):
    x, y = regression_problem()
    model = regression_net()
    opt = keras.optimizers.SGD(0.05)
    writer = MetricNTKWriter(tmp_path, histogram_bins=7)
    tracker = MetricNTKTracker(
        x[:4],
        x[4:8],
        train_targets=y[:4],
        measures=MeasureOptions(block="train_train", log_spectrum=True),
        output=OutputOptions(log_dir=tmp_path, save_kernels=True),
        sinks=[writer],
    )
    assert not (tmp_path / "metric_ntk").exists()  # nothing written before the first record
    xt, yt = tf.constant(x, tf.float32), tf.constant(y, tf.float32)
    returned = []
    for epoch in range(3):
        if epoch:
            for _ in range(3):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean((model(xt, training=True) - yt) ** 2)
                grads = tape.gradient(loss, model.trainable_variables)
                opt.apply_gradients(zip(grads, model.trainable_variables))
        logs = {}
        returned.append(tracker.record(epoch, model, logs=logs))
        assert set(logs) == set(tracker.log_keys)
        assert "ntk_target_alignment" in logs and "ntk_log_wasserstein_train_train" in logs
    h = tracker.history
    assert h.epochs == [0, 1, 2]
    for i, scalars in enumerate(returned):
        for key, value in scalars.items():
            assert h.scalars[key][i] == value, key
    assert returned[0]["ntk_frobenius_train_train"] == 0.0 and returned[-1]["ntk_frobenius_train_train"] > 0
    # the recorded kernel is cyntk.kernels.metric_ntk of the model now, on train then test points
    rec = tracker.last_record
    assert isinstance(rec, NTKRecord) and rec.label == 2
    np.testing.assert_array_equal(rec.theta, metric_ntk(model, np.concatenate([x[:4], x[4:8]])))
    saved = np.load(tmp_path / "metric_ntk" / "kernels" / "epoch_000002.npz")["theta"]
    np.testing.assert_array_equal(saved, rec.theta)
    assert MetricNTKHistory.load(tmp_path / "metric_ntk" / "history.npz").epochs == [0, 1, 2]
    # one event file per run, with the scalars and histograms of every record
    events = list((tmp_path / "metric_ntk").glob("events.out.tfevents.*"))
    assert len(events) == 1 and writer.is_open
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "metric_ntk"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"metric_ntk/ntk_frobenius_train_train", "metric_ntk_spectrum/pooled_train_test"} <= tags
    assert "metric_ntk_log_spectrum/full_test_test" in tags
    assert [e.step for e in acc.Tensors("metric_ntk/ntk_norm_train_test")] == [0, 1, 2]
    assert tf.make_ndarray(acc.Tensors("metric_ntk_spectrum/pooled_train_train")[-1].tensor_proto).shape == (7, 3)
    writer.write_figure(h)
    writer.close()
    assert not writer.is_open


def test_tracker_equals_the_callback(tmp_path):
    """fit with the callback, and the tracker called between 1-epoch fits: the same record, key for key."""
    x, y = regression_problem()
    fit = dict(batch_size=16, shuffle=False, verbose=0)

    model = regression_net()
    cb = MetricNTKCallback(x[:4], x[4:8], train_targets=y[:4], log_all_blocks=True)
    hist = model.fit(x, y, epochs=2, callbacks=[cb], **fit)

    model = regression_net()
    tracker = MetricNTKTracker(x[:4], x[4:8], train_targets=y[:4], measures=MeasureOptions(log_all_blocks=True))
    tracker.record(0, model)
    for epoch in (1, 2):
        model.fit(x, y, epochs=1, **fit)
        tracker.record(epoch)
    assert tracker.history.epochs == cb.history.epochs == [0, 1, 2]
    assert tracker.log_keys == cb.log_keys
    for key in cb.history.scalars:
        if key != "ntk_seconds":
            np.testing.assert_array_equal(tracker.history.scalar(key), cb.history.scalar(key), err_msg=key)
    for key in cb.log_keys:
        assert hist.history[key] == cb.history.scalars[key][1:], key


def test_tracker_failures_and_model_rules():
    x, _ = regression_problem()
    model = regression_net()
    calls = []

    def flaky(m, pts):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("engine exploded")
        return metric_ntk(m, pts)

    tracker = MetricNTKTracker(x[:3], x[3:6], ntk_fn=flaky)
    with pytest.raises(ValueError, match="no model"):
        tracker.record(0)
    tracker.record(0, model)
    logs = {}
    with pytest.warns(RuntimeWarning, match="MetricNTKTracker: the record of epoch 1 failed"):
        out = tracker.record(1, logs=logs)
    assert out["ntk_failed"] == 1.0 and math.isnan(out["ntk_wasserstein_train_test"]) and logs == out
    assert tracker.history.epochs == [0] and tracker.history.meta["errors"][0]["epoch"] == 1
    with pytest.raises(ValueError, match="one tracker tracks one model"):
        tracker.record(2, regression_net(seed=1))


# ----------------------------------------------------------------------------- option groups
def test_option_groups_match_the_keywords(rng):
    x = rng.standard_normal((6, 10))
    flat = MetricNTKCallback(x[:3], x[3:], block="train_train", spectrum="singular_values", wasserstein_p=2)
    grouped = MetricNTKCallback(
        x[:3], x[3:], measures=MeasureOptions(block="train_train", spectrum="singular_values", wasserstein_p=2)
    )
    assert flat.measures == grouped.measures
    assert flat.history.meta == grouped.history.meta
    assert (grouped.block, grouped.spectrum, grouped.wasserstein_p) == ("train_train", "singular_values", 2.0)
    assert grouped.log_keys == flat.log_keys
    grouped.log_spectrum = True  # the keywords stay settable attributes
    assert grouped.measures.log_spectrum and "ntk_log_wasserstein_train_train" in grouped.log_keys
    with pytest.raises(TypeError, match=r"either `measures=MeasureOptions\(...\)` or the keywords \['block'\]"):
        MetricNTKCallback(x[:3], x[3:], block="test_test", measures=MeasureOptions())
    with pytest.raises(TypeError, match=r"`output` must be a OutputOptions"):
        MetricNTKCallback(x[:3], x[3:], output={"log_dir": "x"})
    with pytest.raises(ValueError, match="`block` must be one of"):
        MeasureOptions(block="train")
    with pytest.raises(ValueError, match="`log_floor` must be a number in"):
        MeasureOptions(log_floor=2.0)
    with pytest.raises(ValueError, match="`save_kernels=True` needs a place"):
        OutputOptions(save_kernels=True)
    out = OutputOptions(history_path="somewhere/h")
    assert out.history_path == pathlib.Path("somewhere/h.npz") and out.log_dir is None


# ----------------------------------------------------------------------------- chief rule
def _strategy(task_type=None, task_id=0, cluster=None, should_checkpoint=None):
    resolver = None
    if task_type is not None:
        spec = types.SimpleNamespace(as_dict=lambda: cluster or {})
        resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id, cluster_spec=lambda: spec)
    return types.SimpleNamespace(
        cluster_resolver=resolver, extended=types.SimpleNamespace(should_checkpoint=should_checkpoint)
    )


def test_only_the_chief_writes(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    two_workers = {"worker": ["a:1", "b:2"]}
    assert is_chief()  # one process
    assert is_chief(_strategy("worker", 0, two_workers))
    assert not is_chief(_strategy("worker", 1, two_workers))
    assert is_chief(_strategy("chief", 0, {"chief": ["c:0"], **two_workers}))
    assert not is_chief(_strategy("worker", 0, {"chief": ["c:0"], **two_workers}))
    assert not is_chief(_strategy("evaluator", 0, two_workers))
    assert not is_chief(_strategy(should_checkpoint=False))
    assert is_chief(_strategy(should_checkpoint=True))
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": two_workers, "task": {"type": "worker", "index": 1}}))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": two_workers, "task": {"type": "worker", "index": 0}}))
    assert is_chief()


def test_a_non_chief_worker_computes_but_writes_nothing(monkeypatch, tmp_path):
    x, y = regression_problem()
    # an old history in log_dir: a non-chief worker must not rename it either
    MetricNTKCallback(x[:3], x[3:6], log_dir=tmp_path, model=regression_net())
    before = sorted(p.name for p in (tmp_path / "metric_ntk").iterdir())
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})
    )
    cb = MetricNTKCallback(x[:3], x[3:6], log_dir=tmp_path, save_kernels=True)
    hist = regression_net().fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    assert cb.history.epochs == [0, 1, 2] and len(hist.history["ntk_frobenius_train_test"]) == 2
    assert sorted(p.name for p in (tmp_path / "metric_ntk").iterdir()) == before
    assert cb.writer is not None and not cb.writer.is_open


# ----------------------------------------------------------------------------- module hygiene
@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_callback_modules_are_small_with_explicit_exports(path):
    source = path.read_text()
    tree = ast.parse(source)
    assert len(source.splitlines()) <= 600, path.name
    names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if hasattr(t, "id")]
    assert "__all__" in names, path.name
    if path.name in ("tracker.py", "measures.py", "points.py", "options.py", "_model_io.py", "tensorboard.py"):
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        modules = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        modules += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not any(m.split(".")[0] in ("keras", "tensorflow") for m in modules), path.name
