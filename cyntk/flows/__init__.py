"""Metric flows driven by frozen kernels, by Kähler potentials and by networks.

Public API:

* :class:`KernelModel` -- frozen-kernel metric flows (paper eq. 3.5) through
  Keras ``compile``/``fit``/``evaluate``/``predict``; :class:`NonPositiveMetricError`.
* :class:`PositivityGuard`, :class:`Chunking` -- its option groups.
* :class:`TFKernelProduct` -- the kernel-vector product engine underneath
  (XLA-compiled TensorFlow tiles on any device, sharded across the replicas
  of a ``tf.distribute`` strategy); :class:`KernelProduct` -- the NumPy
  reference engine; :class:`WorkerLostError` -- a lost worker during a flow.
* :class:`KernelFlowODE`, :func:`integrate_flow`, :func:`stability_limit` --
  the continuous-time flow (paper eq. 2.12) with adaptive or fixed steps;
  :func:`integrate_ode`, :data:`ODE_METHODS` -- the integrators.
* :func:`flow_search`, :class:`FlowSearchResult` -- Bayesian optimisation of
  flow hyperparameters with a fresh point set per trial.
* :func:`local_flow_velocity`, :func:`kernel_flow_velocity`,
  :func:`loss_gradient`, :func:`sigma_sweep` -- the local limit of Gaussian
  kernel flows (paper 2.24-2.37).
* :data:`FLOWS`, :data:`FUNCTIONALS`, :class:`FlowSpec`, :func:`flow_velocity`,
  :func:`flow_loss`, :func:`functional_value`, :func:`kahler_measures`,
  :class:`PhiFlow` -- flows of the Kähler potential (paper appendix B).
* :func:`network_flow`, :func:`ricci_form`, :func:`metric_flow_loss` -- a
  network's own NTK flow by gradient descent on a flow's loss.
"""

from cyntk.flows.distribute import WorkerLostError
from cyntk.flows.kahler import FLOWS, FUNCTIONALS, FlowSpec, flow_loss, flow_velocity, functional_value, kahler_measures
from cyntk.flows.kernel_model import KernelModel, NonPositiveMetricError
from cyntk.flows.local import kernel_flow_velocity, local_flow_velocity, loss_gradient, sigma_sweep
from cyntk.flows.network import metric_flow_loss, network_flow, ricci_form
from cyntk.flows.ode import KernelFlowODE, integrate_flow, stability_limit
from cyntk.flows.options import Chunking, PositivityGuard
from cyntk.flows.phi_flow import PhiFlow
from cyntk.flows.product import KernelProduct
from cyntk.flows.search import FlowSearchResult, flow_search
from cyntk.flows.solvers import ODE_METHODS, integrate_ode
from cyntk.flows.tf_product import TFKernelProduct

__all__ = [
    # frozen-kernel flows
    "KernelModel",
    "NonPositiveMetricError",
    "PositivityGuard",
    "Chunking",
    "KernelProduct",
    "TFKernelProduct",
    "WorkerLostError",
    "flow_search",
    "FlowSearchResult",
    # continuous time
    "KernelFlowODE",
    "integrate_flow",
    "stability_limit",
    "integrate_ode",
    "ODE_METHODS",
    # local limit
    "local_flow_velocity",
    "kernel_flow_velocity",
    "loss_gradient",
    "sigma_sweep",
    # Kähler-potential flows (paper appendix B)
    "FLOWS",
    "FUNCTIONALS",
    "FlowSpec",
    "flow_velocity",
    "flow_loss",
    "functional_value",
    "kahler_measures",
    "PhiFlow",
    # network flows
    "network_flow",
    "ricci_form",
    "metric_flow_loss",
]
