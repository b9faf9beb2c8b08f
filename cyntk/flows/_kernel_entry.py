"""Keras entry points of a KernelModel: compile, fit, evaluate, predict with checked, exact inputs.

A mixin of :class:`~cyntk.flows.kernel_model.KernelModel`: float inputs pass
through Keras' data adapters as float64 bit patterns (see the model's
docstring) and errors raised inside the steps come back as ``ValueError``.
"""

from __future__ import annotations

import contextlib
import inspect
import os

import keras
import numpy as np
import tensorflow as tf

from cyntk.flows._kernel_common import _MARKER, _check_sample_weight
from cyntk.flows.distribute import WorkerLostError, multi_worker
from cyntk.models._tf import encode_args, encode_float64, marked_message, to_numpy


def _persistent_feed(x, y, args, kwargs):
    """``fit``'s array inputs as repeated datasets with ``steps_per_epoch``: one iterator for every epoch.

    Under a strategy Keras re-creates the distributed iterator of array
    inputs at every epoch (seconds each, and a flow epoch is often one step).
    The same batches (Keras' own array adapter: ``batch_size``, ``shuffle``
    and sample weights as for arrays, a new order every epoch), repeated,
    with ``steps_per_epoch`` = the number of batches of one epoch, keep one
    iterator (``validation_data`` stays as given: Keras' ``evaluate`` makes a
    new iterator at every call whatever the input). Epochs, callbacks,
    ``initial_epoch``, ``BackupAndRestore`` and the History are those of the
    array inputs. Anything else (datasets, generators,
    ``steps_per_epoch``, ``validation_split``, ``class_weight``) goes to
    Keras unchanged. The environment variable ``CYNTK_FIT_ARRAYS_PER_EPOCH=1``
    turns this off (for measurements).
    """
    try:
        from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter
    except ImportError:  # another Keras layout: Keras' own per-epoch iterators
        return x, y, args, kwargs
    try:
        bound = inspect.signature(keras.Model.fit).bind(None, x, y, *args, **kwargs)
    except TypeError:
        return x, y, args, kwargs
    kw = dict(bound.arguments)
    kw.pop("self", None)
    kw.update(kw.pop("kwargs", {}))

    def arrays(*values):
        return all(v is None or isinstance(v, np.ndarray) for v in values) and values[0] is not None

    if (
        not arrays(kw.get("x"), kw.get("y"), kw.get("sample_weight"))
        or kw.get("y") is None
        or kw.get("steps_per_epoch") is not None
        or kw.get("validation_split")
        or kw.get("class_weight") is not None
    ):
        return x, y, args, kwargs
    batch_size = kw.pop("batch_size", None)
    train = ArrayDataAdapter(
        kw.pop("x"),
        kw.pop("y"),
        sample_weight=kw.pop("sample_weight", None),
        batch_size=batch_size or 32,  # Keras' default for arrays
        shuffle=kw.pop("shuffle", True),
    )
    kw["steps_per_epoch"], kw["shuffle"] = train.num_batches, False  # the dataset shuffles itself
    if kw.get("validation_data") is not None:  # as given (Keras' evaluate makes a new iterator at every call)
        kw["validation_batch_size"] = kw.get("validation_batch_size") or batch_size
    return train.get_tf_dataset().repeat(), None, (), kw


