"""In-graph (TensorFlow) geometry of a hypersurface in P^{N-1}.

Everything the metric models need per point, computed from the real network
input ``x = [Re z, Im z]`` (B, 2N) inside the graph (conventions §2.6, 3, 4):

* the patch ``k`` (coordinate of largest modulus, which is 1 for cymetric's
  patch-normalised points) and the elimination index ``j = argmax_{i != k}
  |dQ/dz_i|``;
* the pullback ``J`` (B, n, N): ``J[a, g_a] = 1``, ``J[a, k] = 0``,
  ``J[a, j] = -Q_{g_a}/Q_j`` with the good coordinates ``g_0 < ... < g_{n-1}``;
* ``|Omega|^2 = 1/|Q_j|^2``;
* the Fubini--Study metric ``G = J g_FS J^H`` with
  ``g_FS = (t/pi) (delta/|z|^2 - conj(z_i) z_j/|z|^4)``, evaluated as
  ``G = (t/pi) (J J^H/|z|^2 - v v^H/|z|^4)``, ``v = J conj(z)``;
* the chart-change matrices of the transition loss.

Polynomials are evaluated with integer powers from a precomputed gather table
(not ``exp(e log z)`` as cymetric does), so coordinates equal to 0 are fine and
float64 keeps full precision. All tables are NumPy constants built once.

Complex directional derivatives: for a function ``F`` of the real inputs and a
complex direction ``u`` (N,), with ``D_w F`` the real directional derivative
along ``[Re w, Im w]``::

    sum_i u_i dF/dz_i           = (D_u F - i D_{iu} F) / 2
    sum_i conj(u_i) dF/dzbar_i  = (D_u F + i D_{iu} F) / 2

:func:`holomorphic_derivatives` and :func:`local_ddbar` evaluate these over a
batch tiled once per direction, with reverse-mode building blocks only (a
Jacobian-vector product by the transpose trick, Hessian-vector products by
reverse over reverse), which XLA compiles well.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from cyntk.models._spec import ManifoldSpec

if TYPE_CHECKING:
    from tensorflow.types.experimental import TensorLike

__all__ = ["TFGeometry", "jvp", "holomorphic_derivatives", "local_ddbar", "real_to_complex", "complex_to_real"]


def real_to_complex(x: TensorLike, ncoords: int) -> tf.Tensor:
    """(B, 2N) real ``[Re z, Im z]`` -> (B, N) complex."""
    return tf.complex(x[:, :ncoords], x[:, ncoords:])


def complex_to_real(z: TensorLike) -> tf.Tensor:
    """(B, N) complex -> (B, 2N) real ``[Re z, Im z]``."""
    return tf.concat([tf.math.real(z), tf.math.imag(z)], axis=-1)


def _second_derivative_basis(spec: ManifoldSpec) -> tuple[np.ndarray, np.ndarray]:
    """d^2Q/dz_i dz_l as padded monomial lists: (N*N, T2, N) int64, (N*N, T2) complex128."""
    N = spec.ncoords
    rows = []
    for i in range(N):
        for l in range(N):
            terms: dict[tuple[int, ...], complex] = {}
            for mono, c in zip(spec.monomials, spec.coefficients):
                e = mono.copy()
                f = c * e[i]
                e[i] -= 1
                f = f * e[l]
                e[l] -= 1
                if f == 0 or np.any(e < 0):
                    continue
                key = tuple(int(v) for v in e)
                terms[key] = terms.get(key, 0) + f
            rows.append([(k, v) for k, v in terms.items() if v != 0])
    T = max(1, max(len(r) for r in rows))
    E = np.zeros((N * N, T, N), np.int64)
    F = np.zeros((N * N, T), np.complex128)
    for r, row in enumerate(rows):
        for t, (k, v) in enumerate(row):
            E[r, t] = k
            F[r, t] = v
    return E, F


def _complex_dtype(dtype: str | tf.DType) -> tf.DType:
    dtype = tf.as_dtype(dtype)
    if dtype == tf.float64:
        return tf.complex128
    if dtype == tf.float32:
        return tf.complex64
    raise TypeError(f"`dtype` must be float32 or float64; received {dtype.name}.")


class TFGeometry:
    """Per-point charts, pullbacks, |Omega|^2 and Fubini--Study metric in TF.

    Args:
        spec: the manifold.
        dtype: real dtype of the computation, ``"float32"`` or ``"float64"``;
            complex results are complex64 / complex128 accordingly.
    """

    def __init__(self, spec: ManifoldSpec, dtype: str | tf.DType = "float32") -> None:
        self.spec = spec
        self.dtype = tf.as_dtype(dtype)
        self.cdtype = _complex_dtype(self.dtype)
        N, n = spec.ncoords, spec.nfold
        self.ncoords, self.nfold = N, n
        E, F = spec.derivative_basis()  # (N, T, N), (N, T)
        E2, F2 = _second_derivative_basis(spec)  # (N*N, T2, N), (N*N, T2)
        self._maxpow = int(max(1, E.max()))
        # monomial tables: gather indices into the flattened power table (B, N*(maxpow+1))
        self._tables = {"dq": self._table(E, F), "d2q": self._table(E2, F2)}
        # selection matrices S[k*N + j] (n, N): S[a, g_a] = 1 for the good coords
        sel = np.zeros((N * N, n, N))
        new_patches = np.zeros((N * N, max(N - 2, 1)), np.int64)
        for k, j in itertools.product(range(N), range(N)):
            if k == j:
                continue
            good = [i for i in range(N) if i not in (k, j)]
            sel[k * N + j, np.arange(n), good] = 1.0
            others = [i for i in range(N) if i not in (k, j)]
            new_patches[k * N + j, : len(others)] = others
        self._sel = sel
        self._new_patches = new_patches  # transition targets k' not in {k, j}
        self.n_transitions = N - 1  # cymetric's normaliser (includes k' = k)
        self.t = float(spec.kmoduli[0])

    # --------------------------------------------------------------- basics
    def to_complex(self, x: TensorLike) -> tf.Tensor:
        """(B, 2N) real -> (B, N) complex (``self.cdtype``)."""
        return real_to_complex(tf.cast(x, self.dtype), self.ncoords)

    def _table(self, E: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, int, int, np.ndarray]:
        P = self._maxpow + 1
        index = (np.arange(self.ncoords)[None, None, :] * P + E).reshape(-1)
        return index.astype(np.int32), E.shape[0], E.shape[1], F

    def _eval_table(self, z: tf.Tensor, table: tuple[np.ndarray, int, int, np.ndarray]) -> tf.Tensor:
        """sum_t F[r, t] prod_l z_l**E[r, t, l] for every row r -> (B, R)."""
        index, R, T, F = table
        N, P = self.ncoords, self._maxpow + 1
        powers = [tf.ones_like(z), z]
        for _ in range(P - 2):
            powers.append(powers[-1] * z)
        flat = tf.reshape(tf.stack(powers[:P], axis=-1), [-1, N * P])  # (B, N*P)
        factors = tf.reshape(tf.gather(flat, index, axis=1), [-1, R, T, N])
        mons = factors[..., 0]
        for l in range(1, N):  # explicit product: XLA has no complex Cumprod (reduce_prod's gradient)
            mons = mons * factors[..., l]
        return tf.reduce_sum(mons * tf.constant(F, self.cdtype), axis=-1)

    def dQdz(self, z: tf.Tensor) -> tf.Tensor:
        """dQ/dz_i at complex points z (B, N) -> (B, N)."""
        return self._eval_table(z, self._tables["dq"])

    def d2Qdz2(self, z: tf.Tensor) -> tf.Tensor:
        """Hessian d^2Q/dz_i dz_l at complex points z (B, N) -> (B, N, N)."""
        return tf.reshape(self._eval_table(z, self._tables["d2q"]), [-1, self.ncoords, self.ncoords])

    def patch_index(self, z: tf.Tensor) -> tf.Tensor:
        """int32 (B,): coordinate of largest modulus (== 1 for normalised points)."""
        return tf.argmax(tf.math.real(z) ** 2 + tf.math.imag(z) ** 2, axis=-1, output_type=tf.int32)

    def elimination_index(self, dq: tf.Tensor, patch: tf.Tensor) -> tf.Tensor:
        """int32 (B,): ``argmax_{i != patch} |dQ/dz_i|``."""
        a = tf.math.real(dq) ** 2 + tf.math.imag(dq) ** 2
        a = tf.where(tf.equal(tf.range(self.ncoords)[None, :], patch[:, None]), -tf.ones_like(a), a)
        return tf.argmax(a, axis=-1, output_type=tf.int32)

    def normalise(self, z: tf.Tensor, patch: tf.Tensor) -> tf.Tensor:
        """Divide every point by its patch coordinate: z / z_k."""
        zk = tf.gather(z, patch, axis=1, batch_dims=1)
        return z / zk[:, None]

    def selection(self, patch: tf.Tensor, j: tf.Tensor) -> tf.Tensor:
        """(B, n, N) complex 0/1 matrices picking the good coordinates."""
        return tf.gather(tf.constant(self._sel, self.cdtype), patch * self.ncoords + j)

    def pullbacks_from(self, dq: tf.Tensor, patch: tf.Tensor, j: tf.Tensor) -> tf.Tensor:
        """J (B, n, N) from dQ/dz (B, N) and the chart (patch, j) (each (B,) int32)."""
        S = self.selection(patch, j)
        qj = tf.gather(dq, j, axis=1, batch_dims=1)  # (B,)
        col = -tf.einsum("ban,bn->ba", S, dq) / qj[:, None]  # (B, n)
        ej = tf.one_hot(j, self.ncoords, dtype=self.cdtype)  # (B, N)
        return S + col[:, :, None] * ej[:, None, :]

    def omega_sq_from(self, dq: tf.Tensor, j: tf.Tensor) -> tf.Tensor:
        """|Omega|^2 = 1/|Q_j|^2 (B,) real."""
        qj = tf.gather(dq, j, axis=1, batch_dims=1)
        return 1.0 / (tf.math.real(qj) ** 2 + tf.math.imag(qj) ** 2)

    def fs_from(self, z: tf.Tensor, J: tf.Tensor, t: float | None = None) -> tf.Tensor:
        """Pulled-back FS metric ``G = J g_FS(t) J^H`` (B, n, n) complex."""
        t = self.t if t is None else t
        zz = tf.reduce_sum(tf.math.real(z) ** 2 + tf.math.imag(z) ** 2, axis=-1)  # (B,)
        zz = tf.complex(zz, tf.zeros_like(zz))[:, None, None]
        v = tf.einsum("ban,bn->ba", J, tf.math.conj(z))
        JJ = tf.matmul(J, J, adjoint_b=True)
        vv = v[:, :, None] * tf.math.conj(v)[:, None, :]
        return tf.constant(t / np.pi, self.cdtype) * (JJ / zz - vv / (zz * zz))

    # -------------------------------------------------------------- charts
    def charts(self, x: TensorLike, j_elim: TensorLike | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Patch and elimination indices of real points x (B, 2N).

        Args:
            x: (B, 2N) real.
            j_elim: optional (B,) or (B, 1) integer elimination indices
                (cymetric's ``j_elim``); detected as argmax |dQ/dz| otherwise.

        Returns:
            ``(patch, j)``, int32 (B,) each.
        """
        z = self.to_complex(x)
        patch = self.patch_index(z)
        if j_elim is None:
            j = self.elimination_index(self.dQdz(self.normalise(z, patch)), patch)
        else:
            j = tf.reshape(tf.cast(j_elim, tf.int32), [-1])
        return tf.stop_gradient(patch), tf.stop_gradient(j)

    def local_frame(self, x: TensorLike, patch: tf.Tensor, j: tf.Tensor) -> dict[str, tf.Tensor]:
        """Normalised point and chart data at real points x in a given chart.

        Returns:
            dict with ``z`` (B, N) complex normalised by ``z_k``, ``x`` its real
            form (B, 2N), ``dq`` (B, N), ``J`` (B, n, N), ``G`` (B, n, n) and
            the chart ``patch``, ``j`` (B,).
        """
        z = self.normalise(self.to_complex(x), patch)
        dq = self.dQdz(z)
        J = self.pullbacks_from(dq, patch, j)
        return {"z": z, "x": complex_to_real(z), "dq": dq, "J": J, "G": self.fs_from(z, J), "patch": patch, "j": j}

    # ----------------------------------------------------------- transitions
    def transition_points(self, z: tf.Tensor, patch: tf.Tensor, j: tf.Tensor) -> dict[str, Any]:
        """Points rescaled to the other patches, and the chart-change matrices.

        For each point (patch k, elimination j) and each k' not in {k, j}
        (N - 2 of them), ``z' = z / z_{k'}``. The new local coordinates are
        ``w^a = z'_{g'_a}``, the old ones ``x^b = z'_{g_b}/z'_k``, and
        ``T[a, b] = dx^b/dw^a = sum_i J'[a, i] P[i, b]`` with
        ``P[i, b] = delta_{i g_b}/z'_k - delta_{i k} z'_{g_b}/z'_k^2`` and
        ``J'`` the pullback in the new chart. A metric that is a tensor
        satisfies ``g'(w) = T g(x) T^H``.

        Args:
            z: (B, N) complex points normalised by their patch.
            patch, j: (B,) int32 chart of each point.

        Returns:
            dict with the m = N - 2 transitions stacked transition-major:
            ``x`` (m*B, 2N) real, ``patch`` and ``j`` (m*B,) int32, ``T``
            (m*B, n, n) complex, ``m``, and ``frame`` (as :meth:`local_frame`
            in the new charts).
        """
        N = self.ncoords
        m = N - 2
        kp = tf.gather(tf.constant(self._new_patches, tf.int32), patch * N + j)  # (B, m)
        kp = tf.reshape(tf.transpose(kp), [-1])  # (m*B,)
        zt = tf.tile(z, [m, 1])
        pt = tf.tile(patch, [m])
        jt = tf.tile(j, [m])
        zn = self.normalise(zt, kp)  # z' (m*B, N)
        dqn = self.dQdz(zn)
        Jn = self.pullbacks_from(dqn, kp, jt)  # (m*B, n, N)
        S_old = self.selection(pt, jt)  # (m*B, n, N)
        zk = tf.gather(zn, pt, axis=1, batch_dims=1)  # z'_k
        zg = tf.einsum("ban,bn->ba", S_old, zn)  # z'_{g_b}
        ek = tf.one_hot(pt, N, dtype=self.cdtype)
        P = (
            tf.transpose(S_old, [0, 2, 1]) / zk[:, None, None] - ek[:, :, None] * (zg / (zk * zk)[:, None])[:, None, :]
        )  # (m*B, N, n)
        T = tf.matmul(Jn, P)
        return self._transition_result(zn, dqn, Jn, kp, jt, T, m)

    def _transition_result(
        self, zn: tf.Tensor, dqn: tf.Tensor, Jn: tf.Tensor, kp: tf.Tensor, jt: tf.Tensor, T: tf.Tensor, m: int
    ) -> dict[str, Any]:
        """The result of :meth:`transition_points`: the new-chart points, their charts, ``T``, the count
        ``m`` and the frame (points, dQ/dz, pullbacks, FS metric, charts) the losses evaluate there."""
        frame = {"z": zn, "x": complex_to_real(zn), "dq": dqn, "J": Jn, "G": self.fs_from(zn, Jn), "patch": kp, "j": jt}
        return {"x": frame["x"], "patch": kp, "j": jt, "T": T, "m": m, "frame": frame}

    def fs_holomorphic_derivative(
        self, frame: Mapping[str, tf.Tensor], j: tf.Tensor, t: float | None = None
    ) -> tf.Tensor:
        """Analytic ``dG[:, c, a, b] = d G_{a bbar} / d x^c`` (B, n, n, n).

        With ``s = |z|^2``, ``v = J conj(z)``, ``P = J J^H`` and
        ``K[c, a] = d^2 z_j / dx^c dx^a = -(J Hess(Q) J^T)[c, a] / Q_j``
        (so ``d_c J_a = K[c, a] e_j``)::

            dG[c,a,b] = (t/pi) [ K[c,a] conj(J[b,j]) / s - P[a,b] v[c] / s^2
                                 - (K[c,a] conj(z_j) conj(v[b]) + v[a] P[c,b]) / s^2
                                 + 2 v[a] conj(v[b]) v[c] / s^3 ]

        Args:
            frame: dict from :meth:`local_frame` (z normalised, dq, J).
            j: (B,) int32 elimination indices of that frame.
        """
        t = self.t if t is None else t
        z, J, dq = frame["z"], frame["J"], frame["dq"]
        hess = self.d2Qdz2(z)
        qj = tf.gather(dq, j, axis=1, batch_dims=1)
        K = -tf.einsum("bci,bil,bal->bca", J, hess, J) / qj[:, None, None]  # (B, n, n)
        s = tf.reduce_sum(tf.math.real(z) ** 2 + tf.math.imag(z) ** 2, axis=-1)
        s = tf.complex(s, tf.zeros_like(s))[:, None, None, None]
        zbar = tf.math.conj(z)
        v = tf.einsum("ban,bn->ba", J, zbar)
        vb = tf.math.conj(v)
        P = tf.matmul(J, J, adjoint_b=True)
        Jj_bar = tf.math.conj(tf.gather(J, j, axis=2, batch_dims=1))  # (B, n)
        zj_bar = tf.gather(zbar, j, axis=1, batch_dims=1)  # (B,)
        term1 = K[:, :, :, None] * Jj_bar[:, None, None, :] / s
        term2 = -P[:, None, :, :] * v[:, :, None, None] / s**2
        term3 = (
            -(
                K[:, :, :, None] * (zj_bar[:, None, None, None] * vb[:, None, None, :])
                + v[:, None, :, None] * P[:, :, None, :]
            )
            / s**2
        )
        term4 = 2.0 * (v[:, None, :, None] * vb[:, None, None, :] * v[:, :, None, None]) / s**3
        return tf.constant(t / np.pi, self.cdtype) * (term1 + term2 + term3 + term4)


