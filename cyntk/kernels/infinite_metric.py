"""Infinite-width metric-NTK of a whole metric model.

cyntk's multiplicative model (cymetric's ``MultFSModel``) is
``g(x) = G(x) + G(x) * H(o(u(x)))`` with ``G`` the pulled-back Fubini-Study
metric, ``*`` the entrywise product, ``H`` the hermitian matrix of the
network's ``m = n^2`` real outputs ``o`` and ``u(x)`` the patch-normalised
point ``[Re z/z_k, Im z/z_k]`` (``k = argmax_i |z_i|``). The metric components
are affine in ``o``: ``c(g) = c(G) + M(x) o`` with the real (m, m) matrix
``M(x)[I, J] = c(G(x) * H(e_J))[I]`` (:func:`cyntk.kernels.structured.multiplicative_map`),
so the metric-NTK is ``M(x) Theta_o(u(x), u(x')) M(x')^T``. In the
infinite-width limit the network's NTK is ``Theta_o = Theta_inf(u, u') 1_m``
(:func:`cyntk.kernels.analytic.infinite_width_kernel`), hence ::

    Theta_inf_g[I, J](x, x') = Theta_inf(u(x), u(x')) (M(x) M(x')^T)[I, J].

:class:`InfiniteWidthMetricKernel` is this kernel as a full (P1, P2, m, m)
:class:`~cyntk.kernels.base.Kernel`, usable in
:class:`~cyntk.flows.kernel_model.KernelModel` and, through
:meth:`InfiniteWidthMetricKernel.as_ntk_fn`, as the kernel engine of
:class:`cyntk.callbacks.MetricNTKCallback`. :func:`network_infinite_width_kernel`
reads the infinite-width kernel of a network built from
:class:`~cyntk.kernels.ntk_networks.NTKDense` layers (e.g. by
:func:`~cyntk.kernels.ntk_networks.ntk_mlp`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np
import tensorflow as tf

from cyntk.kernels.analytic import ACTIVATIONS, InfiniteWidthKernel
from cyntk.kernels.base import Kernel
from cyntk.kernels.ntk_networks import NTKDense
from cyntk.kernels.structured import multiplicative_map

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import ArrayLike

__all__ = [
    "InfiniteWidthMetricKernel",
    "network_infinite_width_kernel",
    "patch_normalise",
]

#: Keras activation function names -> cyntk.kernels.dual activation names
_KERAS_NAMES = {"gelu_exact": "gelu", "linear": "identity", "swish": "silu"}


def patch_normalise(x: ArrayLike) -> np.ndarray:
    """Real points (P, 2N) -> ``[Re z/z_k, Im z/z_k]`` with ``k = argmax_i |z_i|`` (float64).

    The network input of :class:`cyntk.models.MultiplicativeModel` for any
    representative of the projective points.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1] // 2
    z = x[:, :n] + 1j * x[:, n:]
    k = np.argmax(np.abs(z), axis=1)
    zn = z / z[np.arange(len(z)), k][:, None]
    return np.concatenate([zn.real, zn.imag], axis=1)


def _activation_name(fn) -> str:
    if fn is None:
        return "identity"
    name = getattr(fn, "__name__", None)
    name = _KERAS_NAMES.get(name, name)
    if name not in ACTIVATIONS:
        raise ValueError(
            f"the network's activation {fn!r} has no infinite-width kernel in cyntk "
            f"(expected one of {ACTIVATIONS}, e.g. 'gelu' as ntk_mlp's exact gelu)."
        )
    return name


def network_infinite_width_kernel(network: keras.Model, kind: Literal["ntk", "nngp"] = "ntk") -> InfiniteWidthKernel:
    """The :class:`InfiniteWidthKernel` of a chain of :class:`NTKDense` layers.

    The hidden layers must share one activation (an :data:`ACTIVATIONS` name;
    Keras' ``'gelu'`` is not the exact gelu in float64, use
    :func:`~cyntk.kernels.ntk_networks.ntk_mlp`'s) and the readout must be linear.
    Per-layer ``W_std`` and ``b_std`` (``None`` without bias) are read from the
    layers.

    Args:
        network: a Keras model whose layers with weights are all ``NTKDense``.
        kind: ``'ntk'`` or ``'nngp'``.

    Raises:
        ValueError: naming the first layer that does not fit.
    """
    layers = [lay for lay in getattr(network, "layers", []) if lay.weights]
    if not layers or not all(isinstance(lay, NTKDense) for lay in layers):
        bad = next((lay for lay in layers if not isinstance(lay, NTKDense)), None)
        raise ValueError(
            "`network` must be a chain of NTKDense layers (ntk_mlp) to have an "
            "infinite-width kernel in the 'ntk' parameterisation; received "
            + ("no layers with weights" if bad is None else f"layer {bad.name!r} of type {type(bad).__name__}")
            + "."
        )
    names = [_activation_name(lay.activation) for lay in layers]
    if names[-1] != "identity":
        raise ValueError(f"the readout layer {layers[-1].name!r} must be linear; received activation {names[-1]!r}.")
    hidden = set(names[:-1]) or {"identity"}
    if len(hidden) != 1:
        raise ValueError(f"the hidden layers must share one activation; received {names[:-1]}.")
    return InfiniteWidthKernel(
        hidden.pop(),
        W_std=[lay.W_std for lay in layers],
        b_std=[lay.b_std if lay.use_bias else None for lay in layers],
        depth=len(layers) - 1,
        kind=kind,
    )


