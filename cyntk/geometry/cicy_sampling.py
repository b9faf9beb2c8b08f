"""Unbiased, vectorised point sampling on complete intersections (hypersurfaces included).

One equation in one P^n (K = 1, m = 1; :class:`~cyntk.geometry.Hypersurface` and a
:class:`~cyntk.geometry.CompleteIntersection` of that shape alike) is the special
case where a plane is a line ``p + t q`` (p, q uniform on S^{2N-1}, drawn as 2N
normals read as (re, im) pairs) and every root of ``Q(p + t q)`` is kept
(:func:`sample_lines`): the d roots are the eigenvalues of a batch of companion
matrices, polished by Newton steps along the line; a fixed ``chart`` can be
selected by rejection. This is the random stream of cyntk's hypersurface sampler
since its first version, so hypersurface datasets stay bit-for-bit reproducible.

In general every point set is a union of *all* intersection points of X with random planes:

1. each plane draws one free-parameter assignment ``t`` of
   ``CompleteIntersection.all_ts`` uniformly at random (the mixture that
   cymetric's weights assume; cymetric's ``PointGenerator`` samples only one
   assignment, which biases its Monte-Carlo integrals on product ambients);
2. in factor F the plane is ``z_F(s) = p_F0 + sum_{j<t_F} s_j p_Fj`` with the
   ``t_F + 1`` points p uniform on the unit sphere of C^{n_F + 1} (cymetric's
   construction), ``sum_F t_F = K`` parameters s in total;
3. all solutions s of the K equations are found:
   * K = 1: the roots of the univariate polynomial ``Q(s)`` (coefficients by an
     FFT over roots of unity) are the eigenvalues of a batch of companion
     matrices, polished by Newton steps;
   * K >= 2: total-degree homotopy continuation from ``s_k^{e_k} = 1`` with a
     random complex gamma per plane (predictor-corrector, adaptive steps, all
     paths of all planes at once); paths that diverge end at infinity.
   A plane is kept only if exactly ``d_t = int_X prod_F J_F^{n_F - t_F}`` distinct
   solutions converged (the expected count); the fraction of discarded planes is
   reported in ``info``.
4. points are patch-normalised per factor; points with an ambiguous patch
   (several coordinates ``isclose`` to 1 in a factor) are dropped (as cymetric).

Because every plane contributes all its points, the point process has intensity
``mean_m D_m`` (Crofton), so the weights of
:meth:`CompleteIntersection.geometry` give unbiased Monte-Carlo integrals; no
root is preferred over another (cymetric's ``CICYPointGenerator`` keeps one
fsolve root per plane, which is not uniform). All random numbers come from one
``numpy.random.Generator`` in a fixed order, in fixed-size chunks, in this
process: the result is reproducible for a seed and independent of any
parallelism. Points of one plane stay adjacent (nothing is shuffled).
"""

from __future__ import annotations

import math

import numpy as np

from cyntk._validation import check_memory, positive_int

__all__ = ["sample_points", "sample_planes", "sample_lines", "check_chart_row"]

_ISCLOSE = dict(rtol=1e-5, atol=1e-8)
# planes per internal chunk (bounds memory, fixes the random stream's order)
_CHUNK_PLANES = 4096
# points per chunk of the line sampler (bounds memory; fixes its random stream's order)
_CHUNK_POINTS = 50_000
# chart selection on products: sampled points without one in the chart before giving up
_CHART_MAX_TRIES = 200_000


def _sphere(rng, shape, n):
    v = rng.standard_normal(shape + (2 * n,))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v[..., :n] + 1j * v[..., n:]


