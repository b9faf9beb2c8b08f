"""FS clustering of points of a product of projective spaces, against direct computations.

The product distance is ``d = sqrt(sum_F t_F d_FS(z_F, z'_F)^2)`` (cyntk.geometry.product_distance);
here every clustering quantity is recomputed from it pair by pair in plain Python.
"""

import numpy as np
import pytest

from cyntk.geometry import bicubic, tetraquadric
from cyntk.geometry.clustering import (
    BatchedFSClustering,
    distance_function,
    fs_agglomerative,
    mean_cluster_distances,
    silhouette,
)


def direct_distance(a, b, slices, t):
    out = np.empty((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            d2 = 0.0
            for (s, e), tf in zip(slices, t):
                c = abs(np.vdot(x[s:e], y[s:e])) / (np.linalg.norm(x[s:e]) * np.linalg.norm(y[s:e]))
                d2 += tf * np.arccos(min(c, 1.0)) ** 2
            out[i, j] = np.sqrt(d2)
    return out


def naive_average_linkage(D, n_clusters):
    clusters = [[i] for i in range(len(D))]
    while len(clusters) > n_clusters:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                d = np.mean(D[np.ix_(clusters[a], clusters[b])])
                if best is None or d < best[0]:
                    best = (d, a, b)
        _, a, b = best
        clusters[a] += clusters.pop(b)
    lab = np.empty(len(D), dtype=int)
    for c, members in enumerate(clusters):
        lab[members] = c
    return lab


def direct_silhouette(D, lab):
    s = []
    for i in range(len(D)):
        own = (lab == lab[i]) & (np.arange(len(D)) != i)
        if not own.any():
            s.append(0.0)
            continue
        a = D[i, own].mean()
        b = min(D[i, lab == c].mean() for c in set(lab.tolist()) if c != lab[i])
        s.append((b - a) / max(a, b))
    return float(np.mean(s))


def same_partition(a, b):
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("make", [tetraquadric, lambda: bicubic(kmoduli=[1.0, 2.5])])
def test_clustering_matches_a_direct_computation(make):
    M = make()
    z = M.sample_points(36, seed=2)
    D = direct_distance(z, z, M.factor_slices, M.kmoduli)
    np.testing.assert_allclose(distance_function(M)(z), D, atol=2e-7)  # noise floor of the diagonal
    lab = fs_agglomerative(z, 4, manifold=M)
    assert same_partition(lab, naive_average_linkage(D, 4))
    # the layout given directly is the same distance
    lab2 = fs_agglomerative(z, 4, factor_slices=M.factor_slices, t=M.kmoduli)
    np.testing.assert_array_equal(lab, lab2)
    assert silhouette(z, lab, manifold=M) == pytest.approx(direct_silhouette(D, lab), abs=1e-9)
    w = np.array([1, 0, 2, 1, 3] * 6 + [0] * 6)
    means = mean_cluster_distances(z[:18], lab[:18], z[18:], w[18:], n_a=4, n_b=4, manifold=M)
    for a in range(4):
        for b in range(4):
            ia, ib = np.nonzero(lab[:18] == a)[0], 18 + np.nonzero(w[18:] == b)[0]
            if len(ia) and len(ib):
                assert means[a, b] == pytest.approx(D[np.ix_(ia, ib)].mean(), abs=1e-9)
    # one batch of the batched clustering is the plain clustering; batches partition every point
    np.testing.assert_array_equal(BatchedFSClustering(n_clusters=4, batch_size=None, manifold=M).fit_predict(z), lab)
    cl = BatchedFSClustering(n_clusters=3, batch_size=12, manifold=M).fit(z)
    assert cl.cluster_sizes_.sum() == 36 and set(cl.labels_.tolist()) == {0, 1, 2}


def test_factor_weights_decide_which_factor_clusters():
    """Blobs grouped one way in factor 0 and another way in factor 1 of P^1 x P^1."""
    rng = np.random.default_rng(0)
    centres = np.array([[1, 0], [0, 1], [1, 1j]], dtype=complex)
    g0 = np.repeat(np.arange(3), 8)
    g1 = np.tile(np.arange(3), 8)
    z = np.concatenate([centres[g0], centres[g1]], axis=1)
    z = z + 0.03 * (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape))
    slices = [[0, 2], [2, 4]]
    by0 = fs_agglomerative(z, 3, factor_slices=slices, t=[1.0, 1e-4])
    by1 = fs_agglomerative(z, 3, factor_slices=slices, t=[1e-4, 1.0])
    assert same_partition(by0, g0) and same_partition(by1, g1)
    assert silhouette(z, g0, factor_slices=slices, t=[1.0, 1e-4]) > 0.8


def test_bad_layouts_are_refused():
    z = tetraquadric().sample_points(8, seed=0)
    with pytest.raises(ValueError, match="`factor_slices` must tile"):
        fs_agglomerative(z, 2, factor_slices=[[0, 3], [3, 8]][:1])
    with pytest.raises(ValueError, match="`t` must hold 4 positive"):
        silhouette(z, np.arange(8) % 2, manifold=tetraquadric(), t=[1, 1])
    with pytest.raises(ValueError, match="either `manifold` or `factor_slices`"):
        BatchedFSClustering(n_clusters=2, manifold=tetraquadric(), factor_slices=[[0, 8]]).fit(z)
    with pytest.raises(ValueError, match="`t` needs the factor layout"):
        fs_agglomerative(z, 2, t=[1.0])
