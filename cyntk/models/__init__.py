"""Keras 3 metric models of Calabi--Yau hypersurfaces, cymetric-compatible.

Public API:

* :class:`FSModel`, :class:`MultiplicativeModel`, :class:`PhiModel` -- metric
  models ``model(x, training=..., j_elim=None) -> g`` (B, n, n) complex.
* :class:`MetricModel` -- their base class (losses, training, measures).
* :class:`MeasuresCallback`, :class:`LossWeightScheduler` -- callbacks.
* :class:`ProjectiveFeatures` -- scale-invariant input layer;
  :class:`HermitianMonomials`, :class:`LinearPotential`, :func:`linear_phi_model`
  -- the linear Kähler potentials of the φ flows.
* :class:`KahlerPotentialGeometry` -- eta, Laplacians and curvature of a
  Kähler potential by autodiff (paper appendix B).
* :mod:`cyntk.models.losses` -- functional losses and measures.
* :func:`hermitian_from_components_tf`, :func:`components_from_hermitian_tf`.
* :class:`ManifoldSpec`, :func:`manifold_spec`, :class:`TFGeometry` -- the
  manifold description and its in-graph geometry (charts, pullbacks, FS).
"""

from cyntk.models import losses
from cyntk.models._spec import ManifoldSpec, manifold_spec
from cyntk.models._tfgeometry import TFGeometry
from cyntk.models.callbacks import LossWeightScheduler, MeasuresCallback
from cyntk.models.hermitian import components_from_hermitian_tf, hermitian_from_components_tf
from cyntk.models.kahler_potential import QUANTITIES, KahlerPotentialGeometry
from cyntk.models.layers import HermitianMonomials, LinearPotential, ProjectiveFeatures, linear_phi_model
from cyntk.models.losses import (
    kaehler_loss,
    ricci_loss,
    ricci_measure,
    sigma_loss,
    sigma_measure,
    transition_loss,
    volk_loss,
    volk_measure,
)
from cyntk.models.metric_model import LOSS_TERMS, MEASURES, NONFINITE_POLICIES, MetricModel
from cyntk.models.models import FSModel, MultiplicativeModel, PhiModel

__all__ = [
    "FSModel",
    "MultiplicativeModel",
    "PhiModel",
    "MetricModel",
    "MeasuresCallback",
    "LossWeightScheduler",
    "ProjectiveFeatures",
    "ManifoldSpec",
    "manifold_spec",
    "TFGeometry",
    "hermitian_from_components_tf",
    "components_from_hermitian_tf",
    "losses",
    "sigma_loss",
    "kaehler_loss",
    "transition_loss",
    "volk_loss",
    "ricci_loss",
    "sigma_measure",
    "ricci_measure",
    "volk_measure",
    "LOSS_TERMS",
    "MEASURES",
    "NONFINITE_POLICIES",
    # Kähler potentials (paper appendix B; their flows are in cyntk.flows)
    "KahlerPotentialGeometry",
    "QUANTITIES",
    "HermitianMonomials",
    "LinearPotential",
    "linear_phi_model",
]
