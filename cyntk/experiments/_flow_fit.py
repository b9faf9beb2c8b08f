"""One frozen-kernel flow of the experiments: full-batch steps until done or the metric stops being valid."""

from __future__ import annotations

import warnings
from typing import Any

import keras

__all__ = ["fit_flow"]


def fit_flow(model: Any, x: Any, y: Any, steps: int, callbacks: list[Any] | None = None) -> tuple[int, bool]:
    """Run ``steps`` full-batch steps of a :class:`~cyntk.flows.KernelModel` in order (no shuffling).

    A step that would make the metric non-positive-definite ends the flow (the model keeps its last
    valid metric, :class:`~cyntk.flows.kernel_model.NonPositiveMetricError`); ``RuntimeWarning``s of
    the steps are silenced.

    Returns:
        ``(completed, broke)``: the number of completed steps, and whether the flow broke down.
    """
    from cyntk.flows.kernel_model import NonPositiveMetricError

    hist = keras.callbacks.History()
    broke = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            model.fit(
                x,
                y,
                batch_size=len(x),
                epochs=int(steps),
                shuffle=False,
                verbose=0,
                callbacks=[hist, *(callbacks or [])],
            )
        except NonPositiveMetricError:
            broke = True
    return len(hist.history.get("loss", [])), broke
