"""Analytic infinite-width kernels of fully connected networks, any elementwise activation.

The network is neural-tangents' ``stax.serial(Dense, phi, ..., Dense, phi,
Dense(1))`` with ``depth`` hidden layers; Dense layer ``l = 0..depth`` (the last
is the readout) has its own ``W_std_l``, ``b_std_l`` (``None``: no bias) and
fan-in ``n_l`` (``n_0 = d`` the input width, ``n_l`` the hidden width). In the
'ntk' parameterisation ``layer(h) = (W_std/sqrt(n)) h @ W + b_std b`` with
``W_ij, b_i ~ N(0, 1)``; in the 'standard' one ``layer(h) = h @ W + b`` with
``W_ij ~ N(0, W_std^2/n)``, ``b_i ~ N(0, b_std^2)``. In the infinite-width limit
the output components are independent Gaussian processes with covariance (NNGP)
``K`` and the neural tangent kernel is ``Theta_IJ = delta_IJ Theta``, from the
recursion (``S_0 = x.x'/d`` and ``T_0 = 0`` at the input)::

    Dense l:        K_l = W_l^2 S_l + b_l^2
                    Theta_l = K_l + W_l^2 T_l                       ('ntk')
                    Theta_l = n_l S_l + W_l^2 T_l + [l has a bias]  ('standard')
    phi after l:    S_{l+1} = E[phi(u) phi(v)],   T_{l+1} = E[phi'(u) phi'(v)] Theta_l

with ``(u, v) ~ N(0, [[K_l(x, x), K_l(x, x')], [K_l(x, x'), K_l(x', x')]])``; the
output kernels are ``K_depth`` and ``Theta_depth``. In the 'ntk'
parameterisation they do not depend on the widths; in the 'standard' one the
NTK grows with them. The expectations of every activation (closed forms for
relu, leaky_relu, abs, erf, gelu, sin, cos, identity; Gauss-Hermite quadrature
for tanh, sigmoid, softplus, silu, elu and custom ones) are in
:mod:`cyntk.kernels.dual`; ReLU's are written here in place for speed:
with ``cos t = k / sqrt(q q')`` and ``p = pi - t``::

    E[phi(u) phi(v)]   = sqrt(q q') (sin t + p cos t) / (2 pi)
    E[phi'(u) phi'(v)] = p / (2 pi)

For ``x2 = None`` the angle on the diagonal is exactly 0 (neural-tangents
computes it with ``arctan2`` and gets ~1e-8 there, see
``reference/ntk/README.txt``) and the NNGP diagonal is the exact variance.

Evaluation (float64, exact up to rounding for the closed forms; agrees with
neural-tangents to ~1e-15 relative): the ReLU terms are computed in place with
NumPy's SIMD ufuncs, with ``sin t = sqrt((1 - c)(1 + c))`` (as accurate as
``sin(arccos c)`` and much cheaper) and, for depth 1 in the 'ntk'
parameterisation (the paper's kernel), the layer-0 cosines from one GEMM of
per-point unit vectors and the factored form
``Theta = sqrt(q q') (W_1^2 / 2 pi) (sin t + 2 (pi - t) cos t) + b_1^2``,
whose rank-one factor and shift the tiled kernel products of
:mod:`cyntk.flows.product` apply to the vectors (``InfiniteWidthKernel.tile_matvec``).

The module also provides :class:`NTKDense`, the Keras layer in the 'ntk'
parameterisation, and :func:`ntk_mlp`, which builds the finite network whose
empirical NTK converges to these kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import keras
import numpy as np

from cyntk._validation import as_real_points, matching_widths, nonnegative_float, one_of, positive_int
from cyntk.kernels.base import Kernel
from cyntk.kernels.dual import CLOSED_FORMS, QUADRATURE, DualActivation, dual_activation

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike

__all__ = [
    "ACTIVATIONS",
    "PARAMETERIZATIONS",
    "Architecture",
    "NNGPAndNTK",
    "infinite_width_kernel",
    "InfiniteWidthKernel",
]

#: Activations by name: closed forms first, then the Gauss-Hermite ones.
ACTIVATIONS = tuple(CLOSED_FORMS) + tuple(QUADRATURE)
#: Parameterisations of the Dense layers.
PARAMETERIZATIONS = ("ntk", "standard")
_KINDS = ("ntk", "nngp", "both")
_RELU = CLOSED_FORMS["relu"]


class NNGPAndNTK(NamedTuple):
    """``kind='both'`` result: ``.nngp`` and ``.ntk`` (unpacks in that order: ``nngp, ntk = ...``)."""

    nngp: np.ndarray
    ntk: np.ndarray


@dataclass(frozen=True)
class Architecture:
    """Validated description of the network (see the module docstring).

    Attributes:
        activation: the :class:`~cyntk.kernels.dual.DualActivation`.
        depth: number of hidden layers.
        w2: ``W_std_l^2`` for the Dense layers ``l = 0..depth`` (the last is the readout).
        b2: ``b_std_l^2`` (0 where a layer has no bias).
        bias: whether each Dense layer has a bias.
        parameterization: ``'ntk'`` or ``'standard'``.
        widths: fan-ins ``n_1..n_depth`` of the Dense layers after the first
            ('standard' only; None for 'ntk').
    """

    activation: DualActivation
    depth: int
    w2: tuple
    b2: tuple
    bias: tuple
    parameterization: str
    widths: tuple | None


def _per_layer(value, name, n, allow_none=False):
    """A scalar or a sequence of length ``n`` -> tuple of ``n`` non-negative floats (or None)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(value)
        if len(values) != n:
            raise ValueError(
                f"`{name}` must be a number or a sequence of {n} numbers (one per Dense "
                f"layer, the readout last); received {len(values)} values."
            )
    else:
        values = [value] * n
    out = []
    for i, v in enumerate(values):
        if v is None and allow_none:
            out.append(None)
        else:
            out.append(nonnegative_float(v, f"{name}[{i}]" if n > 1 else name))
    return tuple(out)


