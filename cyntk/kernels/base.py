"""The kernel interface shared by every kernel in cyntk.

Modelled on TensorFlow Probability's ``psd_kernels``: one base class whose public
methods cast, validate and broadcast the points, while each subclass writes only
the private block function :meth:`Kernel._block`, with its formula in the class
docstring.

A kernel ``Theta[a, b, I, J] = Theta_IJ(x1[a], x2[b])`` between two point sets
comes in one of two forms:

* component-diagonal (``kernel.component_diagonal is True``):
  ``Theta_IJ(x, x') = delta_IJ k(x, x')``; ``kernel(x1, x2)`` returns the scalar
  block ``k`` of shape (P1, P2) and works for any number of components;
* full (``component_diagonal is False``): ``kernel(x1, x2)`` returns shape
  (P1, P2, m, m) with the components in cyntk's order
  (:mod:`cyntk.geometry.components`); ``kernel.n_components`` is ``m`` once known.

:meth:`Kernel.full` always returns the (P1, P2, m, m) form and
:meth:`Kernel.matvec` applies the kernel to per-point vectors without storing
more than one row chunk of the block.

The contract
------------
Every capability a product engine (:class:`cyntk.flows.product.KernelProduct`,
the TensorFlow engine of :class:`~cyntk.flows.kernel_model.KernelModel`) may
use is *declared* on the class; engines read the declarations and never probe
the class hierarchy or test for concrete classes. Each concrete kernel of
cyntk states every flag explicitly:

=========================== ===== ===== ==== ==== ===== ===== ===== =====
kernel                      diag  pair  sym  psd  tiles fused free  ident
=========================== ===== ===== ==== ==== ===== ===== ===== =====
GaussianFSKernel            yes   yes   yes  no   yes   no    no    no
DeltaKernel                 yes   no    no   yes  no    no    yes   yes
InfiniteWidthKernel         yes   yes   yes  yes  yes   yes   no    no
CosineNTKKernel             yes   yes   yes  yes  no    no    no    no
EmpiricalNTKKernel          no    yes   yes  yes  no    no    yes   no
InfiniteWidthMetricKernel   no    yes   yes  yes  no    no    no    no
ManifoldGaussianKernel      yes   yes   yes  yes  no    no    no    no
=========================== ===== ===== ==== ==== ===== ===== ===== =====

(diag: :attr:`~Kernel.component_diagonal`; pair: :attr:`~Kernel.pairwise`;
sym: :attr:`~Kernel.symmetric`; psd: :attr:`~Kernel.positive_semidefinite`;
tiles / fused: :attr:`~Kernel.has_tile_api` / :attr:`~Kernel.has_fused_tile_matvec`;
free: :attr:`~Kernel.has_matrix_free_matvec`; ident:
:attr:`~Kernel.identity_on_same_points`.)

Kernels are registered with ``keras.saving.register_keras_serializable(package="cyntk")``
and round-trip through ``keras.saving.serialize_keras_object`` /
``keras.saving.deserialize_keras_object`` (:meth:`Kernel.get_config` /
:meth:`Kernel.from_config`). ``tests/test_kernel_contract.py`` checks every
kernel exported from :mod:`cyntk.kernels` against this contract.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import numpy as np

from cyntk._validation import as_real_points, matching_widths, optional_chunk_size

if TYPE_CHECKING:
    from collections.abc import Mapping

    from numpy.typing import ArrayLike

__all__ = ["Kernel"]


class Kernel(abc.ABC):
    """Base class of cyntk kernels.

    Points are real arrays of shape (P, d); for points of projective space this
    is cymetric's layout ``[Re z_1..Re z_N, Im z_1..Im z_N]`` (d = 2N). A single
    point of shape (d,) is accepted and the corresponding axis is dropped from
    the result.

    Subclasses implement ``_block(x1, x2)``: ``x1`` float64 (P1, d), ``x2``
    float64 (P2, d) or ``None`` for ``x2 = x1`` (so symmetry can be exploited);
    it returns a NumPy array of shape (P1, P2) (component-diagonal) or
    (P1, P2, m, m) (full). They declare their capabilities with the class
    attributes below (the defaults are the safe ones: an engine that trusts
    them is always correct, only possibly slower), and optionally implement
    the tile interface (:meth:`tile_state`, :meth:`tile_block`,
    :meth:`tile_matvec`) and a matrix-free :meth:`matvec`.

    A subclass that overrides ``_block`` without re-declaring
    ``has_tile_api`` / ``has_fused_tile_matvec`` loses them (the inherited tile
    methods compute its parent's block, not its own), and one that overrides
    ``_block`` but not ``matvec`` without re-declaring ``has_matrix_free_matvec``
    loses that too; engines then use the generic calls, which honour the override.
    """

    #: True when Theta_IJ(x, x') = delta_IJ k(x, x') and blocks are (P1, P2).
    component_diagonal: bool = True

    #: Number of metric components m of a full kernel (None when not fixed or
    #: not yet known; component-diagonal kernels work for any m).
    n_components: int | None = None

    #: True when entry (a, b) of ``kernel(x1, x2)`` depends only on ``x1[a]``
    #: and ``x2[b]`` (not on the rest of either set), so the block may be
    #: evaluated tile by tile. A pairwise kernel must also be :attr:`symmetric`
    #: (engines evaluate only the tiles on and above the diagonal of a set with
    #: itself). False for kernels such as the nearest-neighbour
    #: :class:`~cyntk.kernels.fs.DeltaKernel` whose entries depend on all of ``x2``.
    pairwise: bool = False

    #: True when ``kernel(x1, x2) = kernel(x2, x1)^T`` for any two point sets
    #: (``Theta_IJ(x, x') = Theta_JI(x', x)``).
    symmetric: bool = False

    #: True when the block ``kernel(x, None)`` of any point set with itself,
    #: read as a (P m) x (P m) matrix, is positive semidefinite (up to rounding).
    #: Promised by the infinite-width NNGP/NTK (:class:`InfiniteWidthKernel`,
    #: :class:`InfiniteWidthMetricKernel`), the cosine-network NTK and the
    #: (rescaled) Gaussians of :class:`CosineNTKKernel` and
    #: :class:`ManifoldGaussianKernel` (Gaussians of a Euclidean distance), the
    #: empirical NTK (a Gram matrix ``J J^T``) and the Delta kernel (the
    #: identity); *not* by :class:`GaussianFSKernel`, the exponential of the
    #: Fubini-Study geodesic distance, for which no proof is at hand.
    positive_semidefinite: bool = False

    #: True when the block of a point set with itself is the identity
    #: (``kernel(x, None) = 1``) whatever the points (the Delta kernel), so
    #: engines may return ``v`` for the product of a set with itself.
    identity_on_same_points: bool = False

    #: True when the class implements :meth:`tile_state` and :meth:`tile_block`
    #: and they give exactly its ``_block`` (read through :attr:`supports_tiles`).
    has_tile_api: bool = False

    #: True when the class also implements the fused :meth:`tile_matvec`
    #: (component-diagonal kernels only; read through :attr:`supports_fused_matvec`).
    has_fused_tile_matvec: bool = False

    #: True when :meth:`matvec` is the kernel's own matrix-free product (it does
    #: not form the block: the empirical NTK's ``J (J^T v)``, the Delta
    #: kernel's copy of the nearest neighbour's vector); read through
    #: :attr:`matrix_free`. Engines then call ``matvec`` instead of the block.
    has_matrix_free_matvec: bool = False

    #: True when the TensorFlow engine of :class:`~cyntk.flows.kernel_model.KernelModel`
    #: (:mod:`cyntk.flows.tf_tiles`) has this class's ``_block`` as TensorFlow
    #: ops (the same formula, to rounding), so its tiles run as XLA-compiled
    #: functions on any device; otherwise that engine evaluates the NumPy block
    #: per tile. Declared by GaussianFSKernel, InfiniteWidthKernel (ReLU in the
    #: 'ntk' parameterisation, or depth 0; other activations fall back),
    #: CosineNTKKernel and ManifoldGaussianKernel.
    has_tf_tile: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "_block" in own:
            # the inherited tile methods / matvec compute the parent's block, not this one
            if "has_tile_api" not in own and "tile_block" not in own:
                cls.has_tile_api = False
            if "has_fused_tile_matvec" not in own and "tile_matvec" not in own:
                cls.has_fused_tile_matvec = False
            if "has_matrix_free_matvec" not in own and "matvec" not in own:
                cls.has_matrix_free_matvec = False
            if "has_tf_tile" not in own:
                cls.has_tf_tile = False

    # ------------------------------------------------------------ capabilities
    @property
    def supports_tiles(self) -> bool:
        """Whether engines may evaluate tiles with :meth:`tile_state` / :meth:`tile_block`."""
        return bool(self.has_tile_api)

    @property
    def supports_fused_matvec(self) -> bool:
        """Whether engines may contract tiles with the fused :meth:`tile_matvec`."""
        return bool(self.has_tile_api and self.has_fused_tile_matvec and self.component_diagonal)

    @property
    def matrix_free(self) -> bool:
        """Whether :meth:`matvec` is the kernel's own product that never forms the block."""
        return bool(self.has_matrix_free_matvec)

    # ---------------------------------------------------------- tile interface
    def tile_state(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-point state of validated float64 points (P, d), computed once per point set.

        A tuple of arrays with the points on their first axis (unit vectors,
        layer variances, ...), so a tile's state is ``tuple(a[rows] for a in state)``.
        Only for kernels with :attr:`supports_tiles`.
        """
        raise NotImplementedError(f"{type(self).__name__} has no tile interface (has_tile_api is False).")

    def tile_block(self, state1: tuple[np.ndarray, ...], state2: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        """The block between two (sliced) states of :meth:`tile_state` (``state2=None``: a set with itself).

        Equal to ``_block`` of the corresponding points (to rounding).
        """
        raise NotImplementedError(f"{type(self).__name__} has no tile interface (has_tile_api is False).")

    def tile_matvec(
        self,
        state1: tuple[np.ndarray, ...],
        state2: tuple[np.ndarray, ...] | None,
        v2: np.ndarray,
        v1: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Fused ``(Theta v2, Theta^T v1)`` of one tile (``v1=None``: second item None).

        ``state2=None``: the set ``state1`` with itself (then ``v1`` is None).
        ``v2`` is (P2, m), ``v1`` (P1, m). Only for kernels with
        :attr:`supports_fused_matvec`.
        """
        raise NotImplementedError(f"{type(self).__name__} has no fused tile_matvec (has_fused_tile_matvec is False).")

    # ------------------------------------------------------------------ public
    def __call__(self, x1: ArrayLike, x2: ArrayLike | None = None) -> np.ndarray:
        """Evaluate the kernel block between two point sets.

        Args:
            x1: real array (P1, d) or one point (d,).
            x2: real array (P2, d) or one point (d,); ``None`` means ``x1``.

        Returns:
            NumPy array of shape (P1, P2) if ``component_diagonal`` else
            (P1, P2, m, m); the axis of a single-point argument is dropped.
        """
        p1, squeeze1 = self._points(x1, "x1")
        if x2 is None:
            p2, squeeze2 = None, squeeze1
        else:
            p2, squeeze2 = self._points(x2, "x2")
            matching_widths(p1, p2)
        out = np.asarray(self._block(p1, p2))
        n2 = len(p1) if p2 is None else len(p2)
        self._check_block(out, len(p1), n2)
        if squeeze1:
            out = out[0]
        if squeeze2:
            out = out[:, 0] if not squeeze1 else out[0]
        return out

    def full(self, x1: ArrayLike, x2: ArrayLike | None = None, n_components: int | None = None) -> np.ndarray:
        """The block in full form (P1, P2, m, m), whatever the kernel type.

        Args:
            x1: real (P1, d).
            x2: real (P2, d) or ``None`` (= ``x1``).
            n_components: m; required for component-diagonal kernels (which
                work for any m), must match ``n_components`` of full ones.

        Returns:
            array (P1, P2, m, m), ``Theta[a, b, I, J]``.
        """
        if not self.component_diagonal:
            out = self(np.atleast_2d(x1), None if x2 is None else np.atleast_2d(x2))
            if n_components is not None and out.shape[-1] != n_components:
                raise ValueError(
                    f"`n_components` must match the kernel's {out.shape[-1]} components; received {n_components}."
                )
            return out
        if n_components is None:
            raise ValueError(
                "`n_components` (number of metric components m) is required to expand "
                f"the component-diagonal {type(self).__name__} to (P1, P2, m, m)."
            )
        k = self(np.atleast_2d(x1), None if x2 is None else np.atleast_2d(x2))
        eye = np.eye(int(n_components), dtype=k.dtype)
        return k[:, :, None, None] * eye

    def matvec(self, x1: ArrayLike, x2: ArrayLike, v: ArrayLike, *, chunk_size: int | None = None) -> np.ndarray:
        """``u[a, I] = sum_{b, J} Theta_IJ(x1[a], x2[b]) v[b, J]``.

        The block is evaluated in row chunks of ``x1`` so that at most
        ``chunk_size * P2`` entries (times m^2 for full kernels) exist at once.

        Args:
            x1: real (P1, d) target points.
            x2: real (P2, d) source points.
            v: real (P2, m) values at the source points (for a
                component-diagonal kernel also (P2,)).
            chunk_size: rows of ``x1`` per block (default: all).

        Returns:
            float64 array (P1, m) (or (P1,) for a 1-D ``v``).
        """
        p1, _ = self._points(x1, "x1")
        p2, _ = self._points(x2, "x2")
        matching_widths(p1, p2)
        chunk_size = optional_chunk_size(chunk_size) or len(p1)
        v = np.asarray(v, dtype=np.float64)
        if v.ndim not in (1, 2) or v.shape[0] != len(p2) or (v.ndim == 1 and not self.component_diagonal):
            raise ValueError(
                f"`v` must have shape (P2, m) = ({len(p2)}, m) (one value per source point "
                f"and component); received shape {v.shape}."
            )
        if not np.all(np.isfinite(v)):
            raise ValueError("`v` must be finite; received NaN or inf entries.")
        out = []
        for s in range(0, len(p1), chunk_size):
            block = np.asarray(self._block(p1[s : s + chunk_size], p2))
            self._check_block(block, len(p1[s : s + chunk_size]), len(p2))
            if self.component_diagonal:
                out.append(block @ v)
            else:
                if block.shape[-1] != v.shape[-1]:
                    raise ValueError(
                        f"`v` must have m = {block.shape[-1]} components per point; received shape {v.shape}."
                    )
                out.append(np.einsum("abIJ,bJ->aI", block, v))
        return np.concatenate(out, axis=0)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-able after ``keras.saving.serialize_keras_object``.

        Nested Keras-serialisable objects (kernels, models) may appear as
        values; :meth:`from_config` deserialises them again. Override in subclasses.
        """
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Kernel:
        """The kernel of a :meth:`get_config` (nested serialised objects are deserialised)."""
        return cls(**{key: _deserialize_value(value) for key, value in dict(config).items()})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_short_repr(v)}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------- private
    @abc.abstractmethod
    def _block(self, x1: np.ndarray, x2: np.ndarray | None) -> np.ndarray:
        """Kernel block for validated float64 points (``x2=None``: ``x2 = x1``)."""

    @staticmethod
    def _points(x: ArrayLike, name: str) -> tuple[np.ndarray, bool]:
        arr = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
        squeeze = arr.ndim == 1
        return as_real_points(arr, name, allow_vector=True), squeeze

    def _check_block(self, out: np.ndarray, p1: int, p2: int) -> None:
        if self.component_diagonal:
            ok = out.shape == (p1, p2)
            expected = f"({p1}, {p2})"
        else:
            ok = out.ndim == 4 and out.shape[:2] == (p1, p2) and out.shape[2] == out.shape[3]
            expected = f"({p1}, {p2}, m, m)"
        if not ok:
            raise RuntimeError(
                f"{type(self).__name__}._block returned shape {out.shape}; expected "
                f"{expected}. This is a bug in the kernel class."
            )


def _short_repr(value: Any) -> str:
    """``repr`` of a config value, with models and arrays abbreviated."""
    if hasattr(value, "variables") and hasattr(value, "name"):  # a Keras layer / model
        return f"<{type(value).__name__} {value.name!r}>"
    if isinstance(value, np.ndarray):
        return f"<array {value.shape}>"
    if isinstance(value, dict) and "monomials" in value and "name" in value:  # a manifold's spec
        return f"<manifold {value['name']!r}>"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
        return f"<{len(value)} arrays>"
    return repr(value)


def _deserialize_value(value: Any) -> Any:
    """A value of a kernel config: serialised Keras objects (dicts with ``class_name``) are rebuilt."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        import keras

        return keras.saving.deserialize_keras_object(value)
    if isinstance(value, list):
        return [_deserialize_value(v) for v in value]
    return value
