"""Keras metric models of Calabi--Yau hypersurfaces (cymetric-compatible).

All models map real points ``x = [Re z, Im z]`` (B, 2N) to the metric
``g_{a bbar}`` (B, n, n), complex64 for float32 models and complex128 for
float64 models, in each point's own local chart (patch ``k`` = coordinate of
largest modulus, elimination ``j = argmax_{i != k} |dQ/dz_i|``, local
coordinates ``z_{g_a}/z_k`` with the remaining indices in increasing order;
conventions §3). The call signature is cymetric's:
``model(x, training=..., j_elim=None)``.

``G`` denotes the Fubini--Study metric pulled back to the hypersurface,
``G = J g_FS(t) J^H`` with ``g_FS = (t/pi) dd̄ ln|z|^2`` (conventions §4.2).

* :class:`FSModel`: ``g = G``; no weights.
* :class:`MultiplicativeModel`: ``g = G + G ⊙ H(nn(x))`` with the hermitian
  map ``H`` of conventions §6.1 (cymetric's ``MultFSModel``).
* :class:`PhiModel`: ``g = G + J (dd̄ phi) J^H`` with a scalar network phi
  (cymetric's ``PhiFSModel``); Kähler by construction.

Training is plain ``model.compile(optimizer); model.fit(X, y)`` with
``y = [w, |Omega|^2]`` (P, 2) (cymetric's ``y_train`` layout). The loss per
point is ``L = sigma*σ + kaehler*K + transition*T + volk*V + ricci*R``
(conventions §7), each weight a named, non-negative constructor argument;
terms with weight 0 are not computed. The batch loss is the (sample-weighted)
mean of ``L`` over the batch; each term is logged under ``<term>_loss`` with
exact per-sample averaging over the epoch.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cyntk.models import losses as L
from cyntk.models._spec import manifold_spec
from cyntk.models._tf import marked_message
from cyntk.models._tfcicy import make_tf_geometry
from cyntk.models._tfgeometry import _tangents_for, holomorphic_derivatives, jvp, local_ddbar
from cyntk.models.hermitian import hermitian_from_components_tf

if TYPE_CHECKING:
    from tensorflow.types.experimental import TensorLike
    from typing_extensions import Self

    from cyntk.models._spec import ManifoldLike

__all__ = ["MetricModel", "FSModel", "MultiplicativeModel", "PhiModel", "LOSS_TERMS", "NONFINITE_POLICIES", "MEASURES"]

#: Names of the loss terms, in cymetric's order.
LOSS_TERMS = ("sigma", "kaehler", "transition", "volk", "ricci")
#: Accepted values of ``nonfinite``.
NONFINITE_POLICIES = ("raise", "skip_step", "ignore")
#: Names of the validation measures (logged as ``<name>_val``).
MEASURES = ("sigma", "kaehler", "transition", "volk", "ricci")

_NONFINITE_MARKER = "cyntk-nonfinite-loss"
#: Relative residual |Q(z)| / sum_m |c_m z^m| above which points are "not on the manifold".
_RESIDUAL_TOL = 1e-4


def _check_weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"loss weight `{name}` must be a real number >= 0; received {value!r} ({type(value).__name__})."
        )
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"loss weight `{name}` must be a finite number >= 0; received {value!r}.")
    return value


def _resolve_dtype(dtype: str | tf.DType | None) -> str:
    if dtype is None:
        dtype = keras.config.floatx()
    name = getattr(dtype, "name", dtype)
    if isinstance(name, str) and name in ("float32", "float64"):
        return name
    raise ValueError(f"`dtype` must be 'float32' or 'float64' (or None for keras.config.floatx()); received {dtype!r}.")


def _to_numpy(a: object) -> np.ndarray | None:
    if a is None:
        return None
    if isinstance(a, (np.ndarray, list, tuple)) or tf.is_tensor(a):
        try:
            return np.asarray(a)
        except (TypeError, ValueError):
            return None
    return None


class MetricModel(keras.Model):
    """Base class: charts, pullbacks, the loss terms, training and measures.

    Subclasses implement :meth:`_metric_from_frame`. Not meant to be
    instantiated directly.

    Args:
        manifold: a cyntk ``Hypersurface``, a ``CYDataset``, a cymetric basis
            dict (``basis.pickle`` content, values complex64 arrays or
            Python/NumPy scalars) or a path to ``basis.pickle``.
        kappa: Monge--Ampère constant ``Vol_K/Vol_CY`` of the training data;
            defaults to ``basis['KAPPA']`` / ``CYDataset.kappa``. Needed only
            when the sigma loss is evaluated.
        sigma, kaehler, transition, volk, ricci: non-negative loss weights
            (cymetric's alpha, by name). Terms with weight 0 are not computed;
            which terms are active can be changed with :meth:`set_loss_weights`.
        nonfinite: what a training step does when the loss or a gradient is
            not finite: ``"raise"`` (default) skips the update and stops
            ``fit`` with a ``FloatingPointError``; ``"skip_step"`` skips the
            update, counts it in the logged metric ``skipped_steps`` and
            leaves the batch out of the logged loss averages; ``"ignore"``
            applies the update anyway (weights may become NaN).
        dtype: ``"float32"`` or ``"float64"``; defaults to
            ``keras.config.floatx()``. The output is complex64 / complex128.
        name: Keras name.
    """

    _default_weights = {"sigma": 1.0, "kaehler": 1.0, "transition": 1.0, "volk": 1.0, "ricci": 0.0}
    #: check, in eager calls on arrays, that the points lie on the manifold (see :meth:`call`)
    check_variety = True

    def __init__(
        self,
        manifold: ManifoldLike,
        *,
        kappa: float | None = None,
        sigma: float | None = None,
        kaehler: float | None = None,
        transition: float | None = None,
        volk: float | None = None,
        ricci: float | None = None,
        nonfinite: Literal["raise", "skip_step", "ignore"] = "raise",
        dtype: str | tf.DType | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        spec = manifold_spec(manifold, kappa)
        dtype = _resolve_dtype(dtype)
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"`nonfinite` must be one of {NONFINITE_POLICIES}; received {nonfinite!r}.")
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.spec = spec
        self.geometry = make_tf_geometry(spec, dtype)  # TFGeometry, or TFCICYGeometry for a CICY
        self.nonfinite = nonfinite
        given = dict(sigma=sigma, kaehler=kaehler, transition=transition, volk=volk, ricci=ricci)
        weights = {k: _check_weight(k, self._default_weights[k] if v is None else v) for k, v in given.items()}
        self._active = tuple(k for k in LOSS_TERMS if weights[k] > 0)
        if not self._active:
            raise ValueError(
                f"the loss weights {given} are all 0 (after defaults): there would be "
                f"nothing to train or evaluate; give at least one of {LOSS_TERMS} a "
                f"weight > 0."
            )
        self._loss_weight_vars = {
            k: self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(weights[k]),
                trainable=False,
                name=f"{k}_weight",
                dtype=dtype,
            )
            for k in LOSS_TERMS
        }
        self._term_trackers = {k: keras.metrics.Mean(name=f"{k}_loss") for k in LOSS_TERMS}
        self._total_tracker = keras.metrics.Mean(name="loss")
        self._skipped_tracker = keras.metrics.Sum(name="skipped_steps")
        self._xla = False
        self._core_fns: dict[str, Callable[..., Any]] | None = None
        self.built = True  # no lazily created state: the geometry is constant

    # ------------------------------------------------------------ properties
    @property
    def ncoords(self) -> int:
        """N, number of homogeneous coordinates (input width 2N)."""
        return self.spec.ncoords

    @property
    def nfold(self) -> int:
        """n, complex dimension (output (B, n, n))."""
        return self.spec.nfold

    @property
    def kappa(self) -> float | None:
        """kappa used by the sigma loss (None when unknown)."""
        return self.spec.kappa

    @property
    def loss_weights(self) -> dict[str, float]:
        """Current loss weights, ``{"sigma": ..., "kaehler": ..., ...}``."""
        return {k: float(v.numpy()) for k, v in self._loss_weight_vars.items()}

    @property
    def active_terms(self) -> tuple[str, ...]:
        """Names of the loss terms with non-zero weight (those computed)."""
        return self._active

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        trackers = getattr(self, "_term_trackers", None)
        if trackers is None:
            return []
        out = [self._total_tracker] + [trackers[k] for k in self._active]
        if self.nonfinite == "skip_step":
            out.append(self._skipped_tracker)
        return out

    # ----------------------------------------------------------------- build
    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        if input_shape is not None:
            width = tuple(input_shape)[-1]
            if width is not None and width != 2 * self.ncoords:
                raise ValueError(self._width_message(width))
        self.built = True

    def _width_message(self, width: int | None) -> str:
        return (
            f"`x` must have shape (B, 2N) = (B, {2 * self.ncoords}) for {self.spec.describe()} "
            f"(real parts then imaginary parts); received last axis {width}. The data may belong "
            f"to a different manifold."
        )

    # ------------------------------------------------------------ geometry
    def _prepare_x(self, x: TensorLike) -> tf.Tensor:
        if tf.executing_eagerly() and not isinstance(x, keras.KerasTensor):
            arr = np.asarray(x)
            if arr.ndim != 2 or arr.shape[-1] != 2 * self.ncoords:
                raise ValueError(
                    self._width_message(arr.shape[-1] if arr.ndim else None) + f" (full shape {arr.shape})"
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"`x` must be finite; received {np.sum(~np.isfinite(arr))} non-finite entries.")
            if self.check_variety and arr.size and np.issubdtype(arr.dtype, np.number):
                self._check_on_manifold(arr)
        x = tf.cast(x if tf.is_tensor(x) else np.asarray(x, dtype=self.compute_dtype), self.compute_dtype)
        if x.shape.rank != 2 or (x.shape[-1] is not None and x.shape[-1] != 2 * self.ncoords):
            raise ValueError(self._width_message(x.shape[-1]) + f" (full shape {x.shape})")
        return x

    def _check_on_manifold(self, arr: np.ndarray) -> None:
        N = self.ncoords
        z = arr[:, :N].astype(np.float64) + 1j * arr[:, N:].astype(np.float64)
        zk = z[np.arange(len(z)), np.argmax(np.abs(z), axis=1)]
        if np.any(zk == 0):
            raise ValueError("`x` contains the zero vector, which is not a point of projective space.")
        res = self.spec.residual(z / zk[:, None])
        if not np.all(res <= _RESIDUAL_TOL):
            raise ValueError(
                f"`x`: {int(np.sum(~(res <= _RESIDUAL_TOL)))} of {len(res)} point(s) are not on the model's "
                f"manifold {self.spec.describe()}: relative residual |Q(z)|/sum|c_m z^m| up to "
                f"{np.nanmax(res):.3g} (expected <= {_RESIDUAL_TOL:g}); the metric there would be "
                f"meaningless. Set `model.check_variety = False` to skip this eager-mode check."
            )

    def charts(self, x: TensorLike, j_elim: TensorLike | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Patch and elimination index per point: two int32 (B,) tensors."""
        return self.geometry.charts(self._prepare_x(x), j_elim)

    def pullbacks(self, x: TensorLike, j_elim: TensorLike | None = None) -> tf.Tensor:
        """Pullback matrices ``J[a, i] = dz_i/dx^a`` (B, n, N) complex."""
        x = self._prepare_x(x)
        patch, j = self.geometry.charts(x, j_elim)
        return self.geometry.local_frame(x, patch, j)["J"]

    def fs_metric(self, x: TensorLike, j_elim: TensorLike | None = None) -> tf.Tensor:
        """Pulled-back Fubini--Study metric G at kmoduli (B, n, n) complex."""
        x = self._prepare_x(x)
        patch, j = self.geometry.charts(x, j_elim)
        return self.geometry.local_frame(x, patch, j)["G"]

    def omega_sq(self, x: TensorLike, j_elim: TensorLike | None = None) -> tf.Tensor:
        """``|Omega|^2 = 1/|dQ/dz_j|^2`` (B,) in the model's chart."""
        x = self._prepare_x(x)
        patch, j = self.geometry.charts(x, j_elim)
        return self.geometry.omega_sq_from(self.geometry.local_frame(x, patch, j)["dq"], j)

    # ---------------------------------------------------------------- metric
    def _metric_from_frame(self, frame: Mapping[str, tf.Tensor], training: bool | None) -> tf.Tensor:
        raise NotImplementedError

    def metric_in_chart(
        self, x: TensorLike, patch: tf.Tensor, j: tf.Tensor, training: bool | None = False
    ) -> tf.Tensor:
        """The metric at real points x (B, 2N) in a given chart.

        Args:
            x: (B, 2N) real; rescaled internally by the patch coordinate.
            patch, j: (B,) int32 patch and elimination indices.
            training: forwarded to the network.

        Returns:
            (B, n, n) complex.
        """
        frame = self.geometry.local_frame(x, patch, j)
        return self._metric_from_frame(frame, training)

    def call(self, x: TensorLike, training: bool | None = None, j_elim: TensorLike | None = None) -> tf.Tensor:
        """Metric g (B, n, n) complex at real points x (B, 2N).

        Called eagerly on arrays (``model(x)``), the points are checked to lie
        on the model's manifold (relative residual <= 1e-4); set
        ``model.check_variety = False`` to skip that check. Inside ``fit``
        and ``predict`` (graph mode), ``fit``/``evaluate``'s own data checks apply.

        Args:
            x: (B, 2N) real ``[Re z, Im z]``.
            training: forwarded to the wrapped network.
            j_elim: optional (B,) or (B, 1) int elimination indices; default
                ``argmax_{i != patch} |dQ/dz_i|``.
        """
        x = self._prepare_x(x)
        patch, j = self.geometry.charts(x, j_elim)
        return self.metric_in_chart(x, patch, j, training)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.nfold, self.nfold)

    def compute_output_spec(
        self, x: keras.KerasTensor, training: bool | None = None, j_elim: object = None
    ) -> keras.KerasTensor:
        cd = "complex128" if self.compute_dtype == "float64" else "complex64"
        return keras.KerasTensor(tuple(x.shape[:-1]) + (self.nfold, self.nfold), dtype=cd)

    # ------------------------------------------------------ derived quantities
    def holomorphic_derivative(
        self, x: TensorLike, training: bool | None = False, j_elim: TensorLike | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """``dg[:, c, a, b] = d g_{a bbar} / d x^c`` (B, n, n, n) and g.

        Derivatives along the local holomorphic coordinates x^c of each
        point's chart (held fixed), through the network, the pullback and G.

        Returns:
            ``(g, dg)``.
        """
        x = self._prepare_x(x)
        patch, j = self.geometry.charts(x, j_elim)
        frame = self.geometry.local_frame(x, patch, j)
        ev = self._evaluate(x, patch, j, frame, None, True, training)
        return ev["g"], ev["dg"]

    def ricci_scalar(self, x: TensorLike, training: bool | None = False, j_elim: TensorLike | None = None) -> tf.Tensor:
        """cymetric's Ricci scalar ``R = tr(g^{-1} d dbar ln det g)`` (B,) real."""
        x = self._prepare_x(x)
        patch, j = self.geometry.charts(x, j_elim)
        frame = self.geometry.local_frame(x, patch, j)
        return self._ricci(x, patch, j, frame, self._metric_from_frame(frame, training), training)

    def _ricci(
        self,
        x: tf.Tensor,
        patch: tf.Tensor,
        j: tf.Tensor,
        frame: Mapping[str, tf.Tensor],
        g: tf.Tensor,
        training: bool | None,
    ) -> tf.Tensor:
        def logdet(xx: tf.Tensor, pp: tf.Tensor, jj: tf.Tensor) -> tf.Tensor:
            return tf.math.log(tf.math.real(L.determinant(self.metric_in_chart(xx, pp, jj, training))))

        _, M = local_ddbar(logdet, x, frame["J"], aux=(patch, j))
        return L.ricci_scalar(g, M)

    def _evaluate(
        self,
        x: tf.Tensor,
        patch: tf.Tensor,
        j: tf.Tensor,
        frame: Mapping[str, tf.Tensor],
        trans: Mapping[str, Any] | None,
        need_dg: bool,
        training: bool | None,
    ) -> dict[str, tf.Tensor]:
        """Metric at the batch, optionally its holomorphic derivatives and the
        metric at the transition points.

        Generic implementation: forward-mode autodiff of :meth:`metric_in_chart`
        along the local directions (:func:`holomorphic_derivatives`).
        Subclasses may override it with a cheaper equivalent.

        Returns:
            dict with ``g`` (B, n, n), ``dg`` (B, n, n, n) when ``need_dg``
            and ``g_new`` (m*B, n, n) when ``trans`` is given.
        """
        out = {}
        if need_dg:
            out["g"], out["dg"] = holomorphic_derivatives(
                lambda xx, pp, jj: self.metric_in_chart(xx, pp, jj, training), x, frame["J"], aux=(patch, j)
            )
        else:
            out["g"] = self._metric_from_frame(frame, training)
        if trans is not None:
            out["g_new"] = self._metric_from_frame(trans["frame"], training)
        return out

    def _transition_from(
        self,
        ev: Mapping[str, tf.Tensor],
        trans: Mapping[str, Any],
        frame: Mapping[str, tf.Tensor],
        training: bool | None,
    ) -> tf.Tensor:
        n = self.nfold
        m = trans["m"]
        g_new = tf.reshape(ev["g_new"], [m, -1, n, n])
        T = tf.reshape(trans["T"], [m, -1, n, n])
        return L.transition_loss(g_new, ev["g"], T, n_transitions=self.geometry.n_transitions)

    # ------------------------------------------------------------ loss terms
    def _split_y(self, y: TensorLike | None, need: Sequence[str]) -> tuple[tf.Tensor | None, tf.Tensor | None]:
        if y is None:
            if need:
                raise ValueError(
                    f"`y` is required by the active loss terms {need}: pass "
                    f"y = [w, |Omega|^2] of shape (B, 2) (cymetric's y_train layout)."
                )
            return None, None
        y = tf.cast(y if tf.is_tensor(y) else np.asarray(y, dtype=self.compute_dtype), self.compute_dtype)
        if y.shape.rank != 2 or (y.shape[-1] is not None and y.shape[-1] != 2):
            raise ValueError(f"`y` must have shape (B, 2) with columns [w, |Omega|^2]; received shape {y.shape}.")
        return y[:, 0], y[:, 1]

    def _needs_g_new(self) -> bool:
        return True

    def _terms(
        self,
        x: TensorLike,
        y: TensorLike | None,
        training: bool | None,
        terms: Sequence[str],
        ricci_scalar: bool = False,
    ) -> dict[str, tf.Tensor]:
        x = self._prepare_x(x)
        w, om = self._split_y(y, [t for t in terms if t in ("sigma", "volk")])
        patch, j = self.geometry.charts(x)
        frame = self.geometry.local_frame(x, patch, j)
        trans = None
        if "transition" in terms:
            z = frame["z"]
            trans = self.geometry.transition_points(z, patch, j)
        ev = self._evaluate(x, patch, j, frame, trans if self._needs_g_new() else None, "kaehler" in terms, training)
        g = ev["g"]
        out = {"g": g}
        if "kaehler" in terms:
            out["kaehler"] = L.kaehler_loss(ev["dg"])
        if "sigma" in terms:
            if self.kappa is None:
                raise ValueError(
                    "the sigma loss needs `kappa`: construct the model from a CYDataset or "
                    "a basis dict with KAPPA, or pass kappa=...; received kappa=None."
                )
            out["sigma"] = L.sigma_loss(g, om, self.kappa)
        if "transition" in terms:
            out["transition"] = self._transition_from(ev, cast("Mapping[str, Any]", trans), frame, training)
        if "volk" in terms:
            fs_unit = (
                frame["G_unit"] if "G_unit" in frame else frame["G"] / tf.constant(self.geometry.t, frame["G"].dtype)
            )
            out["volk"] = L.volk_loss(g, fs_unit, w, om, self.spec.volk_target)
        if "ricci" in terms:
            R = self._ricci(x, patch, j, frame, g, training)
            out["ricci"] = R if ricci_scalar else L.ricci_loss(R)
        return out

    def loss_terms(
        self,
        x: TensorLike,
        y: TensorLike | None = None,
        training: bool | None = False,
        terms: Iterable[str] | None = None,
    ) -> dict[str, tf.Tensor]:
        """Per-point loss terms (conventions §7).

        Args:
            x: (B, 2N) real points.
            y: (B, 2) real ``[w, |Omega|^2]``; needed by sigma and volk.
            training: forwarded to the network.
            terms: names to compute; defaults to :attr:`active_terms`.

        Returns:
            dict name -> (B,) real tensor, plus ``"g"`` (B, n, n).
        """
        terms = self._active if terms is None else tuple(terms)
        unknown = [t for t in terms if t not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"`terms` must be among {LOSS_TERMS}; received {unknown}.")
        return self._terms(x, y, training, terms)

    def compute_loss(
        self,
        x: TensorLike | None = None,
        y: TensorLike | None = None,
        y_pred: object = None,
        sample_weight: TensorLike | None = None,
        training: bool = True,
    ) -> tf.Tensor:
        """Total loss of a batch; updates the ``loss`` and ``<term>_loss`` trackers.

        ``loss = sum_i s_i L_i / sum_i s_i`` (``s`` = sample weights, 1 when
        None) with ``L_i = sum_term weight_term * term_i``, plus the wrapped
        network's regularisation losses.

        Args:
            x, y: the batch (see :meth:`loss_terms`).
            y_pred: the dict returned by :meth:`loss_terms` (recomputed when
                it is not a dict).
            sample_weight: optional (B,) weights.
            training: forwarded to the network if the terms are recomputed.

        Returns:
            scalar loss.
        """
        terms = y_pred if isinstance(y_pred, dict) else self.loss_terms(x, y, training=training)
        active = [k for k in self._active if k in terms]
        ref = terms[active[0]] if active else tf.math.real(terms["g"][:, 0, 0])
        per_point = tf.zeros_like(ref)
        for k in active:
            per_point = per_point + tf.cast(self._loss_weight_vars[k], ref.dtype) * terms[k]
        if sample_weight is None:
            sw = tf.ones_like(per_point)
        else:
            sw = tf.reshape(tf.cast(sample_weight, per_point.dtype), [-1])
        loss = tf.reduce_sum(sw * per_point) / tf.reduce_sum(sw)
        if self.losses:
            reg = tf.add_n([tf.cast(r, loss.dtype) for r in self.losses])
            loss = loss + reg
            per_point = per_point + reg
        if self.nonfinite == "skip_step":
            ok = tf.math.is_finite(loss)
            sw = sw * tf.cast(ok, sw.dtype)
            clean = lambda v: tf.where(ok, v, tf.zeros_like(v))  # noqa: E731 (reporting only)
        else:
            clean = lambda v: v  # noqa: E731
        self._total_tracker.update_state(clean(per_point), sample_weight=sw)
        for k in active:
            self._term_trackers[k].update_state(clean(terms[k]), sample_weight=sw)
        return loss

    # -------------------------------------------------------------- training
    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "adam",
        loss: None = None,
        metrics: None = None,
        *,
        jit_compile: bool | Literal["auto"] = False,
        steps_per_execution: int = 1,
        run_eagerly: bool = False,
        loss_weights: None = None,
        weighted_metrics: None = None,
        **kwargs: Any,
    ) -> None:
        """Configure training.

        Args:
            optimizer: a Keras optimizer or its name.
            loss, loss_weights, metrics, weighted_metrics: not accepted (must
                be None): the losses are the model's own; set their weights
                with the constructor or :meth:`set_loss_weights`, and use
                :class:`~cyntk.models.MeasuresCallback` for validation
                measures.
            jit_compile: ``True`` compiles each training step (losses,
                gradients, guarded optimizer update) and evaluation step with
                XLA; ``"auto"`` means True when a GPU is visible. The check
                that raises on a non-finite loss stays outside XLA.
            steps_per_execution, run_eagerly: as in ``keras.Model.compile``.
        """
        for arg, val in (
            ("loss", loss),
            ("loss_weights", loss_weights),
            ("metrics", metrics),
            ("weighted_metrics", weighted_metrics),
        ):
            if val is not None:
                raise TypeError(
                    f"`{arg}` is not accepted by {type(self).__name__}.compile: the model "
                    f"defines its own losses (weights via sigma=..., kaehler=..., "
                    f"transition=..., volk=..., ricci=... or set_loss_weights(); validation "
                    f"measures via MeasuresCallback); received {arg}={val!r}."
                )
        if jit_compile == "auto":
            jit_compile = bool(tf.config.list_physical_devices("GPU"))
        if jit_compile not in (True, False):
            raise ValueError(f"`jit_compile` must be True, False or 'auto'; received {jit_compile!r}.")
        if jit_compile and run_eagerly:
            warnings.warn("run_eagerly=True disables jit_compile.", stacklevel=2)
            jit_compile = False
        super().compile(
            optimizer=optimizer,
            jit_compile=False,
            steps_per_execution=steps_per_execution,
            run_eagerly=run_eagerly,
            **kwargs,
        )
        self._xla = bool(jit_compile)
        self._core_fns = None

    def get_compile_config(self) -> dict[str, Any] | None:
        config = super().get_compile_config()
        if not config:  # not compiled: nothing to restore
            return None
        config = dict(config)
        config["jit_compile"] = self._xla
        return config

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Re-compile from :meth:`get_compile_config` (used by ``load_model``)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.trainable_variables:
            self.optimizer.build(self.trainable_variables)

    @property
    def xla(self) -> bool:
        """Whether steps are compiled with XLA (``compile(jit_compile=True)``)."""
        return self._xla

    def _core(self) -> dict[str, Callable[..., Any]]:
        if self._core_fns is None:

            def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
                if getattr(self, "run_eagerly", False):
                    return f
                return tf.function(f, jit_compile=self._xla, reduce_retracing=True)

            self._core_fns = {
                "train": wrap(self._train_core),
                "test": wrap(self._test_core),
                "measure": wrap(self._measure_core),
            }
        return self._core_fns

    def _train_core(self, x: tf.Tensor, y: tf.Tensor | None, sw: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        """Loss, tracker updates, gradients and the guarded optimizer update
        (XLA-compiled under ``jit_compile=True``); returns the finiteness flags."""
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x, y, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=terms, sample_weight=sw, training=True)
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return self._apply_update(loss, grads)

    def _apply_update(self, loss: tf.Tensor, grads: Sequence[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Apply the optimizer update according to the ``nonfinite`` policy.

        Returns:
            ``(finite_loss, finite_grads)`` scalar booleans.
        """
        variables = self.trainable_variables
        finite_loss = tf.reduce_all(tf.math.is_finite(loss))
        if not variables:
            return finite_loss, tf.constant(True)
        finite_grads = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in grads]))
        if self.nonfinite == "ignore":
            self.optimizer.apply(grads, variables)
            return finite_loss, finite_grads
        ok = tf.logical_and(finite_loss, finite_grads)

        def apply() -> tf.Tensor:
            self.optimizer.apply(grads, variables)
            return tf.constant(True)

        tf.cond(ok, apply, lambda: tf.constant(False))
        if self.nonfinite == "skip_step":
            self._skipped_tracker.update_state(1.0 - tf.cast(ok, self.compute_dtype))
        return finite_loss, finite_grads

    def _test_core(self, x: tf.Tensor, y: tf.Tensor | None, sw: tf.Tensor | None) -> tf.Tensor:
        terms = self.loss_terms(x, y, training=False)
        self.compute_loss(x=x, y=y, y_pred=terms, sample_weight=sw, training=False)
        return tf.constant(True)

    @staticmethod
    def _dynamic_batch(t: TensorLike | None) -> tf.Tensor | None:
        """Forget the static batch size, so that the step functions are traced
        once for every batch size (a partial last batch would otherwise retrace
        them, and recompile them under XLA)."""
        if t is None or tf.executing_eagerly():
            return t
        t = tf.convert_to_tensor(t)
        return tf.raw_ops.PlaceholderWithDefault(input=t, shape=[None] + t.shape.as_list()[1:])

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, sw = map(self._dynamic_batch, keras.utils.unpack_x_y_sample_weight(data))
        finite_loss, finite_grads = self._core()["train"](x, y, sw)
        if self.nonfinite == "raise":
            tf.debugging.Assert(
                tf.logical_and(finite_loss, finite_grads),
                [f"{_NONFINITE_MARKER}: loss finite:", finite_loss, "gradients finite:", finite_grads],
            )
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, sw = map(self._dynamic_batch, keras.utils.unpack_x_y_sample_weight(data))
        self._core()["test"](x, y, sw)
        return {m.name: m.result() for m in self.metrics}

    def set_loss_weights(self, **weights: float) -> None:
        """Change loss weights, e.g. ``model.set_loss_weights(kaehler=0, volk=1)``.

        Changing a weight between non-zero values takes effect at the next
        step (the weights are variables). Switching a term on or off changes
        what is computed; the step functions are then rebuilt, so it also
        takes effect at the next step (e.g. from a callback's
        ``on_epoch_end``).

        Raises:
            ValueError: unknown name or negative/non-finite weight.
        """
        unknown = [k for k in weights if k not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"loss weight names must be among {LOSS_TERMS}; received {unknown}.")
        checked = {k: _check_weight(k, v) for k, v in weights.items()}
        if not any((checked.get(k, w) > 0) for k, w in self.loss_weights.items()):
            raise ValueError(
                f"set_loss_weights({', '.join(f'{k}={v}' for k, v in weights.items())}) would "
                f"make every loss weight 0; keep at least one of {LOSS_TERMS} > 0."
            )
        for k, v in checked.items():
            self._loss_weight_vars[k].assign(v)
        current = self.loss_weights
        active = tuple(k for k in LOSS_TERMS if current[k] > 0)
        if active != self._active:
            self._active = active
            self._core_fns = None
            if getattr(self, "compiled", False):
                self.make_train_function(force=True)
                self.make_test_function(force=True)

    # ------------------------------------------------------------ data checks
    def check_data(self, x: object, y: object = None, name: str = "x") -> None:
        """Validate arrays before training/evaluation.

        Checks that ``x`` is (P, 2N), finite and lies on this model's
        manifold (relative residual ``|Q(z)|/sum_m |c_m z^m| <= 1e-4`` after
        patch normalisation), and that ``y`` is (P, 2) ``[w, |Omega|^2]``,
        finite, with ``w >= 0`` and ``|Omega|^2 > 0``. Non-array inputs
        (``tf.data.Dataset``, generators) are not checked.

        Raises:
            ValueError: naming the argument, the expectation and what was found.
        """
        xa = _to_numpy(x)
        if xa is None:
            return
        if xa.ndim != 2 or xa.shape[-1] != 2 * self.ncoords:
            raise ValueError(
                f"`{name}` " + self._width_message(xa.shape[-1] if xa.ndim else None)[4:] + f" (full shape {xa.shape})"
            )
        if not np.issubdtype(xa.dtype, np.floating):
            raise TypeError(f"`{name}` must be a real floating-point array [Re z, Im z]; received dtype {xa.dtype}.")
        bad = ~np.isfinite(xa)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise ValueError(
                f"`{name}` must be finite; received {bad.sum()} non-finite entries in rows "
                f"{rows[:5].tolist()}{'...' if len(rows) > 5 else ''}."
            )
        N = self.ncoords
        z = xa[:, :N].astype(np.float64) + 1j * xa[:, N:].astype(np.float64)
        zk = z[np.arange(len(z)), np.argmax(np.abs(z), axis=1)]
        if np.any(zk == 0):
            raise ValueError(f"`{name}` contains the zero vector, which is not a point of projective space.")
        res = self.spec.residual(z / zk[:, None])
        worst = float(res.max()) if res.size else 0.0
        if worst > _RESIDUAL_TOL:
            raise ValueError(
                f"`{name}` does not lie on the model's manifold {self.spec.describe()}: relative residual "
                f"|Q(z)|/sum|c_m z^m| up to {worst:.3g} (expected <= {_RESIDUAL_TOL:g}) in "
                f"{int((res > _RESIDUAL_TOL).sum())} of {len(res)} points. The data set and the model's "
                f"basis/manifold probably describe different manifolds."
            )
        ya = _to_numpy(y)
        if ya is None:
            return
        yname = "y" if name == "x" else f"{name}'s y"
        if ya.ndim != 2 or ya.shape != (xa.shape[0], 2):
            raise ValueError(
                f"`{yname}` must have shape (P, 2) = ({xa.shape[0]}, 2) with columns "
                f"[w, |Omega|^2]; received shape {ya.shape}."
            )
        if not np.all(np.isfinite(ya)):
            raise ValueError(f"`{yname}` must be finite; received {np.sum(~np.isfinite(ya))} non-finite entries.")
        if np.any(ya[:, 0] < 0) or np.any(ya[:, 1] <= 0):
            raise ValueError(
                f"`{yname}` must hold weights w >= 0 in column 0 and |Omega|^2 > 0 in "
                f"column 1; received min w = {ya[:, 0].min():.3g}, min |Omega|^2 = "
                f"{ya[:, 1].min():.3g}."
            )

    def fit(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> keras.callbacks.History:
        """``keras.Model.fit`` with input checks (:meth:`check_data`).

        ``y`` is (P, 2) ``[w, |Omega|^2]``. A non-finite loss or gradient
        raises ``FloatingPointError`` under ``nonfinite="raise"``.
        """
        if not getattr(self, "compiled", False) or getattr(self, "optimizer", None) is None:
            raise RuntimeError(
                f"{type(self).__name__}.fit needs an optimizer: call "
                f"model.compile(optimizer) first (e.g. keras.optimizers.Adam(1e-3))."
            )
        self.check_data(x, y)
        vd = kwargs.get("validation_data")
        if isinstance(vd, (tuple, list)) and len(vd) >= 2:
            self.check_data(vd[0], vd[1], name="validation_data")
        try:
            return super().fit(x, y, *args, **kwargs)
        except tf.errors.InvalidArgumentError as err:
            if marked_message(err, _NONFINITE_MARKER) is not None:
                raise FloatingPointError(
                    f"{type(self).__name__}: non-finite loss or gradient during training; the update was "
                    f"not applied and training stopped (nonfinite='raise'). Current loss weights: "
                    f"{self.loss_weights}. Use nonfinite='skip_step' to skip such batches or "
                    f"nonfinite='ignore' to apply them anyway. Original message: "
                    f"{str(err).splitlines()[0][:300]}"
                ) from err
            raise

    def evaluate(
        self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any
    ) -> float | list[float] | dict[str, float]:
        """``keras.Model.evaluate`` with input checks (:meth:`check_data`)."""
        self.check_data(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        """``keras.Model.predict`` with input checks; returns g (P, n, n)."""
        self.check_data(x)
        return super().predict(x, *args, **kwargs)

    # --------------------------------------------------------------- measures
    def _measure_core(self, x: tf.Tensor, y: None, which: Sequence[str]) -> dict[str, tf.Tensor]:
        terms = tuple(t for t in ("kaehler", "transition", "ricci") if t in which)
        out = self._terms(x, None, False, terms, ricci_scalar=True)
        out["det"] = tf.math.real(L.determinant(out.pop("g")))
        return out

    def measures(
        self, x: ArrayLike, y: ArrayLike, batch_size: int = 1000, which: Iterable[str] = MEASURES
    ) -> dict[str, float]:
        """Validation measures over a whole point set (conventions §8).

        Per-point quantities are computed in batches and combined over all
        points in float64 (no per-batch averaging bias):

        * ``sigma``: :func:`~cyntk.models.losses.sigma_measure`;
        * ``kaehler``, ``transition``: mean of the per-point losses;
        * ``volk``: ``Vol_K = mean(w det g/|Omega|^2)``;
        * ``ricci``: :func:`~cyntk.models.losses.ricci_measure`.

        Args:
            x: (P, 2N) real points.
            y: (P, 2) ``[w, |Omega|^2]``.
            batch_size: points per evaluation batch.
            which: names among :data:`MEASURES`.

        Returns:
            dict name -> float.
        """
        which = tuple(which)
        unknown = [m for m in which if m not in MEASURES]
        if unknown:
            raise ValueError(f"`which` must be among {MEASURES}; received {unknown}.")
        if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")
        self.check_data(x, y)
        xa = np.asarray(x)
        ya = np.asarray(y, dtype=np.float64)
        fn = self._core()["measure"]
        parts = {}
        for s in range(0, len(xa), batch_size):
            xb = tf.constant(xa[s : s + batch_size], self.compute_dtype)
            res = fn(xb, None, which)
            for k, v in res.items():
                parts.setdefault(k, []).append(v.numpy().astype(np.float64))
        per = {k: np.concatenate(v) for k, v in parts.items()}
        w, om = ya[:, 0], ya[:, 1]
        det = per["det"]
        out = {}
        if "sigma" in which:
            out["sigma"] = float(L.sigma_measure(det, w, om))
        if "kaehler" in which:
            out["kaehler"] = float(np.mean(per["kaehler"]))
        if "transition" in which:
            out["transition"] = float(np.mean(per["transition"]))
        if "volk" in which:
            out["volk"] = float(L.volk_measure(det, w, om))
        if "ricci" in which:
            out["ricci"] = float(L.ricci_measure(per["ricci"], det, w, om, self.nfold))
        return out

    # ---------------------------------------------------------- serialisation
    def _base_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "manifold": self.spec.get_config(),
            "kappa": self.kappa,
            **self.loss_weights,
            "nonfinite": self.nonfinite,
            "dtype": self.compute_dtype,
        }

    def get_config(self) -> dict[str, Any]:
        return self._base_config()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], custom_objects: Mapping[str, Any] | None = None) -> Self:
        config = dict(config)
        if "network" in config:  # multiplicative and phi models
            config["network"] = keras.saving.deserialize_keras_object(config["network"], custom_objects=custom_objects)
        config["manifold"] = manifold_spec(config["manifold"])  # ManifoldSpec or CICYSpec config
        return cls(**config)


def _check_network(network: keras.layers.Layer, n_in: int, n_out: int, dtype: str, what: str) -> None:
    if not isinstance(network, keras.layers.Layer):
        raise TypeError(
            f"`network` must be a Keras model or layer mapping (B, {n_in}) -> (B, {n_out}); "
            f"received {type(network).__name__}."
        )
    in_shape = None
    try:
        in_shape = network.input_shape if hasattr(network, "inputs") and network.inputs else None
    except (AttributeError, ValueError):
        in_shape = None
    if isinstance(in_shape, list):
        raise ValueError(
            f"`network` must take a single input (B, {n_in}); received a network with {len(in_shape)} inputs."
        )
    if in_shape is not None and in_shape[-1] is not None and in_shape[-1] != n_in:
        raise ValueError(
            f"`network` must take inputs of width 2N = {n_in}; received a network with "
            f"input shape {tuple(in_shape)}. The network was built for another manifold."
        )
    probe = np.concatenate([np.ones((1, n_in // 2)), np.zeros((1, n_in // 2))], axis=1)
    try:
        out = network(tf.constant(probe, dtype))
    except Exception as err:  # the network rejects (B, 2N) inputs
        raise ValueError(
            f"`network` must accept inputs of shape (B, {n_in}); calling it on a (1, {n_in}) "
            f"batch failed with {type(err).__name__}: {err}"
        ) from err
    if isinstance(out, (list, tuple, dict)) or len(out.shape) != 2 or out.shape[-1] != n_out:
        got = [tuple(o.shape) for o in out] if isinstance(out, (list, tuple)) else getattr(out, "shape", out)
        raise ValueError(
            f"`network` must map (B, {n_in}) to (B, {n_out}) ({what}); received output shape "
            f"{got if isinstance(got, list) else tuple(got)}."
        )
    ndt = tf.as_dtype(out.dtype).name
    if ndt != dtype:
        warnings.warn(
            f"`network` computes in {ndt} while the model's dtype is {dtype}; its outputs are "
            f"cast to {dtype}, so precision is limited by {ndt}.",
            stacklevel=3,
        )


@keras.saving.register_keras_serializable(package="cyntk")
class FSModel(MetricModel):
    """The Fubini--Study metric pulled back to the hypersurface (no weights).

    ``g = G = J g_FS(t) J^H`` with ``g_FS = (t/pi)(delta/|z|^2 - conj(z) z^T/|z|^4)``
    at ``t = kmoduli``, J and the chart computed in-graph from x.

    Args:
        manifold, kappa, sigma, kaehler, transition, volk, ricci, nonfinite,
        dtype, name: see :class:`MetricModel`. The loss terms can be
        evaluated (``evaluate``, :meth:`loss_terms`); there is nothing to train.

    Call:
        ``model(x, training=None, j_elim=None)`` with x (B, 2N) real ->
        (B, n, n) complex64/complex128.
    """

    def _metric_from_frame(self, frame: Mapping[str, tf.Tensor], training: bool | None) -> tf.Tensor:
        return frame["G"]

    def _evaluate(
        self,
        x: tf.Tensor,
        patch: tf.Tensor,
        j: tf.Tensor,
        frame: Mapping[str, tf.Tensor],
        trans: Mapping[str, Any] | None,
        need_dg: bool,
        training: bool | None,
    ) -> dict[str, tf.Tensor]:
        # dG in closed form (TFGeometry.fs_holomorphic_derivative)
        out = {"g": frame["G"]}
        if need_dg:
            out["dg"] = self.geometry.fs_holomorphic_derivative(frame, j)
        if trans is not None:
            out["g_new"] = trans["frame"]["G"]
        return out


@keras.saving.register_keras_serializable(package="cyntk")
class MultiplicativeModel(MetricModel):
    """``g = G + G ⊙ H(nn(x))``, cymetric's ``MultFSModel``.

    ``H`` is the hermitian matrix built from the network's n^2 real outputs
    by conventions §6.1 (:func:`~cyntk.models.hermitian.hermitian_from_components_tf`);
    ``⊙`` is the elementwise product, so every entry is ``G_ab (1 + H_ab)``
    and g stays hermitian. The network sees the patch-normalised point
    ``[Re z, Im z]``, ``z = z/z_k`` (identical to cymetric's input for
    cymetric's normalised points).

    Args:
        network: Keras model (B, 2N) -> (B, n^2), e.g. cymetric's
            ``Sequential([Dense(64, 'gelu')] * 3 + [Dense(n*n, use_bias=False)])``.
        manifold: see :class:`MetricModel`.
        sigma, kaehler, transition, volk, ricci: loss weights (defaults
            1, 1, 1, 1, 0 as in cymetric's alpha).
        **kwargs: kappa, nonfinite, dtype, name (see :class:`MetricModel`).

    Note:
        The volk loss is a Monte-Carlo estimate over the *training batch*.
        With cymetric's heavy-tailed weights it is very noisy at small
        batches: at batch 64 with weight 1 it slows the sigma convergence
        several-fold (quintic, 27k points, 3 epochs: sigma_val 0.28 with
        volk=1 vs 0.097 with volk=0). cymetric evaluates it only in a second
        phase with batches of 50000. Use ``volk=0`` for small-batch training
        (the sigma loss fixes the volume through kappa), or switch it on for
        large-batch epochs with :meth:`set_loss_weights` /
        :class:`~cyntk.models.LossWeightScheduler`.
    """

    def __init__(
        self,
        network: keras.layers.Layer,
        manifold: ManifoldLike,
        *,
        sigma: float = 1.0,
        kaehler: float = 1.0,
        transition: float = 1.0,
        volk: float = 1.0,
        ricci: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            manifold, sigma=sigma, kaehler=kaehler, transition=transition, volk=volk, ricci=ricci, **kwargs
        )
        n = self.nfold
        _check_network(
            network,
            2 * self.ncoords,
            n * n,
            self.compute_dtype,
            f"n^2 = {n * n} real components of the hermitian {n}x{n} correction",
        )
        self.network = network

    def _metric_from_frame(self, frame: Mapping[str, tf.Tensor], training: bool | None) -> tf.Tensor:
        o = tf.cast(self.network(frame["x"], training=training), self.compute_dtype)
        H = hermitian_from_components_tf(o)
        G = frame["G"]
        return G + G * H

    def _evaluate(
        self,
        x: tf.Tensor,
        patch: tf.Tensor,
        j: tf.Tensor,
        frame: Mapping[str, tf.Tensor],
        trans: Mapping[str, Any] | None,
        need_dg: bool,
        training: bool | None,
    ) -> dict[str, tf.Tensor]:
        """One network call for the batch, its tangents and the transition points.

        ``d_c g = d_c G ⊙ (1 + H) + G ⊙ H(d_c o)`` with ``d_c G`` in closed form
        (:meth:`TFGeometry.fs_holomorphic_derivative`) and
        ``d_c o = (D_{J_c} o - i D_{i J_c} o)/2`` by forward mode through the
        network on the batch tiled 2n times (:func:`jvp`; H extended
        complex-linearly).
        The network input is the patch-normalised point, so its tangent along
        the local coordinate x^c is ``J_c``.
        """
        n = self.nfold
        reps = 2 * n
        xb = frame["x"]
        B = tf.shape(xb)[0]
        parts = [tf.tile(xb, [reps, 1])] if need_dg else [xb]
        if trans is not None:
            parts.append(trans["frame"]["x"])
        x_all = tf.concat(parts, axis=0) if len(parts) > 1 else parts[0]
        if need_dg:
            tang = tf.cast(_tangents_for(frame["J"], self.ncoords), x_all.dtype)
            if trans is not None:
                tang = tf.concat([tang, tf.zeros_like(trans["frame"]["x"])], axis=0)
            o_all, do_all = jvp(lambda xx: self.network(xx, training=training), x_all, tf.stop_gradient(tang))
            do_all = tf.cast(do_all, self.compute_dtype)
        else:
            o_all = self.network(x_all, training=training)
        o_all = tf.cast(o_all, self.compute_dtype)
        G = frame["G"]
        H = hermitian_from_components_tf(o_all[:B])
        out = {"g": G + G * H}
        start = reps * B if need_dg else B
        if need_dg:
            D = tf.reshape(do_all[: reps * B], [reps, B, n * n])
            re = 0.5 * D[:n]  # Re d_c o = D_u o / 2
            im = -0.5 * D[n:]  # Im d_c o = -D_{iu} o / 2
            dH = hermitian_from_components_tf(re) + tf.constant(1j, G.dtype) * hermitian_from_components_tf(
                im
            )  # (c, B, a, b)
            dH = tf.transpose(dH, [1, 0, 2, 3])  # (B, c, a, b)
            dG = self.geometry.fs_holomorphic_derivative(frame, j)
            out["dg"] = dG * (1.0 + H)[:, None] + G[:, None] * dH
        if trans is not None:
            Gn = trans["frame"]["G"]
            out["g_new"] = Gn + Gn * hermitian_from_components_tf(o_all[start:])
        return out

    def get_config(self) -> dict[str, Any]:
        return {**self._base_config(), "network": keras.saving.serialize_keras_object(self.network)}


@keras.saving.register_keras_serializable(package="cyntk")
class PhiModel(MetricModel):
    """``g = G + J (d dbar phi) J^H`` with a scalar network phi, cymetric's ``PhiFSModel``.

    ``(d dbar phi)_{ij} = (phi_{x_i x_j} + phi_{y_i y_j} + i(phi_{x_i y_j} - phi_{y_i x_j}))/4``
    over the ambient coordinates, contracted with J directly by
    forward-over-reverse autodiff along the local directions. No 1/pi or t
    factor on phi: the potential is ``K = (t/pi) ln|z|^2 + phi``. The metric is
    Kähler by construction, so the Kähler loss is off by default (it can be
    switched on as a check; it costs third derivatives).

    Args:
        network: Keras model (B, 2N) -> (B, 1). A bias in the last layer drops
            out. Start it with :class:`~cyntk.models.ProjectiveFeatures` to make
            phi a function on projective space (then g is globally defined).
        manifold: see :class:`MetricModel`.
        transition_mode: ``"phi"`` (cymetric): the transition loss compares
            the potential, ``sum_{k'} |phi(z) - phi(z/z_{k'})|^2 / (n_T n^2)``;
            ``"metric"``: it compares the metric as for the other models.
        sigma, kaehler, transition, volk, ricci: loss weights (defaults
            1, 0, 1, 1, 0 as in cymetric).
        **kwargs: kappa, nonfinite, dtype, name (see :class:`MetricModel`).
    """

    _default_weights = {"sigma": 1.0, "kaehler": 0.0, "transition": 1.0, "volk": 1.0, "ricci": 0.0}

    def __init__(
        self,
        network: keras.layers.Layer,
        manifold: ManifoldLike,
        *,
        transition_mode: Literal["phi", "metric"] = "phi",
        sigma: float = 1.0,
        kaehler: float = 0.0,
        transition: float = 1.0,
        volk: float = 1.0,
        ricci: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if transition_mode not in ("phi", "metric"):
            raise ValueError(f"`transition_mode` must be 'phi' or 'metric'; received {transition_mode!r}.")
        super().__init__(
            manifold, sigma=sigma, kaehler=kaehler, transition=transition, volk=volk, ricci=ricci, **kwargs
        )
        _check_network(network, 2 * self.ncoords, 1, self.compute_dtype, "a scalar potential phi")
        self.network = network
        self.transition_mode = transition_mode

    def potential(self, x: TensorLike, training: bool | None = False) -> tf.Tensor:
        """phi at real points x (B, 2N) (as given, not normalised) -> (B,) real."""
        return tf.cast(self.network(x, training=training), self.compute_dtype)[:, 0]

    def _metric_from_frame(self, frame: Mapping[str, tf.Tensor], training: bool | None) -> tf.Tensor:
        _, M = local_ddbar(lambda xx: self.potential(xx, training), frame["x"], frame["J"])
        return frame["G"] + M

    def _needs_g_new(self) -> bool:
        return self.transition_mode == "metric"

    def _transition_from(
        self,
        ev: Mapping[str, tf.Tensor],
        trans: Mapping[str, Any],
        frame: Mapping[str, tf.Tensor],
        training: bool | None,
    ) -> tf.Tensor:
        if self.transition_mode == "metric":
            return super()._transition_from(ev, trans, frame, training)
        m = trans["m"]
        B = tf.shape(frame["x"])[0]
        phi = self.potential(tf.concat([frame["x"], trans["frame"]["x"]], 0), training)
        phi0, phin = phi[:B], tf.reshape(phi[B:], [m, -1])
        d = tf.reduce_sum((phin - phi0[None]) ** 2, axis=0)
        return d / tf.cast(self.geometry.n_transitions * self.nfold**2, d.dtype)

    def get_config(self) -> dict[str, Any]:
        return {
            **self._base_config(),
            "transition_mode": self.transition_mode,
            "network": keras.saving.serialize_keras_object(self.network),
        }
