"""In-graph (TensorFlow) geometry of a complete intersection in a product of projective spaces.

Same interface as :class:`~cyntk.models._tfgeometry.TFGeometry` (``charts``,
``local_frame``, ``omega_sq_from``, ``fs_holomorphic_derivative``), with the
conventions of :mod:`cyntk.geometry.cicy` (cymetric's):

* ``patch`` is int32 (B, m): the coordinate of largest modulus in every factor
  (== 1 for patch-normalised points); every factor is divided by it;
* ``j`` is int32 (B, K): the eliminated coordinates, greedily equation by
  equation, ``j_k = argmax |dQ_k/dz|`` over the coordinates not yet used;
* ``J = S + sum_l sol_l e_{j_l}`` with ``sol = -B^{-1} dQ/dx`` (implicit
  differentiation of all equations), ``B[k, l] = dQ_k/dz_{j_l}``;
* ``|Omega|^2 = 1/|det B|^2``;
* ``G = sum_F t_F (1/pi) (J_F J_F^H/|z_F|^2 - v_F v_F^H/|z_F|^4)``, ``v_F =
  J_F conj(z_F)`` (block-diagonal FS metric of the product, pulled back);
  ``G_unit`` (m, B, n, n) are the per-factor unit blocks (volk loss).

``fs_holomorphic_derivative`` is computed by forward-mode autodiff of the frame
along the local coordinates.

Transitions (cymetric's ``compute_transition_loss`` on products / several
equations, conventions §7.3 and §12): from a point in patch ``k = (k_1..k_m)``
with eliminated coordinates ``j``, the candidate patches are every choice of
one new patch coordinate per factor among the coordinates not in ``j`` (first
factor slowest), and cymetric counts ``n_T = max_t prod_r (n_r + 1 - t_r)``
of them per point (``t`` over the ways to spread the K equations over the m
factors). Shorter lists are padded: for one equation by repeating the list
from its start (``_generate_all_patches``), for several by the current patch
(``_generate_patches``). Entries equal to the current patch contribute exactly
0 (the same point, ``T = 1``), so only the others are evaluated: a
:func:`transition_table` row per (patch, eliminated coordinates), padded with
the current patch where a point has fewer, while ``n_transitions = n_T`` stays
the normaliser. The metric in the new chart uses the **same** eliminated
coordinates, and ``T[a, b] = dx^b/dw^a`` (old local coordinates x, new w) is
``J' P`` with ``P[i, b] = d x^b / d z'_i`` for ``x^b = z'_{g_b} / z'_{k_f(b)}``,
the old patch coordinate of the factor of ``g_b``.
"""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from cyntk.models._tfgeometry import TFGeometry, _complex_dtype, complex_to_real, holomorphic_derivatives
from cyntk.models.losses import adjugate, determinant

__all__ = ["TFCICYGeometry", "make_tf_geometry", "cymetric_transition_count", "transition_table"]


def make_tf_geometry(spec, dtype="float32"):
    """:class:`TFCICYGeometry` for a CICY spec, :class:`TFGeometry` otherwise."""
    from cyntk.models._cicy_spec import CICYSpec

    if isinstance(spec, CICYSpec):
        return TFCICYGeometry(spec, dtype)
    return TFGeometry(spec, dtype)


def cymetric_transition_count(degrees, nhyper: int) -> int:
    """cymetric's ``nTransitions``: ``max_t prod_r (degrees_r - t_r)``.

    ``t`` runs over every way to spread ``nhyper`` equations over the factors
    (``t_r >= 0``, ``sum t = nhyper``), ``degrees_r = n_r + 1`` the number of
    homogeneous coordinates of factor r (cymetric's ``_patch_transitions``;
    N - 1 for a hypersurface in P^{N-1}).
    """
    degrees = [int(d) for d in degrees]
    best = 0
    for t in itertools.product(range(nhyper + 1), repeat=len(degrees)):
        if sum(t) == nhyper:
            best = max(best, int(np.prod([d - tr for d, tr in zip(degrees, t)])))
    return best


def _cymetric_patch_list(slices, patch, fixed, n_t: int):
    """The n_T new patches cymetric compares a point with (a list of m-tuples, with repeats)."""
    choices = [[i for i in range(s, e) if i not in fixed] for s, e in slices]
    patches = list(itertools.product(*choices))  # first factor slowest, as tf.meshgrid(indexing='ij')
    if len(fixed) == 1:  # _generate_all_patches: tiled from the start
        reps = n_t // max(len(patches), 1) + 1
        return (patches * reps)[:n_t]
    return patches + [tuple(patch)] * (n_t - len(patches))  # _generate_patches: padded with the current patch


