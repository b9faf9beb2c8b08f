"""Kernel tiles as TensorFlow ops: the entries of the frozen kernels, one (t1, t2) tile per call.

:class:`~cyntk.flows.tf_product.TFKernelProduct` evaluates a kernel product
``u = Theta v`` tile by tile; for the kernels below a tile is one
``tf.function`` (XLA-compiled, ``jit_compile=True``) that builds the tile's
entries from per-point state and contracts them with the vectors at once::

    (u1, u2, finite) = tile(state1, state2, v2, v1)     u1 = K v2,  u2 = K^T v1

so the (t1, t2) block lives only inside one fused XLA computation, on whatever
device is visible (CPU, GPU). ``finite`` says whether every entry of ``u1`` and
``u2`` is finite (a non-finite kernel entry always makes its row of ``u1``
non-finite: ``inf * 0`` and ``nan * x`` are NaN), so the engine can raise
instead of passing NaNs on.

The forms, each the same float64 formula as the kernel's NumPy ``_block``
(agreeing to rounding; ``arccos`` is the Cephes rational approximation, within
2.2e-16 relative of NumPy's, because XLA's own ``acos`` on CPU is a scalar
library call four times slower than the whole tile):

* :class:`~cyntk.kernels.fs.GaussianFSKernel`: ``exp(-arccos(sqrt(c2)) / (2 sigma))``
  from the squared overlaps ``c2`` of the unit vectors (two GEMMs), with the
  kernel's threshold on ``1 - c2`` and the exact symmetric form on diagonal tiles;
  on a product of projective spaces (``factor_slices``) the same per factor,
  ``exp(-sqrt(sum_F t_F d_F^2) / (2 sigma))``;
* :class:`~cyntk.kernels.analytic.InfiniteWidthKernel` with the ReLU activation
  in the 'ntk' parameterisation (any depth; depth 1 in the factored form of
  :func:`~cyntk.kernels.analytic._relu1_core`), and every depth-0 (linear) kernel;
* :class:`~cyntk.kernels.cosine.CosineNTKKernel`: ``(A^2/2) exp(-sigma_w^2 |x - x'|^2 / 2d)``
  with exact coordinate differences (as ``scipy.spatial.distance.cdist``);
* :class:`~cyntk.kernels.manifold.ManifoldGaussianKernel`: the normalised
  Gaussian in input or chart coordinates, times ``h(x) h(x')``.

A kernel class declares that it has a form here with
:attr:`~cyntk.kernels.base.Kernel.has_tf_tile`. Other kernels have none
(:func:`tile_form` returns None): the engine
evaluates their NumPy blocks per tile (other activations of the infinite-width
NTK, whose dual activations are NumPy quadratures), or calls their own
matrix-free ``matvec`` (empirical NTK, Delta kernel).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from cyntk.geometry import default_distance_threshold
from cyntk.kernels.analytic import InfiniteWidthKernel
from cyntk.kernels.cosine import CosineNTKKernel, cosine_normalisation
from cyntk.kernels.dual import CLOSED_FORMS
from cyntk.kernels.fs import GaussianFSKernel, _overlap_limit
from cyntk.kernels.manifold import ManifoldGaussianKernel

__all__ = ["TileForm", "tile_form", "compiled_tile", "acos", "MODES"]

# Cephes asin: asin(x) = x + x z P(z) / Q(z), z = x^2, for |x| <= 0.5 (relative error ~1e-16)
_ASIN_P = (
    4.253011369004428248960e-3,
    -6.019598008014123785661e-1,
    5.444622390564711410273e0,
    -1.626247967210700244449e1,
    1.956261983317594739197e1,
    -8.198089802484824371615e0,
)
_ASIN_Q = (
    -1.474091372988853791896e1,
    7.049610280856842141659e1,
    -1.471791292232726029859e2,
    1.395105614657485689735e2,
    -4.918853881490881290097e1,
)


def acos(c, *, nonnegative: bool = False):
    """``arccos(c)`` of a float64 tensor with entries in [-1, 1], from +, *, / and sqrt only.

    ``acos(|c|) = 2 asin(sqrt((1 - |c|)/2))`` for ``|c| > 1/2`` and
    ``pi/2 - asin(|c|)`` otherwise, with Cephes' rational ``asin`` on [0, 1/2];
    ``acos(c) = pi - acos(|c|)`` for ``c < 0`` (skipped when ``nonnegative``).
    Within 2.2e-16 relative (4.4e-16 absolute) of ``numpy.arccos``; XLA fuses
    it into the surrounding elementwise loop.
    """
    a = c if nonnegative else tf.abs(c)
    big = a > 0.5
    z = tf.where(big, 0.5 - 0.5 * a, a * a)
    x = tf.where(big, tf.sqrt(z), a)
    p = _ASIN_P[0]
    for coef in _ASIN_P[1:]:
        p = p * z + coef
    q = z + _ASIN_Q[0]
    for coef in _ASIN_Q[1:]:
        q = q * z + coef
    r = x + x * (z * p / q)
    out = tf.where(big, 2.0 * r, (math.pi / 4 - r) + math.pi / 4)
    return out if nonnegative else tf.where(c < 0, math.pi - out, out)


@dataclasses.dataclass(frozen=True)
class TileForm:
    """A kernel's tile as TensorFlow ops.

    Attributes:
        key: hashable description of the formula and its constants (the
            compiled functions are shared between kernels with equal keys).
        state: ``state(x)`` -> tuple of float64 NumPy arrays with the points
            on the first axis, computed once per point set.
        block: ``block(state1, state2, same)`` -> (t1, t2) float64 tensor
            (traced inside the compiled tile; ``same``: a diagonal tile of a
            set with itself, where ``state2 is state1``).
        cpu: whether the XLA tile is the faster choice on a CPU too (measured
            with ``benchmarks/bench_kernel_flow.py`` on 2 cores at 1e5 points,
            speed against the NumPy engine: the ReLU NTK's XLA tiles 1.27x;
            the Gaussian-FS ones 0.75x, slowed by XLA's CPU code for sqrt,
            arccos, exp and thin GEMMs, where the fused NumPy tiles of
            :mod:`cyntk.flows.host_tiles` reach 1.56x; unmeasured forms
            default to False).
    """

    key: tuple
    state: Callable
    block: Callable
    cpu: bool = False


_FUNCTIONS: dict = {}
_LOCK = threading.Lock()


#: Tile modes: a diagonal tile of a set with itself (``u1`` only), an off-diagonal tile of a set with
#: itself (``u1`` and ``u2 = K^T v1``), a tile between two sets (``u1`` only).
MODES = ("diagonal", "pair", "rectangle")


def compiled_tile(form: TileForm, mode: str, jit: bool = True, shape: tuple = ()):
    """The ``tf.function`` ``(state1, state2, v2, v1) -> (u1, u2, finite)`` of a form (cached).

    ``mode`` is one of :data:`MODES`; ``u2`` is ``K^T v1`` for ``"pair"`` and
    a (1, m) zero placeholder otherwise. ``shape``: the tile's (t1, t2), one
    function (one trace, one XLA compilation) per shape.
    """
    key = (form.key, mode, bool(jit), tuple(shape))
    with _LOCK:
        fn = _FUNCTIONS.get(key)
        if fn is None:
            block = form.block
            same = mode == "diagonal"

            def tile(state1, state2, v2, v1):
                k = block(state1, state1 if same else state2, same)
                u1 = tf.matmul(k, v2)
                finite = tf.reduce_all(tf.math.is_finite(u1))
                if mode == "pair":
                    u2 = tf.matmul(k, v1, transpose_a=True)
                    finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(u2)))
                else:
                    u2 = tf.zeros_like(v2[:1])
                return u1, u2, finite

            fn = tf.function(tile, jit_compile=jit, reduce_retracing=False, autograph=False)
            _FUNCTIONS[key] = fn
    return fn


# ----------------------------------------------------------------------------- Gaussian-FS
def _gaussian_form(kernel: GaussianFSKernel) -> TileForm:
    thr = default_distance_threshold() if kernel.threshold is None else kernel.threshold
    lim = 2.0 if thr > 0.5 else _overlap_limit(thr)  # c2 > lim: distance 0 (thr <= 1/2)
    big_thr = thr if thr > 0.5 else -1.0  # (1 - c2) < thr: distance 0 (thr > 1/2)
    scale = -0.5 / kernel.sigma

    def fs_distance(a1, a2, b2, same):
        re = tf.matmul(a1, a2, transpose_b=True)
        im = tf.matmul(a1, b2, transpose_b=True)
        c2 = re * re + im * im
        if same:  # exactly symmetric, 1 on the diagonal (GaussianFSKernel._symmetrise)
            c2 = (c2 + tf.transpose(c2)) * 0.5
            c2 = tf.linalg.set_diag(c2, tf.ones_like(c2[:, 0]))
        c2 = tf.minimum(c2, 1.0)
        close = tf.logical_or(c2 > lim, (1.0 - c2) < big_thr)
        c2 = tf.where(close, tf.ones_like(c2), c2)
        return acos(tf.sqrt(c2), nonnegative=True)

    weights = getattr(kernel, "t", None)
    if getattr(kernel, "factor_slices", None) is not None and weights is not None:
        # product of projective spaces: d = sqrt(sum_F t_F d_F^2), state (A_1, B_1, ..., A_m, B_m)
        def product_block(s1, s2, same):
            d2 = None
            for f, t_f in enumerate(weights):
                d = fs_distance(s1[2 * f], s2[2 * f], s2[2 * f + 1], same)
                term = (d * d) * t_f
                d2 = term if d2 is None else d2 + term
            return tf.exp(tf.sqrt(d2) * scale)

        key = ("gaussian_fs_product", lim, big_thr, scale, kernel.factor_slices, tuple(weights))
        return TileForm(key, kernel.tile_state, product_block)

    def block(s1, s2, same):
        return tf.exp(fs_distance(s1[0], s2[0], s2[1], same) * scale)

    return TileForm(("gaussian_fs", lim, big_thr, scale), kernel.tile_state, block)


# ----------------------------------------------------------------------------- infinite-width NTK
def _rsqrt(q):
    safe = tf.where(q > 0, q, tf.ones_like(q))
    return tf.where(q > 0, 1.0 / tf.sqrt(safe), tf.zeros_like(q))


def _infinite_width_form(kernel: InfiniteWidthKernel) -> TileForm | None:
    arch = kernel.architecture
    kind = kernel.kind
    relu = arch.activation is CLOSED_FORMS["relu"] and arch.parameterization == "ntk"
    if not (relu or arch.depth == 0) or (arch.depth == 0 and arch.parameterization != "ntk"):
        return None
    depth, w2, b2 = arch.depth, arch.w2, arch.b2
    key = ("infinite_width", kind, depth, w2, b2)
    if relu and depth == 1:
        a = w2[1] / (2.0 * math.pi)

        def relu1_state(x):
            st = kernel.tile_state(x)  # (x, h, q0, q1)
            return (st[1], np.sqrt(a * st[2]), st[3])

        def relu1_block(s1, s2, same):
            h1, l1, l2 = s1[0], s1[1], s2[1]
            c = tf.clip_by_value(tf.matmul(h1, s2[0], transpose_b=True), -1.0, 1.0)
            if same:
                c = tf.linalg.set_diag(c, tf.ones_like(c[:, 0]))
            p = math.pi - acos(c)
            s = tf.sqrt((1.0 - c) * (1.0 + c))
            t = s + (2.0 * p * c if kind == "ntk" else p * c)
            k = (l1[:, None] * l2[None, :]) * t + b2[1]
            if same and kind == "nngp":
                k = tf.linalg.set_diag(k, s1[2])  # the exact variance K_1(x, x)
            return k

        return TileForm(key, relu1_state, relu1_block, cpu=True)

    def state(x):
        st = kernel.tile_state(x)  # (x, h, q0, ..., q_depth)
        return (st[0], *st[2:])

    def block(s1, s2, same):
        x1, x2 = s1[0], s2[0]
        qs1, qs2 = s1[1:], s2[1:]
        d = int(x1.shape[1])
        k = tf.matmul(x1, x2, transpose_b=True) * (w2[0] / d) + b2[0]
        if same:
            k = tf.linalg.set_diag(k, qs1[0])
        theta = k
        for layer in range(depth):
            r1, r2 = _rsqrt(qs1[layer]), _rsqrt(qs2[layer])
            c = tf.clip_by_value((r1[:, None] * r2[None, :]) * k, -1.0, 1.0)
            if same:
                c = tf.linalg.set_diag(c, tf.ones_like(c[:, 0]))
            p = math.pi - acos(c)
            s = tf.sqrt((1.0 - c) * (1.0 + c))
            a = w2[layer + 1] / (2.0 * math.pi)
            sq = tf.sqrt(a * qs1[layer])[:, None] * tf.sqrt(a * qs2[layer])[None, :]
            k = sq * (s + p * c) + b2[layer + 1]
            if same:
                k = tf.linalg.set_diag(k, qs1[layer + 1])
            theta = (a * p) * theta + k
        return theta if kind == "ntk" else k

    return TileForm(key, state, block, cpu=True)


# ----------------------------------------------------------------------------- cosine, manifold
def _cosine_form(kernel: CosineNTKKernel) -> TileForm:
    sigma_w, amplitude = kernel.sigma_w, kernel.amplitude

    def block(s1, s2, same):
        x1, x2 = s1[0], s2[0]
        d = int(x1.shape[1])
        a = cosine_normalisation(sigma_w, d) if amplitude is None else amplitude
        diff = x1[:, None, :] - x2[None, :, :]  # exact differences, as cdist (fused by XLA)
        sq = tf.reduce_sum(diff * diff, axis=-1)
        return (0.5 * a * a) * tf.exp((-0.5 * sigma_w**2 / d) * sq)

    return TileForm(("cosine", sigma_w, amplitude), lambda x: (np.asarray(x, dtype=np.float64),), block)


def _manifold_form(kernel: ManifoldGaussianKernel) -> TileForm:
    mass, inv = kernel.mass, 0.5 / kernel.sigma**2

    def state(x):
        x = np.asarray(x, dtype=np.float64)
        u = np.ascontiguousarray(kernel.coordinates(x))
        return (u, np.sum(u * u, axis=1), kernel.h(x))

    def block(s1, s2, same):
        u1, u2 = s1[0], s2[0]
        sq = s1[1][:, None] + s2[1][None, :] - 2.0 * tf.matmul(u1, u2, transpose_b=True)
        k = mass * tf.exp(-inv * tf.maximum(sq, 0.0))
        return (s1[2][:, None] * k) * s2[2][None, :]

    return TileForm(("manifold_gaussian", mass, inv), state, block)


_FORMS: dict[type, Callable] = {
    GaussianFSKernel: _gaussian_form,
    InfiniteWidthKernel: _infinite_width_form,
    CosineNTKKernel: _cosine_form,
    ManifoldGaussianKernel: _manifold_form,
}


def tile_form(kernel) -> TileForm | None:
    """The TensorFlow tile of a kernel, or None when it has none (see the module docstring).

    Reads the kernel's declaration :attr:`Kernel.has_tf_tile <cyntk.kernels.base.Kernel.has_tf_tile>`
    (a subclass that overrides ``_block`` loses it), then the form of the
    nearest class of its hierarchy that has one.
    """
    if not getattr(kernel, "has_tf_tile", False):
        return None
    for cls in type(kernel).__mro__:
        build = _FORMS.get(cls)
        if build is not None:
            return build(kernel)
    return None
