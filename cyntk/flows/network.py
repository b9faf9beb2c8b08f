"""Neural-network metric flows: a network's own NTK flow by gradient descent on a flow's loss."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from cyntk.flows.kahler import FLOWS, FUNCTIONALS, _check_points, flow_loss, functional_value
from cyntk.models import losses as L
from cyntk.models.kahler_potential import KahlerPotentialGeometry

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import ArrayLike
    from tensorflow.types.experimental import TensorLike

    from cyntk.models.metric_model import MetricModel

__all__ = ["network_flow", "ricci_form", "metric_flow_loss"]


def ricci_form(model: MetricModel, x: TensorLike, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """``rho_{a bbar} = d_a dbar_b ln det g = -Ric_{a bbar}`` (B, n, n) of any cyntk metric model.

    Complex Hessian of ``ln det g`` along the local coordinates by autodiff
    through the model (forward-over-reverse, :func:`~cyntk.models._tfgeometry.local_ddbar`),
    in each point's own chart. ``d g/dt = rho`` is Kähler-Ricci flow (B.4).

    Args:
        model: a :class:`~cyntk.models.MetricModel` (FS, multiplicative, phi).
        x: (B, 2N) real points.

    Returns:
        ``(rho, g)``: (B, n, n) complex each.
    """
    from cyntk.models._tfgeometry import local_ddbar

    x = tf.cast(x, model.compute_dtype)
    patch, j = model.geometry.charts(x)
    frame = model.geometry.local_frame(x, patch, j)

    def logdet(xx, pp, jj):
        return tf.math.log(tf.math.real(L.determinant(model.metric_in_chart(xx, pp, jj, training))))

    _, rho = local_ddbar(logdet, x, frame["J"], aux=(patch, j))
    g = model.metric_in_chart(x, patch, j, training)
    return rho, g


def metric_flow_loss(
    model: MetricModel, x: TensorLike, weights: TensorLike, *, omega_bar: float = 1.0, training: bool = True
) -> tf.Tensor:
    """Velocity-matching loss of Kähler-Ricci flow in metric components (paper 2.14, 2.42).

    ``L = -mean_p(w_p sum_I stop_gradient(rho_I(x_p)) g_I(x_p)) / Omega_bar`` over the n^2
    real components I (cyntk's order) of ``rho = d dbar ln det g`` and g, so
    ``dL/dg_I(x_p) = -w_p rho_I / (P Omega_bar)``: with the local component-diagonal
    NTK ``Theta_IJ = delta_IJ Omega_bar delta_{mu_CY}`` gradient descent is
    ``dg/dt = rho = -Ric`` (B.4) exactly; a finite network's NTK smooths and mixes it
    (and need not keep the Kähler class). Works for any metric model.

    Returns:
        scalar tensor (only its gradient is meaningful).
    """
    from cyntk.models.hermitian import components_from_hermitian_tf

    rho, g = ricci_form(model, x, training=training)
    r = tf.stop_gradient(components_from_hermitian_tf(rho))
    gc = components_from_hermitian_tf(g)
    w = tf.cast(weights, gc.dtype)
    return -tf.reduce_mean(w * tf.reduce_sum(r * gc, axis=1)) / tf.constant(float(omega_bar), gc.dtype)


def network_flow(
    model: MetricModel,
    x: ArrayLike,
    weights: ArrayLike,
    target: str,
    *,
    steps: int,
    learning_rate: float,
    omega_bar: float = 1.0,
    every: int = 1,
    callback: Callable[[int, float], object] | None = None,
) -> list[float]:
    """A neural-network metric flow: plain gradient descent on a flow's loss.

    Each step is ``theta <- theta - lr dL/dtheta``, so the metric (or potential)
    moves by the network's NTK (paper eqs. 2.8, 2.12), flow time ``t = lr * steps``.
    ``L`` is

    * for a PhiModel and ``target`` in :data:`FLOWS`: the velocity-matching
      loss :func:`flow_loss` (local-NTK limit ``d phi/dt = V``);
    * for a PhiModel and ``target`` in :data:`FUNCTIONALS`: that functional;
    * for any metric model and ``target="kahler_ricci_metric"``:
      :func:`metric_flow_loss` (local-NTK limit ``dg/dt = -Ric``).

    Args:
        model: a cyntk metric model.
        x: (P, 2N) real points; weights: (P,) cymetric weights.
        target: see above.
        steps: number of steps; learning_rate: lr (= dt).
        omega_bar: Omega_bar of the velocity-matching losses.
        every: call ``callback(step, t)`` every this many steps (and at 0).
        callback: optional callable.

    Returns:
        list of the loss values per step (float).
    """
    if not isinstance(target, str) or not (target in FLOWS or target in FUNCTIONALS or target == "kahler_ricci_metric"):
        raise ValueError(
            f"`target` must be a flow {sorted(FLOWS)}, a functional {sorted(FUNCTIONALS)} "
            f"or 'kahler_ricci_metric'; received {target!r}."
        )
    lr = float(learning_rate) if isinstance(learning_rate, numbers.Real) else float("nan")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"`learning_rate` must be a positive number; received {learning_rate!r}.")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative integer; received {steps!r}.")
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"`every` must be a positive integer; received {every!r}.")
    if not (hasattr(model, "ncoords") and hasattr(model, "geometry")):
        raise TypeError(
            f"`model` must be a cyntk metric model (FSModel, MultiplicativeModel, PhiModel, ...); "
            f"received {type(model).__name__}."
        )
    if not (isinstance(omega_bar, numbers.Real) and np.isfinite(omega_bar) and omega_bar > 0):
        raise ValueError(f"`omega_bar` must be a positive number; received {omega_bar!r}.")
    xa, wa = _check_points(x, weights, model.ncoords)
    xs = tf.constant(xa, model.compute_dtype)
    ws = tf.constant(wa, model.compute_dtype)
    if target == "kahler_ricci_metric":

        def loss_fn():
            return metric_flow_loss(model, xs, ws, omega_bar=omega_bar)
    else:
        if not hasattr(model, "potential"):
            raise ValueError(
                f"`target` {target!r} needs a PhiModel; for other metric models use target='kahler_ricci_metric'."
            )
        geo = KahlerPotentialGeometry(model)
        if target in FLOWS:

            def loss_fn():
                return flow_loss(geo, xs, ws, target, omega_bar=omega_bar)
        else:

            def loss_fn():
                return functional_value(geo, xs, ws, target)

    variables = model.trainable_variables

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads):
            if g is not None:
                v.assign_sub(tf.cast(lr, v.dtype) * tf.cast(g, v.dtype))
        return loss

    out = []
    if callback is not None:
        callback(0, 0.0)
    for k in range(1, int(steps) + 1):
        out.append(float(step().numpy()))
        if not np.isfinite(out[-1]):
            raise FloatingPointError(f"the network flow's loss became non-finite at step {k} (learning rate {lr:g}).")
        if callback is not None and (k % every == 0 or k == steps):
            callback(k, k * lr)
    return out