def _iw_params(
    activation="relu",
    W_std=1.0,
    b_std=0.0,
    depth=1,
    kind="ntk",
    *,
    readout_W_std=None,
    readout_b_std=None,
    readout_bias=True,
    parameterization="ntk",
    width=None,
    quad_deg=64,
    kinds=_KINDS,
):
    """Validate the shared arguments of :func:`infinite_width_kernel` and :class:`InfiniteWidthKernel`."""
    if isinstance(quad_deg, bool) or not isinstance(quad_deg, (int, np.integer)) or quad_deg < 1:
        raise ValueError(
            f"`quad_deg` (Gauss-Hermite nodes per axis) must be a positive integer; received {quad_deg!r}."
        )
    act = dual_activation(activation, int(quad_deg))
    kind = one_of(kind, "kind", kinds)
    parameterization = one_of(parameterization, "parameterization", PARAMETERIZATIONS)
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"`depth` must be a non-negative integer (number of hidden layers); received {depth!r}.")
    depth = int(depth)
    w = list(_per_layer(W_std, "W_std", depth + 1))
    b = list(_per_layer(b_std, "b_std", depth + 1, allow_none=True))
    if readout_W_std is not None:
        w[-1] = nonnegative_float(readout_W_std, "readout_W_std")
    if readout_b_std is not None:
        b[-1] = nonnegative_float(readout_b_std, "readout_b_std")
    if not isinstance(readout_bias, (bool, np.bool_)):
        raise ValueError(f"`readout_bias` must be True or False; received {readout_bias!r}.")
    if not readout_bias:
        b[-1] = None
    widths = None
    if parameterization == "standard":
        if width is None and depth > 0:
            raise ValueError(
                "`width` (hidden width, or one per hidden layer) is required for "
                "parameterization='standard', whose NTK grows with the width; "
                "received None."
            )
        if depth > 0:
            ws = list(width) if isinstance(width, (list, tuple, np.ndarray)) else [width] * depth
            if len(ws) != depth:
                raise ValueError(
                    f"`width` must be an integer or {depth} integers (one per hidden layer); received {len(ws)} values."
                )
            widths = tuple(positive_int(v, "width") for v in ws)
        else:
            widths = ()
    arch = Architecture(
        act,
        depth,
        tuple(v * v for v in w),
        tuple(0.0 if v is None else v * v for v in b),
        tuple(v is not None for v in b),
        parameterization,
        widths,
    )
    return arch, kind