def sample_points(
    ci, n_points, *, seed=None, chart=None, progress=None, newton_steps: int = 1, return_planes: bool = False
):
    """``n_points`` points of X, unbiased for the weights of ``ci`` (module docstring).

    Args:
        ci: a :class:`~cyntk.geometry.cicy.CompleteIntersection` (or :class:`~cyntk.geometry.Hypersurface`).
        n_points: number of points (> 0).
        seed: int, ``None`` or ``numpy.random.Generator``.
        chart: a full chart row (one index per factor, then one eliminated coordinate per
            equation, as :meth:`CompleteIntersection.charts` returns): keep only points in that
            chart (rejection sampling; the same points for the same seed). One equation in one
            P^n: the pair ``(patch, eliminated)`` of :func:`sample_lines`.
        progress: show a tqdm bar (default: n_points >= 200000).
        newton_steps: one equation in one P^n only: Newton steps per root (:func:`sample_lines`).
        return_planes: also return the plane id of every point (int64 (P,)),
            for error estimates that respect the correlation of points of one plane.

    Returns:
        complex128 (n_points, n) patch-normalised points, or ``(points, plane_ids)``.
    """
    if ci.nproj == 1 and ci.nhyper == 1:
        return sample_lines(
            ci,
            n_points,
            seed=seed,
            chart=chart,
            progress=progress,
            newton_steps=newton_steps,
            return_planes=return_planes,
        )
    n_points = positive_int(n_points, "n_points")
    if chart is not None:
        chart = check_chart_row(ci, chart)
    n = ci.ncoords
    check_memory(2 * 16 * n * n_points + _CHUNK_PLANES * 16 * 64 * n, "n_points", n_points, f"sampling on {ci.name}")
    rng = _as_rng(seed)
    if progress is None:
        progress = n_points >= 200_000
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_points, desc=f"sampling {ci.name}", unit="pt")
    mean_d = float(np.mean(ci.assignment_degrees))
    out, ids, have, offset, empty = [], [], 0, 0, 0
    # chart selection: rejection with the running acceptance rate (first guess: one chart of all rows)
    accept, seen, hits = 1.0, 0, 0
    if chart is not None:
        n_rows = int(np.prod(ci.ambient + 1)) * math.perm(int(ci.ncoords - ci.nproj), int(ci.nhyper))
        accept = 1.0 / n_rows
    while have < n_points:
        want = n_points - have
        L = min(_CHUNK_PLANES, int(math.ceil(want / max(mean_d * accept, 1e-9) * 1.1)) + 2)
        z, pid, _ = sample_planes(ci, L, rng)
        empty = empty + 1 if len(z) == 0 else 0
        if empty >= 3:
            raise RuntimeError(
                f"sampling {ci.name}: three batches of {L} planes gave no point on X; "
                f"the equations may be singular or inconsistent."
            )
        if chart is not None:
            keep = np.all(ci.charts(z) == chart[None, :], axis=1)
            seen += len(z)
            hits += int(keep.sum())
            if hits == 0 and seen >= _CHART_MAX_TRIES:
                raise RuntimeError(
                    f"sampling {ci.name} in chart {tuple(chart.tolist())}: none of {seen} sampled points "
                    f"lies in that chart (one index per factor, then the eliminated coordinate of every "
                    f"equation, as CompleteIntersection.charts chooses them); choose a chart that "
                    f"CompleteIntersection.charts returns for some points."
                )
            accept = max(hits / seen, 0.2 / seen) if seen else accept
            z, pid = z[keep][:want], pid[keep][:want]
        out.append(z)
        ids.append(pid + offset)
        offset += L
        have += len(z)
        if bar is not None:
            bar.update(min(len(z), want))
    if bar is not None:
        bar.close()
    z = np.concatenate(out)[:n_points]
    pid = np.concatenate(ids)[:n_points]
    return (z, pid) if return_planes else z


def check_chart_row(ci, chart) -> np.ndarray:
    """A full chart row of ``ci`` (one index per factor, then one eliminated coordinate per equation), validated.

    Raises:
        ValueError: wrong length, non-integers, a one index outside its factor, or
            coordinates used twice.
    """
    m, K, n = ci.nproj, ci.nhyper, ci.ncoords
    expect = (
        f"a chart row of {m + K} distinct integers: the index of the coordinate equal to 1 in each of the "
        f"{m} factor(s) {[list(map(int, p)) for p in ci.factor_slices]}, then the eliminated coordinate of "
        f"each of the {K} equation(s), all in [0, {n})"
    )
    arr = np.asarray(chart, dtype=object).reshape(-1) if not isinstance(chart, str) else np.array([chart])
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in arr):
        raise ValueError(f"`chart` must be {expect}; received {chart!r}.")
    row = np.array([int(v) for v in arr], dtype=np.int64)
    if len(row) != m + K:
        raise ValueError(f"`chart` must be {expect}; received {len(row)} entries: {chart!r}.")
    if np.any(row < 0) or np.any(row >= n) or len(np.unique(row)) != len(row):
        raise ValueError(f"`chart` must be {expect}; received {chart!r}.")
    for F, (a, b) in enumerate(ci.factor_slices):
        if not a <= row[F] < b:
            raise ValueError(
                f"`chart` entry {F} (the one index of factor {F}) must lie in [{a}, {b}); received {chart!r} "
                f"(expected {expect})."
            )
    return row


