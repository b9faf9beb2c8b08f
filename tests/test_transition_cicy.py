"""The transition loss on complete intersections / products of projective spaces.

Ground truth is the real cymetric (``../shared/cymetric``, unmodified; skipped when absent):
its ``MultFSModel.compute_transition_loss`` and ``PhiFSModel.compute_transition_loss`` with the
same Keras network as cyntk's model, on cymetric's stored reference points (tetraquadric, two
cubics in P^5) and on points sampled by cyntk for manifolds that exercise cymetric's padding
rules (bicubic; one (2,4) equation in P^1 x P^3, whose lists are padded by repetition; two
equations in P^2 x P^3, padded with the current patch). cyntk squares the per-entry mismatch
(``|.|^2``, as on hypersurfaces), so cymetric runs with ``norm[2] = 2`` (its default exponent is 1).
cymetric computes in complex64 throughout, which limits the agreement to ~2e-6 relative.

Independent checks without cymetric: the counts and tables against cymetric's rules written out
by hand; the K = 1, m = 1 case of the complete-intersection code against the hypersurface code
(float64, ~1e-15); and globally defined Kaehler metrics (the product FS metric; a phi-model whose
potential is a function on the product of projective spaces) have zero transition loss.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cyntk.geometry import CompleteIntersection, CYDataset, bicubic, fermat_quintic, generic_cicy, make_dataset
from cyntk.models import FSModel, MeasuresCallback, MultiplicativeModel, PhiModel, ProjectiveFeatures
from cyntk.models._spec import manifold_spec
from cyntk.models._tfcicy import cymetric_transition_count, transition_table

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"

#: generated manifolds: name -> (ambient, configuration)
GENERATED = {
    "bicubic": None,
    "p1p3_24": ([1, 3], [[2], [4]]),  # one equation: cymetric pads the shorter lists by repetition
    "p2p3_2eq": ([2, 3], [[1, 2], [3, 1]]),  # two equations: padded with the current patch
}


def _manifold(name):
    if name == "bicubic":
        return bicubic()
    amb, conf = GENERATED[name]
    return generic_cicy(amb, conf, seed=3)


def _dataset(name, tmp_path_factory):
    """(CYDataset, directory with cymetric's files, X (P, 2n) float64)."""
    if name.startswith("cymetric_"):
        d = DATA / name
        ds = CYDataset.load(d)
        return ds, d, dict(np.load(d / "points_reference.npz"))["X"][:40]
    ds = make_dataset(_manifold(name), 80, seed=1, val_split=0.5)
    d = tmp_path_factory.mktemp(name)
    ds.save(d)
    return ds, d, ds.X_train


def _net(n_in, n_out, seed=0, std=0.3, dtype="float32"):
    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomNormal(stddev=std)
    return keras.Sequential(
        [
            keras.Input((n_in,), dtype=dtype),
            keras.layers.Dense(16, activation="gelu", dtype=dtype),
            keras.layers.Dense(n_out, use_bias=False, kernel_initializer=init, dtype=dtype),
        ]
    )


def _cymetric_loss(cymetric, d, cls, net, X):
    basis = cymetric["helper"].prepare_basis(np.load(Path(d) / "basis.pickle", allow_pickle=True))
    model = getattr(cymetric["models"], cls)(net, basis, alpha=[1.0] * 5, norm=[1.0, 2.0, 2.0, 1.0, 1.0])
    return model.nTransitions, model.compute_transition_loss(tf.constant(X, tf.float32)).numpy().astype(np.float64)


# --------------------------------------------------------------- cymetric's rules by hand
def test_transition_counts_are_cymetrics():
    # max_t prod_r (n_r + 1 - t_r) over the ways to spread the equations over the factors
    assert cymetric_transition_count([5], 1) == 4  # quintic: N - 1
    assert cymetric_transition_count([3, 3], 1) == 6  # bicubic
    assert cymetric_transition_count([2, 2, 2, 2], 1) == 8  # tetraquadric
    assert cymetric_transition_count([6], 2) == 4  # two cubics in P^5
    assert cymetric_transition_count([2, 4], 1) == 6  # P^1 x P^3: 2 * 3 beats 1 * 4
    assert cymetric_transition_count([3, 4], 2) == 6  # P^2 x P^3, two equations


def _row(slices, K, patch, fixed):
    table, strides, width = transition_table(slices, K, cymetric_transition_count([e - s for s, e in slices], K))
    N = slices[-1][1]
    pcode = sum((k - s) * st for k, (s, _), st in zip(patch, slices, strides))
    fcode = sum(j * N**q for q, j in enumerate(fixed))
    return [tuple(int(v) for v in p) for p in table[pcode * N**K + fcode]], width


def test_transition_tables_follow_cymetrics_padding():
    # one equation in P^1 x P^3, eliminated coordinate in the P^1: 4 patches, tiled to 6 from the start
    # ((0,2),(0,3),(0,4),(0,5),(0,2),(0,3)); the current patch (0,2) drops out, (0,3) counts twice
    row, width = _row([(0, 2), (2, 6)], 1, (0, 2), (1,))
    assert width == 5 and row == [(0, 3), (0, 4), (0, 5), (0, 3), (0, 2)]
    # eliminated coordinate in the P^3: all 2 * 3 patches, the current one dropped
    row, _ = _row([(0, 2), (2, 6)], 1, (0, 2), (5,))
    assert row == [(0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]
    # two equations, both eliminated in the P^2: 1 * 4 patches padded with the current patch (zero terms)
    row, width = _row([(0, 3), (3, 7)], 2, (0, 3), (2, 1))
    assert width == 5 and row == [(0, 4), (0, 5), (0, 6), (0, 3), (0, 3)]
    # a single P^n: the N - 2 other coordinates that are not eliminated, ascending (the hypersurface code's order)
    row, width = _row([(0, 5)], 1, (2,), (4,))
    assert width == 3 and row == [(0,), (1,), (3,)]


def test_hypersurface_as_a_complete_intersection_matches_the_hypersurface_code():
    Q = fermat_quintic()
    ci = CompleteIntersection([np.asarray(Q.monomials)], [np.asarray(Q.coefficients)], [4], name="quintic_ci")
    ds = make_dataset(Q, 40, seed=2, val_split=0.5)
    hyp = MultiplicativeModel(_net(10, 9, dtype="float64"), manifold_spec(Q, kappa=ds.kappa), dtype="float64")
    cic = MultiplicativeModel(hyp.network, manifold_spec(ci, kappa=ds.kappa), dtype="float64")
    assert type(cic.geometry).__name__ == "TFCICYGeometry" and type(hyp.geometry).__name__ == "TFGeometry"
    assert cic.geometry.n_transitions == hyp.geometry.n_transitions == 4
    X = ds.X_train
    a = hyp.loss_terms(X, ds.y_train, terms=("transition",))["transition"].numpy()
    b = cic.loss_terms(X, ds.y_train, terms=("transition",))["transition"].numpy()
    assert np.max(np.abs(a)) > 1e-6
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=0)
    # the chart-change matrices themselves
    ph, jh = hyp.charts(X)
    pc, jc = cic.charts(X)
    fh, fc = hyp.geometry.local_frame(X, ph, jh), cic.geometry.local_frame(X, pc, jc)
    Th = hyp.geometry.transition_points(fh["z"], ph, jh)["T"].numpy()
    Tc = cic.geometry.transition_points(fc["z"], pc, jc)["T"].numpy()
    np.testing.assert_allclose(Tc, Th, rtol=0, atol=1e-13 * np.abs(Th).max())


# ------------------------------------------------------------------ the real cymetric
CASES = ["cymetric_tetraquadric", "cymetric_cicy_p5_33", *GENERATED]


@pytest.mark.filterwarnings("ignore:`network` computes in float32")  # cymetric's network is float32
@pytest.mark.parametrize("name", CASES)
def test_multiplicative_transition_loss_equals_cymetrics(cymetric, tmp_path_factory, name):
    ds, d, X = _dataset(name, tmp_path_factory)
    net = _net(X.shape[1], 9)
    n_t, ref = _cymetric_loss(cymetric, d, "MultFSModel", net, X)
    for dtype in ("float32", "float64"):
        model = MultiplicativeModel(net, ds, dtype=dtype)
        assert model.geometry.n_transitions == n_t
        got = model.loss_terms(X.astype(dtype), ds.y_train[: len(X)], terms=("transition",))["transition"].numpy()
        assert np.all(ref > 0)
        # per point; cymetric's complex64 pullbacks and FS metric bound the agreement (measured <= 2e-6)
        np.testing.assert_allclose(got, ref, rtol=5e-6, atol=0)
    if name in ("p1p3_24", "p2p3_2eq"):  # the sample covers the padded lists
        patch, j = model.charts(X)
        deg = np.array([e - s for s, e in ds.manifold.factor_slices])
        factor = np.searchsorted(ds.manifold.factor_slices[:, 1], np.asarray(j), side="right")
        counts = np.prod(deg[None, :] - np.stack([(factor == r).sum(1) for r in range(len(deg))], 1), axis=1)
        assert np.any(counts < n_t) and np.any(counts == n_t)


@pytest.mark.filterwarnings("ignore:`network` computes in float32")
def test_phi_transition_loss_equals_cymetrics(cymetric, tmp_path_factory):
    ds, d, X = _dataset("cymetric_tetraquadric", tmp_path_factory)
    net = _net(X.shape[1], 1, std=0.5)
    _, ref = _cymetric_loss(cymetric, d, "PhiFSModel", net, X)
    model = PhiModel(net, ds, dtype="float64", transition_mode="phi")
    got = model.loss_terms(X, ds.y_train[: len(X)], terms=("transition",))["transition"].numpy()
    assert np.all(ref > 0)
    np.testing.assert_allclose(got, ref, rtol=5e-6, atol=0)


# ------------------------------------------------------ globally defined Kaehler metrics
class FactorProjectiveFeatures(keras.layers.Layer):
    """ProjectiveFeatures of every factor, concatenated: invariant under z_F -> lambda_F z_F."""

    def __init__(self, slices, ncoords, **kwargs):
        super().__init__(**kwargs)
        self.slices = [(int(s), int(e)) for s, e in slices]
        self.ncoords = ncoords
        self.parts = [ProjectiveFeatures(dtype=kwargs.get("dtype")) for _ in self.slices]

    def call(self, x):
        N = self.ncoords
        out = []
        for (s, e), f in zip(self.slices, self.parts):
            out.append(f(tf.concat([x[:, s:e], x[:, N + s : N + e]], axis=1)))
        return tf.concat(out, axis=1)


@pytest.mark.parametrize("name", ["cymetric_tetraquadric", "cymetric_cicy_p5_33", "p2p3_2eq"])
def test_globally_defined_kaehler_metrics_have_zero_transition_loss(tmp_path_factory, name):
    ds, _, X = _dataset(name, tmp_path_factory)
    y = ds.y_train[: len(X)]
    M = ds.manifold
    # cymetric keeps CICY points (fsolve roots) with |Q| < 1e-8: off the variety the two charts' tangent
    # planes differ at first order in the residual, so the per-point bound carries it (1e-13 on sampled points)
    res = M.residual(X[:, : M.ncoords] + 1j * X[:, M.ncoords :])
    bound = (1e-13 + 10.0 * res) ** 2
    fs = FSModel(ds, dtype="float64")
    g = fs(X).numpy()
    t = fs.loss_terms(X, y, terms=("transition",))["transition"].numpy()
    assert np.all(t < bound * np.abs(g).max() ** 2), np.max(t / bound)
    # phi a function on the product of projective spaces: g = G + J ddbar(phi) J^H is a global Kaehler metric
    feats = FactorProjectiveFeatures(M.factor_slices, M.ncoords, dtype="float64")
    keras.utils.set_random_seed(5)
    net = keras.Sequential(
        [
            keras.Input((2 * M.ncoords,), dtype="float64"),
            feats,
            keras.layers.Dense(16, activation="gelu", dtype="float64"),
            keras.layers.Dense(1, use_bias=False, dtype="float64"),
        ]
    )
    for mode in ("metric", "phi"):
        phi = PhiModel(net, ds, dtype="float64", transition_mode=mode)
        gphi = phi(X).numpy()
        assert np.abs(gphi - g).max() > 1e-3 * np.abs(g).max()  # a genuine correction
        t = phi.loss_terms(X, y, terms=("transition",))["transition"].numpy()
        assert np.all(t < bound * max(1.0, np.abs(gphi).max() ** 2)), (mode, np.max(t / bound))
    # control: without the features phi is not a function on the product, and the loss is not zero
    phi = PhiModel(_net(2 * M.ncoords, 1, std=0.5, dtype="float64"), ds, dtype="float64", transition_mode="metric")
    assert phi.loss_terms(X, y, terms=("transition",))["transition"].numpy().max() > 1e-8


# --------------------------------------------------------------------- models and measures
def test_models_on_cicys_train_and_measure_with_the_transition_loss():
    ds = make_dataset(bicubic(), 160, seed=4, val_split=0.25)
    Xt, yt = ds.X_train.astype("float32"), ds.y_train.astype("float32")
    model = MultiplicativeModel(_net(12, 9, seed=2, std=0.05), ds, kaehler=0.0, transition=1.0, volk=0.0)
    assert model.active_terms == ("sigma", "transition")
    before = model.measures(ds.X_val, ds.y_val, which=("sigma", "transition"))
    assert before["transition"] > 0 and np.isfinite(before["sigma"])
    cb = MeasuresCallback(ds, measures=("sigma", "transition"))
    model.compile(keras.optimizers.Adam(1e-3))
    hist = model.fit(Xt, yt, batch_size=40, epochs=2, verbose=0, callbacks=[cb]).history
    assert np.all(np.isfinite(hist["transition_loss"])) and len(hist["transition_val"]) == 2
    assert cb.history["transition_val"][-1] == pytest.approx(hist["transition_val"][-1])
    # plain gradient descent on the transition loss alone lowers it, on the training and the validation points
    model.set_loss_weights(sigma=0.0)
    model.compile(keras.optimizers.SGD(1.0))
    start = model.measures(ds.X_val, ds.y_val, which=("transition",))["transition"]
    hist = model.fit(Xt, yt, batch_size=40, epochs=3, verbose=0).history
    after = model.measures(ds.X_val, ds.y_val, which=("transition",))["transition"]
    assert np.all(np.diff(hist["transition_loss"]) < 0) and after < start, (start, after, hist["transition_loss"])


# ------------------------------------------------------------- same_manifold across kinds
def test_hypersurface_and_cicy_specs_compare_both_ways():
    Q = fermat_quintic()
    q = manifold_spec(Q)
    k3 = manifold_spec(generic_cicy([1, 2], [[2], [3]], seed=0))  # 5 coordinates, like the quintic
    assert q.ncoords == k3.ncoords == 5
    assert not q.same_manifold(k3) and not k3.same_manifold(q)
    # the quintic written as a complete intersection (an overall factor changes nothing) is the quintic
    ci = manifold_spec(CompleteIntersection([np.asarray(Q.monomials)], [2.0 * np.asarray(Q.coefficients)], [4]))
    assert type(ci).__name__ == "CICYSpec"
    assert q.same_manifold(ci) and ci.same_manifold(q)
    assert not q.same_manifold("quintic") and not k3.same_manifold(None)


@pytest.mark.parametrize("direction", ["hypersurface data, CICY model", "CICY data, hypersurface model"])
def test_callback_refuses_data_of_another_kind_of_manifold(direction):
    Q = fermat_quintic()
    K3 = generic_cicy([1, 2], [[2], [3]], seed=0)
    data_m, model_m = (Q, K3) if direction.startswith("hypersurface") else (K3, Q)
    ds = make_dataset(data_m, 20, seed=0, val_split=0.5)
    model = FSModel(model_m, kappa=1.0, kaehler=0.0, transition=0.0, volk=0.0)
    cb = MeasuresCallback(ds, measures=("sigma",))
    cb.set_model(model)
    with pytest.raises(ValueError, match="`data` belongs to .* but the model was built for"):
        cb.on_train_begin()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bicubic", "p2p3_2eq"])
def test_jit_compile_gives_the_same_training_on_cicys(name):
    """XLA compiles the CICY geometry (no complex MatrixSolve: closed-form adjugates) and transitions."""
    ds = make_dataset(_manifold(name), 120, seed=4, val_split=0.25)
    x, y = ds.X_train[:90].astype("float32"), ds.y_train[:90].astype("float32")
    net = _net(2 * ds.manifold.ncoords, 9, seed=2, std=0.05)
    weights, losses = [], []
    for jit in (False, True):
        m = MultiplicativeModel(keras.models.clone_model(net), ds, kaehler=1.0, transition=1.0, volk=0.0)
        m.network.set_weights(net.get_weights())
        m.compile(keras.optimizers.SGD(0.1), jit_compile=jit)
        hist = m.fit(x, y, batch_size=30, epochs=2, shuffle=False, verbose=0).history
        assert m.xla is jit
        weights.append([v.numpy() for v in m.trainable_variables])
        losses.append(hist["transition_loss"])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
