"""Kernels of metric flows: the empirical metric-NTK and fixed/analytic kernels.

Public API:

* :func:`metric_ntk` -- empirical metric-NTK Theta (P1, P2, m, m) of any Keras
  metric model (generic per-variable Jacobians, or structured fast paths).
* :func:`metric_ntk_vp` -- matrix-free product Theta(x_tgt, x_src) . v.
* :func:`metric_ntk_path` -- which path (structured, vectorised, per-point loop) it takes.
* :class:`Kernel` -- base class: ``kernel(x1, x2)`` -> (P1, P2) for
  component-diagonal kernels or (P1, P2, m, m) for full ones.
* :class:`GaussianFSKernel`, :class:`DeltaKernel` -- the paper's fixed kernels
  in the Fubini-Study distance.
* :class:`InfiniteWidthKernel`, :func:`infinite_width_kernel` -- analytic
  NNGP/NTK of fully connected networks for any elementwise activation
  (closed forms or Gauss-Hermite, :mod:`cyntk.kernels.dual`), NTK and standard
  parameterisations.
* :class:`InfiniteWidthMetricKernel` -- the infinite-width metric-NTK
  ``M(x) Theta_inf M(x')^T`` of a multiplicative metric model.
* :class:`EmpiricalNTKKernel` -- empirical NTK of a model at a weight snapshot.
* :class:`CosineNetwork`, :func:`cosine_ntk`, :func:`cosine_normalisation`,
  :class:`CosineNTKKernel` -- the cosine network of paper section 2.3.2.
* :class:`NTKDense`, :func:`ntk_mlp` -- finite networks in the NTK
  parameterisation.
* :class:`ManifoldGaussianKernel` -- the normalised (optionally rescaled)
  Gaussian on a manifold whose sigma -> 0 limit is the local flow.

Kernels are frozen: flows driven by them live in :mod:`cyntk.flows`.
"""

from cyntk.kernels.analytic import ACTIVATIONS, InfiniteWidthKernel, NNGPAndNTK, infinite_width_kernel
from cyntk.kernels.base import Kernel
from cyntk.kernels.cosine import (
    CosineNetwork,
    CosineNTKKernel,
    cosine_normalisation,
    cosine_ntk,
    paper_cosine_normalisation,
)
from cyntk.kernels.dual import DualActivation, dual_activation
from cyntk.kernels.empirical import EmpiricalNTKKernel
from cyntk.kernels.fs import DeltaKernel, GaussianFSKernel
from cyntk.kernels.infinite_metric import InfiniteWidthMetricKernel, network_infinite_width_kernel
from cyntk.kernels.manifold import ManifoldGaussianKernel, manifold_cosine_amplitude
from cyntk.kernels.ntk import (
    IMPLEMENTATIONS,
    OUTPUTS,
    metric_ntk,
    metric_ntk_path,
    metric_ntk_vp,
)
from cyntk.kernels.ntk_networks import NTKDense, ntk_mlp
from cyntk.kernels.structured import multiplicative_map

__all__ = [
    # empirical metric-NTK
    "metric_ntk",
    "metric_ntk_vp",
    "metric_ntk_path",
    "multiplicative_map",
    "IMPLEMENTATIONS",
    "OUTPUTS",
    # kernel interface and kernels
    "Kernel",
    "GaussianFSKernel",
    "DeltaKernel",
    "InfiniteWidthKernel",
    "EmpiricalNTKKernel",
    "CosineNTKKernel",
    # analytic infinite-width kernels and NTK-parameterised networks
    "infinite_width_kernel",
    "ACTIVATIONS",
    "NNGPAndNTK",
    "DualActivation",
    "dual_activation",
    "InfiniteWidthMetricKernel",
    "network_infinite_width_kernel",
    "NTKDense",
    "ntk_mlp",
    # cosine network (paper section 2.3.2)
    "CosineNetwork",
    "cosine_ntk",
    "cosine_normalisation",
    "paper_cosine_normalisation",
    # the normalised Gaussian on a manifold (local limit, paper 2.24-2.29)
    "ManifoldGaussianKernel",
    "manifold_cosine_amplitude",
]