def sample_planes(ci, n_planes, rng):
    """All points of X on ``n_planes`` random planes (mixture over assignments).

    Returns:
        ``(points, plane_ids, info)``: complex128 (P, n) patch-normalised,
        int64 (P,) plane index in [0, n_planes), and a dict with
        ``assignment`` (n_planes,) and ``kept`` (n_planes,) bool.
    """
    M = len(ci.all_ts)
    assign = rng.integers(0, M, size=n_planes)
    kept = np.zeros(n_planes, dtype=bool)
    pts, pids = [], []
    for m in range(M):
        sel = np.nonzero(assign == m)[0]
        if len(sel) == 0:
            continue
        t = ci.all_ts[m]
        A = _plane_bases(ci, t, len(sel), rng)  # (L, K+1, n)
        if ci.nhyper == 1:
            s, plane, ok = _solve_univariate(ci, A)
        else:
            gamma = np.exp(2j * np.pi * rng.random(len(sel)))
            s, plane, ok = _solve_homotopy(ci, A, gamma, int(ci.assignment_degrees[m]))
        z = A[plane, 0] + np.einsum("pk,pkn->pn", s, A[plane, 1:])
        kept[sel[ok]] = True
        pts.append(z)
        pids.append(sel[plane])
    z = np.concatenate(pts) if pts else np.zeros((0, ci.ncoords), complex)
    pid = np.concatenate(pids) if pids else np.zeros(0, np.int64)
    order = np.argsort(pid, kind="stable")
    z, pid = z[order], pid[order]
    z = ci.patch_normalise(z) if len(z) else z
    ones = np.isclose(z, 1.0 + 0.0j, **_ISCLOSE)
    good = np.ones(len(z), dtype=bool)
    for s_, e_ in ci.factor_slices:
        good &= ones[:, s_:e_].sum(axis=1) == 1
    return z[good], pid[good].astype(np.int64), dict(assignment=assign, kept=kept)


def _plane_bases(ci, t, L, rng):
    """A[:, 0] base point, A[:, 1 + j] direction of parameter j (zero outside its factor): (L, K+1, n)."""
    K, n = ci.nhyper, ci.ncoords
    A = np.zeros((L, K + 1, n), dtype=np.complex128)
    j = 0
    for F, (s, e) in enumerate(ci.factor_slices):
        p = _sphere(rng, (L, int(t[F]) + 1), e - s)
        A[:, 0, s:e] = p[:, 0]
        for k in range(int(t[F])):
            A[:, 1 + j, s:e] = p[:, 1 + k]
            j += 1
    return A


def _solve_univariate(ci, A, newton_steps: int = 2):
    """All roots s of Q(A0 + s A1) (K = 1): (P, 1) roots, (P,) plane index, kept planes (L,)."""
    L = len(A)
    # degree in s = degree of Q in the factor that holds the line
    fac = [F for F, (s_, e_) in enumerate(ci.factor_slices) if np.any(A[:, 1, s_:e_] != 0)]
    d = int(ci.configuration[fac[0], 0])
    w = np.exp(2j * np.pi * np.arange(d + 1) / (d + 1))
    zs = A[:, None, 0, :] + w[None, :, None] * A[:, None, 1, :]
    vals = ci._values(zs.reshape(-1, ci.ncoords))[:, 0].reshape(L, d + 1)
    a = np.fft.fft(vals, axis=1) / (d + 1)
    lead = a[:, d]
    ok = np.abs(lead) > 1e-12 * np.max(np.abs(a), axis=1)
    comp = np.zeros((L, d, d), dtype=np.complex128)
    comp[:, 0, :] = -a[:, d - 1 :: -1] / np.where(ok, lead, 1.0)[:, None]
    if d > 1:
        comp[:, np.arange(1, d), np.arange(d - 1)] = 1.0
    comp[~ok] = np.eye(d)
    roots = np.linalg.eigvals(comp).reshape(-1)  # (L*d,)
    plane = np.repeat(np.arange(L), d)
    A0, A1 = A[plane, 0], A[plane, 1]
    for _ in range(int(newton_steps)):
        z = A0 + roots[:, None] * A1
        f = ci._values(z)[:, 0]
        df = np.sum(ci._gradients(z)[:, 0] * A1, axis=1)
        with np.errstate(all="ignore"):
            new = roots - f / df
        good = np.isfinite(new) & (np.abs(new - roots) < 0.1 * (1 + np.abs(roots)))
        roots = np.where(good, new, roots)
    z = A0 + roots[:, None] * A1
    fin = np.isfinite(roots) & (ci.residual(z) < 1e-9)
    ok_plane = ok & (np.bincount(plane[fin], minlength=L) == d)
    keep = ok_plane[plane]
    return roots[keep, None], plane[keep], ok_plane