class _KerasEntryPoints:
    """``compile``/``fit``/``evaluate``/``predict``/``train_on_batch`` with input checks."""

    def compile(
        self,
        optimizer="sgd",
        loss=None,
        metrics=None,
        *,
        jit_compile=False,
        steps_per_execution=1,
        run_eagerly=False,
        loss_weights=None,
        weighted_metrics=None,
        **kwargs,
    ):
        """Configure the flow's optimizer.

        Args:
            optimizer: a Keras optimizer or its name; ``SGD(learning_rate=dt)``
                is eq. (3.5) with step dt. The learning rate must be > 0.
            loss, loss_weights, metrics, weighted_metrics: must be None: the
                flow's loss is the constructor's ``loss``.
            jit_compile: must be False (the steps call NumPy kernels).
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
                    f"`{arg}` is not accepted by KernelModel.compile: the flow's loss is "
                    f"the constructor's `loss` (received {arg}={val!r})."
                )
        if jit_compile not in (False, "auto"):
            raise ValueError(
                "`jit_compile` must be False: a KernelModel step evaluates NumPy kernels "
                f"(tf.py_function), which XLA cannot compile; received {jit_compile!r}."
            )
        optimizer = keras.optimizers.get(optimizer)
        try:
            lr0 = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except (TypeError, ValueError):
            lr0 = None
        if lr0 is not None and not (np.isfinite(lr0) and lr0 > 0):
            raise ValueError(
                f"the optimizer's learning rate (the flow step dt) must be a finite number > 0; received {lr0!r}."
            )
        super().compile(
            optimizer=optimizer,
            jit_compile=False,
            steps_per_execution=steps_per_execution,
            run_eagerly=run_eagerly,
            **kwargs,
        )

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras hook before fit/evaluate under a strategy: only the optimizer's variables are missing.

        A KernelModel is built by its constructor. Keras' own version first
        averages a data batch over the replicas, which fails for the int64 bit
        patterns of float64 inputs under MultiWorkerMirroredStrategy.
        """
        if self._distribute_strategy is None:
            return
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        """The optimizer and step settings of :meth:`compile` (Keras' saving hook)."""
        return super().get_compile_config()

    def compile_from_config(self, config):
        """Re-compile from :meth:`get_compile_config` (Keras' loading hook)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def check_data(self, x, y=None, name="x", *, train=False):
        """Validate array inputs of fit/evaluate/predict (datasets are checked in the steps).

        Checks width, finiteness, that the points lie on the manifold and in
        the model's chart(s), for ``train`` that every point is a train point,
        and that ``y`` is (P, 2) ``[w, |Omega|^2]``, finite, with
        ``|Omega|^2 > 0``.
        """
        xa = to_numpy(x)
        if xa is None:
            return
        xa = self._check_points(xa, name)
        if train:
            self._row_index().lookup(xa)
        else:
            self._groups_for(xa)
        ya = to_numpy(y)
        if ya is None:
            return
        yname = "y" if name == "x" else f"{name}'s y"
        if ya.shape != (len(xa), 2):
            raise ValueError(
                f"`{yname}` must have shape (P, 2) = ({len(xa)}, 2) with columns "
                f"[w, |Omega|^2]; received shape {ya.shape}."
            )
        if not np.issubdtype(ya.dtype, np.number) or not np.all(np.isfinite(ya)):
            raise ValueError(
                f"`{yname}` (targets [w, |Omega|^2]) must be finite; received "
                f"{int(np.sum(~np.isfinite(ya.astype(float))))} non-finite entries."
            )
        if np.any(ya[:, 1] <= 0):
            raise ValueError(f"`{yname}` must hold |Omega|^2 > 0 in column 1; received min {ya[:, 1].min():.3g}.")

    def _unwrap_errors(self, err):
        msg = marked_message(err, _MARKER)
        if msg is not None:
            raise ValueError(msg) from err
        lost = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError)
        if isinstance(err, lost) and self.distribute_strategy.num_replicas_in_sync > 1:
            first = str(err).strip().splitlines()
            raise WorkerLostError(
                f"a worker or device of the {type(self.distribute_strategy).__name__} stopped answering during "
                f"the flow ({type(err).__name__}: {first[0] if first else ''}). The update of the unfinished step "
                f"was not applied anywhere (it needs every replica's shard); {int(self.optimizer.iterations.numpy())} "
                "steps were completed. To resume from the last completed epoch, restart every worker with the same "
                "TF_CONFIG and keras.callbacks.BackupAndRestore(backup_dir) among fit's callbacks (its backup "
                "holds the flow's state: alpha, u_train and the optimizer)."
            ) from err
        raise err

    @contextlib.contextmanager
    def _running(self):
        """fit/evaluate/predict context: a live base model's frozen weights (no-op for a copied one)."""
        live = self.__dict__.get("_live_base")
        if live is None:
            yield
            return
        variables, frozen = live
        saved = [np.array(v.numpy()) for v in variables]
        try:
            for v, w in zip(variables, frozen):
                v.assign(w)
            yield
        finally:
            for v, w in zip(variables, saved):
                v.assign(w)

    def fit(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.fit`` over the train points (any order, any batch size).

        Every epoch of ``fit(x_train, y, batch_size=N_train)`` is one step of
        eq. (3.5). Raises :class:`NonPositiveMetricError` under
        ``on_non_positive="raise"`` (after discarding the offending update).
        """
        self.check_data(x, y, train=True)
        _check_sample_weight(kwargs.get("sample_weight", args[8] if len(args) > 8 else None), x)
        vd = kwargs.get("validation_data")
        if isinstance(vd, (tuple, list)) and len(vd) >= 2:
            self.check_data(vd[0], vd[1], name="validation_data")
        self._flow_error = None
        self._halted = False
        try:
            args, kwargs = encode_args(args, kwargs, {"sample_weight": 8, "validation_data": 5})
            x, y = encode_float64(x), encode_float64(y)
            if self._distribute_strategy is not None and os.environ.get("CYNTK_FIT_ARRAYS_PER_EPOCH") != "1":
                x, y, args, kwargs = _persistent_feed(x, y, args, kwargs)
            with self._running():
                history = super().fit(x, y, *args, **kwargs)
        except (tf.errors.OpError, ValueError) as err:
            self._unwrap_errors(err)
        if self._flow_error is not None:
            err, self._flow_error = self._flow_error, None
            raise err
        return history

    def train_on_batch(self, x, y=None, *args, **kwargs):
        """``keras.Model.train_on_batch`` (one flow step on train points) with the flow's errors."""
        _check_sample_weight(kwargs.get("sample_weight", args[0] if args else None), x)
        self._flow_error = None
        self._halted = False
        try:
            args, kwargs = encode_args(args, kwargs, {"sample_weight": 0})
            with self._running():
                out = super().train_on_batch(encode_float64(x), encode_float64(y), *args, **kwargs)
        except (tf.errors.OpError, ValueError) as err:
            self._unwrap_errors(err)
        if self._flow_error is not None:
            err, self._flow_error = self._flow_error, None
            raise err
        return out

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.evaluate`` on any points of the model's chart(s)."""
        if kwargs.get("_use_cached_eval_dataset"):
            # fit's validation pass: the data were checked and encoded by fit
            with self._running():
                return super().evaluate(x, y, *args, **kwargs)
        self.check_data(x, y)
        _check_sample_weight(kwargs.get("sample_weight", args[2] if len(args) > 2 else None), x)
        try:
            args, kwargs = encode_args(args, kwargs, {"sample_weight": 2})
            with self._running():
                return super().evaluate(encode_float64(x), encode_float64(y), *args, **kwargs)
        except (tf.errors.OpError, ValueError) as err:
            self._unwrap_errors(err)

    def predict(self, x, *args, **kwargs):
        """Metrics g (P, n, n) complex at any points of the model's chart(s)."""
        self.check_data(x)
        try:
            with self._running():
                if multi_worker(self.distribute_strategy) and to_numpy(x) is not None:
                    # Keras gathers predictions across workers with collectives that have no complex
                    # dtype: every worker predicts all the points itself (its own replica, no exchange)
                    xa = np.asarray(to_numpy(x), dtype=np.float64)
                    size = kwargs.get("batch_size") or (args[0] if args else None) or 32
                    parts = [self(tf.constant(xa[s : s + size]), training=False) for s in range(0, len(xa), size)]
                    return np.concatenate([np.asarray(p) for p in parts], axis=0)
                return super().predict(encode_float64(x), *args, **kwargs)
        except (tf.errors.OpError, ValueError) as err:
            self._unwrap_errors(err)

    # ------------------------------------------------------------- serialisation