@keras.saving.register_keras_serializable(package="cyntk")
class InfiniteWidthMetricKernel(Kernel):
    """``Theta_inf_g(x, x') = Theta_inf(u(x), u(x')) M(x) M(x')^T`` of a multiplicative model.

    (Module docstring.) ``M(x)`` is computed from ``model.fs_metric(x)`` in the
    model's dtype (float64 models give float64 maps) and ``Theta_inf`` from the
    component-diagonal ``network_kernel`` on the patch-normalised points.

    Args:
        model: a multiplicative metric model (``model.network`` and
            ``model.fs_metric``, e.g. :class:`cyntk.models.MultiplicativeModel`).
        network_kernel: component-diagonal kernel of the network's inputs; by
            default :func:`network_infinite_width_kernel` of ``model.network``.
        patch_normalised: whether the network sees the patch-normalised point
            (True for ``MultiplicativeModel``).
    """

    component_diagonal = False
    pairwise = True
    symmetric = True
    positive_semidefinite = True  # sum_K k(x, x') M_K(x) M_K(x')^T with k PSD
    identity_on_same_points = False
    has_tile_api = False
    has_fused_tile_matvec = False
    has_matrix_free_matvec = False
    has_tf_tile = False  # NumPy blocks per tile

    def __init__(
        self, model: keras.Model, network_kernel: Kernel | None = None, *, patch_normalised: bool = True
    ) -> None:
        if getattr(model, "network", None) is None or not callable(getattr(model, "fs_metric", None)):
            raise ValueError(
                "`model` must be a multiplicative metric model with `network` and "
                f"`fs_metric` (e.g. MultiplicativeModel); received {type(model).__name__}."
            )
        if network_kernel is None:
            network_kernel = network_infinite_width_kernel(model.network)
        if not isinstance(network_kernel, Kernel) or not network_kernel.component_diagonal:
            raise ValueError(
                "`network_kernel` must be a component-diagonal Kernel (the network's "
                f"infinite-width kernel); received {network_kernel!r}."
            )
        self.model = model
        self.network_kernel = network_kernel
        self.patch_normalised = bool(patch_normalised)
        self.n_components = int(model.nfold) ** 2

    def get_config(self) -> dict[str, Any]:
        return {
            "model": self.model,  # serialised by keras.saving (the metric maps need its manifold only)
            "network_kernel": self.network_kernel,
            "patch_normalised": self.patch_normalised,
        }

    def metric_map(self, x: ArrayLike) -> np.ndarray:
        """``M(x)`` (P, m, m) float64: ``c(g) = c(G) + M(x) o``."""
        x = np.asarray(x, dtype=np.float64)
        G = self.model.fs_metric(tf.constant(x, dtype=self.model.compute_dtype))
        return np.asarray(multiplicative_map(G), dtype=np.float64)

    def network_inputs(self, x: ArrayLike) -> np.ndarray:
        """``u(x)``: the network's inputs (P, 2N)."""
        return patch_normalise(x) if self.patch_normalised else np.asarray(x, np.float64)

    def _block(self, x1, x2):
        u1 = self.network_inputs(x1)
        m1 = self.metric_map(x1)
        if x2 is None:
            k = self.network_kernel(u1)
            m2 = m1
        else:
            k = self.network_kernel(u1, self.network_inputs(x2))
            m2 = self.metric_map(x2)
        return np.einsum("ab,aIK,bJK->abIJ", k, m1, m2, optimize=True)

    def as_ntk_fn(self) -> Callable[..., np.ndarray]:
        """``ntk_fn(model, x, **kw) -> Theta_inf_g(x, x)`` for :class:`cyntk.callbacks.MetricNTKCallback`."""

        def ntk_fn(model: keras.Model, x: ArrayLike, **kwargs: Any) -> np.ndarray:
            del model, kwargs
            return self(np.asarray(x, dtype=np.float64))

        return ntk_fn