# ----------------------------------------------------------------------------- recursion
def _rsqrt(q):
    """1/sqrt(q), 0 where q = 0 (then the angle's cosine is 0, as in the reference form)."""
    out = np.zeros_like(q)
    np.divide(1.0, np.sqrt(q), out=out, where=q > 0)
    return out


def _relu_layer(k, theta, q1, q2, same, w2, b2):
    """One ReLU layer and the next Dense ('ntk'), in place: ``K_l -> K_{l+1}``, ``Theta_l -> Theta_{l+1}``.

    With ``c = cos t = K_l / sqrt(q q')`` (clipped to [-1, 1], exactly 1 on the
    diagonal of a set with itself) and ``p = pi - t``::

        K_{l+1}     = (W_{l+1}^2 / 2 pi) sqrt(q q') (sin t + p c) + b_{l+1}^2
        Theta_{l+1} = K_{l+1} + (W_{l+1}^2 / 2 pi) p Theta_l

    with ``sin t = sqrt((1 - c)(1 + c))`` (``1 - c`` and ``1 + c`` are exact
    where they are small, so this is as accurate as ``sin(arccos c)`` and
    avoids NumPy's slow float64 ``sin``). Every operation is an elementwise
    NumPy ufunc on (P1, P2) arrays, written into ``out=`` buffers: four arrays
    of the tile's size exist at once (``k``, ``theta`` and two scratch).

    Args:
        k: float64 (P1, P2) ``K_l``; overwritten (scratch).
        theta: float64 (P1, P2) ``Theta_l`` or None (NNGP only); updated in
            place to ``Theta_{l+1}``. May be ``k`` itself (layer 0, where
            ``Theta_0 = K_0``).
        q1, q2: float64 (P1,), (P2,) ``K_l(x, x)`` of the two point sets.
        same: the tile is a point set with itself.
        w2, b2: ``W_{l+1}^2``, ``b_{l+1}^2`` of the next Dense layer.

    Returns:
        ``(K_{l+1}, Theta_{l+1})`` arrays (P1, P2) (``Theta`` None when not asked).
    """
    r1 = _rsqrt(q1)
    r2 = r1 if same else _rsqrt(q2)
    c = np.multiply.outer(r1, r2)  # symmetric for same (the product commutes)
    c *= k
    np.clip(c, -1.0, 1.0, out=c)
    if same:
        np.fill_diagonal(c, 1.0)
    scratch = k if theta is not k else np.empty_like(k)
    p = np.arccos(c, out=scratch)  # t
    np.subtract(np.pi, p, out=p)  # p = pi - t
    if theta is not None:
        theta *= p  # p Theta_l (Theta_l itself is not needed again)
    s = np.subtract(1.0, c)  # sin t = sqrt((1 - c)(1 + c))
    c_plus = np.add(1.0, c)
    s *= c_plus
    np.sqrt(s, out=s)
    c *= p  # p cos t
    c += s
    a = w2 / (2.0 * np.pi)
    sq1 = np.sqrt(a * q1)  # the same factor on both sides keeps it symmetric
    np.multiply.outer(sq1, sq1 if same else np.sqrt(a * q2), out=c_plus)  # a sqrt(q q')
    c *= c_plus
    c += b2  # K_{l+1}
    if theta is not None:
        theta *= a
        theta += c  # Theta_{l+1}
    return c, theta


