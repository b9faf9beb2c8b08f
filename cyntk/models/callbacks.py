"""Keras callbacks for the metric models: validation measures and loss-weight schedules."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from numpy.typing import ArrayLike

from cyntk.models._spec import manifold_spec
from cyntk.models.metric_model import MEASURES, MetricModel

if TYPE_CHECKING:
    from cyntk.geometry.dataset import CYDataset

__all__ = ["MeasuresCallback", "LossWeightScheduler"]


def _validation_arrays(data: Any, y: ArrayLike | None) -> tuple[np.ndarray, np.ndarray, Any]:
    """(X, y, manifold-or-None) from the accepted ``data`` forms."""
    if y is not None:
        return np.asarray(data), np.asarray(y), None
    if hasattr(data, "X_val") and hasattr(data, "y_val"):  # CYDataset
        return np.asarray(data.X_val), np.asarray(data.y_val), data
    if hasattr(data, "keys") and "X_val" in data and "y_val" in data:  # dataset.npz / dict
        return np.asarray(data["X_val"]), np.asarray(data["y_val"]), None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1]), None
    raise TypeError(
        f"`data` must be a CYDataset, a cymetric dataset dict/npz with X_val and y_val, or a "
        f"tuple (X, y) (or pass y=...); received {type(data).__name__}."
    )


class MeasuresCallback(keras.callbacks.Callback):
    """Validation measures of conventions §8, written into the epoch ``logs``.

    At the end of every ``every``-th epoch, computes
    :meth:`MetricModel.measures` on the validation points and adds
    ``sigma_val``, ``kaehler_val``, ``transition_val``, ``volk_val`` and
    ``ricci_val`` (those requested) to ``logs``, so ``History``,
    ``EarlyStopping(monitor="sigma_val")`` and TensorBoard see them. Values
    are exact averages over all validation points (no batch weighting).

    Args:
        data: a ``CYDataset`` (its ``X_val``/``y_val`` are used and its
            manifold is checked against the model's), a cymetric dataset
            dict/``np.load`` result with ``X_val`` and ``y_val``, a tuple
            ``(X, y)``, or an array X with ``y`` given.
        y: (P, 2) ``[w, |Omega|^2]`` when ``data`` is an array.
        measures: names among ``("sigma", "kaehler", "transition", "volk",
            "ricci")``.
        batch_size: points per evaluation batch.
        every: compute every this many epochs (and at the last epoch of fit).
        initial: also compute before training; stored in ``self.initial``.

    Attributes:
        history: dict ``"<name>_val"`` -> list of values, with ``epochs`` the
            0-based epochs they belong to.
    """

    def __init__(
        self,
        data: CYDataset | Mapping[str, ArrayLike] | tuple[ArrayLike, ArrayLike] | ArrayLike,
        y: ArrayLike | None = None,
        *,
        measures: Iterable[str] = MEASURES,
        batch_size: int = 1000,
        every: int = 1,
        initial: bool = False,
    ) -> None:
        super().__init__()
        self.x, self.y, self._dataset = _validation_arrays(data, y)
        measures = tuple(measures)
        unknown = [m for m in measures if m not in MEASURES]
        if unknown or not measures:
            raise ValueError(f"`measures` must be a non-empty selection of {MEASURES}; received {list(measures)}.")
        for arg, val in (("batch_size", batch_size), ("every", every)):
            if isinstance(val, bool) or not isinstance(val, numbers.Integral) or val < 1:
                raise ValueError(f"`{arg}` must be a positive integer; received {val!r}.")
        self.measures = measures
        self.batch_size = int(batch_size)
        self.every = int(every)
        self.initial_requested = bool(initial)
        self.initial: dict[str, float] | None = None
        self.history: dict[str, list[Any]] = {"epochs": []}
        self._checked_for: MetricModel | None = None

    def _check(self) -> None:
        model = self.model
        if not isinstance(model, MetricModel):
            raise TypeError(f"MeasuresCallback needs a cyntk MetricModel; received {type(model).__name__}.")
        if self._checked_for is model:
            return
        if self._dataset is not None and hasattr(self._dataset, "manifold"):
            spec = manifold_spec(self._dataset)
            if not spec.same_manifold(model.spec):  # hypersurfaces and CICYs compare either way
                raise ValueError(
                    f"`data` belongs to {spec.describe()}, but the model was built for "
                    f"{model.spec.describe()}; pass validation data of the model's manifold."
                )
        model.check_data(self.x, self.y, name="data")
        self._checked_for = model

    def compute(self) -> dict[str, float]:
        """The requested measures now, as a dict ``"<name>_val"`` -> float."""
        self._check()
        vals = self.model.measures(self.x, self.y, batch_size=self.batch_size, which=self.measures)
        return {f"{k}_val": v for k, v in vals.items()}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._check()
        self._epochs = (self.params or {}).get("epochs")
        if self.initial_requested:
            self.initial = self.compute()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        last = self._epochs is not None and epoch + 1 == self._epochs
        if (epoch + 1) % self.every and not last:
            return
        vals = self.compute()
        if logs is not None:
            logs.update(vals)
        self.history["epochs"].append(epoch)
        for k, v in vals.items():
            self.history.setdefault(k, []).append(v)


class LossWeightScheduler(keras.callbacks.Callback):
    """Set the loss weights at the start of each epoch (cymetric's AlphaCallback).

    Args:
        schedule: callable ``schedule(epoch, weights) -> dict`` receiving the
            0-based epoch and the current weights dict and returning the
            weights to change (e.g. ``{"kaehler": 0.0, "volk": 1.0}``), or
            None for no change. Switching terms on or off takes effect in
            that epoch (the step functions are rebuilt).
    """

    def __init__(self, schedule: Callable[[int, dict[str, float]], Mapping[str, float] | None]) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                f"`schedule` must be callable (epoch, weights) -> dict; received {type(schedule).__name__}."
            )
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not isinstance(self.model, MetricModel):
            raise TypeError(f"LossWeightScheduler needs a cyntk MetricModel; received {type(self.model).__name__}.")
        new = self.schedule(epoch, self.model.loss_weights)
        if new:
            self.model.set_loss_weights(**dict(new))