def _solve_homotopy(ci, A, gamma, d_expected, *, h0=0.05, hmax=0.25, hmin=1e-10, max_iter=4000):
    """All solutions s in C^K of Q_k(A0 + sum_j s_j A_j) = 0 by total-degree homotopy.

    H(s, tau) = (1 - tau) gamma G(s) + tau F(s), G_k = s_k^{e_k} - 1, tracked from tau = 0
    to 1 for every start root of every plane.
    """
    L, K = len(A), ci.nhyper
    used = np.any(A[0, 1:] != 0, axis=0)  # coordinates moved by the parameters
    # total degree of equation k in s: sum of its degrees over factors holding parameters
    fac_has = np.array([np.any(A[0, 1:, s_:e_] != 0) for s_, e_ in ci.factor_slices])
    e = (ci.configuration * fac_has[:, None]).sum(axis=0)  # (K,)
    del used
    starts = np.stack(np.meshgrid(*[np.exp(2j * np.pi * np.arange(ek) / ek) for ek in e], indexing="ij"), -1).reshape(
        -1, K
    )  # (B, K)
    B = len(starts)
    plane = np.repeat(np.arange(L), B)
    s = np.tile(starts, (L, 1))
    g = gamma[plane]
    A0 = A[plane, 0]
    Ad = A[plane, 1:]  # (P, K, n)
    P = len(s)
    tau = np.zeros(P)
    h = np.full(P, h0)
    active = np.ones(P, dtype=bool)
    failed = np.zeros(P, dtype=bool)
    streak = np.zeros(P, dtype=np.int64)

    def FJ_true(idx, ss):
        z = A0[idx] + np.einsum("pk,pkn->pn", ss, Ad[idx])
        f = ci._values(z)
        dq = ci._gradients(z)  # (p, K, n)
        jac = np.einsum("pkn,pjn->pkj", dq, Ad[idx])  # dF_k/ds_j
        return f, jac

    # the equations restricted to each plane, as polynomials in s (coefficients by FFT)
    coef, D = _restricted_coefficients(ci, A, e)  # (L, K, D**K)

    def FJ(idx, ss):
        return _poly_eval(coef[plane[idx]], ss, D)

    def H(idx, ss, tt):
        f, jf = FJ(idx, ss)
        gs = ss ** e[None] - 1.0
        jg = np.zeros((len(idx), K, K), dtype=np.complex128)
        jg[:, np.arange(K), np.arange(K)] = e[None] * ss ** (e[None] - 1)
        gg = g[idx][:, None]
        hv = (1 - tt)[:, None] * gg * gs + tt[:, None] * f
        hs = (1 - tt)[:, None, None] * gg[:, :, None] * jg + tt[:, None, None] * jf
        ht = f - gg * gs
        return hv, hs, ht

    def solve(M_, v):
        with np.errstate(all="ignore"):
            try:
                return np.linalg.solve(M_, v[..., None])[..., 0]
            except np.linalg.LinAlgError:
                out = np.full_like(v, np.nan)
                for i in range(len(v)):
                    try:
                        out[i] = np.linalg.solve(M_[i], v[i])
                    except np.linalg.LinAlgError:
                        pass
                return out

    for _ in range(max_iter):
        idx = np.nonzero(active)[0]
        if len(idx) == 0:
            break
        ss, tt, hh = s[idx], tau[idx], np.minimum(h[idx], 1.0 - tau[idx])

        # RK4 predictor on ds/dtau = -H_s^{-1} H_t
        def vel(s_, t_):
            _, hs, ht = H(idx, s_, t_)
            return -solve(hs, ht)

        k1 = vel(ss, tt)
        k2 = vel(ss + 0.5 * hh[:, None] * k1, tt + 0.5 * hh)
        k3 = vel(ss + 0.5 * hh[:, None] * k2, tt + 0.5 * hh)
        k4 = vel(ss + hh[:, None] * k3, tt + hh)
        sp = ss + hh[:, None] / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        t1 = tt + hh
        # Newton corrector
        scale = 1.0 + np.linalg.norm(sp, axis=1)
        ok = np.all(np.isfinite(sp), axis=1)
        first = None
        for _ in range(3):
            hv, hs, _ = H(idx, sp, t1)
            ds = solve(hs, hv)
            nd = np.linalg.norm(ds, axis=1)
            if first is None:
                first = nd
            sp = sp - ds
            ok &= np.all(np.isfinite(sp), axis=1)
        nd = np.where(np.isfinite(nd), nd, np.inf)
        first = np.where(np.isfinite(first), first, np.inf)
        acc = ok & (first < 1e-2 * scale) & (nd < 1e-8 * scale)
        s[idx[acc]] = sp[acc]
        tau[idx[acc]] = t1[acc]
        streak[idx[acc]] += 1
        grow = idx[acc & (streak[idx] >= 3)]
        h[grow] = np.minimum(h[grow] * 2.0, hmax)
        streak[grow] = 0
        rej = idx[~acc]
        h[rej] *= 0.5
        streak[rej] = 0
        big = np.linalg.norm(s[idx], axis=1) > 1e8
        done = (tau[idx] >= 1.0) | (h[idx] < hmin) | big
        failed[idx[(h[idx] < hmin) | big]] = True
        active[idx[done]] = False
    failed |= active
    # polish at tau = 1 with Newton on F alone
    idx = np.nonzero(~failed)[0]
    ss = s[idx]
    for _ in range(3):
        f, jf = FJ_true(idx, ss)
        ds = solve(jf, f)
        good = np.all(np.isfinite(ds), axis=1)
        ss = np.where(good[:, None], ss - ds, ss)
    s[idx] = ss
    z = A0[idx] + np.einsum("pk,pkn->pn", ss, Ad[idx])
    conv = np.zeros(P, dtype=bool)
    conv[idx] = ci.residual(z) < 1e-9
    # count distinct converged solutions per plane
    ok_plane = np.zeros(L, dtype=bool)
    cnt = np.bincount(plane[conv], minlength=L)
    cand = np.nonzero(cnt == d_expected)[0]
    sc = s.reshape(L, B, K)
    cv = conv.reshape(L, B)
    for l in cand:
        r = sc[l, cv[l]]
        dist = np.linalg.norm(r[:, None] - r[None], axis=-1) + np.eye(len(r)) * 1e300
        ok_plane[l] = np.min(dist) > 1e-6 * (1 + np.max(np.abs(r)))
    keep = conv & ok_plane[plane]
    return s[keep], plane[keep], ok_plane


