"""Polynomial tables and their evaluation, shared by every variety in cyntk.geometry.

One kernel evaluates sums of monomials ``sum_t c[i, t] prod_l z_l**E[i, t, l]`` for
the defining equations, their gradients (cymetric's padded ``DQDZB``/``DQDZF``
tables) and the monomial scale ``sum_t |c z^E|`` that residuals are judged
against. Its rounding is fixed on purpose: integer powers come from
``numpy.power`` (binary exponentiation) and the factors of a monomial are
multiplied left to right in real arithmetic, ``(a + ib)(c + id) = (ac - bd) +
i(ad + bc)`` with every product and sum rounded once. That is the rounding of
numpy's scalar complex product (what ``numpy.prod`` does along an axis), so
points sampled on a hypersurface in one P^n are bit-for-bit those of cyntk
versions before hypersurfaces became the K = 1, m = 1 case of
:class:`~cyntk.geometry.cicy.CompleteIntersection` (which evaluated
``numpy.prod(numpy.power(z, E), axis=-1)``). numpy's vectorised complex
multiply rounds differently (fused multiply-adds), which is why the products
are spelled out; the powers are numpy's own sequence of products
(:func:`power_table`); sums over the monomials of one polynomial run along
contiguous memory, as numpy's pairwise sum did there.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["derivative_tables", "eval_monomials", "free_parameter_assignments", "monomial_basis", "power_table"]

# complex entries per working array of the evaluation (bounds memory, keeps arrays in cache)
_EVAL_TARGET = 1 << 15


def derivative_tables(mono, coef, n):
    """cymetric's padded dQ/dz tables: row i lists the monomials with M[:, i] > 0 in order.

    Args:
        mono: int (M, n) exponents of one polynomial.
        coef: complex (M,) coefficients.
        n: number of homogeneous coordinates.

    Returns:
        ``(E, F)``: int64 (n, T, n) exponents and complex128 (n, T) factors with
        ``dQ/dz_i = sum_t F[i, t] prod_l z_l**E[i, t, l]``; padding rows have exponent 0
        and factor 0.
    """
    rows = []
    for i in range(n):
        sel = np.nonzero(mono[:, i] > 0)[0]
        exps = mono[sel].copy()
        exps[:, i] -= 1
        rows.append((exps, coef[sel] * mono[sel, i]))
    T = max(1, max(len(r[1]) for r in rows))
    E = np.zeros((n, T, n), dtype=np.int64)
    F = np.zeros((n, T), dtype=np.complex128)
    for i, (exps, c) in enumerate(rows):
        E[i, : len(c)] = exps
        F[i, : len(c)] = c
    return E, F


def eval_monomials(z, exps, coefs, *, with_scale: bool = False):
    """``sum_t coefs[i, t] prod_l z_l**exps[i, t, l]`` for every point, complex128 (P, I).

    Args:
        z: complex128 (P, n) points.
        exps: int (I, T, n) exponents (I sums of T monomials each).
        coefs: complex (I, T) coefficients.
        with_scale: also return ``sum_t |coefs[i, t] z^exps[i, t]|``, float64 (P, I).

    Returns:
        the values, or ``(values, scale)``. The rounding is described in the module docstring;
        each distinct monomial is computed once, along a prefix tree of its exponents.
    """
    exps = np.ascontiguousarray(exps, dtype=np.int64)
    I, T, n = exps.shape
    levels, gather, dmax = _plan(exps.shape, exps.tobytes())
    P = len(z)
    out = np.empty((P, I), dtype=np.complex128)
    scale = np.empty((P if with_scale else 0, I), dtype=np.float64)
    chunk = max(16, _EVAL_TARGET // max(1, I * T))
    for s in range(0, P, chunk):
        zc = z[s : s + chunk]
        p = len(zc)
        tre, tim = power_table(zc.T, dmax)  # (n, p, dmax + 1)
        _, e = levels[0]
        re, im = tre[0][:, e], tim[0][:, e]
        for l in range(1, n):  # left to right: value(prefix + e_l) = value(prefix) * z_l**e_l
            parent, e = levels[l]
            re, im = _cmul(re[:, parent], im[:, parent], tre[l][:, e], tim[l][:, e])
        mono = np.empty((p, len(gather)), dtype=np.complex128)  # C order: the sums below run along memory
        mono.real, mono.imag = re[:, gather], im[:, gather]
        terms = mono.reshape(p, I, T) * coefs[None]
        out[s : s + p] = np.sum(terms, axis=-1)
        if with_scale:
            scale[s : s + p] = np.sum(np.abs(terms), axis=-1)
    return (out, scale) if with_scale else out


def power_table(z, dmax: int):
    """Real and imaginary parts of ``z**d``, d = 0..dmax, float64 ``z.shape + (dmax + 1,)`` each.

    The products of numpy's complex integer power (``z``, ``z z``, ``z (z z)`` for d <= 3,
    binary exponentiation from 1 above), in real arithmetic: bit-for-bit ``numpy.power(z, d)``
    (signed zeros and non-finite values included), without a ``pow`` call per entry.
    """
    z = np.asarray(z, dtype=np.complex128)
    zr, zi = np.ascontiguousarray(z.real), np.ascontiguousarray(z.imag)
    re = np.empty(z.shape + (dmax + 1,))
    im = np.empty_like(re)
    re[..., 0], im[..., 0] = 1.0, 0.0
    with np.errstate(all="ignore"):
        if dmax >= 1:
            re[..., 1], im[..., 1] = zr, zi
        if dmax >= 2:
            sq = _cmul(zr, zi, zr, zi)
            re[..., 2], im[..., 2] = sq
        if dmax >= 3:
            re[..., 3], im[..., 3] = _cmul(zr, zi, sq[0], sq[1])
        squares = [(zr, zi)]  # z**(2**k)
        for d in range(4, dmax + 1):
            acc: tuple = (1.0, 0.0)  # numpy starts from 1 and multiplies by it too
            k = 0
            while (1 << k) <= d:
                if len(squares) <= k:
                    squares.append(_cmul(squares[-1][0], squares[-1][1], squares[-1][0], squares[-1][1]))
                if d & (1 << k):
                    acc = _cmul(acc[0], acc[1], squares[k][0], squares[k][1])
                k += 1
            re[..., d], im[..., d] = acc
    zero = (zr == 0) & (zi == 0)
    if dmax >= 1 and np.any(zero):  # numpy: 0**d = +0 + 0j for d > 0
        re[zero, 1:], im[zero, 1:] = 0.0, 0.0
    return re, im


def _cmul(ar, ai, br, bi):
    """``(ar + i ai)(br + i bi)`` with every product and sum rounded once (numpy's scalar complex product)."""
    return ar * br - ai * bi, ar * bi + ai * br


@functools.lru_cache(maxsize=128)
def _plan(shape, data):
    """Prefix tree of the distinct monomials of an exponent table (cached per table).

    Returns ``(levels, gather, dmax)``: ``levels[l] = (parent, e)`` gives, for every distinct
    prefix ``(e_0, .., e_l)``, the index of its prefix ``(e_0, .., e_{l-1})`` among the nodes of
    level l - 1 and its last exponent; ``gather`` (I*T,) maps every monomial of the table to its
    node of the last level.
    """
    exps = np.frombuffer(data, dtype=np.int64).reshape(shape)
    n = shape[2]
    flat = exps.reshape(-1, n)
    uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
    levels = []
    prev = np.zeros(len(uniq), dtype=np.int64)
    for l in range(n):
        nodes, idx = np.unique(uniq[:, : l + 1], axis=0, return_inverse=True)
        idx = idx.reshape(-1)
        parent = np.empty(len(nodes), dtype=np.int64)
        parent[idx] = prev
        levels.append((parent, nodes[:, l].copy()))
        prev = idx
    return levels, prev[inverse.reshape(-1)], (int(exps.max()) if exps.size else 0)


def monomial_basis(nvars: int, degree: int) -> np.ndarray:
    """All exponent vectors of ``nvars`` variables of total ``degree``, int64 (M, nvars).

    Lexicographically descending (first variable's exponent varies slowest).
    """
    nvars, degree = int(nvars), int(degree)
    if nvars == 1:
        return np.array([[degree]], dtype=np.int64)
    rows = []
    for e in range(degree, -1, -1):
        for rest in monomial_basis(nvars - 1, degree - e):
            rows.append([e, *rest])
    return np.array(rows, dtype=np.int64)


def free_parameter_assignments(ambient, configuration) -> np.ndarray:
    """cymetric's ``all_ts``: ways to spread K free parameters over the factors.

    Vectors t (m,) of non-negative integers with ``sum t = K``, ``t_F <= n_F``,
    and every equation of non-zero degree in at least one factor with ``t_F > 0``
    (CICYPointGenerator._generate_all_freets; same order: cymetric's
    ``generate_monomials``). int64 (M, m).
    """
    ambient = np.asarray(ambient, dtype=np.int64)
    conf = np.asarray(configuration, dtype=np.int64)
    m, K = conf.shape
    ts = np.array(_gm(m, K), dtype=np.int64)
    good = []
    for t in ts:
        ok = bool(np.all(t <= ambient))
        if ok:
            inv = t.astype(bool)
            ok = all(np.sum(conf[inv, k]) != 0 for k in range(K))
        good.append(ok)
    return ts[np.array(good, dtype=bool)]


def _gm(n, deg):
    """Exponent vectors in the order of cymetric's nphelper.generate_monomials (first ascending)."""
    if n == 1:
        return [[deg]]
    res = []
    for i in range(deg + 1):
        for r in _gm(n - 1, deg - i):
            res.append([i, *r])
    return res
