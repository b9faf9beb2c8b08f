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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import keras
import numpy as np
import tensorflow as tf

from cyntk.models import losses as L
from cyntk.models._spec import manifold_spec
from cyntk.models._tfcicy import make_tf_geometry
from cyntk.models._tfgeometry import holomorphic_derivatives, local_ddbar

if TYPE_CHECKING:
    from tensorflow.types.experimental import TensorLike
    from typing_extensions import Self

    from cyntk.models._spec import ManifoldLike

from cyntk.models._training import (
    _RESIDUAL_TOL,
    LOSS_TERMS,
    MEASURES,
    NONFINITE_POLICIES,
    _check_weight,
    _MetricTraining,
    _resolve_dtype,
)

__all__ = ["MetricModel", "LOSS_TERMS", "NONFINITE_POLICIES", "MEASURES"]


class MetricModel(_MetricTraining, keras.Model):
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