def _restricted_coefficients(ci, A, e):
    """Coefficients of ``Q_k(A0 + sum_j s_j A_j)`` in the monomials s^alpha, alpha_j < D.

    Values on the tensor grid of D-th roots of unity, D = max(e) + 1, and a
    K-dimensional FFT. Returns ``(coef (L, K, D**K), D)`` with the flat index
    ``alpha_0 D^{K-1} + ... + alpha_{K-1}``.
    """
    L, K = len(A), ci.nhyper
    D = int(np.max(e)) + 1
    w = np.exp(2j * np.pi * np.arange(D) / D)
    grid = np.stack(np.meshgrid(*[w] * K, indexing="ij"), -1).reshape(-1, K)  # (D^K, K)
    z = A[:, None, 0, :] + np.einsum("gk,lkn->lgn", grid, A[:, 1:])
    vals = ci._values(z.reshape(-1, ci.ncoords)).reshape((L,) + (D,) * K + (K,))
    c = np.fft.fftn(vals, axes=tuple(range(1, K + 1))) / D**K
    c = np.moveaxis(c, -1, 1).reshape(L, K, D**K)
    return c, D


def _poly_eval(coef, s, D):
    """Values (P, K) and Jacobian (P, K, K) of the restricted polynomials at s (P, K)."""
    P, K = s.shape
    pw = s[:, :, None] ** np.arange(D)[None, None, :]  # (P, K, D)
    dpw = np.zeros_like(pw)
    dpw[:, :, 1:] = pw[:, :, :-1] * np.arange(1, D)[None, None, :]

    def outer(parts):
        mon = parts[0]
        for q in parts[1:]:
            mon = (mon[:, :, None] * q[:, None, :]).reshape(P, -1)
        return mon

    mon = outer([pw[:, j] for j in range(K)])
    f = np.einsum("pkm,pm->pk", coef, mon)
    jac = np.empty((P, K, K), dtype=np.complex128)
    for j in range(K):
        mj = outer([dpw[:, i] if i == j else pw[:, i] for i in range(K)])
        jac[:, :, j] = np.einsum("pkm,pm->pk", coef, mj)
    return f, jac


