"""NumPy core of frozen-kernel metric flows: tiled kernel products and checks.

A frozen kernel ``Theta[a, b, I, J] = Theta_IJ(x1[a], x2[b])`` (m = n^2 metric
components, cyntk's component order) acts on per-point vectors ``v`` (P2, m)::

    u[a, I] = sum_{b, J} Theta_IJ(x1[a], x2[b]) v[b, J].

:class:`KernelProduct` evaluates this product without ever holding the whole
(P1, P2) (or (P1, P2, m, m)) block. How it does so depends on the kernel:

* kernels with their own ``matvec`` (``Kernel.matrix_free``: matrix-free empirical NTK ``J (J^T v)``,
  the Delta kernel's nearest-neighbour copy) are called through it; the Delta
  kernel of a point set with itself is the identity (``DeltaKernel()(x, None)``);
* *pairwise* kernels (declared by ``Kernel.pairwise``), whose entry ``Theta(x1[a], x2[b])`` depends on the two
  points only (Gaussian-FS, infinite-width NTK, cosine NTK, empirical NTK), are
  evaluated in square tiles of ``tile_size x tile_size`` points, and the
  product of a point set with itself evaluates only the tiles on and above the
  diagonal (``Theta(x, x') = Theta(x', x)^T``), i.e. half the kernel entries.
  Row strips of tiles are handed out (longest first) to ``n_threads`` worker
  threads, each accumulating into its own output (NumPy releases the GIL in
  its ufuncs and BLAS; BLAS itself runs single-threaded per tile). Kernels may
  offer a faster tile interface, used when they declare it
  (:attr:`Kernel.supports_tiles <cyntk.kernels.base.Kernel.supports_tiles>`,
  :func:`uses_tile_api`):

  - ``tile_state(x)``: per-point state (a tuple of arrays with the points on
    the first axis: unit vectors, layer variances, ...), computed once per
    product instead of once per tile;
  - ``tile_block(state1, state2=None)``: the tile's block from the two sliced
    states (``None``: a point set with itself);
  - optionally ``tile_matvec(state1, state2, v2, v1=None)`` ->
    ``(Theta v2, Theta^T v1)``: the contraction fused with the entries, for
    kernels that can apply part of the block to the vectors instead (the
    depth-1 ReLU NTK's rank-one factor ``sqrt(q q')`` and shift ``b_std^2``).

  Gaussian-FS and the infinite-width NTK use it; the entries are the same
  float64 expressions as their ``__call__`` (agreeing to rounding);
* any other kernel is called on row chunks ``kernel(x1[s:s+c], x2)`` of about
  ``max(tile_size**2, 2**22)`` entries (a kernel whose block depends on the
  whole ``x2`` set, like the Delta kernel, must see all of it).

Peak memory besides the inputs and outputs is therefore about
``n_threads * (tile_size**2 * (bytes of the kernel's temporaries per entry) + P1 * m * 8)``
(a few MiB per thread for tile 256: the Gaussian and ReLU tiles keep four to
five float64 arrays of 512 KiB; at 1e5 points each thread's output is 7 MiB).

Block-diagonal kernels (clusters, charts) are products restricted to groups:
``Theta_group(x, x') = Theta(x, x') [group(x) == group(x')]``.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np

from cyntk.geometry.components import hermitian_from_components
from cyntk.kernels.base import Kernel

__all__ = [
    "KernelProduct",
    "is_pairwise",
    "has_own_matvec",
    "uses_tile_api",
    "uses_fused_matvec",
    "is_identity_on_same_points",
    "min_eigenvalues",
    "RowIndex",
    "default_threads",
]

#: kernel entries per row chunk of non-pairwise kernels (about 32 MiB per float64 temporary)
_ROW_CHUNK_ENTRIES = 1 << 22


def default_threads() -> int:
    """CPU cores available to this process (``os.sched_getaffinity`` where it exists)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def is_pairwise(kernel) -> bool:
    """Whether ``kernel(x1, x2)[a, b]`` depends only on ``x1[a]`` and ``x2[b]``.

    The kernel's declaration :attr:`Kernel.pairwise <cyntk.kernels.base.Kernel.pairwise>`
    (a duck-typed kernel without the attribute is treated as non-pairwise:
    always correct, only slower).
    """
    return bool(getattr(kernel, "pairwise", False))


def has_own_matvec(kernel) -> bool:
    """Whether the product calls the kernel's own matrix-free ``matvec``.

    :attr:`Kernel.matrix_free <cyntk.kernels.base.Kernel.matrix_free>` for
    cyntk kernels; any ``matvec`` of a duck-typed kernel.
    """
    if isinstance(kernel, Kernel):
        return kernel.matrix_free
    return callable(getattr(kernel, "matvec", None))