def _iw_state(x, arch):
    """Per-point state of float64 points (P, d) for the recursion.

    ``(x, h, q_0, ..., q_depth)``: ``q_l = K_l(x, x)`` (every layer's variance)
    and ``h = [W_0 x / sqrt(d), b_0] / sqrt(q_0)``, the unit vectors whose
    inner products are the layer-0 cosines ``K_0(x, x') / sqrt(q_0 q_0')``
    (rows with ``q_0 = 0`` are 0, so that cosine is 0 as in the reference
    form). Every entry has the points on its first axis.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    d = x.shape[1]
    w2, b2 = arch.w2[0], arch.b2[0]
    q = w2 * np.sum(x * x, axis=1) / d + b2
    h = np.empty((len(x), d + 1))
    h[:, :d] = x * math.sqrt(w2 / d)
    h[:, d] = math.sqrt(b2)
    h *= _rsqrt(q)[:, None]
    qs = [q]
    for layer in range(arch.depth):
        q = arch.w2[layer + 1] * arch.activation.variance(q) + arch.b2[layer + 1]
        qs.append(q)
    return (x, h, *qs)


def _relu1_core(st1, st2, kind, w2):
    """Depth-1 ReLU kernel ('ntk') in factored form ``Theta = (l l'^T) * T + b_1^2``.

    With ``c = cos t`` the layer-0 cosine (one GEMM of the unit vectors of
    :func:`_iw_state`), ``p = pi - t``, ``s = sin t = sqrt((1 - c)(1 + c))`` and
    ``l = sqrt(W_1^2 q_0 / 2 pi)`` (``W_1`` the readout's)::

        NNGP  K_1     = l l' (s + p c) + b_1^2
        NTK   Theta_1 = K_1 + (W_1^2 / 2 pi) p K_0 = l l' (s + 2 p c) + b_1^2

    (``K_0 = sqrt(q_0 q_0') c``). The rank-one factor ``l l'^T`` and the shift
    are left to the caller, which can apply them to the vectors of a kernel
    product instead of the (P1, P2) block.

    Returns:
        ``(l1, T, l2)``: float64 (P1,), (P1, P2), (P2,); for ``kind='both'``
        ``T`` is the pair ``(T_ntk, T_nngp)``.
    """
    same = st2 is None
    h1 = st1[1]
    c = h1 @ (h1 if same else st2[1]).T  # symmetric rank-k update for a set with itself
    np.clip(c, -1.0, 1.0, out=c)
    if same:
        np.fill_diagonal(c, 1.0)
    p = np.arccos(c)
    np.subtract(np.pi, p, out=p)  # p = pi - t
    s = np.subtract(1.0, c)  # sin t = sqrt((1 - c)(1 + c)), accurate near |c| = 1
    tmp = np.add(1.0, c)
    s *= tmp
    np.sqrt(s, out=s)
    c *= p
    if kind == "both":
        t = (np.add(c, c, out=tmp) + s, c + s)  # (NTK, NNGP)
    else:
        if kind == "ntk":
            c += c
        c += s
        t = c
    a = w2 / (2.0 * np.pi)
    l1 = np.sqrt(a * st1[2])
    return l1, t, (l1 if same else np.sqrt(a * st2[2]))


def _fast_relu1(arch):
    return arch.activation is _RELU and arch.depth == 1 and arch.parameterization == "ntk"


def _result(k, theta, kind):
    if kind == "ntk":
        return theta
    if kind == "nngp":
        return k
    return NNGPAndNTK(k, theta)


def _iw_block(st1, st2, arch, kind):
    """The recursion on one block of points (``st2 = None``: the set ``st1`` with itself).

    Args:
        st1, st2: states of :func:`_iw_state` (``st2`` None for the set with itself).
        arch: the :class:`Architecture`.
        kind: ``'ntk'``, ``'nngp'`` or ``'both'``.

    Returns:
        the NNGP, the NTK or :class:`NNGPAndNTK` (``kind``), float64 (P1, P2).
    """
    same = st2 is None
    x1, qs1 = st1[0], st1[2:]
    x2, qs2 = (None, None) if same else (st2[0], st2[2:])
    depth, w2, b2 = arch.depth, arch.w2, arch.b2
    if _fast_relu1(arch):
        l1, t, l2 = _relu1_core(st1, st2, kind, w2[1])
        scale = np.multiply.outer(l1, l2)  # the same vector on both sides keeps it symmetric
        out = {}
        for knd, blk in zip(("ntk", "nngp"), t) if kind == "both" else ((kind, t),):
            blk *= scale
            blk += b2[1]
            if same and knd == "nngp":
                np.fill_diagonal(blk, qs1[1])
            out[knd] = blk
        return _result(out.get("nngp"), out.get("ntk"), kind)
    need_ntk = kind != "nngp"
    standard = arch.parameterization == "standard"
    # S_0 = x.x'/d; x1 @ x1.T is computed by a symmetric rank-k update (exactly symmetric)
    s0 = x1 @ (x1 if same else x2).T
    d = x1.shape[1]
    k = s0 * (w2[0] / d)
    k += b2[0]
    if same:
        np.fill_diagonal(k, qs1[0])
    if arch.activation is _RELU and not standard and depth > 0:
        # Theta_0 = K_0, updated in place when only the NTK is asked
        theta = k if kind == "ntk" else (k.copy() if need_ntk else None)
        for layer in range(depth):
            k, theta = _relu_layer(
                k, theta, qs1[layer], qs1[layer] if same else qs2[layer], same, w2[layer + 1], b2[layer + 1]
            )
            if same:
                np.fill_diagonal(k, qs1[layer + 1])
        return _result(k, theta, kind)
    theta = None
    if need_ntk:
        theta = (s0 + 1.0 if arch.bias[0] else s0) if standard else k.copy()
    for layer in range(depth):
        q1 = qs1[layer]
        q2 = q1 if same else qs2[layer]
        e_phi, e_dphi = arch.activation.expectations(q1, q2, k, same)
        nxt = layer + 1
        k = w2[nxt] * e_phi + b2[nxt]
        if same:
            np.fill_diagonal(k, qs1[nxt])
        if need_ntk:
            theta *= e_dphi
            theta *= w2[nxt]
            if standard:
                theta += arch.widths[layer] * e_phi
                if arch.bias[nxt]:
                    theta += 1.0
            else:
                theta += k
    return _result(k, theta, kind)


def infinite_width_kernel(
    x1: ArrayLike,
    x2: ArrayLike | None = None,
    *,
    activation: str | DualActivation = "relu",
    W_std: float | Sequence[float] = 1.0,
    b_std: float | Sequence[float | None] | None = 0.0,
    depth: int = 1,
    kind: Literal["ntk", "nngp", "both"] = "ntk",
    readout_W_std: float | None = None,
    readout_b_std: float | None = None,
    readout_bias: bool = True,
    parameterization: Literal["ntk", "standard"] = "ntk",
    width: int | Sequence[int] | None = None,
    quad_deg: int = 64,
) -> np.ndarray | NNGPAndNTK:
    """Infinite-width NNGP / NTK of a fully connected network.

    See the module docstring for the architecture and the recursion; the result
    equals neural-tangents' ``stax`` ``kernel_fn(x1, x2, kind)`` for
    ``serial(Dense(w, W_std_0, b_std_0), phi, ..., Dense(1, W_std_depth, b_std_depth))``.
    ``infinite_width_kernel(x1, x2, **kw) == InfiniteWidthKernel(**kw)(x1, x2)``
    for every keyword ``kw`` of the class (the same names, defaults and checks).

    Args:
        x1: real array (P1, d).
        x2: real array (P2, d); ``None`` means ``x1`` (then the diagonal uses
            the exact angle 0).
        activation: a name of :data:`ACTIVATIONS` (closed forms: relu,
            leaky_relu (slope 0.2), abs, erf, gelu (exact), sin, cos, identity;
            Gauss-Hermite: tanh, sigmoid, softplus, silu, elu) or a
            :class:`~cyntk.kernels.dual.DualActivation`.
        W_std: weight standard deviation (>= 0): one for every Dense layer, or
            a sequence of ``depth + 1`` (the readout last).
        b_std: bias standard deviation (>= 0): one, or ``depth + 1`` of them;
            a ``None`` entry is a layer without bias.
        depth: number of hidden (nonlinear) layers (>= 0; 0 is a linear model).
        kind: ``'ntk'``, ``'nngp'`` or ``'both'`` (an :class:`NNGPAndNTK`
            named tuple: ``.nngp``, ``.ntk``; unpacks as ``nngp, ntk``).
        readout_W_std: the readout's ``W_std`` (overrides the last of ``W_std``).
        readout_b_std: the readout's ``b_std`` (overrides the last of ``b_std``).
        readout_bias: False for a readout without bias.
        parameterization: ``'ntk'`` (``W_std/sqrt(n) W``, width-independent
            kernels) or ``'standard'`` (``W ~ N(0, W_std^2/n)``; needs ``width``).
        width: hidden width, or one per hidden layer ('standard' only).
        quad_deg: Gauss-Hermite nodes per axis for the quadrature activations.

    Returns:
        float64 array (P1, P2) (an :class:`NNGPAndNTK` for ``kind='both'``);
        the kernel of each output component (``Theta_IJ = delta_IJ Theta``).
    """
    arch, kind = _iw_params(
        activation,
        W_std,
        b_std,
        depth,
        kind,
        readout_W_std=readout_W_std,
        readout_b_std=readout_b_std,
        readout_bias=readout_bias,
        parameterization=parameterization,
        width=width,
        quad_deg=quad_deg,
    )
    x1 = as_real_points(x1, "x1")
    same = x2 is None
    if x2 is not None:
        x2 = as_real_points(x2, "x2")
        matching_widths(x1, x2)
    st1 = _iw_state(x1, arch)
    st2 = None if same else _iw_state(x2, arch)
    return _iw_block(st1, st2, arch, kind)


@keras.saving.register_keras_serializable(package="cyntk")
class InfiniteWidthKernel(Kernel):
    """Infinite-width NTK (or NNGP) of a fully connected network, as a kernel.

    ``Theta_IJ(x, x') = delta_IJ Theta(x, x')`` with ``Theta`` from
    :func:`infinite_width_kernel` (recursion in :mod:`cyntk.kernels.analytic`,
    activations in :mod:`cyntk.kernels.dual`), which takes the same keyword
    arguments. The paper's "ReLU NTK" is
    ``InfiniteWidthKernel('relu', W_std=80.52, b_std=5.716, depth=1)``.

    Args:
        activation: a name of :data:`ACTIVATIONS` or a ``DualActivation``.
        W_std: weight standard deviation (one, or ``depth + 1``).
        b_std: bias standard deviation (one, or ``depth + 1``; None: no bias).
        depth: number of hidden layers.
        kind: ``'ntk'`` or ``'nngp'``.
        readout_W_std, readout_b_std, readout_bias: the readout's scales / bias.
        parameterization: ``'ntk'`` or ``'standard'``.
        width: hidden width(s) ('standard' only).
        quad_deg: Gauss-Hermite nodes per axis (quadrature activations).
    """

    component_diagonal = True
    pairwise = True
    symmetric = True
    positive_semidefinite = True  # NNGP and NTK covariances
    identity_on_same_points = False
    has_tile_api = True  # _block is tile_block(tile_state(x1), tile_state(x2))
    has_tf_tile = True  # cyntk.flows.tf_tiles has _block as TensorFlow ops
    has_fused_tile_matvec = True
    has_matrix_free_matvec = False

    def __init__(
        self,
        activation: str | DualActivation = "relu",
        *,
        W_std: float | Sequence[float] = 1.0,
        b_std: float | Sequence[float | None] | None = 0.0,
        depth: int = 1,
        kind: Literal["ntk", "nngp"] = "ntk",
        readout_W_std: float | None = None,
        readout_b_std: float | None = None,
        readout_bias: bool = True,
        parameterization: Literal["ntk", "standard"] = "ntk",
        width: int | Sequence[int] | None = None,
        quad_deg: int = 64,
    ) -> None:
        self._config = dict(
            activation=activation,
            W_std=W_std,
            b_std=b_std,
            depth=depth,
            kind=kind,
            readout_W_std=readout_W_std,
            readout_b_std=readout_b_std,
            readout_bias=readout_bias,
            parameterization=parameterization,
            width=width,
            quad_deg=quad_deg,
        )
        self.architecture, self.kind = _iw_params(
            activation,
            W_std,
            b_std,
            depth,
            kind,
            readout_W_std=readout_W_std,
            readout_b_std=readout_b_std,
            readout_bias=readout_bias,
            parameterization=parameterization,
            width=width,
            quad_deg=quad_deg,
            kinds=("ntk", "nngp"),
        )
        self.activation = self.architecture.activation.name
        self.depth = self.architecture.depth
        self.W_std = W_std
        self.b_std = b_std

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    def _block(self, x1, x2):
        return self.tile_block(self.tile_state(x1), None if x2 is None else self.tile_state(x2))

    # tiled evaluation (cyntk.flows.product.KernelProduct): per-point state computed once
    def tile_state(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-point state of validated float64 points (P, d), computed once per point set.

        ``(x, unit vectors of the layer-0 cosines, K_0(x, x), ..., K_depth(x, x))``;
        every entry has the points on its first axis, so a tile's state is
        ``tuple(a[rows] for a in state)``.
        """
        return _iw_state(x, self.architecture)

    def tile_block(self, state1: tuple[np.ndarray, ...], state2: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        """Block (P1, P2) between two (sliced) states of :meth:`tile_state`; ``state2=None``: same set."""
        return _iw_block(state1, state2, self.architecture, self.kind)

    def tile_matvec(
        self,
        state1: tuple[np.ndarray, ...],
        state2: tuple[np.ndarray, ...] | None,
        v2: np.ndarray,
        v1: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(Theta v2, Theta^T v1)`` of one tile without forming more than its core.

        Args:
            state1, state2: sliced states of :meth:`tile_state` (``state2=None``:
                the set ``state1`` with itself; then ``v1`` must be None).
            v2: float64 (P2, m); v1: float64 (P1, m) or None.

        Returns:
            ``(u1 (P1, m), u2 (P2, m) or None)``. For the depth-1 ReLU kernel
            (the paper's) the rank-one factor and shift of :func:`_relu1_core`
            are applied to the vectors: ``Theta v = l * (T (l' * v)) + b^2 sum(v)``.
        """
        arch = self.architecture
        if not _fast_relu1(arch):
            blk = self.tile_block(state1, state2)
            _check_finite(blk, self)
            return blk @ v2, (None if v1 is None else blk.T @ v1)
        w2, b2 = arch.w2[1], arch.b2[1]
        l1, t, l2 = _relu1_core(state1, state2, self.kind, w2)
        _check_finite(t, self)
        u1 = t @ (l2[:, None] * v2)
        u1 *= l1[:, None]
        if state2 is None and self.kind == "nngp":
            # the NNGP's diagonal is K_1(x, x) exactly (as in tile_block)
            u1 += (state1[3] - (l1 * l1 * t.diagonal() + b2))[:, None] * v2
        u1 += b2 * v2.sum(axis=0)
        if v1 is None:
            return u1, None
        u2 = t.T @ (l1[:, None] * v1)
        u2 *= l2[:, None]
        u2 += b2 * v1.sum(axis=0)
        return u1, u2


def _check_finite(block, kernel):
    if not np.isfinite(block).all():
        raise ValueError(
            f"kernel {type(kernel).__name__} returned non-finite entries for "
            f"{block.shape[0]} x {block.shape[1]} points."
        )
