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
:class:`~cyntk.geometry.cicy.CompleteIntersection`. (numpy's vectorised
complex multiply rounds differently, which is why the products are spelled
out.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["derivative_tables", "eval_monomials", "free_parameter_assignments", "monomial_basis"]

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
        the values, or ``(values, scale)``. The rounding is described in the module docstring.
    """
    I, T, n = exps.shape
    P = len(z)
    out = np.empty((P, I), dtype=np.complex128)
    scale = np.empty((P if with_scale else 0, I), dtype=np.float64)
    flat = exps.reshape(-1, n)
    powers = np.arange((int(exps.max()) if exps.size else 0) + 1)
    chunk = max(16, _EVAL_TARGET // max(1, I * T))
    for s in range(0, P, chunk):
        zc = z[s : s + chunk]
        p = len(zc)
        table = np.power(zc.T[:, :, None], powers)  # table[l, p, d] = z_pl**d (binary exponentiation)
        acc = np.take(table[0], flat[:, 0], axis=1)  # (p, I*T) running product
        re, im = acc.real, acc.imag
        fac = np.empty_like(acc)
        fre, fim = fac.real, fac.imag
        t1, t2 = np.empty(acc.shape), np.empty(acc.shape)
        for l in range(1, n):
            np.take(table[l], flat[:, l], axis=1, out=fac)
            np.multiply(re, fim, out=t1)
            np.multiply(im, fre, out=t2)
            t1 += t2  # new imaginary part: re*fim + im*fre
            re *= fre
            np.multiply(im, fim, out=t2)
            re -= t2  # new real part: re*fre - im*fim
            im[...] = t1
        terms = acc.reshape(p, I, T) * coefs[None]
        out[s : s + p] = np.sum(terms, axis=-1)
        if with_scale:
            scale[s : s + p] = np.sum(np.abs(terms), axis=-1)
    return (out, scale) if with_scale else out


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
