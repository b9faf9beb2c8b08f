"""cyntk.models: training through fit, logging, callbacks, serialisation and errors."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from conftest import small_mlp
from cyntk.geometry import dwork_quintic, fermat_cubic, fermat_quartic, fermat_quintic, make_dataset
from cyntk.models import (
    FSModel,
    LossWeightScheduler,
    MeasuresCallback,
    MultiplicativeModel,
    PhiModel,
)

mlp = functools.partial(small_mlp, dtype="float32")


@pytest.fixture(scope="module")
def quintic_ds():
    return make_dataset(fermat_quintic(), 1200, seed=21)


@pytest.fixture(scope="module")
def torus_ds():
    return make_dataset(fermat_cubic(), 1100, seed=0)


# ------------------------------------------------------------- logging
def test_fit_logs_exact_epoch_means_over_partial_batches(quintic_ds):
    """With a zero learning rate the logged epoch values must equal the per-point
    losses averaged over all points, although the last batch is partial."""
    x, y = quintic_ds.X_train[:100], quintic_ds.y_train[:100]
    model = MultiplicativeModel(mlp(10, 9, seed=2), quintic_ds, ricci=0.0)
    terms = model.loss_terms(x, y)
    weights = model.loss_weights
    model.compile(keras.optimizers.SGD(learning_rate=0.0))
    hist = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0).history
    total = sum(weights[k] * terms[k].numpy() for k in model.active_terms)
    assert set(hist) == {"loss", "sigma_loss", "kaehler_loss", "transition_loss", "volk_loss"}
    for k in ("sigma", "kaehler", "transition"):
        np.testing.assert_allclose(hist[f"{k}_loss"][0], terms[k].numpy().mean(), rtol=2e-5)
    # volk is a per-batch Monte-Carlo estimate: its epoch value is the count-weighted batch mean
    volk_batches = [
        model.loss_terms(x[s : s + 32], y[s : s + 32], terms=("volk",))["volk"].numpy() for s in range(0, 100, 32)
    ]
    np.testing.assert_allclose(hist["volk_loss"][0], np.concatenate(volk_batches).mean(), rtol=2e-5)
    total = total - weights["volk"] * terms["volk"].numpy() + weights["volk"] * np.concatenate(volk_batches)
    np.testing.assert_allclose(hist["loss"][0], total.mean(), rtol=2e-5)
    # evaluate with sample weights: sum(s * L) / sum(s) over all points
    sw = np.linspace(0.5, 2.0, 100)
    res = model.evaluate(x, y, sample_weight=sw, batch_size=32, return_dict=True, verbose=0)
    np.testing.assert_allclose(res["sigma_loss"], np.sum(sw * terms["sigma"].numpy()) / sw.sum(), rtol=2e-5)


def test_short_fit_lowers_sigma_val_and_logs_measures(quintic_ds):
    model = MultiplicativeModel(mlp(10, 9, width=32, seed=5), quintic_ds)
    cb = MeasuresCallback(quintic_ds, initial=True, batch_size=1000)
    model.compile(keras.optimizers.Adam(3e-3))
    hist = model.fit(quintic_ds.X_train, quintic_ds.y_train, batch_size=64, epochs=2, verbose=0, callbacks=[cb]).history
    for k in ("sigma_val", "kaehler_val", "transition_val", "volk_val", "ricci_val"):
        assert len(hist[k]) == 2 and np.all(np.isfinite(hist[k]))
    assert hist["sigma_val"][-1] < 0.8 * cb.initial["sigma_val"], (cb.initial, hist["sigma_val"])
    assert cb.history["sigma_val"] == hist["sigma_val"]
    # measures are exact averages: independent of the evaluation batch size
    which = ("sigma", "kaehler", "transition", "volk")
    a = model.measures(quintic_ds.X_val, quintic_ds.y_val, batch_size=40, which=which)
    b = model.measures(quintic_ds.X_val, quintic_ds.y_val, batch_size=1000, which=which)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4)
    np.testing.assert_allclose(a["sigma"], hist["sigma_val"][-1], rtol=1e-4)


def test_loss_weight_switch_really_changes_the_active_losses(quintic_ds):
    x, y = quintic_ds.X_train[:128], quintic_ds.y_train[:128]
    model = MultiplicativeModel(mlp(10, 9, seed=6), quintic_ds)
    sched = LossWeightScheduler(
        lambda epoch, w: {"kaehler": 0.0, "transition": 0.0, "volk": 3.0} if epoch == 1 else None
    )
    model.compile(keras.optimizers.Adam(1e-3))
    hist = model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[sched]).history
    assert len(hist["kaehler_loss"]) == 1 and len(hist["transition_loss"]) == 1
    assert len(hist["sigma_loss"]) == 2 and len(hist["volk_loss"]) == 2
    assert model.active_terms == ("sigma", "volk") and model.loss_weights["volk"] == 3.0
    # the epoch-1 loss is sigma + 3 volk only
    np.testing.assert_allclose(hist["loss"][1], hist["sigma_loss"][1] + 3.0 * hist["volk_loss"][1], rtol=1e-5)
    with pytest.raises(ValueError, match="kaehler"):
        model.set_loss_weights(kaehler=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        model.set_loss_weights(alpha=1.0)


def test_nonfinite_policies(quintic_ds):
    x, y = quintic_ds.X_train[:64], quintic_ds.y_train[:64]

    def make(policy):
        # kappa = 1e-300 makes det g / kappa overflow: the sigma loss is +inf
        m = MultiplicativeModel(
            mlp(10, 9, seed=1), quintic_ds, kappa=1e-300, nonfinite=policy, kaehler=0.0, transition=0.0, volk=0.0
        )
        m.compile(keras.optimizers.Adam(1e-3))
        return m, [v.numpy().copy() for v in m.trainable_variables]

    m, w0 = make("raise")
    with pytest.raises(FloatingPointError, match="non-finite"):
        m.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(w0, m.trainable_variables))
    m, w0 = make("skip_step")
    hist = m.fit(x, y, batch_size=64, epochs=1, verbose=0).history
    assert hist["skipped_steps"] == [1.0]
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(w0, m.trainable_variables))
    m, _ = make("ignore")
    hist = m.fit(x, y, batch_size=64, epochs=1, verbose=0).history
    assert not np.isfinite(hist["loss"][0])
    assert not all(np.all(np.isfinite(v.numpy())) for v in m.trainable_variables)


@pytest.mark.slow
def test_jit_compile_gives_the_same_training(torus_ds):
    """XLA compilation (a few seconds) must not change the training."""
    x, y = torus_ds.X_train[:128], torus_ds.y_train[:128]
    weights = []
    for jit in (False, True):
        m = MultiplicativeModel(mlp(6, 1, seed=3), torus_ds)
        m.compile(keras.optimizers.Adam(1e-2), jit_compile=jit)
        m.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        weights.append([v.numpy() for v in m.trainable_variables])
        assert m.xla is jit
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_cubic_torus_multiplicative_model_approaches_flat_metric(torus_ds):
    """Ground truth: on the torus (n = 1) the Ricci-flat metric is g = kappa |Omega|^2.

    A multiplicative model whose network starts with ProjectiveFeatures (so the
    correction is a function on P^2) reaches a mean relative error ~1e-3 on the
    validation points (typically 0.1 %; the FS start is ~10 %).
    """
    ds = torus_ds
    target = ds.kappa * ds.omega_sq_val

    def rel_err(m):
        g = m.predict(ds.X_val, verbose=0)[:, 0, 0].real
        return np.abs(g / target - 1)

    model = MultiplicativeModel(mlp(6, 1, width=64, seed=0, features=True), ds, kaehler=0.0, volk=0.0)
    start = rel_err(model).mean()
    epochs, batch = 60, 50
    steps = epochs * int(np.ceil(ds.n_train / batch))
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-2, steps, alpha=0.01)))
    model.fit(ds.X_train, ds.y_train, batch_size=batch, epochs=epochs, verbose=0)
    err = rel_err(model)
    print(f"cubic torus: mean relative error {start:.3g} (FS) -> {err.mean():.3g}, max {err.max():.3g}")
    assert start > 0.05
    assert err.mean() < 5e-3 and err.max() < 3e-2
    meas = model.measures(ds.X_val, ds.y_val, which=("sigma", "transition"))
    assert meas["sigma"] < 5e-3


# ------------------------------------------------------- serialisation
@pytest.mark.parametrize("kind", ["fs", "mult", "phi"])
def test_save_load_round_trip(kind, quintic_ds, tmp_path):
    if kind == "fs":
        model = FSModel(quintic_ds, volk=0.5)
    elif kind == "mult":
        model = MultiplicativeModel(mlp(10, 9, seed=4), quintic_ds, transition=0.25, nonfinite="skip_step")
    else:
        model = PhiModel(mlp(10, 1, seed=4, features=True, last_std=0.01), quintic_ds, transition_mode="metric")
    x, y = quintic_ds.X_train[:128], quintic_ds.y_train[:128]
    if kind == "mult":  # a trained model with optimizer state
        model.compile(keras.optimizers.Adam(1e-3))
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded(quintic_ds.X_val).numpy(), model(quintic_ds.X_val).numpy())
    assert loaded.loss_weights == model.loss_weights and loaded.nonfinite == model.nonfinite
    assert loaded.kappa == model.kappa and loaded.spec.same_manifold(model.spec)
    again = type(model).from_config(model.get_config())
    assert again.get_config()["manifold"] == model.get_config()["manifold"]
    if kind == "phi":
        assert loaded.transition_mode == "metric"
    if kind == "mult":  # the optimizer state came back and training continues
        assert loaded.optimizer.iterations.numpy() == 2
        loaded.fit(x, y, batch_size=64, epochs=1, verbose=0)


# -------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors(quintic_ds):
    with pytest.raises(ValueError, match=r"\(B, 10\) to \(B, 9\).*\(1, 8\)"):
        MultiplicativeModel(mlp(10, 8), quintic_ds)
    with pytest.raises(ValueError, match="width 2N = 10.*input shape"):
        MultiplicativeModel(mlp(8, 9), quintic_ds)
    with pytest.raises(ValueError, match=r"\(B, 10\) to \(B, 1\)"):
        PhiModel(mlp(10, 9), quintic_ds)
    with pytest.raises(TypeError, match="network"):
        MultiplicativeModel("dense", quintic_ds)
    with pytest.raises(ValueError, match="`sigma`.*>= 0.*-1"):
        MultiplicativeModel(mlp(10, 9), quintic_ds, sigma=-1.0)
    with pytest.raises(TypeError, match="`volk`"):
        FSModel(quintic_ds, volk="1")
    with pytest.raises(ValueError, match="nonfinite"):
        FSModel(quintic_ds, nonfinite="patch")
    with pytest.raises(ValueError, match="dtype"):
        FSModel(quintic_ds, dtype="float16")
    with pytest.raises(TypeError, match="manifold"):
        FSModel(42)
    model = MultiplicativeModel(mlp(10, 9), quintic_ds)
    with pytest.raises(TypeError, match="loss"):
        model.compile("adam", loss="mse")
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(quintic_ds.X_train, quintic_ds.y_train, verbose=0)
    model.compile("adam")
    x, y = quintic_ds.X_train[:64], quintic_ds.y_train[:64]
    with pytest.raises(ValueError, match=r"\(B, 10\).*received last axis 8"):
        model(x[:, :8])
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="`x` must be finite.*rows \\[3\\]"):
        model.fit(bad, y, verbose=0)
    with pytest.raises(ValueError, match="finite"):
        model(bad)
    with pytest.raises(ValueError, match=r"`y` must have shape \(P, 2\)"):
        model.fit(x, y[:, :1], verbose=0)
    ybad = y.copy()
    ybad[0, 1] = -1.0
    with pytest.raises(ValueError, match=r"\|Omega\|\^2 > 0"):
        model.fit(x, ybad, verbose=0)
    # data of another manifold with the same number of coordinates: detected
    other = make_dataset(dwork_quintic(0.7), 100, seed=0)
    with pytest.raises(ValueError, match="does not lie on the model's manifold"):
        model.fit(other.X_train, other.y_train, verbose=0)
    with pytest.raises(ValueError, match="different manifold"):
        model.measures(other.X_val, other.y_val)
    with pytest.raises(ValueError, match="belongs to"):
        cb = MeasuresCallback(other)
        model.fit(x, y, verbose=0, callbacks=[cb])
    quartic = make_dataset(fermat_quartic(), 100, seed=0)
    with pytest.raises(ValueError, match=r"\(B, 10\)"):
        model.fit(quartic.X_train, quartic.y_train, verbose=0)
    # the sigma loss needs kappa
    bare = MultiplicativeModel(mlp(10, 9), fermat_quintic())
    with pytest.raises(ValueError, match="kappa"):
        bare.loss_terms(x, y)
    with pytest.raises(ValueError, match="`y` is required"):
        model.loss_terms(x)