def _tangents_for(J: tf.Tensor, ncoords: int) -> tf.Tensor:
    """Real tangents (2n*B, 2N) for the directions [J_0..J_{n-1}, iJ_0..iJ_{n-1}]."""
    dirs = tf.concat([J, tf.constant(1j, J.dtype) * J], axis=1)  # (B, 2n, N)
    dirs = tf.reshape(tf.transpose(dirs, [1, 0, 2]), [-1, ncoords])  # direction-major
    return complex_to_real(dirs)


def jvp(fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, tangent: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Forward-mode product ``(F, D_t F)`` of a real-input function, row by row.

    Uses the transpose ("double vjp") trick: ``v(u) = u^T dF/dx`` is linear
    in ``u``, so ``D_t F = d(v(u) . t)/du``. Unlike
    ``tf.autodiff.ForwardAccumulator`` this is built from reverse-mode
    gradients only, which XLA compiles once per shape and which nest under an
    outer ``GradientTape`` (for gradients with respect to weights).

    Args:
        fn: ``fn(x) -> F``, real or complex (B, ...) output.
        x: (B, D) real input.
        tangent: (B, D) real tangent.

    Returns:
        ``(F, dF)`` with dF of F's shape and dtype.
    """
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(x)
            F = fn(x)
            Fr = tf.stack([tf.math.real(F), tf.math.imag(F)], axis=-1) if F.dtype.is_complex else F
        u = tf.zeros_like(Fr)
        outer.watch(u)
        v = inner.gradient(Fr, x, output_gradients=u, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    dFr = outer.gradient(
        v, u, output_gradients=tf.cast(tangent, v.dtype), unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    if F.dtype.is_complex:
        return F, tf.complex(dFr[..., 0], dFr[..., 1])
    return F, dFr


def holomorphic_derivatives(
    fn: Callable[..., tf.Tensor], x: tf.Tensor, J: tf.Tensor, aux: Sequence[tf.Tensor] = ()
) -> tuple[tf.Tensor, tf.Tensor]:
    """Holomorphic derivatives along the local coordinates.

    ``d_c F = sum_i J[c, i] dF/dz_i = (D_{J_c} F - i D_{i J_c} F) / 2`` for
    c = 0..n-1, from one forward-mode product (:func:`jvp`) over the batch
    tiled 2n times (one copy per real direction).

    Args:
        fn: callable ``fn(x, *aux) -> F`` mapping (B', 2N) real inputs (and
            per-point auxiliary tensors) to a complex or real tensor (B', ...).
            Each output row must depend only on its own input row.
        x: (B, 2N) real points.
        J: (B, n, N) complex directions (the pullback).
        aux: tuple of (B, ...) tensors passed to ``fn`` (tiled alongside x).

    Returns:
        ``(F, dF)``: ``F = fn(x)`` (B, ...) and ``dF`` (B, n, ...) complex.
    """
    n, N = J.shape[1], J.shape[2]
    reps = 2 * n
    xt = tf.tile(x, [reps, 1])
    auxt = tuple(tf.tile(a, [reps] + [1] * (len(a.shape) - 1)) for a in aux)
    tang = tf.cast(tf.stop_gradient(_tangents_for(J, N)), x.dtype)
    Ft, dFt = jvp(lambda xx: fn(xx, *auxt), xt, tang)
    shape = tf.concat([[reps, -1], tf.shape(Ft)[1:]], axis=0)
    Ft = tf.reshape(Ft, shape)
    dFt = tf.reshape(dFt, shape)
    if not dFt.dtype.is_complex:
        dFt = tf.complex(dFt, tf.zeros_like(dFt))
    Du, Diu = dFt[:n], dFt[n:]
    dF = 0.5 * (Du - tf.constant(1j, dFt.dtype) * Diu)
    perm = [1, 0] + list(range(2, len(dF.shape)))
    return Ft[0], tf.transpose(dF, perm)


def local_ddbar(
    fn: Callable[..., tf.Tensor], x: tf.Tensor, J: tf.Tensor, aux: Sequence[tf.Tensor] = ()
) -> tuple[tf.Tensor, tf.Tensor]:
    """Complex Hessian of a real function along the local coordinates.

    ``M[a, b] = sum_{i,j} J[a, i] conj(J[b, j]) d^2 f / dz_i dzbar_j``,
    computed as ``d_a (dbar_j f)`` with ``dbar_j f = (df/dx_j + i df/dy_j)/2``
    and ``d_a = (D_{J_a} - i D_{i J_a})/2``: Hessian-vector products
    ``H t = grad(grad f . t)`` (reverse over reverse) along the 2n real
    directions ``J_a``, ``i J_a`` on the batch tiled 2n times.

    Args:
        fn: callable ``fn(x, *aux) -> f`` (B',) real; rows independent.
        x: (B, 2N) real points.
        J: (B, n, N) complex directions.
        aux: per-point auxiliary tensors passed to ``fn``.

    Returns:
        ``(f, M)``: f (B,) and M (B, n, n) complex (hermitian).
    """
    n, N = J.shape[1], J.shape[2]
    reps = 2 * n
    xt = tf.tile(x, [reps, 1])
    auxt = tuple(tf.tile(a, [reps] + [1] * (len(a.shape) - 1)) for a in aux)
    tang = tf.cast(_tangents_for(J, N), x.dtype)
    with tf.GradientTape() as outer:
        outer.watch(xt)
        with tf.GradientTape() as inner:
            inner.watch(xt)
            ft = fn(xt, *auxt)
        grad = inner.gradient(ft, xt, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        gt = tf.reduce_sum(grad * tang, axis=-1)
    Ht = outer.gradient(gt, xt, unconnected_gradients=tf.UnconnectedGradients.ZERO)  # (reps*B, 2N)
    cd = J.dtype
    dbar = tf.complex(Ht[:, :N], Ht[:, N:]) * tf.constant(0.5, cd)  # D_t (dbar_j f)
    dbar = tf.reshape(dbar, [reps, -1, N])
    Du, Diu = dbar[:n], dbar[n:]
    d_dbar = 0.5 * (Du - tf.constant(1j, cd) * Diu)
    # M[b, a, c] = sum_j d_a(dbar_j f) conj(J[b, c, j])
    M = tf.einsum("abj,bcj->bac", d_dbar, tf.math.conj(J))
    f = tf.reshape(ft, [reps, -1])[0]
    return f, M