def transition_table(slices, nhyper: int, n_t: int):
    """Non-trivial transitions of every chart, for an in-graph gather.

    Args:
        slices: ``[(start, end)]`` of the factors' coordinates.
        nhyper: K, the number of equations.
        n_t: cymetric's transition count (:func:`cymetric_transition_count`).

    Returns:
        ``(table, strides, width)``: int32 ``table`` (R, width, m) of new
        patches, row ``sum_r (k_r - start_r) strides_r * N^K + sum_q j_q N^q``
        for the patch k and the eliminated coordinates j; the entries of
        cymetric's list that differ from the current patch, repeats kept,
        padded with the current patch (which contributes 0). Rows of
        impossible charts hold their patch.
    """
    slices = [(int(s), int(e)) for s, e in slices]
    N = slices[-1][1]
    sizes = [e - s for s, e in slices]
    strides = np.cumprod([1] + sizes[::-1])[:-1][::-1].astype(np.int64)  # mixed radix, first factor slowest
    n_fixed_codes = N**nhyper
    rows = {}
    width = 1
    for patch in itertools.product(*[range(s, e) for s, e in slices]):
        others = [i for i in range(N) if i not in patch]
        for fixed in itertools.permutations(others, nhyper):
            new = [p for p in _cymetric_patch_list(slices, patch, fixed, n_t) if p != patch]
            rows[(patch, fixed)] = new
            width = max(width, len(new))
    R = int(np.prod(sizes)) * n_fixed_codes
    table = np.zeros((R, width, len(slices)), np.int32)
    for patch in itertools.product(*[range(s, e) for s, e in slices]):
        pcode = int(sum((k - s) * st for k, (s, _), st in zip(patch, slices, strides)))
        table[pcode * n_fixed_codes : (pcode + 1) * n_fixed_codes] = patch
        for fixed in itertools.permutations([i for i in range(N) if i not in patch], nhyper):
            new = rows[(patch, fixed)]
            if new:
                fcode = int(sum(j * N**q for q, j in enumerate(fixed)))
                table[pcode * n_fixed_codes + fcode, : len(new)] = new
    return table, strides, width


