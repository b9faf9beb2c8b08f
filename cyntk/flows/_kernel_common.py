"""Names shared by the parts of :class:`~cyntk.flows.kernel_model.KernelModel`: option values, errors, checks."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cyntk.flows.distribute import all_min, replica_context
from cyntk.flows.options import NON_POSITIVE_POLICIES  # noqa: F401  (one definition, used by KernelModel)
from cyntk.models._tf import to_numpy

#: Accepted values of ``form``.
FORMS = ("dual", "primal")
#: Accepted values of ``mixed_charts``.
MIXED_CHART_POLICIES = ("raise", "separate")
#: Accepted values of ``reduction``.
REDUCTIONS = ("sum", "mean")
#: Named per-point losses (pointwise functions of g; Kähler, transition and
#: Ricci losses need derivatives of g or g at other points and cannot be flowed).
#: "sigma" is |1 - eta|, "sigma_squared" is (1 - eta)^2, eta = det g / (kappa |Omega|^2).
LOSS_NAMES = ("sigma", "sigma_squared", "volk")

_NOT_POINTWISE = ("kaehler", "transition", "ricci")
_MARKER = "cyntk-kernel-flow-error"
_BASE_CHUNK = 4096


class NonPositiveMetricError(RuntimeError):
    """A flow step would have made the metric non-positive-definite."""


# ----------------------------------------------------------------------------- helpers
def _check_sample_weight(sample_weight, x):
    """Refuse sample weights that are not finite, >= 0, one per point and not all 0.

    A negative weight turns the kernel flow's descent into ascent on that point.
    """
    sw = to_numpy(sample_weight)
    if sw is None:
        return
    if not np.issubdtype(sw.dtype, np.number) or np.iscomplexobj(sw):
        raise TypeError(f"`sample_weight` must be a real numeric array (P,); received dtype {sw.dtype}.")
    sw = sw.astype(np.float64)
    xa = to_numpy(x)
    if xa is not None and xa.ndim >= 1 and sw.reshape(-1).shape[0] != len(xa):
        raise ValueError(f"`sample_weight` must have one entry per point ({len(xa)}); received shape {sw.shape}.")
    if not np.all(np.isfinite(sw)):
        raise ValueError(f"`sample_weight` must be finite; received {int(np.sum(~np.isfinite(sw)))} NaN/inf entries.")
    if np.any(sw < 0):
        raise ValueError(
            f"`sample_weight` must be >= 0 (a negative weight makes the kernel flow ascend "
            f"on that point); received {int(np.sum(sw < 0))} negative entries, min "
            f"{sw.min():.3g}."
        )
    if sw.size and not np.any(sw > 0):
        raise ValueError(
            "`sample_weight` is 0 for every point: the flow would not move; give some points a positive weight."
        )


class _MinMetric(keras.metrics.Metric):
    """Smallest value seen since the last reset."""

    def __init__(self, name="min_eigenvalue", dtype="float64"):
        super().__init__(name=name, dtype=dtype)
        # under a tf.distribute strategy every replica assigns the same (all-gathered) minimum
        self.value = self.add_variable(
            shape=(),
            initializer=keras.initializers.Constant(np.inf),
            dtype=dtype,
            aggregation="only_first_replica",
            name="value",
        )

    def update_state(self, values, sample_weight=None):
        values = tf.cast(values, self.dtype)
        self.value.assign(tf.minimum(self.value, all_min(replica_context(), values)))

    def result(self):
        return self.value

    def reset_state(self):
        self.value.assign(np.inf)
