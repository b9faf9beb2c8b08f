"""The concrete metric models: Fubini--Study, multiplicative and φ (see :class:`~cyntk.models.MetricModel`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np
import tensorflow as tf

from cyntk.models._tfgeometry import _tangents_for, jvp, local_ddbar
from cyntk.models.hermitian import hermitian_from_components_tf

if TYPE_CHECKING:
    from tensorflow.types.experimental import TensorLike

    from cyntk.models._spec import ManifoldLike

from cyntk.models.metric_model import MetricModel

__all__ = ["FSModel", "MultiplicativeModel", "PhiModel"]


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
