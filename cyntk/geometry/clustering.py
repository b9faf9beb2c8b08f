"""Clustering of points on a Calabi-Yau by Fubini-Study geodesic distance (paper section 3.1).

A full 9 x 9 x N x N kernel does not fit in memory for N ~ 1e5, so the paper
flows clusters of ~5000 nearby points separately. Its procedure, implemented
by :class:`BatchedFSClustering`:

1. split the points into mini-batches of ``batch_size`` points;
2. cluster every mini-batch independently with agglomerative clustering,
   average linkage, on the precomputed FS distance matrix (scikit-learn);
3. take the clusters of the first mini-batch as the reference clusters
   ``c_alpha^1``;
4. merge every cluster ``c_beta^I`` of every later mini-batch I into the
   reference cluster with the smallest mean FS distance (paper eq. 3.3)::

       c_alpha = U_I  argmin_beta  mean d_FS(c_alpha^1, c_beta^I)

The paper's rule, read literally, could give two reference clusters the same
``beta`` (or none). To guarantee that the final clusters partition the points
(every point in exactly one cluster), each mini-batch's clusters are matched
one-to-one to the reference clusters: ``assignment="hungarian"`` (default)
minimises the total mean distance of the matching (``scipy.optimize.
linear_sum_assignment``); ``assignment="greedy"`` lets reference cluster 1
take its nearest cluster, then cluster 2 its nearest remaining one, and so on
(the paper's sequential wording). Mean distances between clusters are
accumulated in row chunks, so memory stays O(chunk x batch_size).

:func:`birch_clustering` is the paper's Euclidean baseline (scikit-learn
Birch on the real features), and :func:`silhouette` scores a labelling on
the FS distance.

**Products of projective spaces.** For points of a complete intersection in
A = P^{n_1} x ... x P^{n_m} every function here takes ``manifold=`` (a
:class:`~cyntk.geometry.CompleteIntersection`: its ``factor_slices`` and, by
default, its ``kmoduli``) or the layout directly (``factor_slices=`` (m, 2) and
``t=`` (m,)), and then uses the geodesic distance of the product metric
``sum_F t_F g_F`` (:func:`cyntk.geometry.product_fs_distance`):

    d(z, z') = sqrt( sum_F t_F d_FS(z_F, z'_F)^2 ),

``d_FS`` the FS distance of factor F (paper eq. 3.2). Without these arguments
the points are taken in one P^{N-1} (the paper's setting). The FS distance of
the concatenated coordinates is *not* a distance on a product (it depends on
the rescaling of each factor separately), so product points need the layout.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from cyntk._validation import as_points, positive_int
from cyntk.geometry.product_distance import _slices_and_t, product_fs_distance_matrix
from cyntk.geometry.projective import fs_distance_matrix, to_real

__all__ = [
    "BatchedFSClustering",
    "fs_agglomerative",
    "birch_clustering",
    "silhouette",
    "cluster_order",
    "mean_cluster_distances",
    "distance_function",
]


def _points(z, name="z"):
    z = np.asarray(z)
    if not np.iscomplexobj(z) and z.ndim == 2 and z.shape[1] % 2 == 0:
        n = z.shape[1] // 2
        z = z[:, :n] + 1j * z[:, n:]
    return as_points(z, name)


def distance_function(manifold=None, factor_slices=None, t=None):
    """The distance matrix the clustering uses: ``D(z1, z2=None) -> (P1, P2)`` float64.

    Args:
        manifold: a :class:`~cyntk.geometry.CompleteIntersection` (or anything with
            ``factor_slices`` and ``kmoduli``): the product distance of its factors,
            weighted by ``t`` (default its ``kmoduli``).
        factor_slices: int (m, 2) [start, end) of every factor, instead of ``manifold``.
        t: positive weights (m,) of the factors (default the manifold's kmoduli, else ones).

    Returns:
        :func:`cyntk.geometry.fs_distance_matrix` when neither ``manifold`` nor
        ``factor_slices`` is given (one projective space), else the product distance.
    """
    if manifold is not None:
        if factor_slices is not None:
            raise ValueError("Pass either `manifold` or `factor_slices`, not both.")
        factor_slices = getattr(manifold, "factor_slices", None)
        if factor_slices is None:
            raise TypeError(
                f"`manifold` must have `factor_slices` (a cyntk CompleteIntersection or Hypersurface); "
                f"received {type(manifold).__name__}."
            )
        t = np.asarray(manifold.kmoduli, dtype=np.float64) if t is None else t
    if factor_slices is None:
        if t is not None:
            raise ValueError("`t` needs the factor layout: pass `manifold` or `factor_slices` with it.")
        return fs_distance_matrix
    sl = np.asarray(factor_slices, dtype=np.int64)
    sl, t = _slices_and_t(sl, t, int(np.max(sl)) if sl.size else 0)  # refuses a bad layout or t now

    def D(z1, z2=None):
        return product_fs_distance_matrix(z1, z2, sl, t)

    return D


def fs_agglomerative(
    z, n_clusters: int, *, linkage: str = "average", manifold=None, factor_slices=None, t=None
) -> np.ndarray:
    """Agglomerative clustering on the FS geodesic distance (one batch, whole matrix).

    Args:
        z: points, complex (P, N) or real (P, 2N) = [Re z, Im z].
        n_clusters: number of clusters (1 <= n_clusters <= P).
        linkage: 'average' (the paper), 'complete' or 'single'.
        manifold, factor_slices, t: points of a product of projective spaces
            (module docstring, :func:`distance_function`).

    Returns:
        int64 labels (P,) in [0, n_clusters).
    """
    from sklearn.cluster import AgglomerativeClustering

    z = _points(z)
    n_clusters = positive_int(n_clusters, "n_clusters")
    if n_clusters > len(z):
        raise ValueError(f"`n_clusters` must be at most the number of points ({len(z)}); received {n_clusters}.")
    if linkage not in ("average", "complete", "single"):
        raise ValueError(
            f"`linkage` must be 'average', 'complete' or 'single' (a precomputed distance "
            f"rules out 'ward'); received {linkage!r}."
        )
    distance = distance_function(manifold, factor_slices, t)
    if n_clusters == 1:
        return np.zeros(len(z), dtype=np.int64)
    D = distance(z)
    model = AgglomerativeClustering(n_clusters=n_clusters, metric="precomputed", linkage=linkage)
    return model.fit_predict(D).astype(np.int64)


def mean_cluster_distances(
    z_a, labels_a, z_b, labels_b, *, n_a=None, n_b=None, chunk_size=None, manifold=None, factor_slices=None, t=None
):
    """Mean FS distance between every cluster of set A and every cluster of set B.

    Args:
        z_a, z_b: complex points (P_a, N), (P_b, N).
        labels_a, labels_b: int labels (P_a,), (P_b,).
        n_a, n_b: numbers of clusters (default: max label + 1).
        chunk_size: rows of ``z_a`` per distance chunk.
        manifold, factor_slices, t: points of a product of projective spaces
            (module docstring, :func:`distance_function`).

    Returns:
        float64 (n_a, n_b): ``mean_{x in A_alpha, y in B_beta} d(x, y)`` (NaN for empty clusters).
    """
    distance = distance_function(manifold, factor_slices, t)
    la, lb = np.asarray(labels_a), np.asarray(labels_b)
    n_a = int(la.max()) + 1 if n_a is None else n_a
    n_b = int(lb.max()) + 1 if n_b is None else n_b
    onehot_b = np.zeros((len(lb), n_b))
    onehot_b[np.arange(len(lb)), lb] = 1.0
    sums = np.zeros((n_a, n_b))
    step = chunk_size or max(1, int(2**25 // max(len(lb), 1)))
    for s in range(0, len(la), step):
        D = distance(z_a[s : s + step], z_b)
        np.add.at(sums, la[s : s + step], D @ onehot_b)
    counts = np.bincount(la, minlength=n_a)[:, None] * np.bincount(lb, minlength=n_b)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


class BatchedFSClustering:
    """Mini-batched agglomerative FS clustering with cross-batch merging (paper eq. 3.3).

    Args (keyword-only, stored untouched as in scikit-learn):
        n_clusters: number of final clusters C (the paper: N / 5000).
        batch_size: points per mini-batch M (the paper: 10 000). ``None``: one
            batch, i.e. plain agglomerative clustering of all points.
        linkage: linkage of the per-batch clustering ('average').
        assignment: 'hungarian' (one-to-one, minimal total mean distance) or
            'greedy' (reference clusters pick their nearest remaining cluster in order).
        shuffle: shuffle points before batching (the paper's batches are random).
        random_state: seed for the shuffle.
        manifold, factor_slices, t: points of a product of projective spaces: the
            product distance (module docstring, :func:`distance_function`).

    Attributes (after :meth:`fit`):
        labels_: int64 (P,) final cluster of every point.
        batch_labels_: int64 (P,) cluster of every point within its own mini-batch.
        batch_index_: int64 (P,) mini-batch of every point.
        cluster_sizes_: int64 (C,).
    """

    def __init__(
        self,
        *,
        n_clusters: int = 10,
        batch_size: int | None = 10_000,
        linkage: str = "average",
        assignment: str = "hungarian",
        shuffle: bool = False,
        random_state=None,
        manifold=None,
        factor_slices=None,
        t=None,
    ):
        self.n_clusters = n_clusters
        self.batch_size = batch_size
        self.linkage = linkage
        self.assignment = assignment
        self.shuffle = shuffle
        self.random_state = random_state
        self.manifold = manifold
        self.factor_slices = factor_slices
        self.t = t

    def fit(self, z, y=None) -> "BatchedFSClustering":
        """Cluster points ``z`` (complex (P, N) or real (P, 2N)); returns ``self``."""
        z = _points(z)
        layout = dict(manifold=self.manifold, factor_slices=self.factor_slices, t=self.t)
        distance_function(**layout)  # refuses a bad layout before any work
        C = positive_int(self.n_clusters, "n_clusters")
        P = len(z)
        if C > P:
            raise ValueError(f"`n_clusters` must be at most the number of points ({P}); received {C}.")
        if self.assignment not in ("hungarian", "greedy"):
            raise ValueError(f"`assignment` must be 'hungarian' or 'greedy'; received {self.assignment!r}.")
        M = P if self.batch_size is None else positive_int(self.batch_size, "batch_size")
        order = np.arange(P)
        if self.shuffle:
            order = np.random.default_rng(self.random_state).permutation(P)
        starts = list(range(0, P, M))
        # a last batch with fewer points than clusters joins the previous one
        if len(starts) > 1 and P - starts[-1] < C:
            starts.pop()
        bounds = starts + [P]
        labels = np.empty(P, dtype=np.int64)
        batch_labels = np.empty(P, dtype=np.int64)
        batch_index = np.empty(P, dtype=np.int64)
        ref_idx = ref_lab = None
        for b in range(len(starts)):
            idx = order[bounds[b] : bounds[b + 1]]
            lab = fs_agglomerative(z[idx], C, linkage=self.linkage, **layout)
            batch_labels[idx] = lab
            batch_index[idx] = b
            if b == 0:
                ref_idx, ref_lab = idx, lab
                labels[idx] = lab
                continue
            cost = mean_cluster_distances(z[ref_idx], ref_lab, z[idx], lab, n_a=C, n_b=C, **layout)
            mapping = self._match(cost)
            labels[idx] = mapping[lab]
        self.labels_ = labels
        self.batch_labels_ = batch_labels
        self.batch_index_ = batch_index
        self.cluster_sizes_ = np.bincount(labels, minlength=C)
        return self

    def fit_predict(self, z, y=None) -> np.ndarray:
        return self.fit(z).labels_

    def _match(self, cost):
        """mapping[beta] = alpha: one-to-one matching of batch clusters to reference clusters."""
        C = cost.shape[0]
        mapping = np.empty(C, dtype=np.int64)
        if self.assignment == "hungarian":
            rows, cols = linear_sum_assignment(cost)
            mapping[cols] = rows
            return mapping
        free = np.ones(C, bool)
        for alpha in range(C):
            beta = int(np.argmin(np.where(free, cost[alpha], np.inf)))
            mapping[beta] = alpha
            free[beta] = False
        return mapping


def birch_clustering(z, n_clusters: int, *, threshold: float = 0.1) -> np.ndarray:
    """Euclidean Birch clustering of the real features [Re z, Im z] (the paper's baseline)."""
    from sklearn.cluster import Birch

    z = _points(z)
    n_clusters = positive_int(n_clusters, "n_clusters")
    return Birch(n_clusters=n_clusters, threshold=threshold).fit_predict(to_real(z)).astype(np.int64)


def silhouette(z, labels, *, distance=None, manifold=None, factor_slices=None, t=None) -> float:
    """Silhouette score of ``labels`` on the FS distance (scikit-learn, precomputed).

    Args:
        z: points (P, N) complex or (P, 2N) real.
        labels: int (P,).
        distance: optional precomputed (P, P) FS distance matrix.
        manifold, factor_slices, t: points of a product of projective spaces
            (module docstring, :func:`distance_function`).
    """
    from sklearn.metrics import silhouette_score

    z = _points(z)
    labels = np.asarray(labels)
    if labels.shape != (len(z),):
        raise ValueError(f"`labels` must have shape ({len(z)},); received {labels.shape}.")
    D = distance_function(manifold, factor_slices, t)(z) if distance is None else np.asarray(distance)
    return float(silhouette_score(D, labels, metric="precomputed"))


def cluster_order(labels) -> np.ndarray:
    """Permutation that sorts points by cluster (stable), for block-structured distance plots."""
    return np.argsort(np.asarray(labels), kind="stable")
