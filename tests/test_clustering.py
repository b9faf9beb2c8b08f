"""FS clustering (paper section 3.1): partitions, batching, merging, silhouettes."""

from __future__ import annotations

import numpy as np
import pytest

from cyntk.geometry import fermat_quintic, fs_distance_matrix
from cyntk.geometry.clustering import (
    BatchedFSClustering,
    birch_clustering,
    cluster_order,
    fs_agglomerative,
    mean_cluster_distances,
    silhouette,
)


@pytest.fixture(scope="module")
def points():
    return fermat_quintic().sample_points(600, seed=4)


def blobs(rng, centres, per, spread):
    """Points of P^4 scattered around given centres (well separated in FS distance)."""
    out, lab = [], []
    for c, centre in enumerate(centres):
        noise = spread * (rng.standard_normal((per, 5)) + 1j * rng.standard_normal((per, 5)))
        out.append(centre[None] + noise)
        lab += [c] * per
    z = np.concatenate(out)
    perm = rng.permutation(len(z))
    return z[perm], np.array(lab)[perm]


def same_partition(a, b):
    """Labelings equal up to renaming of the clusters."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("assignment", ["hungarian", "greedy"])
def test_merged_clusters_cover_every_point_once(points, assignment):
    cl = BatchedFSClustering(n_clusters=6, batch_size=150, assignment=assignment).fit(points)
    assert cl.labels_.shape == (600,)
    assert set(cl.labels_.tolist()) == set(range(6))
    assert cl.cluster_sizes_.sum() == 600
    # within each batch the merge is a bijection between batch clusters and final clusters
    for b in np.unique(cl.batch_index_):
        m = cl.batch_index_ == b
        assert same_partition(cl.labels_[m], cl.batch_labels_[m])


def test_one_batch_equals_unbatched(points):
    full = fs_agglomerative(points, 8)
    one = BatchedFSClustering(n_clusters=8, batch_size=None).fit_predict(points)
    np.testing.assert_array_equal(full, one)
    one_b = BatchedFSClustering(n_clusters=8, batch_size=10_000).fit_predict(points)
    np.testing.assert_array_equal(full, one_b)


def test_agglomerative_matches_scipy_average_linkage(points):
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    z = points[:200]
    D = fs_distance_matrix(z)
    ref = fcluster(linkage(squareform(D, checks=False), method="average"), 5, criterion="maxclust")
    assert same_partition(fs_agglomerative(z, 5), ref)


def test_batched_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(5, dtype=complex)[:4]
    z, truth = blobs(rng, centres, 60, 0.03)
    for assignment in ("hungarian", "greedy"):
        lab = BatchedFSClustering(n_clusters=4, batch_size=80, assignment=assignment).fit_predict(z)
        assert same_partition(lab, truth)
    D = fs_distance_matrix(z)
    assert silhouette(z, truth, distance=D) > 0.8
    assert silhouette(z, rng.permutation(truth), distance=D) < 0.05


def test_mean_cluster_distances_brute_force(points):
    a, b = points[:100], points[100:170]
    la, lb = np.arange(100) % 3, np.arange(70) % 4
    D = fs_distance_matrix(a, b)
    expected = np.array([[D[np.ix_(la == i, lb == j)].mean() for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(mean_cluster_distances(a, la, b, lb, chunk_size=7), expected, rtol=1e-12)


def test_silhouette_and_birch_and_order(points):
    from sklearn.metrics import silhouette_score

    lab = birch_clustering(points, 5)
    assert lab.shape == (600,) and len(set(lab.tolist())) == 5
    D = fs_distance_matrix(points)
    np.testing.assert_allclose(silhouette(points, lab), silhouette_score(D, lab, metric="precomputed"))
    o = cluster_order(lab)
    assert np.all(np.diff(lab[o]) >= 0)


def test_bad_input():
    z = fermat_quintic().sample_points(20, seed=0)
    with pytest.raises(ValueError, match="n_clusters"):
        BatchedFSClustering(n_clusters=30).fit(z)
    with pytest.raises(ValueError, match="assignment"):
        BatchedFSClustering(n_clusters=2, assignment="nearest").fit(z)
    with pytest.raises(ValueError, match="linkage"):
        fs_agglomerative(z, 2, linkage="ward")
    with pytest.raises(ValueError, match="labels"):
        silhouette(z, np.zeros(5))
