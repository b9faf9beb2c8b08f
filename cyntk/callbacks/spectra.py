"""Spectra of metric-NTK blocks and measures of how a kernel evolves.

Every kernel here is a NumPy array ``theta`` of shape (P1, P2, m, m) indexed
``theta[a, b, I, J]`` (points ``a``, ``b``; components ``I``, ``J`` in cyntk's
order, :mod:`cyntk.geometry.components`), as returned by
:func:`cyntk.kernels.metric_ntk`. For a cymetric-style metric model ``m = n**2``;
for a plain regression network ``m`` is its number of outputs.

Two spectra are defined:

* the **pooled block spectrum** (the statistic of Halverson & Ruehle,
  arXiv:2310.19870, section 3.4 and Figure 4): for every component pair
  ``(I, J)`` take the P1 x P2 matrix ``M_IJ[a, b] = theta[a, b, I, J]`` and pool
  the spectra of all ``m**2`` matrices into one sample of ``m**2 * min(P1, P2)``
  real numbers. ``M_IJ`` is symmetric only for ``I == J`` on a symmetric
  (train-train or test-test) block; for ``I != J`` it is ``M_JI`` transposed and,
  on a train-test block, never symmetric. Two treatments are offered
  (``kind``):

  - ``"eigenvalues"`` (default): the **real parts** of the eigenvalues of each
    square ``M_IJ`` (symmetric ``M_II`` use ``eigvalsh`` of ``(M + M^T)/2``, so
    their eigenvalues are exactly real). ``M_IJ`` and ``M_JI = M_IJ^T`` share
    their eigenvalues, so on symmetric blocks every off-diagonal spectrum
    appears twice in the pool, exactly as when all ``m**2`` blocks are pooled.
    The imaginary parts (complex-conjugate pairs) are discarded;
    :func:`block_eigenvalues` returns them if needed. Requires P1 == P2.
  - ``"singular_values"``: the singular values of each ``M_IJ`` (non-negative,
    defined for any P1, P2, invariant under transposition).

* the **full spectrum** of a symmetric block: the eigenvalues of the
  (m P) x (m P) matrix ``K[(a, I), (b, J)] = theta[a, b, I, J]``, the Gram
  matrix of the per-output parameter gradients (positive semi-definite up to
  round-off).

Measures between two kernels ``A = Theta_t`` and ``B = Theta_0``:

* relative Frobenius change ``||A - B||_F / ||B||_F``;
* kernel distance ``1 - <A, B>_F / (||A||_F ||B||_F)`` (Fort et al. 2020),
  evaluated as ``||A/||A|| - B/||B|| ||_F**2 / 2`` (the same number, without
  cancellation; it is exactly 0 for equal kernels);
* the p-Wasserstein distance ``W_p`` between two spectra, each taken as the
  uniform empirical measure on its values, computed with POT's
  ``ot.wasserstein_1d`` (which returns ``W_p**p``; :func:`wasserstein` returns
  ``W_p`` itself);
* kernel-target alignment (Cristianini et al. 2002)
  ``A(K, y) = <K, y y^T>_F / (||K||_F ||y y^T||_F) = y^T K y / (||K||_F ||y||**2)``
  with ``y`` the (P m,) flattened targets (uncentred).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SPECTRUM_KINDS",
    "kernel_matrix",
    "block_eigenvalues",
    "pooled_block_spectrum",
    "full_spectrum",
    "wasserstein",
    "log_spectrum",
    "relative_frobenius_change",
    "kernel_distance",
    "kernel_target_alignment",
]

#: Treatments of the per-(I, J) blocks in :func:`pooled_block_spectrum`.
SPECTRUM_KINDS = ("eigenvalues", "singular_values")


def _as_kernel(theta, name: str = "theta") -> np.ndarray:
    """Validate a (P1, P2, m, m) real kernel and return it as float64."""
    arr = np.asarray(theta)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"`{name}` must be a real array of shape (P1, P2, m, m); received dtype {arr.dtype}.")
    if arr.ndim != 4 or arr.shape[2] != arr.shape[3] or 0 in arr.shape:
        raise ValueError(
            f"`{name}` must have shape (P1, P2, m, m) (points a, b; components I, J) "
            f"with non-zero sizes; received shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"`{name}` must be finite; received {int(np.sum(~np.isfinite(arr)))} NaN or "
            "inf entries (did training diverge?)."
        )
    return arr.astype(np.float64, copy=False)


def _is_symmetric_block(theta: np.ndarray, rtol: float = 1e-5) -> bool:
    """True when theta[a, b, I, J] == theta[b, a, J, I] up to ``rtol`` (a symmetric block)."""
    if theta.shape[0] != theta.shape[1]:
        return False
    scale = np.max(np.abs(theta))
    diff = np.max(np.abs(theta - theta.transpose(1, 0, 3, 2)))
    return bool(diff <= rtol * scale)


def kernel_matrix(theta) -> np.ndarray:
    """Flatten a kernel to the matrix ``K[(a, I), (b, J)] = theta[a, b, I, J]``.

    Args:
        theta: real array (P1, P2, m, m).

    Returns:
        float64 array (P1 m, P2 m); row ``a*m + I``, column ``b*m + J``.
    """
    t = _as_kernel(theta)
    p1, p2, m, _ = t.shape
    return t.transpose(0, 2, 1, 3).reshape(p1 * m, p2 * m)


def _blocks(theta: np.ndarray) -> np.ndarray:
    """(m*m, P1, P2) stack of ``M_IJ[a, b] = theta[a, b, I, J]`` in (I, J) row-major order."""
    p1, p2, m, _ = theta.shape
    return theta.transpose(2, 3, 0, 1).reshape(m * m, p1, p2)


def block_eigenvalues(theta) -> np.ndarray:
    """Complex eigenvalues of every per-(I, J) block ``M_IJ`` (square blocks only).

    Args:
        theta: real array (P, P, m, m).

    Returns:
        complex128 array (m, m, P): ``out[I, J]`` are the eigenvalues of ``M_IJ``
        (NumPy's order, unsorted).
    """
    t = _as_kernel(theta)
    p1, p2, m, _ = t.shape
    if p1 != p2:
        raise ValueError(
            f"`theta` must be a square block (P1 == P2) to have eigenvalues; received "
            f"shape {t.shape}. Use singular values instead."
        )
    return np.linalg.eigvals(_blocks(t)).reshape(m, m, p1)


def pooled_block_spectrum(theta, kind: str = "eigenvalues", *, symmetric: bool | None = None) -> np.ndarray:
    """The paper's pooled per-(I, J) spectrum of a kernel block (see module docstring).

    Args:
        theta: real array (P1, P2, m, m), ``theta[a, b, I, J]``.
        kind: ``"eigenvalues"`` (real parts of the eigenvalues of each P x P
            block ``M_IJ``; requires P1 == P2) or ``"singular_values"``.
        symmetric: whether ``theta`` is a symmetric block
            (``theta[a, b, I, J] == theta[b, a, J, I]``, e.g. train-train), so
            that the ``I == J`` blocks are symmetric matrices and get exactly real
            eigenvalues from ``eigvalsh``, and each pair ``M_IJ``, ``M_JI =
            M_IJ^T`` is diagonalised once. ``None`` detects it (relative
            tolerance 1e-5).

    Returns:
        float64 array (m*m*min(P1, P2),): block ``(I, J)`` (row-major) occupies
        entries ``[(I*m + J) * k, (I*m + J + 1) * k)``, k = min(P1, P2), each
        block's values in ascending order.
    """
    t = _as_kernel(theta)
    p1, p2, m, _ = t.shape
    if kind not in SPECTRUM_KINDS:
        raise ValueError(f"`kind` must be one of {SPECTRUM_KINDS}; received {kind!r}.")
    blocks = _blocks(t)
    if kind == "singular_values":
        return np.sort(np.linalg.svd(blocks, compute_uv=False), axis=-1).reshape(-1)
    if p1 != p2:
        raise ValueError(
            f"kind='eigenvalues' needs square blocks (P1 == P2); received `theta` of shape "
            f"{t.shape}. Use kind='singular_values' for rectangular (train-test) blocks "
            "with different numbers of train and test points."
        )
    if symmetric is None:
        symmetric = _is_symmetric_block(t)
    if not symmetric:
        return np.sort(np.linalg.eigvals(blocks).real, axis=-1).reshape(-1)
    # symmetric block: M_JI = M_IJ^T has the eigenvalues of M_IJ, so only I < J is
    # diagonalised (and copied to J > I); M_II are symmetric (eigvalsh, exactly real)
    out = np.empty((m, m, p1))
    iu, ju = np.triu_indices(m, 1)
    if iu.size:
        upper = np.sort(np.linalg.eigvals(blocks.reshape(m, m, p1, p2)[iu, ju]).real, axis=-1)
        out[iu, ju] = upper
        out[ju, iu] = upper
    d = blocks[np.arange(m) * (m + 1)]
    out[np.arange(m), np.arange(m)] = np.linalg.eigvalsh(0.5 * (d + d.transpose(0, 2, 1)))
    return out.reshape(-1)


def full_spectrum(theta) -> np.ndarray:
    """Eigenvalues of the full symmetric (m P) x (m P) kernel matrix.

    Args:
        theta: real array (P, P, m, m) of a symmetric block
            (``theta[a, b, I, J] == theta[b, a, J, I]``, e.g. train-train).

    Returns:
        float64 array (m P,), ascending, of ``eigvalsh((K + K^T)/2)`` with
        ``K = kernel_matrix(theta)`` (the symmetrisation removes round-off only).
    """
    t = _as_kernel(theta)
    if t.shape[0] != t.shape[1]:
        raise ValueError(f"`theta` must be a square symmetric block (P, P, m, m); received shape {t.shape}.")
    k = kernel_matrix(t)
    return np.linalg.eigvalsh(0.5 * (k + k.T))


def _as_sample(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"`{name}` must be a real 1-D array of spectrum values; received dtype {arr.dtype}.")
    arr = arr.astype(np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"`{name}` must contain at least one value; received an empty array.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite; received {int(np.sum(~np.isfinite(arr)))} NaN or inf values.")
    return arr


def wasserstein(u, v, p: float = 1) -> float:
    """p-Wasserstein distance ``W_p`` between two 1-D empirical distributions.

    Each sample is the uniform measure on its values (samples may differ in
    size)::

        W_p(u, v) = ( int_0^1 |F_u^{-1}(q) - F_v^{-1}(q)|**p dq )**(1/p)

    computed as ``ot.wasserstein_1d(u, v, p=p) ** (1/p)``: POT returns
    ``W_p**p``; this function returns ``W_p`` (same units as the values; for
    p = 1 it equals ``scipy.stats.wasserstein_distance``). Shifting one sample
    by ``c`` gives ``W_p = |c|`` for every p.

    Args:
        u: real array (k1,), e.g. a spectrum at epoch t.
        v: real array (k2,), e.g. the spectrum at epoch 0.
        p: order, a number >= 1.

    Returns:
        ``W_p`` as a Python float (>= 0; exactly 0 for equal samples).
    """
    import ot  # POT; imported here so `import cyntk.callbacks` stays light

    try:
        p = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"`p` must be a number >= 1 (Wasserstein order); received {p!r}.") from None
    if not np.isfinite(p) or p < 1:
        raise ValueError(f"`p` must be a finite number >= 1 (Wasserstein order); received {p}.")
    u = _as_sample(u, "u")
    v = _as_sample(v, "v")
    wp = float(ot.wasserstein_1d(u, v, p=p))
    return max(wp, 0.0) ** (1.0 / p)


def log_spectrum(values, floor: float) -> np.ndarray:
    """``log10(max(|values|, floor))``: a spectrum on a logarithmic scale.

    Eigenvalues of a PSD kernel span many decades, and a few are round-off
    noise around 0 (of either sign); taking ``|.|`` and flooring them at a fixed
    positive ``floor`` (e.g. ``1e-10`` times the largest ``|value|`` at epoch 0)
    keeps the log finite and the same for every epoch.

    Args:
        values: real array (k,).
        floor: positive float, the smallest magnitude represented.

    Returns:
        float64 array (k,).
    """
    floor = float(floor)
    if not np.isfinite(floor) or floor <= 0:
        raise ValueError(f"`floor` must be a finite number > 0; received {floor}.")
    return np.log10(np.maximum(np.abs(_as_sample(values, "values")), floor))


def relative_frobenius_change(theta_t, theta_0) -> float:
    """``||theta_t - theta_0||_F / ||theta_0||_F``.

    Args:
        theta_t: real array (P1, P2, m, m), the kernel now.
        theta_0: real array of the same shape, the reference kernel.

    Returns:
        float >= 0 (exactly 0 for equal kernels).
    """
    a, b = _as_kernel(theta_t, "theta_t"), _as_kernel(theta_0, "theta_0")
    _same_shape(a, b)
    nb = np.linalg.norm(b.reshape(-1))
    if nb == 0:
        raise ValueError(
            "`theta_0` is identically zero (a model without trainable parameters?); the relative change is undefined."
        )
    return float(np.linalg.norm((a - b).reshape(-1)) / nb)


def kernel_distance(theta_t, theta_0) -> float:
    """Kernel distance ``1 - <theta_t, theta_0>_F / (||theta_t||_F ||theta_0||_F)``.

    Evaluated as ``0.5 * ||theta_t/||theta_t|| - theta_0/||theta_0|| ||_F**2``
    (algebraically equal; exact 0 for equal kernels, no cancellation for nearby
    ones). Ranges over [0, 2]; it is invariant under rescaling either kernel.

    Args:
        theta_t: real array (P1, P2, m, m).
        theta_0: real array of the same shape.

    Returns:
        float in [0, 2].
    """
    a, b = _as_kernel(theta_t, "theta_t"), _as_kernel(theta_0, "theta_0")
    _same_shape(a, b)
    na, nb = np.linalg.norm(a.reshape(-1)), np.linalg.norm(b.reshape(-1))
    if na == 0 or nb == 0:
        raise ValueError("kernel distance is undefined for an identically zero kernel.")
    d = a / na - b / nb
    return float(0.5 * np.dot(d.reshape(-1), d.reshape(-1)))


def kernel_target_alignment(theta, y) -> float:
    """Kernel-target alignment ``y^T K y / (||K||_F ||y||**2)`` (uncentred).

    ``K`` is :func:`kernel_matrix` of ``theta`` and ``y`` the targets flattened
    point-major, ``y[a*m + I]``. For a PSD kernel it lies in [0, 1]; it is 1 when
    ``K`` is proportional to ``y y^T``. With ``y`` the training residual
    ``f(x) - y_true`` of a squared loss it measures how much of the kernel's
    weight lies along the direction that gradient descent moves the outputs
    (``df/dt = -K (f - y)``).

    Args:
        theta: real array (P, P, m, m), a symmetric block.
        y: real array (P, m) (or (P,) when m = 1).

    Returns:
        float.
    """
    t = _as_kernel(theta)
    p, p2, m, _ = t.shape
    if p != p2:
        raise ValueError(f"`theta` must be a square block (P, P, m, m); received shape {t.shape}.")
    yy = np.asarray(y, dtype=np.float64)
    if yy.ndim == 1 and m == 1:
        yy = yy[:, None]
    if yy.shape != (p, m):
        raise ValueError(f"`y` must have shape (P, m) = ({p}, {m}) to match `theta`; received shape {np.shape(y)}.")
    if not np.all(np.isfinite(yy)):
        raise ValueError("`y` must be finite; received NaN or inf entries.")
    yv = yy.reshape(-1)
    ny2 = float(np.dot(yv, yv))
    k = kernel_matrix(t)
    nk = np.linalg.norm(k)
    if ny2 == 0 or nk == 0:
        raise ValueError("kernel-target alignment is undefined for zero targets or a zero kernel.")
    return float(yv @ k @ yv / (nk * ny2))


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"the two kernels must have the same shape; received {a.shape} and {b.shape}.")