# ------------------------------------------------ one equation in one P^n: lines
def sample_lines(
    ci, n_points, *, seed=None, chart=None, progress=None, newton_steps: int = 1, return_planes: bool = False
):
    """Points of one equation in one P^n from random lines, every root kept (module docstring).

    The d roots of every line ``p + t q`` (p, q uniform on S^{2N-1}) are the
    eigenvalues of the companion matrix of ``Q(p + t q)`` (coefficients from an
    FFT over d + 1 roots of unity), computed for all lines at once. Points are
    patch-normalised; points with several coordinates equal to 1 (ambiguous
    patch) are dropped, as cymetric does. Roots of one line stay adjacent;
    nothing is shuffled. The density is the Shiffman-Zelditch one that the
    weights correct for.

    Args:
        ci: a variety with ``nproj == nhyper == 1``.
        n_points: number of points (> 0).
        seed: int, ``None`` or ``numpy.random.Generator`` (reproducible for a fixed seed).
        chart: optional ``(patch, eliminated)`` pair: keep only points in that chart
            (rejection sampling with over-sampling, paper section 3.1).
        progress: show a tqdm progress bar (default: when n_points >= 200000).
        newton_steps: Newton polishing steps of each root along its line.
        return_planes: also return the line id of every point (int64 (P,)).

    Returns:
        complex128 (n_points, N), or ``(points, line_ids)``.
    """
    if ci.nproj != 1 or ci.nhyper != 1:
        raise ValueError(
            f"`ci`: line sampling needs one equation in one projective space; received {ci.name} "
            f"(ambient {ci.ambient.tolist()}, {ci.nhyper} equation(s))."
        )
    n_points = positive_int(n_points, "n_points")
    # the result, its concatenation copy and one chunk of lines with their companion matrices
    d, N = int(ci.configuration[0, 0]), ci.ncoords
    chunk = min(n_points, _CHUNK_POINTS) * 16 * (6 * N + 2 * d + d + 8)
    check_memory(2 * 16 * N * n_points + chunk, "n_points", n_points, f"sampling on {ci.name}")
    rng = _as_rng(seed)
    n_charts = N * (N - 1)
    if chart is not None:
        chart = _check_chart(chart, N)
    if progress is None:
        progress = n_points >= 200_000
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_points, desc=f"sampling {ci.name}", unit="pt")
    out, ids, have, offset = [], [], 0, 0
    accept = 1.0 if chart is None else 1.0 / n_charts
    tries = 0
    try:
        while have < n_points:
            want = n_points - have
            m = min(_CHUNK_POINTS, int(math.ceil(want / max(accept, 1e-6) * 1.05)) + d)
            z, lid, n_lines = _line_chunk(ci, d, m, rng, newton_steps)
            if chart is not None:
                c = ci.charts(z)
                keep = (c[:, 0] == chart[0]) & (c[:, 1] == chart[1])
                frac = keep.mean()
                accept = 0.5 * accept + 0.5 * max(frac, 1e-4) if tries else max(frac, 1e-4)
                z, lid = z[keep], lid[keep]
            tries += 1
            if tries > 10_000:
                raise RuntimeError(f"sampling produced too few points in chart {chart}; acceptance rate ~{accept:.2e}.")
            z, lid = z[:want], lid[:want]
            out.append(z)
            ids.append(lid + offset)
            offset += n_lines
            have += len(z)
            if bar is not None:
                bar.update(len(z))
    finally:  # also on Ctrl-C: the bar ends before any message
        if bar is not None:
            bar.close()
    z = np.concatenate(out, axis=0)
    return (z, np.concatenate(ids).astype(np.int64)) if return_planes else z


