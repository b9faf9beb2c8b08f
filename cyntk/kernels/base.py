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
"""

from __future__ import annotations

import abc

import numpy as np

from cyntk._validation import as_real_points, matching_widths, optional_chunk_size

__all__ = ["Kernel"]


class Kernel(abc.ABC):
    """Base class of cyntk kernels.

    Points are real arrays of shape (P, d); for points of projective space this
    is cymetric's layout ``[Re z_1..Re z_N, Im z_1..Im z_N]`` (d = 2N). A single
    point of shape (d,) is accepted and the corresponding axis is dropped from
    the result.

    Subclasses set the class attribute ``component_diagonal`` and implement
    ``_block(x1, x2)``: ``x1`` float64 (P1, d), ``x2`` float64 (P2, d) or
    ``None`` for ``x2 = x1`` (so symmetry can be exploited); it returns a NumPy
    array of shape (P1, P2) (component-diagonal) or (P1, P2, m, m) (full).
    """

    #: True when Theta_IJ(x, x') = delta_IJ k(x, x') and blocks are (P1, P2).
    component_diagonal: bool = True

    #: Number of metric components m of a full kernel (None when not fixed).
    n_components: int | None = None

    # ------------------------------------------------------------------ public
    def __call__(self, x1, x2=None) -> np.ndarray:
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

    def full(self, x1, x2=None, n_components: int | None = None) -> np.ndarray:
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

    def matvec(self, x1, x2, v, *, chunk_size: int | None = None) -> np.ndarray:
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

    def get_config(self) -> dict:
        """Constructor arguments (override in subclasses)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------- private
    @abc.abstractmethod
    def _block(self, x1: np.ndarray, x2: np.ndarray | None) -> np.ndarray:
        """Kernel block for validated float64 points (``x2=None``: ``x2 = x1``)."""

    @staticmethod
    def _points(x, name):
        arr = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
        squeeze = arr.ndim == 1
        return as_real_points(arr, name, allow_vector=True), squeeze

    def _check_block(self, out, p1, p2):
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