class TFCICYGeometry(TFGeometry):
    """Per-point charts, pullbacks, |Omega|^2 and product FS metric in TF.

    Args:
        spec: a :class:`~cyntk.models._cicy_spec.CICYSpec`.
        dtype: ``"float32"`` or ``"float64"``.
    """

    def __init__(self, spec, dtype="float32"):  # noqa: D107  (the parent's tables are hypersurface-only)
        self.spec = spec
        self.dtype = tf.as_dtype(dtype)
        self.cdtype = _complex_dtype(self.dtype)
        M = spec.manifold
        self.ncoords, self.nfold, self.nhyper, self.nproj = M.ncoords, M.nfold, M.nhyper, M.nproj
        tables = [M.derivative_basis(k) for k in range(M.nhyper)]
        T = max(E.shape[1] for E, _ in tables)
        E = np.zeros((M.nhyper * M.ncoords, T, M.ncoords), np.int64)
        F = np.zeros((M.nhyper * M.ncoords, T), np.complex128)
        for k, (Ek, Fk) in enumerate(tables):
            E[k * M.ncoords : (k + 1) * M.ncoords, : Ek.shape[1]] = Ek
            F[k * M.ncoords : (k + 1) * M.ncoords, : Ek.shape[1]] = Fk
        self._maxpow = int(max(1, E.max()))
        self._tables = {"dq": self._table(E, F)}
        self._factor_of = np.concatenate([np.full(e - s, F_) for F_, (s, e) in enumerate(M.factor_slices)])
        self._slices = [(int(s), int(e)) for s, e in M.factor_slices]
        self.kmoduli = M.kmoduli.copy()
        self.t = 1.0  # G_unit carries the per-factor unit metrics
        degrees = [e - s for s, e in self._slices]
        self.n_transitions = cymetric_transition_count(degrees, self.nhyper)  # cymetric's normaliser
        self._transitions, self._patch_strides, self.transition_width = transition_table(
            self._slices, self.nhyper, self.n_transitions
        )
        self._patch_offsets = np.array([s for s, _ in self._slices], np.int64)

    def dQdz(self, z):
        """dQ_k/dz_i at complex points z (B, n) -> (B, K, n)."""
        return tf.reshape(self._eval_table(z, self._tables["dq"]), [-1, self.nhyper, self.ncoords])

    def d2Qdz2(self, z):
        raise NotImplementedError("second derivatives are not tabulated for complete intersections.")

    def patch_index(self, z):
        """int32 (B, m): global index of the largest coordinate of every factor."""
        a = tf.math.real(z) ** 2 + tf.math.imag(z) ** 2
        return tf.stack([s + tf.argmax(a[:, s:e], axis=-1, output_type=tf.int32) for s, e in self._slices], axis=1)

    def normalise(self, z, patch):
        zk = tf.gather(z, patch, axis=1, batch_dims=1)  # (B, m)
        return z / tf.gather(zk, tf.constant(self._factor_of, tf.int32), axis=1)

    def elimination_index(self, dq, patch):
        """int32 (B, K): greedy argmax |dQ_k/dz| over the coordinates still available."""
        a = tf.math.real(dq) ** 2 + tf.math.imag(dq) ** 2  # (B, K, n)
        used = tf.reduce_sum(tf.one_hot(patch, self.ncoords, dtype=a.dtype), axis=1)
        out = []
        for k in range(self.nhyper):
            jk = tf.argmax(tf.where(used > 0, -tf.ones_like(a[:, k]), a[:, k]), axis=-1, output_type=tf.int32)
            out.append(jk)
            used = used + tf.one_hot(jk, self.ncoords, dtype=a.dtype)
        return tf.stack(out, axis=1)

    def good_indices(self, patch, j):
        """int32 (B, nfold): the local coordinates' indices (neither patch nor eliminated), ascending."""
        n = self.ncoords
        bad = tf.reduce_sum(tf.one_hot(patch, n, dtype=tf.int32), axis=1) + tf.reduce_sum(
            tf.one_hot(j, n, dtype=tf.int32), axis=1
        )  # (B, n)
        key = bad * n + tf.range(n)[None, :]
        return tf.argsort(key, axis=-1)[:, : self.nfold]

    def selection(self, patch, j):
        """(B, nfold, n) complex 0/1 matrices picking the good coordinates (ascending)."""
        return tf.one_hot(self.good_indices(patch, j), self.ncoords, dtype=self.cdtype)

    def _bmat(self, dq, j):
        return tf.gather(dq, j, axis=2, batch_dims=1)  # (B, K, K)

    def pullbacks_from(self, dq, patch, j):
        S = self.selection(patch, j)  # (B, a, n)
        dqx = tf.einsum("bkn,ban->bka", dq, S)
        # sol = -B^{-1} dQ/dx by the adjugate (closed forms for K <= 3: XLA has no complex MatrixSolve)
        B = self._bmat(dq, j)
        sol = -tf.matmul(adjugate(B), dqx) / determinant(B)[:, None, None]  # (B, K, a)
        E = tf.one_hot(j, self.ncoords, dtype=self.cdtype)  # (B, K, n)
        return S + tf.einsum("bka,bkn->ban", sol, E)

    def omega_sq_from(self, dq, j):
        det = determinant(self._bmat(dq, j))
        return 1.0 / (tf.math.real(det) ** 2 + tf.math.imag(det) ** 2)

    def fs_blocks_from(self, z, J):
        """Pulled-back unit FS metrics of the factors, (m, B, nfold, nfold)."""
        out = []
        for s, e in self._slices:
            zf, Jf = z[:, s:e], J[:, :, s:e]
            zz = tf.reduce_sum(tf.math.real(zf) ** 2 + tf.math.imag(zf) ** 2, axis=-1)
            zz = tf.complex(zz, tf.zeros_like(zz))[:, None, None]
            v = tf.einsum("ban,bn->ba", Jf, tf.math.conj(zf))
            JJ = tf.matmul(Jf, Jf, adjoint_b=True)
            vv = v[:, :, None] * tf.math.conj(v)[:, None, :]
            out.append(tf.constant(1.0 / np.pi, self.cdtype) * (JJ / zz - vv / (zz * zz)))
        return tf.stack(out)

    def fs_from(self, z, J, t=None):
        t = self.kmoduli if t is None else np.asarray(t, np.float64).reshape(-1)
        return tf.einsum("f,fbij->bij", tf.constant(t, self.cdtype), self.fs_blocks_from(z, J))

    def charts(self, x, j_elim=None):
        """``(patch (B, m), j (B, K))`` int32 of real points x (B, 2n)."""
        z = self.to_complex(x)
        patch = self.patch_index(z)
        if j_elim is None:
            j = self.elimination_index(self.dQdz(self.normalise(z, patch)), patch)
        else:
            j = tf.reshape(tf.cast(j_elim, tf.int32), [-1, self.nhyper])
        return tf.stop_gradient(patch), tf.stop_gradient(j)

    def local_frame(self, x, patch, j):
        z = self.normalise(self.to_complex(x), patch)
        dq = self.dQdz(z)
        J = self.pullbacks_from(dq, patch, j)
        Gu = self.fs_blocks_from(z, J)
        G = tf.einsum("f,fbij->bij", tf.constant(self.kmoduli, self.cdtype), Gu)
        return {"z": z, "x": complex_to_real(z), "dq": dq, "J": J, "G": G, "G_unit": Gu, "patch": patch, "j": j}

    def transition_rows(self, patch, j):
        """int32 (B,): the row of :func:`transition_table` of each chart."""
        local = patch - tf.constant(self._patch_offsets, tf.int32)[None, :]
        pcode = tf.reduce_sum(local * tf.constant(self._patch_strides, tf.int32)[None, :], axis=1)
        powers = tf.constant([self.ncoords**q for q in range(self.nhyper)], tf.int32)
        return pcode * (self.ncoords**self.nhyper) + tf.reduce_sum(j * powers[None, :], axis=1)

    def transition_points(self, z, patch, j):
        """Points rescaled to cymetric's other patches, and the chart-change matrices.

        For every point, the ``w = transition_width`` entries of its
        :func:`transition_table` row: ``z' = z / z_{k'_r}`` factor by factor,
        the same eliminated coordinates ``j``, and ``T = J' P`` with
        ``P[i, b] = delta_{i g_b} / z'_{k_b} - delta_{i k_b} z'_{g_b} / z'_{k_b}^2``
        (``k_b`` the old patch coordinate of the factor of the old local
        coordinate ``g_b``). A metric that is a tensor satisfies
        ``g'(w) = T g(x) T^H``.

        Args:
            z: (B, n) complex points normalised by their patch.
            patch: (B, m) int32 patch; j: (B, K) int32 eliminated coordinates.

        Returns:
            dict as :meth:`TFGeometry.transition_points`, stacked
            transition-major: ``x`` (w*B, 2n), ``patch`` (w*B, m), ``j``
            (w*B, K), ``T`` (w*B, nfold, nfold), ``m = w`` and ``frame``.
        """
        n = self.ncoords
        w = self.transition_width
        kp = tf.gather(tf.constant(self._transitions, tf.int32), self.transition_rows(patch, j))  # (B, w, m)
        kp = tf.reshape(tf.transpose(kp, [1, 0, 2]), [-1, self.nproj])  # (w*B, m)
        zt = tf.tile(z, [w, 1])
        pt = tf.tile(patch, [w, 1])
        jt = tf.tile(j, [w, 1])
        zn = self.normalise(zt, kp)  # z' (w*B, n)
        dqn = self.dQdz(zn)
        Jn = self.pullbacks_from(dqn, kp, jt)  # (w*B, nfold, n)
        good = self.good_indices(pt, jt)  # old local coordinates g_b
        k_of = tf.gather(pt, tf.constant(self._factor_of, tf.int32), axis=1)  # old patch coordinate of each z_i
        kb = tf.gather(k_of, good, axis=1, batch_dims=1)  # (w*B, nfold)
        zg = tf.gather(zn, good, axis=1, batch_dims=1)
        zk = tf.gather(zn, kb, axis=1, batch_dims=1)
        PT = (
            tf.one_hot(good, n, dtype=self.cdtype) / zk[:, :, None]
            - tf.one_hot(kb, n, dtype=self.cdtype) * (zg / (zk * zk))[:, :, None]
        )  # (w*B, nfold, n): PT[b, i] = d x^b / d z'_i
        T = tf.einsum("ban,bcn->bac", Jn, PT)
        return self._transition_result(zn, dqn, Jn, kp, jt, T, w)

    def fs_holomorphic_derivative(self, frame, j, t=None):
        """``dG[:, c, a, b] = dG_{a bbar}/dx^c`` (B, n, n, n) by forward-mode autodiff in the fixed chart."""

        def G_of(xx, pp, jj):
            return self.local_frame(xx, pp, jj)["G"]

        _, dG = holomorphic_derivatives(G_of, frame["x"], frame["J"], aux=(frame["patch"], frame["j"]))
        return dG