def uses_tile_api(kernel) -> bool:
    """Whether the tiled product may use the kernel's ``tile_state`` / ``tile_block``.

    :attr:`Kernel.supports_tiles <cyntk.kernels.base.Kernel.supports_tiles>`
    for cyntk kernels (a subclass that overrides ``_block`` alone loses it, so
    the generic per-tile call honours its override); a duck-typed kernel
    needs both methods.
    """
    if isinstance(kernel, Kernel):
        return kernel.supports_tiles
    return callable(getattr(kernel, "tile_state", None)) and callable(getattr(kernel, "tile_block", None))


def uses_fused_matvec(kernel) -> bool:
    """Whether the tiled product may contract tiles with the kernel's fused ``tile_matvec``."""
    if isinstance(kernel, Kernel):
        return kernel.supports_fused_matvec
    return (
        uses_tile_api(kernel)
        and bool(getattr(kernel, "component_diagonal", False))
        and callable(getattr(kernel, "tile_matvec", None))
    )


def is_identity_on_same_points(kernel) -> bool:
    """Whether the block of a point set with itself is the identity (the Delta kernel)."""
    return bool(getattr(kernel, "identity_on_same_points", False))


def kernel_name(kernel) -> str:
    return type(kernel).__name__


class KernelProduct:
    """Products ``u = Theta(x1, x2) v`` of a frozen kernel, tile by tile.

    Args:
        kernel: a :class:`~cyntk.kernels.base.Kernel` (or any object with
            ``component_diagonal`` and ``__call__(x1, x2)``, optionally
            ``matvec`` and ``pairwise``).
        m: number of metric components (n^2).
        tile_size: points per tile side of pairwise kernels (small tiles keep
            the kernel's temporaries in cache; 256 is a good default). Other
            kernels are called on row chunks of about ``max(tile_size**2, 2**22)``
            entries.
        n_threads: worker threads for the tiles of pairwise kernels
            (default: the cores available).
    """

    def __init__(self, kernel, m: int, *, tile_size: int = 256, n_threads: int | None = None):
        self.kernel = kernel
        self.m = int(m)
        self.tile_size = int(tile_size)
        self.n_threads = default_threads() if n_threads is None else int(n_threads)
        self.component_diagonal = bool(getattr(kernel, "component_diagonal", False))
        self.pairwise = is_pairwise(kernel)
        self.own_matvec = has_own_matvec(kernel)
        self.identity_on_same = is_identity_on_same_points(kernel)

    # ------------------------------------------------------------------ checks
    def check_block(self, block, p1: int, p2: int) -> np.ndarray:
        """Validate one kernel block; returns it as a float64 array."""
        block = np.asarray(block)
        if self.component_diagonal:
            ok, expected = block.shape == (p1, p2), f"({p1}, {p2})"
        else:
            ok = block.shape == (p1, p2, self.m, self.m)
            expected = f"({p1}, {p2}, {self.m}, {self.m})"
        if not ok:
            kind = "component-diagonal" if self.component_diagonal else "full"
            raise ValueError(
                f"kernel {kernel_name(self.kernel)} returned a block of shape {block.shape} for "
                f"{p1} x {p2} points; a {kind} kernel must return {expected} (m = n^2 = {self.m} "
                "metric components for full kernels). Fix the kernel's block function, or its "
                "`component_diagonal` flag."
            )
        if not np.all(np.isfinite(block)):
            raise ValueError(f"kernel {kernel_name(self.kernel)} returned non-finite entries for {p1} x {p2} points.")
        return block

    def _check_result(self, u, p1):
        u = np.asarray(u, dtype=np.float64)
        if u.shape != (p1, self.m):
            raise ValueError(
                f"kernel {kernel_name(self.kernel)}.matvec returned shape {u.shape}; expected ({p1}, {self.m})."
            )
        if not np.all(np.isfinite(u)):
            raise ValueError(f"kernel {kernel_name(self.kernel)}.matvec returned non-finite values.")
        return u

    # -------------------------------------------------------------- products
    def _apply_block(self, block, v):
        if self.component_diagonal:
            return block @ v
        p1, p2, m, _ = block.shape
        return (block.transpose(0, 2, 1, 3).reshape(p1 * m, p2 * m) @ v.reshape(p2 * m)).reshape(p1, m)

    def _apply_block_t(self, block, v):
        """``Theta(x2, x1) v`` from the block ``Theta(x1, x2)`` (symmetric kernels)."""
        if self.component_diagonal:
            return block.T @ v
        p1, p2, m, _ = block.shape
        return (v.reshape(p1 * m) @ block.transpose(0, 2, 1, 3).reshape(p1 * m, p2 * m)).reshape(p2, m)

    def dense(self, x1, x2=None) -> np.ndarray:
        """The whole block in full form (P1, P2, m, m) (small sets only)."""
        blk = self.check_block(self.kernel(x1, x2), len(x1), len(x1 if x2 is None else x2))
        if self.component_diagonal:
            return blk[:, :, None, None] * np.eye(self.m)
        return blk

    def matvec(self, x1, x2, v, *, same: bool = False) -> np.ndarray:
        """``u = Theta(x1, x2) v``.

        Args:
            x1: float64 (P1, d) target points.
            x2: float64 (P2, d) source points.
            v: float64 (P2, m).
            same: ``x1`` and ``x2`` are the same point set (enables the
                symmetric half-tiling of pairwise kernels; the kernel's
                ``x2 = None`` form is used on diagonal tiles).

        Returns:
            float64 (P1, m).
        """
        x1 = np.asarray(x1, dtype=np.float64)
        x2 = np.asarray(x2, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        if len(x1) == 0:
            return np.zeros((0, self.m))
        if len(x2) == 0:
            return np.zeros((len(x1), self.m))
        if same and self.identity_on_same and len(x1) == len(x2):
            # e.g. the Delta kernel of a point set with itself is the identity (DeltaKernel(x, None))
            return v.copy()
        if self.own_matvec:
            return self._check_result(self.kernel.matvec(x1, x2, v), len(x1))
        if self.pairwise:
            return self._tiled(x1, x2, v, same and len(x1) == len(x2))
        return self._row_chunks(x1, x2, v)

    def _row_chunks(self, x1, x2, v):
        rows = max(1, max(self.tile_size**2, _ROW_CHUNK_ENTRIES) // max(len(x2), 1))
        out = np.empty((len(x1), self.m))
        for s in range(0, len(x1), rows):
            blk = self.check_block(self.kernel(x1[s : s + rows], x2), len(x1[s : s + rows]), len(x2))
            out[s : s + rows] = self._apply_block(blk, v)
        return out

    def _tiled(self, x1, x2, v, symmetric):
        t = self.tile_size
        n1, n2 = len(x1), len(x2)
        starts1 = list(range(0, n1, t))
        starts2 = starts1 if symmetric else list(range(0, n2, t))
        tile = self._tile_function(x1, None if symmetric else x2)

        def strip(i, out):
            """Row strip i of tiles (j >= i when symmetric), accumulated into ``out`` (P1, m)."""
            a = slice(starts1[i], min(starts1[i] + t, n1))
            js = range(i, len(starts2)) if symmetric else range(len(starts2))
            for j in js:
                b = slice(starts2[j], min(starts2[j] + t, n2))
                diag = symmetric and i == j
                ua, ub = tile(a, b, diag, v[b], v[a] if symmetric and not diag else None)
                out[a] += ua
                if ub is not None:
                    out[b] += ub

        from threadpoolctl import threadpool_limits

        # one BLAS thread per tile: the tiles' GEMMs are thin (inner dimension d or m), BLAS
        # threading only adds overhead, and the strips themselves run on n_threads workers.
        # Strips are handed out longest first; each worker accumulates into its own output.
        n_workers = max(1, min(self.n_threads, len(starts1)))
        with threadpool_limits(limits=1, user_api="blas"):
            if n_workers == 1:
                out = np.zeros((n1, self.m))
                for i in range(len(starts1)):
                    strip(i, out)
                return out
            outs = [np.zeros((n1, self.m)) for _ in range(n_workers)]
            order = iter(range(len(starts1)))  # strip i has len(starts2) - i tiles when symmetric
            lock = threading.Lock()
            failed = threading.Event()

            def worker(out):
                while not failed.is_set():
                    with lock:
                        i = next(order, None)
                    if i is None:
                        return
                    try:
                        strip(i, out)
                    except BaseException:
                        failed.set()  # the other workers stop at their next strip
                        raise

            with concurrent.futures.ThreadPoolExecutor(max_workers=n_workers) as pool:
                for f in [pool.submit(worker, out) for out in outs]:
                    f.result()
        out = outs[0]
        for o in outs[1:]:
            out += o
        return out

    def _tile_function(self, x1, x2):
        """``tile(rows1, rows2, diag, v2, v1)`` -> ``(Theta v2, Theta^T v1 or None)`` of one tile.

        ``x2=None``: the set ``x1`` with itself (``diag``: the tile is on the
        diagonal). Kernels with ``tile_state`` / ``tile_block`` (Gaussian-FS,
        infinite-width NTK) get their per-point state (unit vectors, layer
        variances) computed once here instead of once per tile, and kernels
        with ``tile_matvec`` (the infinite-width NTK) contract the tile with the
        vectors themselves; other pairwise kernels are called on the tile's points.
        """
        k = self.kernel
        if uses_tile_api(k):
            s1 = k.tile_state(x1)
            s2 = s1 if x2 is None else k.tile_state(x2)
            if self.component_diagonal and uses_fused_matvec(k):

                def tile(a, b, diag, v2, v1):
                    st1 = tuple(s[a] for s in s1)
                    if diag:
                        return k.tile_matvec(st1, None, v2)
                    return k.tile_matvec(st1, tuple(s[b] for s in s2), v2, v1)

                return tile

            def block(a, b, diag):
                st1 = tuple(s[a] for s in s1)
                return k.tile_block(st1) if diag else k.tile_block(st1, tuple(s[b] for s in s2))
        else:
            x2v = x1 if x2 is None else x2

            def block(a, b, diag):
                return k(x1[a], None) if diag else k(x1[a], x2v[b])

        def tile(a, b, diag, v2, v1):
            blk = self.check_block(block(a, b, diag), a.stop - a.start, b.stop - b.start)
            return (self._apply_block(blk, v2), None if v1 is None else self._apply_block_t(blk, v1))

        return tile

    def grouped_matvec(self, x1, g1, x2, g2, v, *, same: bool = False) -> np.ndarray:
        """Block-diagonal product: ``u[a] = sum_{b: g2[b] == g1[a]} Theta(x1[a], x2[b]) v[b]``.

        Args:
            x1, x2: float64 (P1, d), (P2, d).
            g1, g2: int (P1,), (P2,) group labels, or both ``None`` (one group).
            v: float64 (P2, m).
            same: see :meth:`matvec`.
        """
        if g1 is None:
            return self.matvec(x1, x2, v, same=same)
        out = np.zeros((len(x1), self.m))
        for grp in np.unique(g1):
            r1 = np.flatnonzero(g1 == grp)
            r2 = r1 if same else np.flatnonzero(g2 == grp)
            if len(r2):
                out[r1] = self.matvec(x1[r1], x2[r2], v[r2], same=same)
        return out


def min_eigenvalues(components: np.ndarray, n: int | None = None) -> np.ndarray:
    """Smallest eigenvalue of the hermitian metric at every point.

    Args:
        components: float (P, n^2) real components (cyntk's order).
        n: matrix size (inferred from the width when None).

    Returns:
        float64 (P,); the metric is positive-definite where the value is > 0.
    """
    comp = np.asarray(components, dtype=np.float64)
    if len(comp) == 0:
        return np.zeros((0,))
    return np.linalg.eigvalsh(hermitian_from_components(comp))[:, 0]


class RowIndex:
    """Lookup of points among a fixed point set.

    Rows are matched on their float32 rounding (so a batch that Keras or the
    user cast to float32 still finds its train points) and then checked to
    agree with the stored point to float32 precision. Used by
    :class:`~cyntk.flows.kernel_model.KernelModel` to find which train points
    a (possibly shuffled) batch holds.

    Args:
        x: float64 (N, d) array of distinct points.
    """

    def __init__(self, x: np.ndarray):
        self._x = np.asarray(x, dtype=np.float64)
        self._map = {}
        rows = np.ascontiguousarray(self._x.astype(np.float32))
        for i in range(len(rows)):
            key = rows[i].tobytes()
            if key in self._map:
                raise ValueError(
                    f"the train points must be distinct (to float32 precision); points "
                    f"{self._map[key]} and {i} coincide. Remove duplicates."
                )
            self._map[key] = i

    def lookup(self, xb: np.ndarray) -> np.ndarray:
        """int64 (B,) indices of the rows of ``xb``; raises if one is not a known point."""
        xb = np.asarray(xb)
        rows = np.ascontiguousarray(xb.astype(np.float32))
        out = np.empty(len(rows), dtype=np.int64)
        get = self._map.get
        for i in range(len(rows)):
            k = get(rows[i].tobytes())
            if k is None:
                out[i] = -1
            else:
                out[i] = k
        bad = out < 0
        if not bad.any():
            err = np.abs(xb.astype(np.float64) - self._x[out])
            bad = np.any(err > 4 * np.finfo(np.float32).eps * np.maximum(1.0, np.abs(self._x[out])), axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{int(bad.sum())} batch point(s) (first: point {i}) are not among the model's train "
                "points: `fit` flows the metric at the train points given to the KernelModel "
                "constructor (in any order, full batch or mini-batches). Pass exactly those points, "
                "or build a new KernelModel for other points."
            )
        return out
