"""The NumPy side of a KernelModel step: lookups, the flow update and the positivity guard.

A mixin of :class:`~cyntk.flows.kernel_model.KernelModel`; its methods run
inside ``tf.numpy_function`` (stateless, so that the replicas of a strategy
run theirs concurrently; see ``_host_op``) or ``tf.py_function`` from the
model's train and test steps.
"""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf

from cyntk.flows._kernel_common import _MARKER, NonPositiveMetricError, chart_advice, chart_ids, chart_label
from cyntk.flows._kernel_setup import _nearest_train, _product_layout
from cyntk.flows.distribute import all_reduce_sum, local_device, replica_context, shard_of
from cyntk.flows.product import RowIndex, default_threads, min_eigenvalues
from cyntk.geometry import Hypersurface, to_complex
from cyntk.kernels.empirical import EmpiricalNTKKernel
from cyntk.models._tf import mark


class _FlowSteps:
    """NumPy flow state, groups (charts, clusters), updates and the positive-definiteness guard."""

    def _np_state(self):
        c = self._cache
        if "x" not in c:
            x = np.asarray(self.x_train.numpy(), dtype=np.float64)
            c["x"] = x
            charts = self.surface.charts(to_complex(x))
            ids = chart_ids(charts, self.spec.ncoords)
            c["chart_ids"] = ids
            c["charts"] = np.unique(ids)
            labels = np.asarray(self.cluster_labels.numpy(), dtype=np.int64)
            c["labels"] = labels
            if len(c["charts"]) > 1 or self.n_clusters > 0:
                rank = np.searchsorted(c["charts"], ids)
                c["groups"] = rank * max(self.n_clusters, 1) + labels
            else:
                c["groups"] = None
        return c

    def _row_index(self):
        if "rows" not in self._cache:
            self._cache["rows"] = RowIndex(self._np_state()["x"])
        return self._cache["rows"]

    def _groups_for(self, x, j_elim=None):
        """Chart check and block labels of arbitrary points (None: one block)."""
        st = self._np_state()
        S = self.surface
        charts = S.charts(to_complex(x))
        if j_elim is not None:
            j = np.asarray(j_elim).reshape(-1)
            elim = charts[:, S.nproj :].reshape(-1)
            if j.shape != elim.shape or np.any(j != elim):
                raise ValueError(
                    "`j_elim` must agree with the points' own elimination indices (the "
                    "KernelModel's charts are fixed by its points); received other values."
                )
        ids = chart_ids(charts, self.spec.ncoords)
        known = np.isin(ids, st["charts"])
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            N = self.spec.ncoords

            def label(u):
                return chart_label(u, N, S.nproj, S.nhyper)

            train = ", ".join(label(u) for u in st["charts"][:6])
            raise ValueError(
                f"{int((~known).sum())} of {len(x)} points lie in charts without train points (first: "
                f"point {i} in chart {label(ids[i])}); the train points are in "
                f"{train}. Metric components of different charts cannot be mixed: sample the points in "
                f"the train chart ({chart_advice(S.nproj, S.nhyper)})."
            )
        if st["groups"] is None:
            return None
        rank = np.searchsorted(st["charts"], ids)
        if self.n_clusters == 0:
            return rank
        labels = np.empty(len(x), dtype=np.int64)
        zt = to_complex(st["x"])
        zq = to_complex(x)
        layout = _product_layout(S)
        for c in np.unique(ids):
            q = np.flatnonzero(ids == c)
            r = np.flatnonzero(st["chart_ids"] == c)
            labels[q] = st["labels"][r[_nearest_train(zq[q], zt[r], layout)]]
        return rank * self.n_clusters + labels

    # --------------------------------------------------------- base metric
    def _np_check_points(self, x, j_elim=None):
        try:
            self._groups_for(np.asarray(x, dtype=np.float64), None if j_elim is None else np.asarray(j_elim))
        except ValueError as err:
            raise ValueError(mark(_MARKER, str(err))) from err

    def _np_apply(self, x, alpha, j_elim=None):
        """``sum_b Theta(x, x_b) alpha_b`` (P, m) for arbitrary points x."""
        try:
            x = np.asarray(x, dtype=np.float64)
            st = self._np_state()
            groups = self._groups_for(x, None if j_elim is None else np.asarray(j_elim))
            same = x.shape == st["x"].shape and np.array_equal(x, st["x"])
            u = self._product.grouped_matvec(
                x, st["groups"] if same else groups, st["x"], st["groups"], np.asarray(alpha), same=same
            )
            return np.asarray(u, dtype=np.float64)
        except ValueError as err:
            raise ValueError(mark(_MARKER, str(err))) from err

    # ------------------------------------------------------------------ loss
    def _np_fs_unit(self, x):
        """Pulled-back unit FS metrics: (P, n, n) in one P^n, (m, P, n, n) per factor on products."""
        z = to_complex(np.asarray(x, dtype=np.float64))
        S = self.surface
        if isinstance(S, Hypersurface):
            return S.fs_metric_pb(z, t=1.0)
        return S.pulled_back_blocks(z, S.pullbacks(z))

    def _host_op(self, fn, args, dtype):
        """``fn`` (NumPy in, NumPy out) on the host inside a step, concurrently across replicas when safe.

        A ``tf.py_function`` is stateful: tf.function's automatic control
        dependencies chain the replicas' calls one after the other. A stateless
        ``tf.numpy_function`` lets them run at the same time, except for an
        ``EmpiricalNTKKernel``, which runs its TensorFlow functions under a lock:
        replicas waiting on it would hold TensorFlow's inter-op threads while
        the holder's function waits for one (a deadlock on 2 cores).
        """
        if isinstance(self.kernel, EmpiricalNTKKernel):
            return tf.py_function(fn, args, dtype)
        return tf.numpy_function(fn, args, dtype, stateful=False)

    def _dual_update(self, idx, dl_dg):
        # grad_alpha = -dL/dg at the batch points: SGD(dt) gives alpha += dt dL/dg, i.e. (3.5)
        grad = tf.scatter_nd(idx[:, None], -dl_dg, tf.shape(self.alpha, out_type=tf.int64))
        alpha_old = tf.identity(self.alpha)
        self.optimizer.apply([grad], [self.alpha])  # under a strategy: the replicas' gradients summed
        delta = tf.convert_to_tensor(self.alpha) - alpha_old
        # the kernel product of the update: this replica's shard of the tiles, summed over replicas
        ctx = replica_context()
        rid, n_rep = shard_of(ctx)
        # its output feeds the all-reduce and the commit, so a stateless op is never pruned, and its
        # inputs (rid) differ per replica
        du = self._host_op(lambda d, r: self._np_dual_product(d, r, n_rep), [delta, rid], tf.float64)
        du = all_reduce_sum(ctx, tf.ensure_shape(du, [self.n_train, self.m]))
        scale, eig, backoffs = tf.py_function(
            self._np_commit_dual, [delta, du, self.u_train, self.optimizer.iterations], [tf.float64] * 3
        )
        scale, backoffs = tf.reshape(scale, []), tf.reshape(backoffs, [])
        # scale 0 (refused step) keeps alpha exactly, even if the update was not finite
        self.alpha.assign(tf.where(scale > 0, alpha_old + scale * delta, alpha_old))
        self.u_train.assign_add(scale * du)
        return tf.reshape(eig, [-1]), backoffs

    def _primal_update(self, x, g_batch, dl_dg):
        grads = self._vjp(x, dl_dg)
        old = [tf.identity(v) for v in self.delta_theta]
        self.optimizer.apply(grads, self.delta_theta)  # under a strategy: the replicas' gradients summed
        deltas = [tf.convert_to_tensor(v) - o for v, o in zip(self.delta_theta, old)]
        dg = self._linearised(x, deltas)[1]
        ctx = replica_context()
        if ctx is not None:  # every replica decides on the metrics of every replica's batch points
            g_batch, dg = ctx.all_gather(g_batch, axis=0), ctx.all_gather(dg, axis=0)
        scale, eig, backoffs = tf.py_function(
            self._np_commit_primal, [g_batch, dg, self.optimizer.iterations], [tf.float64, tf.float64, tf.float64]
        )
        scale, backoffs = tf.reshape(scale, []), tf.reshape(backoffs, [])
        for v, o, d in zip(self.delta_theta, old, deltas):
            v.assign(tf.where(scale > 0, o + tf.cast(scale, d.dtype) * d, o))
        return tf.reshape(eig, [-1]), backoffs

    def _np_lookup(self, x):
        x = np.asarray(x)
        try:
            return np.asarray(self._row_index().lookup(x), dtype=np.int64)
        except ValueError as err:
            raise ValueError(mark(_MARKER, str(err))) from err

    def _skip_dual(self, delta, step):
        return not self._finite(delta, step) or self._halted or not np.any(delta != 0.0)

    def _no_product(self, delta):
        """Whether the step's update will be refused or is 0 (no product is needed)."""
        return not np.all(np.isfinite(delta)) or self._halted or not np.any(delta != 0.0)

    def _np_dual_product(self, delta, replica, n_replicas):
        """``K delta`` at every train point, or replica ``replica``'s shard of it (one of ``n_replicas``)."""
        delta = np.asarray(delta, dtype=np.float64)
        st = self._np_state()
        x, groups = st["x"], st["groups"]
        if self._no_product(delta):
            return np.zeros_like(delta)
        kw = {}
        if int(n_replicas) > 1:
            if self.engine != "tf":  # the NumPy engine is not sharded: the first replica computes it all
                if int(replica) != 0:
                    return np.zeros_like(delta)
            else:
                kw = {"shard": (int(replica), int(n_replicas)), **self._replica_options(int(replica))}
        rows = np.flatnonzero(np.any(delta != 0.0, axis=1))
        if self._product.pairwise and len(rows) < len(x):
            out = self._product.grouped_matvec(
                x, groups, x[rows], None if groups is None else groups[rows], delta[rows], **kw
            )
        else:
            out = self._product.grouped_matvec(x, groups, x, groups, delta, same=True, **kw)
        return np.asarray(out, dtype=np.float64)  # tf.numpy_function wants the declared dtype exactly

    def _replica_options(self, replica):
        """The device and tile workers of a replica's shard (its own device; the cores shared locally)."""
        strategy = getattr(self, "_distribute_strategy", None) or tf.distribute.get_strategy()
        device = self.device or local_device(strategy, replica)
        n_local = max(1, len(getattr(strategy.extended, "worker_devices", ()) or ()))
        threads = self.chunking.n_threads
        if threads is None and (device is None or "CPU" in device.upper()):
            threads = max(1, default_threads() // n_local)
        return {"device": device, "n_threads": threads}

    def _np_commit_dual(self, delta, du, u_train, step):
        """Positive-definiteness policy of the step's update ``du = K delta`` at the train points."""
        delta = np.asarray(delta)
        u_train = np.asarray(u_train)
        if self._skip_dual(delta, int(step)):
            return 0.0, np.array([np.inf]), 0.0
        du = np.asarray(du)
        g_old = np.asarray(self.g0_train.numpy()) - u_train
        scale, eig, k = self._policy(g_old, -du, int(step))
        return scale, eig, float(k)

    def _np_commit_primal(self, g_old, dg, step):
        if not self._finite(np.asarray(dg), int(step)) or self._halted:
            return 0.0, np.array([np.inf]), 0.0
        scale, eig, k = self._policy(np.asarray(g_old), np.asarray(dg), int(step))
        return scale, eig, float(k)

    def _finite(self, update, step):
        """False (and training stops with a ValueError) when the step's update is not finite."""
        if np.all(np.isfinite(update)):
            return True
        if self._flow_error is None:
            self._flow_error = ValueError(
                f"step {step}: the flow update is not finite (NaN/inf loss gradient: check that the "
                "targets y = [w, |Omega|^2] are finite with |Omega|^2 > 0); the update was discarded "
                "and training stopped."
            )
        self._halted = True
        self.stop_training = True
        return False

    def _policy(self, g_old, dg, step):
        """Scale s of the step's metric change dg such that g_old + s dg stays valid.

        Returns ``(s, eigenvalues (P,) of the accepted metric, number of backoffs)``.
        """
        floor = self.eigenvalue_floor
        lam = min_eigenvalues(g_old + dg, self.n)
        if np.all(lam > floor):
            return 1.0, lam, 0
        bad = lam <= floor
        msg = (
            f"step {step}: the metric update would make the metric non-positive-definite at "
            f"{int(bad.sum())} of {len(lam)} checked points (smallest eigenvalue {lam.min():.3g} "
            f"<= eigenvalue_floor {floor:g})."
        )
        lam_old = min_eigenvalues(g_old, self.n)
        if self.on_non_positive == "backoff":
            s = 1.0
            for k in range(1, self.max_backoffs + 1):
                s *= self.backoff_factor
                lam_s = min_eigenvalues(g_old + s * dg, self.n)
                if np.all(lam_s > floor):
                    return s, lam_s, k
            msg += (
                f" No step scale >= backoff_factor**max_backoffs = "
                f"{self.backoff_factor**self.max_backoffs:.3g} keeps it valid."
            )
            policy = "raise"
        else:
            policy = self.on_non_positive
        advice = (
            " The update was discarded and the model keeps its last valid metric. Lower the "
            "learning rate (dt) or change the kernel's hyperparameters"
            + (
                ", or raise max_backoffs."
                if self.on_non_positive == "backoff"
                else ", or use on_non_positive='backoff'."
            )
        )
        self._halted = True
        self.stop_training = True
        if policy == "raise":
            self._flow_error = NonPositiveMetricError(msg + advice)
        else:
            warnings.warn(msg + advice + " Training stopped (on_non_positive='stop').", RuntimeWarning, stacklevel=2)
        return 0.0, lam_old, 0
