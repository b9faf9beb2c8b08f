"""cyntk inside the real cymetric (../shared/cymetric), unmodified.

cymetric is put on the import path by the ``cymetric`` fixture (skipped with a
reason when the folder is absent). Datasets are made by cymetric's own
``PointGenerator`` in the test; models are cymetric's ``FreeModel``,
``AddFSModel``, ``MultFSModel``, ``MatrixFSModel`` and ``PhiFSModel``, trained
with plain ``fit`` and with cymetric's ``train_model`` recipe exactly as its
notebook ``2.TensorFlow_models.ipynb`` does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

MODELS = ("FreeModel", "AddFSModel", "MultFSModel", "MatrixFSModel", "PhiFSModel")
#: the same models, the long runs of all but MultFSModel in the `slow` set (`pytest -m slow`)
MODELS_MAIN_MULT = [m if m == "MultFSModel" else pytest.param(m, marks=pytest.mark.slow) for m in MODELS]


@pytest.fixture(scope="module")
def quintic_dir(cymetric, tmp_path_factory):
    """A small Fermat-quintic dataset written by cymetric's PointGenerator."""
    d = tmp_path_factory.mktemp("cymetric_quintic")
    pg = cymetric["PointGenerator"](5 * np.eye(5, dtype=np.int64), np.ones(5), np.ones(1), np.array([4]))
    kappa = pg.prepare_dataset(400, str(d), val_split=0.1)
    pg.prepare_basis(str(d), kappa=kappa)
    return d


def _load(cymetric, d):
    data = dict(np.load(d / "dataset.npz"))
    basis = cymetric["helper"].prepare_basis(np.load(d / "basis.pickle", allow_pickle=True))
    return data, basis


def _model(cymetric, name, basis, width=None, seed=0):
    import tensorflow as tf

    # the potential's fast path needs >= N^2 = 25 hidden units (see cyntk.kernels.recognise)
    width = width or (32 if name == "PhiFSModel" else 16)
    tf.keras.utils.set_random_seed(seed)
    n_out = 1 if name == "PhiFSModel" else 9
    nn = tf.keras.Sequential(
        [tf.keras.Input((10,))]
        + [tf.keras.layers.Dense(width, activation="gelu") for _ in range(2)]
        + [tf.keras.layers.Dense(n_out, use_bias=False)]
    )
    return getattr(cymetric["models"], name)(nn, basis, alpha=[1.0] * 5)


def _brute_force_ntk(model, x):
    """Per-point Jacobians of the output's real components, one point at a time (float64 sums)."""
    import tensorflow as tf

    from cyntk.kernels.recognise import output_components

    g0 = model(tf.constant(x[:2], tf.float32), training=False).numpy()
    herm = np.allclose(g0, np.conj(np.swapaxes(g0, -1, -2)), rtol=1e-5, atol=1e-6)
    comps = output_components("metric" if herm else "complex")
    variables = model.trainable_variables
    rows = []
    for xi in x:
        with tf.GradientTape(persistent=True) as tape:
            c = comps(model(tf.constant(xi[None], tf.float32), training=False))[0]
        jac = tape.jacobian(c, variables, experimental_use_pfor=False)
        rows.append(np.concatenate([np.reshape(j.numpy(), (c.shape[0], -1)) for j in jac], 1))
    J = np.stack(rows).astype(np.float64)
    return np.einsum("aip,bjp->abij", J, J)


def test_dataset_written_by_cymetric_loads(cymetric, quintic_dir):
    from cyntk.geometry import CYDataset, chart_counts, fermat_quintic, select_chart

    ds = CYDataset.load(quintic_dir)
    data = dict(np.load(quintic_dir / "dataset.npz"))
    np.testing.assert_array_equal(ds.X_train, data["X_train"])
    counts = chart_counts(fermat_quintic(), ds.X_train)
    assert sum(counts.values()) == len(ds.X_train) and len(counts) > 1
    chart, n = max(counts.items(), key=lambda kv: kv[1])
    x, idx = select_chart(fermat_quintic(), ds.X_train, chart, return_index=True)
    assert len(x) == n and np.array_equal(x, ds.X_train[idx])


