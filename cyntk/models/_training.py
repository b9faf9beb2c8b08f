"""Training, evaluation and measures of a metric model: the Keras side of :class:`~cyntk.models.MetricModel`.

A mixin: compile (with optional XLA), the train and test steps with the
non-finite policy, input checks in ``fit``/``evaluate``/``predict``, and the
validation measures over a whole point set. Also the names the model family
shares: :data:`LOSS_TERMS`, :data:`MEASURES`, :data:`NONFINITE_POLICIES`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cyntk.models import losses as L
from cyntk.models._tf import marked_message

if TYPE_CHECKING:
    # the mixin only ever sits in front of keras.Model (MetricModel), whose attributes it uses
    from keras import Model as _KerasModel
    from tensorflow.types.experimental import TensorLike
else:
    _KerasModel = object


__all__ = ["LOSS_TERMS", "MEASURES", "NONFINITE_POLICIES"]

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


class _MetricTraining(_KerasModel):
    """compile / train_step / test_step / fit / evaluate / predict / measures of a MetricModel."""

    _core_fns: dict[str, Callable[..., Any]] | None

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
        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            # a replica of a tf.distribute strategy: Keras already traces the step per replica, and the
            # optimizer's all-reduce (a merge_call) cannot sit in a nested tf.function (nor under XLA)
            return {"train": self._train_core, "test": self._test_core, "measure": self._measure_core}
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
            # under a tf.distribute strategy the optimizer sums the replicas' gradients: each replica's
            # batch mean counts 1/R, so that the update is the one of the whole batch (as Keras scales its losses)
            replicas = _replicas_in_sync()
            scaled = loss / tf.cast(replicas, loss.dtype) if replicas > 1 else loss
        grads = tape.gradient(scaled, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
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
        ctx = tf.distribute.get_replica_context()
        if tf.distribute.has_strategy() and ctx is not None:
            # a replica of a tf.distribute strategy: every replica takes the same decision (no replica's
            # batch non-finite), and the conditional update runs in the cross-replica context, where a branch
            # may hold the optimizer's all-reduce (a merge_call cannot sit in a replica's tf.cond; Keras'
            # LossScaleOptimizer does the same)
            ok = tf.equal(ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(ok, tf.float32)), 0.0)

            def cross(distribution: Any, grads: Sequence[tf.Tensor], ok: Any) -> tf.Tensor:
                def apply_all() -> tf.Tensor:
                    distribution.extended.call_for_each_replica(
                        lambda g: self.optimizer.apply(g, variables), args=(grads,)
                    )
                    return tf.constant(True)

                ok0 = distribution.experimental_local_results(ok)[0]
                return tf.cond(ok0, apply_all, lambda: tf.constant(False))

            ctx.merge_call(cross, args=(grads, ok))
        else:

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


def _replicas_in_sync() -> int:
    """Replicas of the tf.distribute strategy whose replica context this is (1 outside any strategy)."""
    ctx = tf.distribute.get_replica_context()
    if not tf.distribute.has_strategy() or ctx is None:
        return 1
    return int(ctx.num_replicas_in_sync)
