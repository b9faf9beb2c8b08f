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
def chart_ids(charts, ncoords: int) -> np.ndarray:
    """One int64 id per chart row (P, m + K) of ``CompleteIntersection.charts``.

    The row read as digits in base ``ncoords``: for a hypersurface (rows
    ``(k, j)``: patch, eliminated coordinate) the id is ``k * N + j``.
    """
    c = np.asarray(charts, dtype=np.int64)
    c = c.reshape(len(c), -1)
    if float(ncoords) ** c.shape[1] >= 2.0**62:
        raise ValueError(f"chart rows of {c.shape[1]} entries in base {ncoords} do not fit an int64 id.")
    ids = np.zeros(len(c), dtype=np.int64)
    for col in range(c.shape[1]):
        ids = ids * int(ncoords) + c[:, col]
    return ids


def chart_row(chart_id: int, ncoords: int, width: int) -> tuple[int, ...]:
    """The chart row ``(one indices..., eliminated...)`` of an id of :func:`chart_ids`."""
    out = []
    v = int(chart_id)
    for _ in range(width):
        v, r = divmod(v, int(ncoords))
        out.append(r)
    return tuple(reversed(out))


def chart_label(chart_id: int, ncoords: int, nproj: int, nhyper: int) -> str:
    """A chart for messages: ``(k=.., j=..)`` for a hypersurface, else its one indices and eliminated coordinates."""
    row = chart_row(chart_id, ncoords, nproj + nhyper)
    if nproj == 1 and nhyper == 1:
        return f"(k={row[0]}, j={row[1]})"
    return f"(one={row[:nproj]}, elim={row[nproj:]})"


def chart_advice(nproj: int, nhyper: int) -> str:
    """How to sample points in one chart (for error messages)."""
    if nproj == 1 and nhyper == 1:
        return "M.sample_points(n, chart=(k, j))"
    return "M.sample_points(n, chart=row), row = one index per factor then one eliminated coordinate per equation"


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
