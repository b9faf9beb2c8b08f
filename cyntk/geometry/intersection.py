"""Intersection theory of complete intersections in products of projective spaces.

For a complete intersection X of K equations in A = P^{n_1} x ... x P^{n_m} with
configuration matrix ``q`` (m, K) (``q[F, k]`` = degree of equation k in the
coordinates of factor F), the cohomology ring of A is
``Z[J_1, ..., J_m] / (J_F^{n_F + 1})`` and ``int_A J^{n_1}_1 ... J^{n_m}_m = 1``.
The class of X is ``mu = prod_k sum_F q[F, k] J_F``, so

    d_{a_1 ... a_n} = int_X J_{a_1} ... J_{a_n}
                    = coefficient of prod_F J_F^{n_F} in mu J_{a_1} ... J_{a_n}.

Polynomials in the J_F are dense arrays of shape (n_1 + 1, ..., n_m + 1) (entry
[e_1, ..., e_m] = coefficient of prod J_F^{e_F}); products truncate at
J_F^{n_F + 1} = 0.

The module also holds the *mixed determinant* of n hermitian n x n matrices,
``D(G_1, ..., G_n) = sum_{sigma, tau in S_n} sgn(sigma) sgn(tau) prod_k
G_k[sigma k, tau k]`` (cymetric's Levi-Civita contraction; ``n! det G`` when all
G_k are equal), by polarisation over sub-multisets.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "intersection_tensor",
    "intersection_number",
    "mixed_determinant",
    "mixed_determinant_counts",
]


def _multiply_linear(poly, coeffs):
    """poly * sum_F coeffs[F] J_F in Z[J]/(J_F^{n_F+1})."""
    out = np.zeros_like(poly)
    for F, c in enumerate(coeffs):
        if c == 0:
            continue
        sl_src = [slice(None)] * poly.ndim
        sl_dst = [slice(None)] * poly.ndim
        sl_src[F] = slice(0, poly.shape[F] - 1)
        sl_dst[F] = slice(1, poly.shape[F])
        out[tuple(sl_dst)] += c * poly[tuple(sl_src)]
    return out


def _class_of_x(ambient, configuration):
    shape = tuple(int(a) + 1 for a in ambient)
    mu = np.zeros(shape, dtype=object)
    mu[(0,) * len(shape)] = 1
    for k in range(configuration.shape[1]):
        mu = _multiply_linear(mu, [int(v) for v in configuration[:, k]])
    return mu


def intersection_number(ambient, configuration, counts) -> int:
    """``int_X prod_F J_F^{counts[F]}`` (an integer; 0 unless sum(counts) = dim X).

    Args:
        ambient: int (m,) dimensions n_F of the projective factors.
        configuration: int (m, K) degrees of the K equations in each factor.
        counts: int (m,) powers of the hyperplane classes.
    """
    ambient = np.asarray(ambient, dtype=np.int64).reshape(-1)
    conf = np.asarray(configuration, dtype=np.int64).reshape(len(ambient), -1)
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    mu = _class_of_x(ambient, conf)
    for F, c in enumerate(counts):
        e = [0] * len(ambient)
        e[F] = 1
        for _ in range(int(c)):
            mu = _multiply_linear(mu, e)
    return int(mu[tuple(int(a) for a in ambient)])


def intersection_tensor(ambient, configuration) -> np.ndarray:
    """All triple (n-fold) intersection numbers ``d_{a_1...a_n}``, int64 (m,)*n.

    Args:
        ambient: int (m,) dimensions n_F.
        configuration: int (m, K) configuration matrix.

    Returns:
        int64 array of shape (m,) * nfold, nfold = sum(ambient) - K, symmetric.
    """
    ambient = np.asarray(ambient, dtype=np.int64).reshape(-1)
    conf = np.asarray(configuration, dtype=np.int64).reshape(len(ambient), -1)
    m = len(ambient)
    nfold = int(ambient.sum() - conf.shape[1])
    d = np.zeros((m,) * nfold, dtype=np.int64)
    for combo in itertools.combinations_with_replacement(range(m), nfold):
        counts = np.bincount(np.asarray(combo, dtype=np.int64), minlength=m)
        val = intersection_number(ambient, conf, counts)
        for perm in set(itertools.permutations(combo)):
            d[perm] = val
    return d


def mixed_determinant_counts(blocks, counts) -> np.ndarray:
    """Mixed determinant with block F repeated ``counts[F]`` times.

    ``D = sum_{k <= counts} prod_F binom(counts_F, k_F) (-1)^{n - |k|}
    det(sum_F k_F G_F)`` (polarisation identity), n = sum(counts).

    Args:
        blocks: complex (m, P, n, n) hermitian matrices G_F (e.g. pulled-back
            unit Fubini-Study metrics of the factors).
        counts: int (m,) multiplicities, summing to n.

    Returns:
        float64 (P,): real part of D.
    """
    blocks = np.asarray(blocks)
    counts = [int(c) for c in np.asarray(counts).reshape(-1)]
    n = blocks.shape[-1]
    if sum(counts) != n:
        raise ValueError(f"`counts` must sum to the matrix size {n}; received {counts}.")
    nonzero = [F for F, c in enumerate(counts) if c]
    if len(nonzero) == 1:  # D(G, ..., G) = n! det G (what the polarisation sum adds up to, without cancellation)
        return math.factorial(n) * np.real(np.linalg.det(blocks[nonzero[0]]))
    out = np.zeros(blocks.shape[1], dtype=np.float64)
    for ks in itertools.product(*[range(c + 1) for c in counts]):
        if sum(ks) == 0:
            continue
        coef = math.prod(math.comb(c, k) for c, k in zip(counts, ks)) * (-1) ** (n - sum(ks))
        G = sum(k * blocks[F] for F, k in enumerate(ks) if k)
        out += coef * np.real(np.linalg.det(G))
    return out


def mixed_determinant(matrices) -> np.ndarray:
    """Mixed determinant D(G_1, ..., G_n) of a list of n matrices (P, n, n), float64 (P,).

    Equal matrices are grouped, so repeated arguments cost no more than
    :func:`mixed_determinant_counts`.
    """
    mats = [np.asarray(g) for g in matrices]
    uniq, counts = [], []
    for g in mats:
        for i, u in enumerate(uniq):
            if u is g:
                counts[i] += 1
                break
        else:
            uniq.append(g)
            counts.append(1)
    return mixed_determinant_counts(np.stack(uniq), counts)