def _check_chart(chart, N):
    arr = np.asarray(chart, dtype=object).reshape(-1) if not isinstance(chart, str) else np.array([chart])
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in arr):
        raise ValueError(
            f"`chart` must be a pair (patch, eliminated) of distinct integer indices in [0, {N}); received {chart!r}."
        )
    c = tuple(int(v) for v in arr)
    if len(c) != 2 or not (0 <= c[0] < N and 0 <= c[1] < N) or c[0] == c[1]:
        raise ValueError(
            f"`chart` must be a pair (patch, eliminated) of distinct indices in [0, {N}); received {chart!r}."
        )
    return c


def _line_chunk(ci, d, n_points, rng, newton_steps):
    """About ``n_points`` patch-normalised, unambiguous points of one batch of lines.

    Returns ``(points, line_ids, n_lines)``.
    """
    N = ci.ncoords
    n_lines = int(math.ceil(n_points / d)) + 1
    p = _sphere_pairs(rng, n_lines, N)
    q = _sphere_pairs(rng, n_lines, N)
    # coefficients a_0..a_d of Q(p + t q) from its values at the (d+1)-th roots of unity
    w = np.exp(2j * np.pi * np.arange(d + 1) / (d + 1))
    zs = p[:, None, :] + w[None, :, None] * q[:, None, :]
    vals = ci._values(zs.reshape(-1, N))[:, 0].reshape(n_lines, d + 1)
    a = np.fft.fft(vals, axis=1) / (d + 1)
    lead = a[:, d]
    ok = np.abs(lead) > 1e-12 * np.max(np.abs(a), axis=1)
    a, p, q, lead = a[ok], p[ok], q[ok], lead[ok]
    line = np.nonzero(ok)[0]
    comp = np.zeros((len(a), d, d), dtype=np.complex128)
    comp[:, 0, :] = -a[:, d - 1 :: -1] / lead[:, None]
    if d > 1:
        comp[:, np.arange(1, d), np.arange(d - 1)] = 1.0
    t = np.linalg.eigvals(comp)  # (L, d)
    z = p[:, None, :] + t[:, :, None] * q[:, None, :]  # (L, d, N)
    z = z.reshape(-1, N)
    lid = np.repeat(line, d)
    qq = np.repeat(q, d, axis=0)
    tt = t.reshape(-1)
    for _ in range(int(newton_steps)):
        f = ci._values(z)[:, 0]
        df = np.sum(ci._gradients(z)[:, 0] * qq, axis=1)
        with np.errstate(all="ignore"):
            t_new = tt - f / df
        z_new = p.repeat(d, 0) + t_new[:, None] * qq
        better = np.isfinite(t_new) & (
            np.abs(ci._values(z_new)[:, 0] / _norm_pow(z_new, d)) < np.abs(f / _norm_pow(z, d))
        )
        z[better], tt[better] = z_new[better], t_new[better]
    fin = np.all(np.isfinite(z), axis=1)
    z, lid = z[fin], lid[fin]
    kmax = np.argmax(np.abs(z), axis=1)
    z = z / z[np.arange(len(z)), kmax][:, None]
    z[np.arange(len(z)), kmax] = 1.0 + 0.0j  # exact 1 (cymetric has ~1e-17 imaginary residue)
    unambiguous = np.isclose(z, 1.0 + 0.0j, **_ISCLOSE).sum(axis=1) == 1
    return z[unambiguous], lid[unambiguous], n_lines


def _as_rng(seed):
    """A ``numpy.random.Generator`` from ``seed`` (None, a non-negative int or a Generator)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise (ValueError if isinstance(seed, (int, np.integer)) else TypeError)(
            f"`seed` must be None, a non-negative integer or a numpy.random.Generator; received {seed!r}."
        )
    return np.random.default_rng(seed)


def _norm_pow(z, d):
    return np.linalg.norm(z, axis=1) ** d


def _sphere_pairs(rng, m, N):
    """m points uniform on S^{2N-1} in C^N: 2N normals, normalised, read as (re, im) pairs."""
    v = rng.standard_normal((m, 2 * N))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v[:, 0::2] + 1j * v[:, 1::2]