@pytest.mark.parametrize("name", MODELS)
def test_metric_ntk_of_cymetric_models_equals_brute_force(cymetric, quintic_dir, name):
    from cyntk.kernels import metric_ntk, metric_ntk_path

    data, basis = _load(cymetric, quintic_dir)
    model = _model(cymetric, name, basis)
    x = data["X_train"][:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pfor fallback notices
        output = "complex" if name == "MatrixFSModel" else "auto"  # G + G @ H is not hermitian
        theta = metric_ntk(model, x, output=output)
        generic = metric_ntk(model, x, implementation="generic", output=output)
    assert metric_ntk_path(model, output=output).startswith("structured")
    ref = _brute_force_ntk(model, x)
    m = 18 if name == "MatrixFSModel" else 9
    assert theta.shape == (4, 4, m, m)
    scale = np.abs(ref).max()
    assert np.max(np.abs(theta - ref)) / scale < 1e-4
    assert np.max(np.abs(generic - ref)) / scale < 1e-4


@pytest.mark.parametrize("name", MODELS_MAIN_MULT)
def test_callback_through_fit_is_bitwise_neutral(cymetric, quintic_dir, tmp_path, name):
    """Every cymetric model with the callback in plain fit; weights compared bit for bit with a run
    without it for the multiplicative and the potential model."""
    import tensorflow as tf

    from cyntk.callbacks import MetricNTKCallback

    data, basis = _load(cymetric, quintic_dir)
    model = _model(cymetric, name, basis)
    model.compile(optimizer=tf.keras.optimizers.Adam())
    model.optimizer.build(model.trainable_variables)
    start = [v.numpy() for v in model.trainable_variables]
    opt_start = [v.numpy() for v in model.optimizer.variables]
    finals = []
    # the same model (one trace of cymetric's train step), restarted from the same weights and
    # optimizer state for the run without the callback
    for with_cb in (True, False) if name in ("MultFSModel", "PhiFSModel") else (True,):
        for v, w in zip(model.trainable_variables + model.optimizer.variables, start + opt_start):
            v.assign(w)
        cbs = [MetricNTKCallback(4, 4, data=data, seed=0, log_dir=tmp_path / name)] if with_cb else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            model.fit(
                data["X_train"], data["y_train"], epochs=2, batch_size=128, verbose=0, callbacks=cbs, shuffle=False
            )
        finals.append([v.numpy() for v in model.trainable_variables])
        if with_cb:
            assert cbs[0].history.epochs == [0, 1, 2]
            assert np.all(np.isfinite(cbs[0].history.scalar("ntk_wasserstein_train_test")))
            assert not cbs[0].history.meta.get("errors")
            assert cbs[0].history.meta["m"] == (18 if name == "MatrixFSModel" else 9)
            assert cbs[0].history.meta["ntk_path"].startswith("structured")
            assert not np.array_equal(finals[0][0], start[0])  # it trained
    for a, b in zip(*finals) if len(finals) == 2 else ():
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["MultFSModel", pytest.param("PhiFSModel", marks=pytest.mark.slow)])
def test_callback_under_train_model(cymetric, quintic_dir, tmp_path, name):
    """cymetric's notebook recipe plus one line: reference at initialisation, epochs 0..E."""
    import tensorflow as tf

    from cyntk.callbacks import MetricNTKCallback
    from cyntk.kernels import metric_ntk

    data, basis = _load(cymetric, quintic_dir)
    epochs = 2
    model = _model(cymetric, name, basis)
    # the one added line (model= records the reference now, before train_model's first fit)
    cbs = MetricNTKCallback(3, 3, data=data, seed=0, log_dir=tmp_path, model=model, save_kernels=True)
    tf.keras.utils.set_random_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no spurious resume warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="keras")
        model, _ = cymetric["helper"].train_model(
            model,
            data,
            optimizer=tf.keras.optimizers.Adam(),
            epochs=epochs,
            batch_sizes=[64, 50000],
            verbose=0,
            callbacks=[cbs],
        )
    assert cbs.history.epochs == list(range(epochs + 1))
    # the reference is the kernel at initialisation
    ref = np.load(tmp_path / "metric_ntk" / "kernels" / "epoch_000000.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fresh = _model(cymetric, name, basis)
        init = metric_ntk(fresh, np.concatenate([ref["x_train"], ref["x_test"]]))
    rel = np.linalg.norm(ref["theta"] - init) / np.linalg.norm(init)
    assert rel < 1e-5
    # the kernel moved during training (the records are not all the reference)
    assert cbs.history.scalar("ntk_frobenius_train_train")[-1] > 1e-6
    events = list((tmp_path / "metric_ntk").glob("events.out.tfevents.*"))
    assert len(events) == 1  # one TensorBoard run per training


def test_kernel_model_on_a_cymetric_network(cymetric, quintic_dir):
    import keras

    from cyntk.flows.kernel_model import KernelModel
    from cyntk.geometry import chart_counts, fermat_quintic, select_chart
    from cyntk.kernels import EmpiricalNTKKernel

    data, basis = _load(cymetric, quintic_dir)
    model = _model(cymetric, "MultFSModel", basis)
    M = fermat_quintic()
    counts = chart_counts(M, data["X_train"])
    chart = max(counts, key=counts.get)
    x = select_chart(M, data["X_train"], chart)[:12]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        flow = KernelModel(EmpiricalNTKKernel(model), x, M, base_metric=model)
        flow.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-6))
        y = KernelModel.targets(M, x)
        before = flow.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
        flow.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
        after = flow.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    g0 = np.asarray(model(x.astype(np.float32), training=False))
    from cyntk.geometry import components_from_hermitian

    g_flow = flow.predict(x, verbose=0)
    assert np.all(np.isfinite(g_flow))
    assert np.isfinite(before["loss"]) and np.isfinite(after["loss"])
    assert after["loss"] <= before["loss"] * (1 + 1e-6)
    assert components_from_hermitian(g0).shape[1] == 9
