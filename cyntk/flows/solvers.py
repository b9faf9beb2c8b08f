"""Time integrators for ODEs ``dy/dt = rhs(t, y)``: Euler, RK4, Dormand--Prince, BDF.

Used by the frozen-kernel flows (:mod:`cyntk.flows.ode`) and the Galerkin
φ flows (:mod:`cyntk.flows.phi_flow`).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np
import tensorflow as tf

__all__ = ["integrate_ode", "ODE_METHODS"]

# ----------------------------------------------------------------------------- ODEs
#: Time integrators of :func:`integrate_ode`.
ODE_METHODS = ("euler", "rk4", "dopri", "bdf")


def integrate_ode(
    rhs: Callable[[tf.Tensor, tf.Tensor], Any],
    y0: np.typing.ArrayLike,
    times: np.typing.ArrayLike,
    *,
    method: Literal["euler", "rk4", "dopri", "bdf"] = "dopri",
    dt: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    jacobian: Callable[[tf.Tensor, tf.Tensor], Any] | None = None,
    max_num_steps: int | None = None,
    callback: Callable[[float, np.ndarray], object] | None = None,
    stop: Callable[[float, np.ndarray], bool] | None = None,
) -> dict[str, Any]:
    """Integrate ``dy/dt = rhs(t, y)`` and return y at the requested times.

    Args:
        rhs: callable ``rhs(t, y) -> dy/dt`` on float64 tensors (y of any fixed
            shape). For ``"euler"``/``"rk4"`` it may also return NumPy arrays.
        y0: initial state (array).
        times: increasing output times (T,), ``times[0] >= 0``; the flow starts at t = 0.
        method: ``"euler"`` (explicit Euler with step ``dt``: gradient descent
            with learning rate dt, paper eq. 3.5), ``"rk4"`` (classical
            Runge-Kutta, step ``dt``), ``"dopri"`` (adaptive Dormand-Prince 5(4),
            ``tfp.math.ode.DormandPrince``) or ``"bdf"`` (adaptive implicit
            BDF for stiff problems, ``tfp.math.ode.BDF``; the Jacobian comes from
            ``jacobian(t, y)`` if given, else from autodiff of ``rhs``).
        dt: step of the fixed-step methods (required for them). Output times
            must be multiples of dt (to 1e-9 relative).
        rtol, atol: tolerances of the adaptive methods.
        jacobian: optional ``jacobian(t, y) -> d rhs/d y`` (size(y), size(y)) for BDF.
        max_num_steps: cap on the adaptive solvers' steps.
        callback: optional ``callback(t, y)`` called at every output time
            (fixed-step methods) -- for logging.
        stop: optional ``stop(t, y) -> bool`` checked at every output time of
            the fixed-step methods; when True the integration ends there (the
            result then holds fewer states than ``times``; ``stopped`` is True).

    Returns:
        dict with ``times`` (T,), ``states`` (T, *y.shape) float64,
        ``n_rhs`` (evaluations of rhs), ``n_steps`` and ``method``.

    Raises:
        FloatingPointError: the state became non-finite (a blown-up explicit
            flow); the states computed so far are in the exception's
            ``partial`` attribute.
    """
    if method not in ODE_METHODS:
        raise ValueError(f"`method` must be one of {ODE_METHODS}; received {method!r}.")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if len(times) == 0 or not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0) or times[0] < 0:
        raise ValueError(
            f"`times` must be a non-empty increasing sequence of times >= 0; received {times.tolist()[:5]}."
        )
    y0 = np.asarray(y0, dtype=np.float64)
    counter = {"n": 0}
    if not callable(rhs):
        raise TypeError(f"`rhs` must be callable rhs(t, y); received {type(rhs).__name__}.")
    if method in ("euler", "rk4"):
        if dt is None or not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"`dt` must be a positive step for method={method!r}; received {dt!r}.")
        return _fixed_step(rhs, y0, times, method, float(dt), callback, counter, stop)
    import tensorflow_probability as tfp

    shape = y0.shape

    def ode_fn(t, y):
        counter["n"] += 1
        return tf.reshape(tf.cast(rhs(t, tf.reshape(y, shape)), tf.float64), [-1])

    kwargs = dict(rtol=rtol, atol=atol, first_step_size=_initial_step(ode_fn, y0.reshape(-1), rtol, atol, 5))
    if max_num_steps is not None:
        kwargs["max_num_steps"] = int(max_num_steps)
    if method == "dopri":
        solver = tfp.math.ode.DormandPrince(**kwargs)
        jac = None
    else:
        solver = tfp.math.ode.BDF(**kwargs)
        jac = None if jacobian is None else (lambda t, y: tf.cast(jacobian(t, tf.reshape(y, shape)), tf.float64))
    out_times = times[times > 0]
    states = [y0] * int(np.sum(times == 0))
    n_steps = 0
    if len(out_times):
        y0_t = tf.constant(y0.reshape(-1))

        @tf.function
        def solve():  # one graph for the whole solve: no per-step Python overhead
            r = solver.solve(ode_fn, 0.0, y0_t, solution_times=out_times, jacobian_fn=jac)
            return r.states, r.diagnostics.num_ode_fn_evaluations

        try:
            res_states, res_nfev = solve()
        except tf.errors.InvalidArgumentError as err:
            if "max_num_steps" in str(err):
                raise RuntimeError(
                    f"the {method} solver needed more than max_num_steps={max_num_steps} steps to reach "
                    f"t = {out_times[-1]:g}: the flow is too stiff for it or not smooth (e.g. the sigma loss "
                    "|1 - eta| switches sign where eta = 1, so adaptive steps collapse). Use method='bdf', "
                    "a smooth loss, or a fixed-step method."
                ) from err
            raise
        sol = res_states.numpy().reshape((-1,) + shape)
        states.extend(list(sol))
        n_steps = int(res_nfev.numpy())
        counter["n"] = max(counter["n"], n_steps)
    all_states = np.asarray(states)
    if not np.all(np.isfinite(all_states)):
        exc = FloatingPointError(f"the {method} solution became non-finite.")
        exc.partial = {"times": times, "states": all_states}  # type: ignore[attr-defined]
        raise exc
    return {
        "times": times,
        "states": all_states,
        "n_rhs": int(counter["n"]),
        "n_steps": n_steps,
        "method": method,
        "stopped": False,
    }


def _initial_step(ode_fn, y0, rtol, atol, order):
    """Hairer-Norsett-Wanner's starting step (Solving ODEs I, II.4).

    TFP's default first step (1e-3) can land a stiff flow on a non-positive
    metric (NaN), from which its step control does not recover.
    """
    f0 = np.asarray(ode_fn(tf.constant(0.0, tf.float64), tf.constant(y0)))
    sc = atol + rtol * np.abs(y0)
    d0 = np.sqrt(np.mean((y0 / sc) ** 2))
    d1 = np.sqrt(np.mean((f0 / sc) ** 2))
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    f1 = np.asarray(ode_fn(tf.constant(h0, tf.float64), tf.constant(y0 + h0 * f0)))
    d2 = np.sqrt(np.mean(((f1 - f0) / sc) ** 2)) / h0
    m = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if m <= 1e-15 else (0.01 / m) ** (1.0 / (order + 1))
    h = min(100 * h0, h1)
    if not np.isfinite(h) or h <= 0:
        h = 1e-6
    return float(h)


def _fixed_step(rhs, y0, times, method, dt, callback, counter, stop=None):
    def f(t, y):
        counter["n"] += 1
        out = rhs(tf.constant(t, tf.float64), tf.constant(y))
        return np.asarray(out.numpy() if hasattr(out, "numpy") else out, dtype=np.float64).reshape(y.shape)

    steps = np.rint(times / dt).astype(np.int64)
    if np.any(np.abs(steps * dt - times) > 1e-9 * np.maximum(1.0, np.abs(times))):
        raise ValueError(
            f"with method={method!r} the output `times` must be multiples of dt={dt}; received {times.tolist()[:5]}."
        )
    y = y0.copy()
    t = 0.0
    k = 0
    states = []
    for target in steps:
        while k < target:
            if method == "euler":
                y = y + dt * f(t, y)
            else:
                k1 = f(t, y)
                k2 = f(t + dt / 2, y + dt / 2 * k1)
                k3 = f(t + dt / 2, y + dt / 2 * k2)
                k4 = f(t + dt, y + dt * k3)
                y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            k += 1
            t = k * dt
            if not np.all(np.isfinite(y)):
                err = FloatingPointError(
                    f"the {method} solution became non-finite at t = {t:g} (step {k}, dt = {dt:g})."
                )
                err.partial = {"times": times[: len(states)], "states": np.asarray(states)}
                raise err
        states.append(y.copy())
        if callback is not None:
            callback(t, y)
        if stop is not None and stop(t, y):
            return {
                "times": times[: len(states)],
                "states": np.asarray(states),
                "n_rhs": int(counter["n"]),
                "n_steps": int(k),
                "method": method,
                "stopped": True,
            }
    return {
        "times": times,
        "states": np.asarray(states),
        "n_rhs": int(counter["n"]),
        "n_steps": int(steps[-1]),
        "method": method,
        "stopped": False,
    }
