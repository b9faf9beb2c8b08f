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
along the local coordinates. The transition loss is not implemented for
products / several equations (construct models with ``transition=0``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cyntk.models._tfgeometry import TFGeometry, _complex_dtype, complex_to_real, holomorphic_derivatives

__all__ = ["TFCICYGeometry", "make_tf_geometry"]


def make_tf_geometry(spec, dtype="float32"):
    """:class:`TFCICYGeometry` for a CICY spec, :class:`TFGeometry` otherwise."""
    from cyntk.models._cicy_spec import CICYSpec

    if isinstance(spec, CICYSpec):
        return TFCICYGeometry(spec, dtype)
    return TFGeometry(spec, dtype)


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
        self.n_transitions = 0

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

    def selection(self, patch, j):
        """(B, nfold, n) complex 0/1 matrices picking the good coordinates (ascending)."""
        n = self.ncoords
        bad = tf.reduce_sum(tf.one_hot(patch, n, dtype=tf.int32), axis=1) + tf.reduce_sum(
            tf.one_hot(j, n, dtype=tf.int32), axis=1
        )  # (B, n)
        key = bad * n + tf.range(n)[None, :]
        good = tf.argsort(key, axis=-1)[:, : self.nfold]  # ascending good indices
        return tf.one_hot(good, n, dtype=self.cdtype)

    def _bmat(self, dq, j):
        return tf.gather(dq, j, axis=2, batch_dims=1)  # (B, K, K)

    def pullbacks_from(self, dq, patch, j):
        S = self.selection(patch, j)  # (B, a, n)
        dqx = tf.einsum("bkn,ban->bka", dq, S)
        sol = -tf.linalg.solve(self._bmat(dq, j), dqx)  # (B, K, a)
        E = tf.one_hot(j, self.ncoords, dtype=self.cdtype)  # (B, K, n)
        return S + tf.einsum("bka,bkn->ban", sol, E)

    def omega_sq_from(self, dq, j):
        det = tf.linalg.det(self._bmat(dq, j))
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

    def transition_points(self, z, patch, j):
        raise NotImplementedError(
            "the transition loss is not implemented for complete intersections / products of projective "
            "spaces; construct the model with transition=0."
        )

    def fs_holomorphic_derivative(self, frame, j, t=None):
        """``dG[:, c, a, b] = dG_{a bbar}/dx^c`` (B, n, n, n) by forward-mode autodiff in the fixed chart."""

        def G_of(xx, pp, jj):
            return self.local_frame(xx, pp, jj)["G"]

        _, dG = holomorphic_derivatives(G_of, frame["x"], frame["J"], aux=(frame["patch"], frame["j"]))
        return dG
