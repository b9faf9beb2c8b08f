"""The kernel product ``u = Theta v`` as TensorFlow ops, on any device, split into shards.

:class:`TFKernelProduct` is the engine of :class:`~cyntk.flows.KernelModel`
(``Chunking(engine="tf")``, the default). It evaluates the same products as
the NumPy :class:`~cyntk.flows.product.KernelProduct` (which stays as the
reference engine, ``engine="numpy"``: the code path the TF engine is tested
against) with the same rules:

* kernels with their own ``matvec`` (matrix-free empirical NTK ``J (J^T v)``,
  itself TensorFlow; the Delta kernel's nearest-neighbour copy, a gather) are
  called through it, on the rows of the shard; the Delta kernel of a point set
  with itself is the identity;
* pairwise kernels are evaluated in tiles of at most ``tile_size x tile_size``
  points, and a point set with itself evaluates only the tiles on and above
  the diagonal (``Theta(x, x') = Theta(x', x)^T``). For the kernels of
  :mod:`cyntk.flows.tf_tiles` (Gaussian-FS, infinite-width ReLU NTK of any
  depth, cosine NTK, manifold Gaussian) a tile is one XLA-compiled
  ``tf.function`` that builds the entries from per-point state and contracts
  them with the vectors, on the engine's ``device`` (default: TensorFlow's
  placement, a GPU when one is visible); other pairwise kernels have their
  NumPy block evaluated per tile (e.g. infinite-width NTKs of other
  activations, whose dual activations are NumPy quadratures). On a CPU the
  Gaussian-FS kernel's tiles are the fused NumPy tiles of
  :mod:`cyntk.flows.host_tiles` (one GEMM, three ufunc passes and the two
  contractions per tile: 1.5-1.7x cheaper than its NumPy block, 2-3x cheaper
  than its XLA tile on the CPUs measured);
* other kernels are called on row chunks.

Tiles are padded to a power-of-two size (at most ``tile_size``; edge rows
repeated, their vectors 0), so one compiled function serves every product of
a kernel, whatever the number of points or clusters. ``n_threads`` callers
issue tiles concurrently (an XLA CPU tile runs on one core; on a GPU two
callers overlap the transfers with the compute). Memory besides inputs and
outputs: about ``n_threads * (a few tile-sized buffers + P1 * m * 8 bytes)``.

**Shards** (``shard=(r, R)``): the tiles (or, for matrix-free and row-chunked
kernels, the target rows) are dealt to R shards round-robin and shard r
computes only its own, returning a full-size partial product; the sum of the
R partials is the product. :class:`~cyntk.flows.KernelModel` under a
``tf.distribute`` strategy gives replica r shard ``(r, R)`` and sums the
partials with an all-reduce, so every replica holds the same update.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import threading

import numpy as np
import tensorflow as tf
from threadpoolctl import threadpool_limits

from cyntk.flows.host_tiles import host_tile
from cyntk.flows.product import KernelProduct, has_own_matvec, is_pairwise
from cyntk.flows.tf_tiles import compiled_tile, tile_form

__all__ = ["TFKernelProduct", "default_tile_size", "check_shard", "TILES"]

#: kernel entries per row chunk of non-pairwise kernels (as the NumPy engine)
_ROW_CHUNK_ENTRIES = 1 << 22
_MIN_TILE = 32


#: Tile implementations: XLA-compiled TensorFlow ops, the kernels' NumPy blocks, or the device's best.
TILES = ("auto", "xla", "numpy")


def _gpu(device: str | None) -> bool:
    if device is not None:
        return "GPU" in device.upper()
    return bool(tf.config.list_logical_devices("GPU"))


def default_tile_size(device: str | None = None, tiles: str = "xla") -> int:
    """Points per tile side: 8192 for XLA tiles on a GPU, 2048 on a CPU; 256 for NumPy tiles (cache-sized)."""
    if tiles == "numpy":
        return 256
    return 8192 if _gpu(device) else 2048


def check_shard(shard) -> tuple[int, int] | None:
    """Validate ``shard``: None or ``(index, count)`` with ``0 <= index < count``."""
    if shard is None:
        return None
    try:
        r, n = (int(s) for s in shard)
    except (TypeError, ValueError):
        raise TypeError(f"`shard` must be None or a pair (index, count) of integers; received {shard!r}.") from None
    if n < 1 or not 0 <= r < n:
        raise ValueError(f"`shard` must be (index, count) with 0 <= index < count; received {shard!r}.")
    return r, n


def _tile_len(tile_size: int, n: int) -> int:
    return min(tile_size, max(_MIN_TILE, 1 << max(0, math.ceil(math.log2(max(n, 1))))))


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    if len(a) == rows:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(np.pad(a, [(0, rows - len(a))] + [(0, 0)] * (a.ndim - 1), mode="edge"))


class TFKernelProduct(KernelProduct):
    """Products ``u = Theta(x1, x2) v`` of a frozen kernel with TensorFlow tiles.

    Args:
        kernel: a :class:`~cyntk.kernels.base.Kernel` (as for
            :class:`~cyntk.flows.product.KernelProduct`).
        m: number of metric components (n^2).
        tile_size: largest number of points per tile side (None:
            :func:`default_tile_size`).
        n_threads: concurrent tile callers (None: the cores available, or 2
            on a GPU).
        device: TensorFlow device of the tiles (e.g. ``"/GPU:1"``; None:
            TensorFlow's placement).
        jit: XLA-compile the tiles (True; False runs them as plain graphs).
        tiles: ``"xla"`` (the kernel's TensorFlow tile, for kernels that
            declare one), ``"numpy"`` (NumPy tiles, BLAS on one thread per
            tile: the fused tile of :mod:`cyntk.flows.host_tiles` for the
            Gaussian-FS kernel, the kernel's NumPy block for others) or
            ``"auto"``: XLA tiles on a GPU, and on a CPU where they measured
            faster (the ReLU NTK; the Gaussian-FS NumPy tiles are cheaper
            there: :attr:`TileForm.cpu <cyntk.flows.tf_tiles.TileForm>`).
            Scheduling, shards and devices are the same for both.
    """

    engine = "tf"

    def __init__(
        self,
        kernel,
        m: int,
        *,
        tile_size: int | None = None,
        n_threads: int | None = None,
        device: str | None = None,
        jit: bool = True,
        tiles: str = "auto",
    ):
        if tiles not in TILES:
            raise ValueError(f"`tiles` must be one of {', '.join(map(repr, TILES))}; received {tiles!r}.")
        gpu = _gpu(device)
        form = tile_form(kernel) if is_pairwise(kernel) and not has_own_matvec(kernel) else None
        auto = tiles == "auto" and form is not None and (gpu or form.cpu)
        self.tiles = "xla" if form is not None and (tiles == "xla" or auto) else "numpy"
        super().__init__(
            kernel,
            m,
            tile_size=default_tile_size(device, self.tiles) if tile_size is None else tile_size,
            n_threads=(2 if gpu else None) if n_threads is None else n_threads,
        )
        self.device = device
        self.jit = bool(jit)
        self.form = form if self.tiles == "xla" else None
        self.host = host_tile(kernel) if self.tiles == "numpy" and is_pairwise(kernel) else None

    # -------------------------------------------------------------- products
    def matvec(
        self, x1, x2, v, *, same: bool = False, shard=None, device: str | None = None, n_threads: int | None = None
    ) -> np.ndarray:
        """``u = Theta(x1, x2) v`` (or shard ``shard = (r, R)``'s part of it).

        Args:
            x1: float64 (P1, d) target points.
            x2: float64 (P2, d) source points.
            v: float64 (P2, m).
            same: ``x1`` and ``x2`` are the same point set (half the tiles).
            shard: None (the whole product) or ``(r, R)``: only the r-th of R
                disjoint parts whose sum is the product.
            device: device of this call's tiles (None: the engine's ``device``).
            n_threads: tile workers of this call (None: the engine's ``n_threads``).

        Returns:
            float64 (P1, m).

        Raises:
            ValueError: a kernel block of the wrong shape or with non-finite
                entries, a bad ``shard``.
        """
        shard = check_shard(shard)
        x1 = np.asarray(x1, dtype=np.float64)
        x2 = np.asarray(x2, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        n1 = len(x1)
        if n1 == 0 or len(x2) == 0:
            return np.zeros((n1, self.m))
        if self.pairwise and not self.own_matvec:
            return self._tiled(x1, x2, v, same and n1 == len(x2), shard, device or self.device, n_threads)
        rows = np.arange(n1) if shard is None else np.array_split(np.arange(n1), shard[1])[shard[0]]
        out = np.zeros((n1, self.m))
        if len(rows) == 0:
            return out
        sl = slice(int(rows[0]), int(rows[-1]) + 1)
        device = device or self.device
        if same and self.identity_on_same and n1 == len(x2):
            out[sl] = v[sl]  # e.g. the Delta kernel of a point set with itself is the identity
        elif self.own_matvec:
            with tf.device(device) if device else contextlib.nullcontext():  # the empirical NTK is TF
                out[sl] = self._check_result(self.kernel.matvec(x1[sl], x2, v), len(rows))
        else:
            out[sl] = self._row_chunks(x1[sl], x2, v)
        return out

    def grouped_matvec(self, x1, g1, x2, g2, v, *, same: bool = False, shard=None, **options) -> np.ndarray:
        """Block-diagonal product over groups (see :meth:`KernelProduct.grouped_matvec`), or one shard of it.

        ``options``: ``device``, ``n_threads`` of :meth:`matvec`.
        """
        if g1 is None:
            return self.matvec(x1, x2, v, same=same, shard=shard, **options)
        out = np.zeros((len(x1), self.m))
        for grp in np.unique(g1):
            r1 = np.flatnonzero(g1 == grp)
            r2 = r1 if same else np.flatnonzero(g2 == grp)
            if len(r2):
                out[r1] = self.matvec(x1[r1], x2[r2], v[r2], same=same, shard=shard, **options)
        return out

    # ----------------------------------------------------------------- tiles
    def _tiled(self, x1, x2, v, symmetric, shard, device=None, n_threads=None):
        n1, n2 = len(x1), len(x2)
        t1 = _tile_len(self.tile_size, n1)
        t2 = t1 if symmetric else _tile_len(self.tile_size, n2)
        nb1, nb2 = -(-n1 // t1), -(-n2 // t2)
        if symmetric:
            pairs = [(i, j) for i in range(nb1) for j in range(i, nb1)]
        else:
            pairs = [(i, j) for i in range(nb1) for j in range(nb2)]
        if shard is not None:
            pairs = pairs[shard[0] :: shard[1]]
        if not pairs:
            return np.zeros((n1, self.m))
        if self.form is not None:
            tile = self._tf_tile(x1, None if symmetric else x2, v, t1, t2, nb1, nb2, device)
        else:
            tile = self._np_tile(x1, None if symmetric else x2, v, t1, t2)
        rows = nb1 * t1
        n_workers = max(1, min(self.n_threads if n_threads is None else int(n_threads), len(pairs)))
        # NumPy tiles: one BLAS thread per tile (thin GEMMs; the tiles themselves run on n_workers)
        with threadpool_limits(limits=1, user_api="blas") if self.form is None else contextlib.nullcontext():
            return self._run(pairs, tile, rows, n_workers)[:n1]

    def _run(self, pairs, tile, rows, n_workers):
        """Tiles ``pairs`` on ``n_workers`` threads, each accumulating into its own (rows, m) output."""
        if n_workers == 1:
            out = np.zeros((rows, self.m))
            for i, j in pairs:
                tile(i, j, out)
            return out
        outs = [np.zeros((rows, self.m)) for _ in range(n_workers)]
        order = iter(pairs)
        lock = threading.Lock()
        failed = threading.Event()

        def worker(out):
            while not failed.is_set():
                with lock:
                    ij = next(order, None)
                if ij is None:
                    return
                try:
                    tile(ij[0], ij[1], out)
                except BaseException:
                    failed.set()  # the other callers stop at their next tile
                    raise

        with concurrent.futures.ThreadPoolExecutor(max_workers=n_workers) as pool:
            for f in [pool.submit(worker, out) for out in outs]:
                f.result()
        out = outs[0]
        for o in outs[1:]:
            out += o
        return out

    def _tf_tile(self, x1, x2, v, t1, t2, nb1, nb2, device):
        """``tile(i, j, out)``: adds tile (i, j)'s ``K v`` (and ``K^T v`` above the diagonal) into ``out``."""
        form, symmetric = self.form, x2 is None
        st1 = tuple(_pad_rows(a, nb1 * t1) for a in form.state(x1))
        st2 = st1 if symmetric else tuple(_pad_rows(a, nb2 * t2) for a in form.state(x2))
        vp2 = np.zeros((nb2 * t2 if not symmetric else nb1 * t1, self.m))
        vp2[: len(v)] = v
        vp1 = vp2 if symmetric else None
        modes = ("diagonal", "pair") if symmetric else ("rectangle",)
        fns = {mode: compiled_tile(form, mode, self.jit, (t1, t2)) for mode in modes}
        name = type(self.kernel).__name__
        dummy = np.zeros((1, self.m))

        def tile(i, j, out):
            a = slice(i * t1, (i + 1) * t1)
            b = slice(j * t2, (j + 1) * t2)
            diag = symmetric and i == j
            mode = "diagonal" if diag else ("pair" if symmetric else "rectangle")
            s1 = tuple(s[a] for s in st1)
            s2 = s1 if diag else tuple(s[b] for s in st2)
            with tf.device(device) if device else contextlib.nullcontext():
                u1, u2, ok = fns[mode](s1, s2, vp2[b], vp1[a] if mode == "pair" else dummy)
            if not bool(ok):
                raise ValueError(
                    f"kernel {name} returned non-finite entries in the tile of points "
                    f"[{a.start}, {a.stop}) x [{b.start}, {b.stop})."
                )
            out[a] += u1.numpy()
            if mode == "pair":
                out[b] += u2.numpy()

        return tile

    def _np_tile(self, x1, x2, v, t1, t2):
        """A NumPy tile: the kernel's fused host tile, else the NumPy engine's (kernel block, NumPy contraction)."""
        symmetric = x2 is None
        n1, n2 = len(x1), len(x1 if symmetric else x2)
        if self.host is not None:
            host = self.host
            st1 = host.state(x1)
            st2 = st1 if symmetric else host.state(x2)

            def inner(a, b, diag, v2, v1):
                s1 = tuple(s[a] for s in st1)
                return host.matvec(s1, s1 if diag else tuple(s[b] for s in st2), v2, v1, diag)

        else:
            inner = self._tile_function(x1, x2)

        def tile(i, j, out):
            a = slice(i * t1, min((i + 1) * t1, n1))
            b = slice(j * t2, min((j + 1) * t2, n2))
            diag = symmetric and i == j
            ua, ub = inner(a, b, diag, v[b], v[a] if symmetric and not diag else None)
            out[a] += ua
            if ub is not None:
                out[b] += ub

        return tile
