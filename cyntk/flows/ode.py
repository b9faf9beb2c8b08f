"""Continuous-time integration of frozen-kernel metric flows (paper eq. 2.12).

A :class:`~cyntk.flows.kernel_model.KernelModel` holds the metric in dual form
``g(x) = g0(x) - sum_b Theta(x, x_b) alpha_b`` over its train points x_b. The
discrete flow (2.12 with the train points as B) is the ODE ::

    d alpha_b/dt = dL/dg(x_b) |_{g = g0 - K alpha},    K_ab = Theta(x_a, x_b)
    <=>  dg_a/dt = - sum_b K_ab dL/dg_b                                         (2.12)

with ``L = sum_b s_b l(g_b)`` (``reduction="sum"``, s = sample weights; "mean"
divides by sum s). Its explicit Euler discretisation with step dt is eq. (3.5),
i.e. what ``KernelModel.fit`` does with ``SGD(learning_rate=dt)`` and full
batches. :func:`integrate_flow` solves the ODE itself with an adaptive method
instead: ``"dopri"`` (``tfp.math.ode.DormandPrince``, explicit, step size set by
the error estimate, so an unstable step is rejected rather than taken) or
``"bdf"`` (``tfp.math.ode.BDF``, implicit, for stiff flows; the Jacobian ::

    d(d alpha/dt)/d alpha = - Hess(x_a) K_ab   (block-diagonal per-point loss Hessians
                                                 times the kernel, (N m) x (N m))

is passed in closed form), or with ``"euler"``/``"rk4"`` at a fixed step.

**Stiffness.** Linearised at a state, Euler's step is stable only for
``dt < 2 / lambda_max`` with ``lambda_max`` the largest eigenvalue of
``Hess K`` (:func:`stability_limit`). For the paper's Gaussian-FS kernel
(sigma = 30: nearly constant over a chart, one dominant eigenvalue ~ N) with the
smooth loss (1 - eta)^2 on quintic points, lambda_max is ~1e4 while the smallest
positive eigenvalue is 1e-4 to 1e-1, a stiffness ratio of 1e5 or more. Just
above dt_max Euler's fastest mode oscillates (lambda_max falls along these
flows, so it may settle); a few times above it the metric leaves the positive
cone or overflows. The Dormand-Prince solver keeps its step inside its own
stability region (its cost grows like lambda_max t) and BDF's cost barely
grows; neither explodes at any flow time, and they agree. The paper's
explosions for unlucky step sizes are a property of the step, not of the flow
(``cyntk reproduce localflow`` shows the numbers).

The kernel over the train points is formed as one dense (N m) x (N m) matrix
(also for component-diagonal kernels), and BDF and :func:`stability_limit` use
dense (N m) x (N m) Jacobians, so this is for up to a few hundred train points
(m = 9 on the quintic); block-diagonal structure (clusters, charts) of the
KernelModel is respected. The closed-form Jacobian assumes a per-point loss
(block-diagonal Hessian); with the batch-level ``"volk"`` term the full
Hessian is used.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cyntk._validation import one_of
from cyntk.flows._kernel_common import chart_ids
from cyntk.flows.solvers import ODE_METHODS, integrate_ode
from cyntk.geometry import to_complex
from cyntk.models.hermitian import hermitian_from_components_tf

__all__ = ["KernelFlowODE", "integrate_flow", "stability_limit", "ODE_METHODS"]


class KernelFlowODE:
    """The ODE (2.12) of a KernelModel's train points, in dual coordinates alpha (N, m).

    Args:
        kernel_model: a dual-form :class:`~cyntk.flows.kernel_model.KernelModel`.
        y: (N, 2) ``[w, |Omega|^2]`` at the train points (``KernelModel.targets``).
        sample_weight: optional (N,) per-point weights s of the objective
            (e.g. ``w/N`` for the Monte-Carlo measure mu_CY).

    Attributes:
        x: (N, 2N_c) train points; g0: (N, m) base metric components;
        K: (N m, N m) dense kernel (component-major per point).
    """

    def __init__(self, kernel_model, y, *, sample_weight=None):
        from cyntk.flows.kernel_model import KernelModel

        if not isinstance(kernel_model, KernelModel):
            raise TypeError(
                f"`kernel_model` must be a cyntk.flows.KernelModel (dual form); received {type(kernel_model).__name__}."
            )
        if kernel_model.form != "dual":
            raise ValueError(
                "continuous-time integration needs a dual-form KernelModel (form='dual': "
                "g = g0 - K alpha); received form='primal'. Build the KernelModel with "
                "form='dual'."
            )
        self.model = kernel_model
        self.x = np.asarray(kernel_model.x_train.numpy(), dtype=np.float64)
        self.g0 = np.asarray(kernel_model.g0_train.numpy(), dtype=np.float64)
        self.m = int(kernel_model.m)
        self.n = int(kernel_model.n)
        N = len(self.x)
        y = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
        if y.shape != (N, 2) or not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
            raise ValueError(
                f"`y` must be real of shape (N, 2) = ({N}, 2), [w, |Omega|^2] at the model's "
                f"train points (KernelModel.targets(manifold, x_train)); received shape "
                f"{y.shape}, dtype {y.dtype}."
            )
        y = y.astype(np.float64)
        if not np.all(np.isfinite(y)) or np.any(y[:, 1] <= 0):
            raise ValueError(
                "`y` must be finite with |Omega|^2 = y[:, 1] > 0; received NaN/inf or non-positive |Omega|^2."
            )
        self.y = y
        s = np.ones(N) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if s.shape != (N,) or not np.all(np.isfinite(s)) or np.any(s < 0) or s.sum() <= 0:
            raise ValueError(
                f"`sample_weight` must be finite, >= 0 (not all 0) of shape (N,) = ({N},); received shape {s.shape}."
            )
        #: the sample weights as given (the logged loss is their weighted mean, as in ``fit``)
        self.sample_weight = s
        if kernel_model.reduction == "mean":
            s = s / s.sum()
        self.s = s
        # a per-point loss has a block-diagonal Hessian; the volk term couples the points
        self.pointwise = "volk" not in getattr(kernel_model, "_loss_spec", {})
        self.K = self._dense_kernel()
        self._K_tf = tf.constant(self.K)
        self._fns = {}

    def _groups(self):
        charts = self.model.surface.charts(to_complex(self.x))
        ids = chart_ids(charts, self.model.spec.ncoords)  # one id per full chart row (products too)
        labels = np.asarray(self.model.cluster_labels.numpy(), dtype=np.int64)
        return ids * (labels.max() + 1) + labels

    def _dense_kernel(self):
        kern = self.model.kernel
        N, m = len(self.x), self.m
        if hasattr(kern, "full"):
            blk = kern.full(self.x, None, n_components=m)  # (N, N, m, m)
        else:
            blk = np.asarray(kern(self.x, None))
            blk = blk[:, :, None, None] * np.eye(m) if blk.ndim == 2 else blk
        groups = self._groups()
        same = groups[:, None] == groups[None, :]
        blk = blk * same[:, :, None, None]
        # float64 whatever the kernel's dtype (a float32 empirical NTK, say): the flow's ODE,
        # its Hessians and eigenvalues are computed in float64
        return np.ascontiguousarray(blk.transpose(0, 2, 1, 3).reshape(N * m, N * m), dtype=np.float64)

    # ------------------------------------------------------------------- pieces
    def metric(self, alpha):
        """g (N, m) at the train points for dual coefficients alpha (N, m) (TensorFlow)."""
        a = tf.reshape(tf.cast(alpha, tf.float64), [-1])
        return tf.constant(self.g0) - tf.reshape(tf.linalg.matvec(self._K_tf, a), [-1, self.m])

    def objective(self, g):
        """``L = sum_b s_b l(g_b)`` for components g (N, m) (TensorFlow)."""
        per = self.model.pointwise_loss(
            hermitian_from_components_tf(tf.cast(g, tf.float64)), tf.constant(self.x), tf.constant(self.y)
        )["loss"]
        return tf.reduce_sum(tf.constant(self.s) * tf.cast(per, tf.float64))

    def loss_gradient(self, g):
        """``dL/dg`` (N, m) (TensorFlow)."""
        g = tf.cast(g, tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(g)
            L = self.objective(g)
        return tape.gradient(L, g)

    def rhs(self):
        """``rhs(t, alpha) -> d alpha/dt = dL/dg(g0 - K alpha)`` as a ``tf.function``."""
        if "rhs" not in self._fns:
            N, m = len(self.x), self.m

            @tf.function(input_signature=[tf.TensorSpec([], tf.float64), tf.TensorSpec([N, m], tf.float64)])
            def f(t, alpha):
                return self.loss_gradient(self.metric(alpha))

            self._fns["rhs"] = f
        return self._fns["rhs"]

    def hessians(self, g):
        """Loss Hessians: per point ``d^2 L / dg_b dg_b`` (N, m, m) for a pointwise loss,
        the full ``d^2 L / dg dg`` (N m, N m) when the loss couples points ("volk") (TensorFlow)."""
        g = tf.cast(g, tf.float64)
        with tf.GradientTape() as outer:
            outer.watch(g)
            with tf.GradientTape() as inner:
                inner.watch(g)
                L = self.objective(g)
            grad = inner.gradient(L, g)
        if self.pointwise:
            return outer.batch_jacobian(grad, g)
        nm = len(self.x) * self.m
        return tf.reshape(outer.jacobian(grad, g), [nm, nm])

    def jacobian(self):
        """``jac(t, alpha) -> d(d alpha/dt)/d alpha = -Hess K`` ((N m), (N m)) as a ``tf.function``."""
        if "jac" not in self._fns:
            N, m = len(self.x), self.m

            @tf.function(input_signature=[tf.TensorSpec([], tf.float64), tf.TensorSpec([N, m], tf.float64)])
            def jac(t, alpha):
                H = self.hessians(self.metric(alpha))
                if not self.pointwise:  # (N m, N m)
                    return -tf.linalg.matmul(H, self._K_tf)
                K = tf.reshape(self._K_tf, [N, m, N * m])  # H: (N, m, m)
                return -tf.reshape(tf.einsum("aij,ajc->aic", H, K), [N * m, N * m])

            self._fns["jac"] = jac
        return self._fns["jac"]

    def _alpha(self, alpha):
        N, m = len(self.x), self.m
        a = np.zeros((N, m)) if alpha is None else np.asarray(alpha, dtype=np.float64)
        if a.shape != (N, m) or not np.all(np.isfinite(a)):
            raise ValueError(
                f"`alpha` must be finite dual coefficients of shape (N, m) = ({N}, {m}); received shape {a.shape}."
            )
        return a

    def stiffness(self, alpha=None) -> np.ndarray:
        """Eigenvalues of ``Hess K`` at alpha (default 0): the decay rates of the linearised flow.

        They are real (``Hess K`` is similar to the symmetric ``K^1/2 Hess K^1/2``); a
        negative one is a direction in which the flow itself moves away.
        """
        J = self.jacobian()(tf.constant(0.0, tf.float64), tf.constant(self._alpha(alpha))).numpy()
        return -np.linalg.eigvals(J)


def stability_limit(kernel_model, y, *, sample_weight=None, alpha=None) -> dict:
    """Explicit-Euler stability bound of a kernel flow, linearised at a state.

    One Euler step (eq. 3.5 with learning rate dt) multiplies a perturbation
    along an eigenvector of ``Hess K`` with eigenvalue lambda > 0 by
    ``1 - dt lambda``: it is damped for ``dt < 2 / lambda`` and grows for larger
    steps. ``dt_max = 2 / lambda_max`` is the bound at the given state only
    (the Hessian changes along the flow); above it the fastest mode
    oscillates with growing amplitude until the non-linearity of the loss
    limits it or the metric leaves the positive cone.

    Args:
        kernel_model: a dual-form KernelModel.
        y: (N, 2) ``[w, |Omega|^2]`` at its train points.
        sample_weight: optional (N,) weights s of the objective.
        alpha: dual coefficients (N, m) to linearise at (default: the model's).

    Returns:
        dict with ``lambda_max`` (largest eigenvalue of ``Hess K``),
        ``lambda_min`` (smallest; < 0 where the flow itself is unstable),
        ``lambda_min_positive`` and ``dt_max = 2 / lambda_max``.
    """
    ode = KernelFlowODE(kernel_model, y, sample_weight=sample_weight)
    if alpha is None:
        alpha = np.asarray(kernel_model.alpha.numpy(), dtype=np.float64)
    lam = ode.stiffness(alpha).real
    lmax = float(lam.max())
    pos = lam[lam > 1e-12 * max(lmax, 1e-300)]
    return {
        "lambda_max": lmax,
        "lambda_min": float(lam.min()),
        "lambda_min_positive": float(pos.min()) if len(pos) else 0.0,
        "dt_max": 2.0 / lmax if lmax > 0 else np.inf,
    }


def integrate_flow(
    kernel_model,
    y,
    times,
    *,
    method="dopri",
    dt=None,
    sample_weight=None,
    rtol=1e-6,
    atol=1e-9,
    x_eval=None,
    update_model=True,
    max_num_steps=None,
) -> dict:
    """Integrate a KernelModel's frozen-kernel flow (2.12) in continuous time.

    Starts from the model's current dual coefficients alpha and flows to each
    of ``times`` (flow time t; Euler with ``SGD(learning_rate=dt)`` reaches t
    after t/dt full-batch epochs).

    Args:
        kernel_model: a dual-form KernelModel.
        y: (N, 2) ``[w, |Omega|^2]`` at its train points.
        times: increasing output times (T,) >= 0.
        method: one of :data:`ODE_METHODS` (``"dopri"`` adaptive explicit,
            ``"bdf"`` adaptive implicit with the closed-form Jacobian,
            ``"euler"`` = eq. 3.5, ``"rk4"``).
        dt: step of ``"euler"``/``"rk4"``.
        sample_weight: optional (N,) weights s of the objective (as Keras'
            sample weights in ``fit``).
        rtol, atol: tolerances of the adaptive methods.
        x_eval: optional (P, 2N_c) points where the metric is also returned
            (in the charts of the train points; clusters are respected).
        update_model: write alpha(times[-1]) into the model (and its cached
            ``u_train = K alpha``), so ``predict``/``evaluate``/``fit``
            continue from there.
        max_num_steps: cap of the adaptive solvers.

    Returns:
        dict with ``times`` (T,), ``alpha`` (T, N, m), ``g_train`` (T, N, m),
        ``loss`` (T,) (mean of the per-point loss weighted by ``sample_weight``,
        as ``fit`` logs it),
        ``n_rhs``, ``method`` and, with x_eval, ``g_eval`` (T, P, m).

    Raises:
        TypeError / ValueError: not a dual-form KernelModel, ``y`` or
            ``sample_weight`` of the wrong shape, unknown ``method``, missing
            ``dt`` for a fixed-step method, ``x_eval`` off the train charts.
        FloatingPointError: the solution became non-finite (explicit methods
            with too large a step).
        RuntimeError: an adaptive solver exceeded ``max_num_steps``.
    """
    one_of(method, "method", ODE_METHODS)
    if method in ("euler", "rk4") and dt is None:
        raise ValueError(f"`dt` (the fixed step) is required for method={method!r}; received None.")
    ode = KernelFlowODE(kernel_model, y, sample_weight=sample_weight)
    if x_eval is not None:
        x_eval = kernel_model._check_points(x_eval, "x_eval")
        kernel_model._groups_for(x_eval)  # chart check before the (long) integration
    alpha0 = np.asarray(kernel_model.alpha.numpy(), dtype=np.float64)
    jac = ode.jacobian() if method == "bdf" else None
    res = integrate_ode(
        ode.rhs(), alpha0, times, method=method, dt=dt, rtol=rtol, atol=atol, jacobian=jac, max_num_steps=max_num_steps
    )
    alphas = res["states"]
    g_train = np.stack([ode.metric(a).numpy() for a in alphas])
    sw = ode.sample_weight
    losses = []
    for g in g_train:
        per = kernel_model.pointwise_loss(
            hermitian_from_components_tf(tf.constant(g)), tf.constant(ode.x), tf.constant(ode.y)
        )["loss"].numpy()
        losses.append(float(np.sum(sw * per) / np.sum(sw)))
    out = {
        "times": res["times"],
        "alpha": alphas,
        "g_train": g_train,
        "loss": np.asarray(losses),
        "n_rhs": res["n_rhs"],
        "method": method,
    }
    if x_eval is not None:
        out["g_eval"] = _metric_at(kernel_model, x_eval, alphas)
    if update_model:
        a = alphas[-1]
        kernel_model.alpha.assign(a)
        kernel_model.u_train.assign((ode.K @ a.reshape(-1)).reshape(a.shape))
    return out


def _metric_at(kernel_model, x, alphas):
    """``g0(x) - sum_b Theta(x, x_b) alpha_b`` (T, P, m) for each alpha (charts and clusters respected)."""
    g0 = kernel_model._base_components_np(x)
    return np.stack([g0 - kernel_model._np_apply(x, np.asarray(a, dtype=np.float64)) for a in alphas])
