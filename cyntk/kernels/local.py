"""From non-local to local metric flows: normalised Gaussian kernels and sigma -> 0 (paper 2.24-2.37).

A frozen kernel drives the continuum metric flow (paper eq. 2.12)::

    dg_I(x)/dt = - int_X dmu(x') Theta_IJ(x, x') dl/dg_J(x')                    (2.12)

and for ``Theta_IJ = delta_IJ Omega_bar(x) delta_mu(x - x')`` (a delta-function
with respect to the integration measure mu) it becomes the local flow::

    dg_I(x)/dt = - Omega_bar(x) dl/dg_I(x)                                      (2.14)

**The Gaussian kernel on the manifold.** The cosine network of paper section
2.3.2 has the infinite-width NTK ``(A^2/2) exp(-|x - x'|^2/(2 sigma^2))`` with
``sigma = sqrt(d)/sigma_w`` in its input space R^d (d = 2N real inputs
[Re z, Im z]) (2.35, :mod:`cyntk.kernels.cosine`). The points of X form a real
m = 2n dimensional submanifold of that space, so the kernel must be normalised
in m, not d, dimensions::

    K_sigma(x, x') = (2 pi sigma^2)^(-m/2) exp(-|x - x'|^2 / (2 sigma^2)),
    i.e. A^2/2 = (2 pi sigma^2)^(-m/2),  A = sqrt(2) (2 pi sigma^2)^(-m/4).

Then ``int_X dV(x') K_sigma(x, x') f(x') -> f(x)`` as sigma -> 0, with dV the
volume of the metric induced on X by the Euclidean metric of the input space
(the Laplace expansion; corrections O(sigma^2)). The normalisation of
:func:`~cyntk.kernels.cosine.cosine_normalisation` (A for R^d) makes the kernel
integrate over X to ``(2 pi sigma^2)^(-(d-m)/2) -> infinity``. For a holomorphic
embedding with pullback J the induced volume is ``dV = det(J J^H) d^{2n}u`` in
the real local coordinates u (``sqrt(det g_real) = det h`` for the hermitian
``h = J J^H``).

**The rescaling trick** (2.15-2.18, 2.26-2.29). The flow integrates against a
measure mu that is not dV: ``int dmu K_sigma F -> (dmu/dV)(x) F(x)``, a local flow
with ``Omega_bar = dmu/dV``. Multiplying the network by a fixed function h
multiplies its NTK by ``h(x) h(x')``; with ``h = (dV/dmu)^(1/2)`` the kernel
``h(x) h(x') K_sigma(x, x')`` tends to ``delta_mu``, the flow to (2.14) with
``Omega_bar = 1``. The paper's form (2.27-2.28) is the same statement for a
Gaussian in coordinates u of R^{2n} (``space="chart"``): there the reference
measure is d^{2n}u, the flat ``delta_{R^d} = sqrt(g~) delta`` (2.26) and
``h = g~^(-1/4)`` with ``sqrt(g~) = dmu/d^{2n}u``.

**Measures.** mu is cymetric's Monte-Carlo measure ``mu_CY`` (``int f mu_CY ~
mean(w f)``). In the local coordinates of a chart, ``mu_CY = n! |Omega|^2 d^{2n}u``
(the Fubini--Study volume ``int_X det G d^{2n}u = deg/n!`` equals cymetric's
``Vol_K = deg`` divided by n!), so ::

    dmu_CY/dV = n! |Omega|^2 / det(J J^H),       dmu_CY/d^{2n}u = n! |Omega|^2.

**Quadratures** of (2.12) at evaluation points: ``"mc"`` uses a fixed point set
with weights (the discrete flow a KernelModel runs, with sample weights
``w/P``): as sigma -> 0 it has a bias ~sigma^2 and a sampling error
~(P sigma^m)^(-1/2), so its error is U-shaped. ``"local"`` evaluates the
continuum integral at each evaluation point by importance sampling in that
point's chart with a fixed set of standard-normal nodes scaled by sigma
(``u' = u + sigma L xi``, ``L L^T`` = the inverse induced metric), solving Q = 0 for
the eliminated coordinate at every node: its error tends to 0 with sigma.
"""

from __future__ import annotations

import math

import numpy as np

from cyntk.geometry import Hypersurface, to_complex, to_real
from cyntk.kernels._checks import as_real_points, one_of, positive_float, positive_int
from cyntk.kernels.base import Kernel

__all__ = [
    "ManifoldGaussianKernel",
    "manifold_cosine_amplitude",
    "measure_density",
    "loss_gradient",
    "local_flow_velocity",
    "kernel_flow_velocity",
    "sigma_sweep",
    "chart_coordinates",
    "points_from_chart",
    "SPACES",
    "RESCALINGS",
    "QUADRATURES",
]

#: Where the Gaussian's distance is measured.
SPACES = ("input", "chart")
#: Rescaling of the kernel: none, or the Riemannian one h = (d lambda/d mu)^(1/2).
RESCALINGS = ("none", "riemannian")
#: Quadratures of the continuum flow (2.12).
QUADRATURES = ("mc", "local")


def manifold_cosine_amplitude(sigma_w: float, d: int, m: int) -> float:
    """Amplitude A of the cosine network whose NTK is a normalised Gaussian on an m-manifold.

    ``A^2/2 = (2 pi sigma^2)^(-m/2)`` with ``sigma = sqrt(d)/sigma_w``:
    ``A = sqrt(2) (sigma_w^2 / (2 pi d))^(m/4)``. For m = d this is
    :func:`~cyntk.kernels.cosine.cosine_normalisation`.

    Args:
        sigma_w: weight scale (> 0).
        d: input dimension of the network (2N).
        m: real dimension of the manifold the inputs lie on (2n).
    """
    sigma_w = positive_float(sigma_w, "sigma_w")
    d = positive_int(d, "d")
    m = positive_int(m, "m")
    return math.sqrt(2.0) * (sigma_w ** 2 / (2.0 * math.pi * d)) ** (m / 4.0)


def _complex_pts(x, name="x", ncoords=None):
    arr = as_real_points(x, name)
    if arr.shape[1] % 2 or (ncoords is not None and arr.shape[1] != 2 * ncoords):
        want = "(P, 2N) with an even width" if ncoords is None else f"(P, 2N) = (P, {2 * ncoords})"
        raise ValueError(f"`{name}` must be real points of shape {want} in cymetric's layout "
                         f"[Re z, Im z]; received shape {arr.shape}.")
    return to_complex(arr)


def _check_manifold(manifold):
    if not isinstance(manifold, Hypersurface):
        raise TypeError(f"`manifold` must be a cyntk.geometry.Hypersurface (e.g. "
                        f"cyntk.geometry.get_manifold('cubic')); received {type(manifold).__name__}.")
    return manifold


def _check_chart(chart, ncoords):
    """``(k, j)``: two distinct coordinate indices in [0, N)."""
    try:
        c = tuple(int(v) for v in np.asarray(chart).reshape(-1))
        ok = np.asarray(chart).size == 2
    except (TypeError, ValueError):
        ok = False
    if not ok or not (0 <= c[0] < ncoords and 0 <= c[1] < ncoords) or c[0] == c[1]:
        raise ValueError(f"`chart` must be a pair (patch k, eliminated j) of distinct coordinate indices in "
                         f"[0, {ncoords}); received {chart!r}.")
    return c


def _check_patch(manifold, z, chart, name):
    """Raise unless every point has its patch coordinate (the one equal to 1) at chart[0]."""
    k = manifold.patch_index(z)
    if np.any(k != chart[0]):
        bad = int(np.flatnonzero(k != chart[0])[0])
        raise ValueError(f"`{name}` must be points of patch k = {chart[0]} (z_k = 1) to be written in chart "
                         f"{tuple(chart)}; point {bad} has z_{int(k[bad])} = 1.")


def chart_coordinates(x, chart) -> np.ndarray:
    """Real local coordinates ``u = [Re x^a, Im x^a]`` (P, 2n) of points in a chart.

    ``x^a = z_{g_a} / z_k`` for the n coordinates ``g_0 < ... < g_{n-1}`` other
    than the patch k and the eliminated j (CONVENTIONS.md 3); real parts first,
    then imaginary parts.

    Args:
        x: (P, 2N) real points ``[Re z, Im z]`` (any scaling: the affine
            coordinates divide by z_k).
        chart: (patch k, eliminated j).

    Returns:
        float64 (P, 2n).
    """
    z = _complex_pts(x)
    N = z.shape[1]
    k, j = _check_chart(chart, N)
    good = [i for i in range(N) if i not in (k, j)]
    zk = z[:, k][:, None]
    xa = z[:, good] / zk
    return np.concatenate([xa.real, xa.imag], axis=1)


def points_from_chart(manifold: Hypersurface, u, chart, z_start, *, newton_steps: int = 30,
                      tol: float = 1e-13):
    """Points of X with given local coordinates u in a chart (Newton on the eliminated coordinate).

    Args:
        manifold: the hypersurface.
        u: (P, 2n) real local coordinates.
        chart: (k, j).
        z_start: (P, N) complex starting points (their z_j starts Newton).
        newton_steps, tol: Newton iterations and relative tolerance on |Q|.

    Returns:
        ``(x, ok)``: real points (P, 2N) with z_k = 1 (the chart's affine
        coordinates; other coordinates may exceed 1 in modulus near the edge of
        the patch) and a bool mask of the points where Newton converged.
    """
    manifold = _check_manifold(manifold)
    newton_steps = positive_int(newton_steps, "newton_steps")
    tol = positive_float(tol, "tol")
    N, n = manifold.ncoords, manifold.nfold
    k, j = _check_chart(chart, N)
    u = as_real_points(u, "u")
    if u.shape[1] != 2 * n:
        raise ValueError(f"`u` must be real chart coordinates of shape (P, 2n) = (P, {2 * n}) "
                         f"[Re x^a, Im x^a]; received shape {u.shape}.")
    z0 = np.asarray(z_start)
    if not np.iscomplexobj(z0) and z0.ndim == 2 and z0.shape[1] == 2 * N:
        z0 = to_complex(z0)
    z0 = z0.astype(np.complex128)
    if z0.shape != (len(u), N):
        raise ValueError(f"`z_start` must be complex starting points of shape (P, N) = ({len(u)}, {N}) (or "
                         f"real (P, 2N)), one per row of `u`; received shape {np.shape(z_start)}.")
    if not np.all(np.isfinite(z0)) or np.any(z0[:, k] == 0):
        raise ValueError(f"`z_start` must be finite with z_k != 0 (k = {k}); received other values.")
    P = len(u)
    good = [i for i in range(N) if i not in (k, j)]
    z = np.zeros((P, N), dtype=np.complex128)
    z[:, k] = 1.0
    z[:, good] = u[:, :n] + 1j * u[:, n:]
    z[:, j] = z0[:, j] / z0[:, k]
    for _ in range(newton_steps):
        q = manifold.Q(z)
        dq = manifold.dQdz(z)[:, j]
        with np.errstate(all="ignore"):
            step = q / dq
        z[:, j] = z[:, j] - np.where(np.isfinite(step), step, 0.0)
        if np.all(np.abs(q) <= tol * np.maximum(manifold.monomial_scale(z), 1e-300)):
            break
    with np.errstate(all="ignore"):
        res = np.abs(manifold.Q(z)) / manifold.monomial_scale(z)
    ok = np.isfinite(res) & (res < 1e-10) & np.all(np.isfinite(z), axis=1)
    z[~ok] = np.where(np.isfinite(z[~ok]), z[~ok], 0.0)
    return to_real(z), ok


def measure_density(manifold: Hypersurface, x, chart=None, *, measure="cy", reference="input"):
    """Density of a measure with respect to a reference measure, at points x.

    Args:
        manifold: the hypersurface.
        x: (P, 2N) real points (patch-normalised).
        chart: optional (k, j) to evaluate in (default: each point's own chart).
        measure: ``"cy"`` (cymetric's mu_CY, ``n! |Omega|^2 d^{2n}u``).
        reference: ``"input"`` (volume induced by the input space, ``det(J J^H)
            d^{2n}u``) or ``"chart"`` (Lebesgue ``d^{2n}u``).

    Returns:
        float64 (P,) ``d measure / d reference``: ``n! |Omega|^2 / det(J J^H)``
        ("input") or ``n! |Omega|^2`` ("chart"), with Omega and J of the chart.
    """
    manifold = _check_manifold(manifold)
    one_of(measure, "measure", ("cy",))
    one_of(reference, "reference", SPACES)
    z = _complex_pts(x, ncoords=manifold.ncoords)
    j = None
    if chart is not None:
        chart = _check_chart(chart, manifold.ncoords)
        _check_patch(manifold, z, chart, "x")
        j = np.full(len(z), chart[1])
    geo = manifold.geometry(z, j_elim=j)
    n = manifold.nfold
    dens = math.factorial(n) * geo["omega_sq"]
    if reference == "input":
        J = geo["pullbacks"]
        h = J @ np.conj(np.swapaxes(J, 1, 2))
        dens = dens / np.real(np.linalg.det(h))
    return dens


def loss_gradient(manifold: Hypersurface, x, chart, *, loss="sigma", kappa: float, metric=None):
    """``dl/dg_I`` (P, n^2) of a pointwise loss at the Fubini--Study metric (or a given metric).

    Args:
        manifold: the hypersurface.
        x: (P, 2N) points; chart: (k, j) the metric components are written in.
        loss: ``"sigma"`` (``|1 - det g/(kappa|Omega|^2)|``, the paper's) or
            ``"squared"`` (``(1 - det g/(kappa|Omega|^2))^2``, smooth), or a
            callable ``fn(g, omega_sq) -> (P,)`` on TensorFlow tensors.
        kappa: the Monge--Ampère constant.
        metric: optional (P, n^2) real components; default the FS metric.

    Returns:
        float64 (P, n^2), cyntk's component order.
    """
    manifold = _check_manifold(manifold)
    if not callable(loss) and loss not in ("sigma", "squared"):
        raise ValueError(f"`loss` must be 'sigma', 'squared' or a callable fn(g, omega_sq) -> (P,); "
                         f"received {loss!r}.")
    kappa = positive_float(kappa, "kappa")
    import tensorflow as tf

    from cyntk.models import losses as L
    from cyntk.models.hermitian import hermitian_from_components_tf

    z = _complex_pts(x, ncoords=manifold.ncoords)
    chart = _check_chart(chart, manifold.ncoords)
    _check_patch(manifold, z, chart, "x")
    j = np.full(len(z), chart[1])
    geo = manifold.geometry(z, j_elim=j)
    m = manifold.nfold ** 2
    if metric is None:
        from cyntk.geometry import components_from_hermitian
        metric = components_from_hermitian(geo["fs_metric_pb"])
    metric = np.asarray(metric, dtype=np.float64)
    if metric.shape != (len(z), m) or not np.all(np.isfinite(metric)):
        raise ValueError(f"`metric` must be finite real components of shape (P, n^2) = ({len(z)}, {m}); "
                         f"received shape {metric.shape}.")
    comps = tf.constant(metric)
    om = tf.constant(geo["omega_sq"])
    with tf.GradientTape() as tape:
        tape.watch(comps)
        g = hermitian_from_components_tf(comps)
        if callable(loss):
            val = loss(g, om)
        elif loss == "sigma":
            val = L.sigma_loss(g, om, tf.constant(kappa, tf.float64))
        else:
            val = (1.0 - tf.math.real(L.determinant(g)) / (kappa * om)) ** 2
        total = tf.reduce_sum(val)
    return tape.gradient(total, comps).numpy()


class ManifoldGaussianKernel(Kernel):
    """Normalised Gaussian on the manifold, optionally rescaled (paper 2.27-2.28).

    ``Theta_IJ(x, x') = delta_IJ h(x) h(x') (2 pi sigma^2)^(-m/2) exp(-|u(x) - u(x')|^2/(2 sigma^2))``

    with ``u = x`` (``space="input"``: the real network inputs [Re z, Im z], the
    infinite-width NTK of the cosine network with ``sigma_w = sqrt(2N)/sigma``
    and :func:`manifold_cosine_amplitude`) or ``u`` the real chart coordinates
    (``space="chart"``, paper 2.27), m = 2n, and ``h = (d lambda/d mu_CY)^(1/2)``
    for ``rescaling="riemannian"`` (lambda = the induced volume for "input",
    Lebesgue d^{2n}u for "chart"; paper 2.28 with ``h = g~^(-1/4)``) or h = 1.

    Args:
        sigma: width (> 0).
        manifold: the hypersurface (for m, h and the charts).
        chart: (k, j), the chart of all points (metric components and chart
            coordinates live there).
        space: ``"input"`` or ``"chart"``.
        rescaling: ``"none"`` or ``"riemannian"``.
    """

    component_diagonal = True
    pairwise = True

    def __init__(self, sigma: float, manifold: Hypersurface, chart, *, space="input", rescaling="none"):
        self.sigma = positive_float(sigma, "sigma")
        self.manifold = _check_manifold(manifold)
        self.chart = _check_chart(chart, manifold.ncoords)
        self.space = one_of(space, "space", SPACES)
        self.rescaling = one_of(rescaling, "rescaling", RESCALINGS)
        self.m = 2 * manifold.nfold

    def get_config(self) -> dict:
        return {"sigma": self.sigma, "chart": list(self.chart), "space": self.space,
                "rescaling": self.rescaling, "manifold": self.manifold.name}

    def coordinates(self, x):
        """The coordinates the Gaussian uses: x itself (z_k = 1) or the chart coordinates."""
        x = as_real_points(x, "x", allow_vector=True)
        if x.shape[1] != 2 * self.manifold.ncoords:
            raise ValueError(f"`x` must be real points of shape (P, 2N) = (P, {2 * self.manifold.ncoords}) "
                             f"on {self.manifold.name}; received shape {x.shape}.")
        if self.space == "chart":
            return chart_coordinates(x, self.chart)
        k, N = self.chart[0], self.manifold.ncoords
        off = np.abs(x[:, k] - 1.0) + np.abs(x[:, N + k])
        if np.any(off > 1e-8):
            bad = int(np.flatnonzero(off > 1e-8)[0])
            raise ValueError(f"`x` must be points with z_k = 1 (patch k = {k} of chart {self.chart}) for the "
                             f"input-space Gaussian; point {bad} has z_{k} = "
                             f"{x[bad, k]:.6g}{x[bad, N + k]:+.6g}i.")
        return x

    def h(self, x) -> np.ndarray:
        """The rescaling h(x) (P,): ``(d lambda/d mu_CY)^(1/2)``, or ones for ``rescaling="none"``."""
        x = as_real_points(x, "x", allow_vector=True)
        if self.rescaling == "none":
            return np.ones(len(x))
        return measure_density(self.manifold, x, self.chart, reference=self.space) ** -0.5

    @property
    def mass(self) -> float:
        """``(2 pi sigma^2)^(-m/2)``, the Gaussian's normalisation."""
        return (2.0 * math.pi * self.sigma ** 2) ** (-self.m / 2.0)

    def _block(self, x1, x2):
        u1 = self.coordinates(x1)
        u2 = u1 if x2 is None else self.coordinates(x2)
        sq = np.sum(u1 ** 2, 1)[:, None] + np.sum(u2 ** 2, 1)[None, :] - 2.0 * u1 @ u2.T
        k = self.mass * np.exp(-0.5 * np.maximum(sq, 0.0) / self.sigma ** 2)
        if self.rescaling == "none":
            return k
        h1 = self.h(x1)
        h2 = h1 if x2 is None else self.h(x2)
        return h1[:, None] * k * h2[None, :]


def local_flow_velocity(dl_dg, omega_bar=1.0) -> np.ndarray:
    """The local flow ``dg/dt = -Omega_bar(x) dl/dg(x)`` (2.14).

    Args:
        dl_dg: (P, m) loss gradients.
        omega_bar: a scalar or (P,) values of Omega_bar.

    Returns:
        float64 (P, m).
    """
    dl_dg = np.asarray(dl_dg, dtype=np.float64)
    if dl_dg.ndim != 2:
        raise ValueError(f"`dl_dg` must have shape (P, m); received shape {dl_dg.shape}.")
    ob = np.asarray(omega_bar, dtype=np.float64)
    if ob.ndim > 1 or (ob.ndim == 1 and ob.shape[0] != dl_dg.shape[0]):
        raise ValueError(f"`omega_bar` must be a scalar or of shape (P,) = ({dl_dg.shape[0]},); received "
                         f"shape {ob.shape}.")
    return -(ob[:, None] if ob.ndim == 1 else ob) * dl_dg


def kernel_flow_velocity(kernel, x_eval, x_src, dl_dg_src, quad_weights) -> np.ndarray:
    """Discrete (2.12): ``dg(x)/dt = -sum_p c_p Theta(x, x_p) dl/dg(x_p)`` (P_eval, m).

    Args:
        kernel: a :class:`~cyntk.kernels.base.Kernel`.
        x_eval: (P_e, 2N); x_src: (P, 2N) quadrature points.
        dl_dg_src: (P, m) loss gradients at the quadrature points.
        quad_weights: (P,) quadrature weights c_p of the measure
            (``w/P`` for mu_CY with cymetric's weights).

    Returns:
        float64 (P_e, m).
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(f"`kernel` must be a cyntk.kernels Kernel; received {type(kernel).__name__}.")
    v = np.asarray(dl_dg_src, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"`dl_dg_src` must have shape (P, m); received shape {v.shape}.")
    c = np.asarray(quad_weights, dtype=np.float64)
    if c.shape != (v.shape[0],) or not np.all(np.isfinite(c)):
        raise ValueError(f"`quad_weights` must be finite of shape (P,) = ({v.shape[0]},), one per "
                         f"quadrature point; received shape {c.shape}.")
    return -kernel.matvec(x_eval, x_src, v * c[:, None])


def _local_nodes(n_nodes, m, seed):
    """Fixed standard-normal nodes (antithetic pairs) for the local quadrature."""
    rng = np.random.default_rng(seed)
    half = rng.standard_normal((int(n_nodes) // 2, m))
    return np.concatenate([half, -half], axis=0)


def _local_quadrature(manifold, x_e, chart, sigma, nodes, space, rescaling, loss, kappa):
    """Continuum (2.12) at one evaluation point by importance sampling in its chart."""
    n = manifold.nfold
    m = 2 * n
    u0 = chart_coordinates(x_e[None], chart)[0]
    z0 = to_complex(x_e[None])
    geo0 = manifold.geometry(z0, j_elim=np.array([chart[1]]))
    J = geo0["pullbacks"][0]
    if space == "input":
        # the metric induced by the input space on u = [Re x^a, Im x^a]: for h = J J^H,
        # |dz|^2 = dx^T h conj(dx) = du^T [[Re h, Im h], [-Im h, Re h]] du
        hm = J @ np.conj(J.T)
        greal = np.block([[hm.real, hm.imag], [-hm.imag, hm.real]])
        cov = np.linalg.inv(greal)
    else:
        cov = np.eye(m)
    Lc = np.linalg.cholesky(cov)
    up = u0[None, :] + sigma * nodes @ Lc.T
    xp, ok = points_from_chart(manifold, up, chart, np.repeat(z0, len(up), 0))
    # proposal density q(u') = N(u0, sigma^2 cov)
    diff = (up - u0[None]) / sigma
    sol = np.linalg.solve(Lc, diff.T).T
    logq = -0.5 * np.sum(sol ** 2, 1) - 0.5 * m * math.log(2 * math.pi) - m * math.log(sigma) \
        - np.sum(np.log(np.diag(Lc)))
    if not ok.any():
        raise RuntimeError(f"the local quadrature at sigma = {sigma:g} found no point of X near the "
                           "evaluation point (Newton failed at every node); use smaller widths.")
    kern = ManifoldGaussianKernel(sigma, manifold, chart, space=space, rescaling=rescaling)
    xs = xp[ok]
    k = kern(x_e[None], xs)[0]                                              # (P',)
    dmu_du = measure_density(manifold, xs, chart, reference="chart")         # n!|Omega|^2
    F = loss_gradient(manifold, xs, chart, loss=loss, kappa=kappa)          # (P', m)
    wts = k * dmu_du / np.exp(logq[ok])
    return -(wts[:, None] * F).sum(0) / len(up)


def sigma_sweep(manifold: Hypersurface, x_eval, sigmas, *, chart, kappa, quadrature="local",
                space="input", rescaling="riemannian", loss="sigma", x_quad=None, w_quad=None,
                n_nodes=4096, seed=0, store=None, key_prefix="") -> dict:
    """Gaussian-kernel flow velocity vs the local flow, as sigma -> 0.

    At every evaluation point the velocity of (2.12) with
    ``Theta = ManifoldGaussianKernel(sigma, ...)`` and mu = mu_CY is compared
    with the local flow ``-Omega_bar dl/dg`` (2.14), where ``Omega_bar = 1`` for
    the Riemannian rescaling and ``Omega_bar = dmu_CY/d lambda`` without it.
    Both use the loss gradient at the Fubini--Study metric.

    Args:
        manifold: the hypersurface.
        x_eval: (P_e, 2N) evaluation points in ``chart``.
        sigmas: widths (decreasing order recommended).
        chart: (k, j).
        kappa: the Monge--Ampère constant of the loss.
        quadrature: ``"local"`` or ``"mc"`` (needs ``x_quad``, ``w_quad``).
        space, rescaling: of the kernel.
        loss: see :func:`loss_gradient`.
        x_quad, w_quad: MC quadrature points (P, 2N) in ``chart`` and their
            quadrature weights (P,): ``w_p / P_total`` for the points of one
            chart selected from ``P_total`` points sampled on all of X
            (cymetric weights w), so that ``sum_p c_p f_p ~ int_chart f mu_CY``.
        n_nodes: nodes of the local quadrature.
        seed: seed of the local nodes.
        store: optional ResultStore-like object (``get``/``put``) for per-sigma results.
        key_prefix: prefix of the store keys.

    Returns:
        dict with ``sigmas`` (S,), ``rel_error`` (S,) (relative L2 error
        ``|v_sigma - v_local| / |v_local|`` over the evaluation points, all
        components), ``max_error`` (S,) (max abs error / max |v_local|),
        ``omega_bar`` (P_e,) of the limit, ``local`` (P_e, m) the local velocity,
        ``kernel`` (S, P_e, m) the kernel velocities and ``dl_dg`` (P_e, m)
        (to compare with the local flow of another Omega_bar).

    Raises:
        ValueError: bad arguments, evaluation or quadrature points outside ``chart``.
    """
    manifold = _check_manifold(manifold)
    one_of(quadrature, "quadrature", QUADRATURES)
    one_of(space, "space", SPACES)
    one_of(rescaling, "rescaling", RESCALINGS)
    n_nodes = positive_int(n_nodes, "n_nodes")
    if n_nodes < 2:
        raise ValueError(f"`n_nodes` must be >= 2 (antithetic pairs); received {n_nodes}.")
    kappa = positive_float(kappa, "kappa")
    x_eval = as_real_points(x_eval, "x_eval")
    if x_eval.shape[1] != 2 * manifold.ncoords:
        raise ValueError(f"`x_eval` must have shape (P, 2N) = (P, {2 * manifold.ncoords}); received "
                         f"{x_eval.shape}.")
    try:
        sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"`sigmas` must be a sequence of positive widths; received {sigmas!r}.") from None
    if len(sigmas) == 0 or np.any(~np.isfinite(sigmas)) or np.any(sigmas <= 0):
        raise ValueError(f"`sigmas` must be a non-empty sequence of finite widths > 0; received "
                         f"{sigmas.tolist()}.")
    chart = _check_chart(chart, manifold.ncoords)
    charts = manifold.charts(to_complex(x_eval))
    if np.any(charts[:, 0] != chart[0]) or np.any(charts[:, 1] != chart[1]):
        raise ValueError(f"`x_eval` must lie in chart {chart} (patch, eliminated); sample with "
                         f"M.sample_points(n, chart={chart}).")
    F0 = loss_gradient(manifold, x_eval, chart, loss=loss, kappa=kappa)
    if rescaling == "riemannian":
        omega_bar = np.ones(len(x_eval))
    else:
        omega_bar = measure_density(manifold, x_eval, chart, reference=space)
    v0 = local_flow_velocity(F0, omega_bar)
    if quadrature == "mc":
        if x_quad is None or w_quad is None:
            raise ValueError("quadrature='mc' needs `x_quad` (P, 2N) and quadrature weights `w_quad` (P,).")
        x_quad = as_real_points(x_quad, "x_quad")
        if x_quad.shape[1] != 2 * manifold.ncoords:
            raise ValueError(f"`x_quad` must have shape (P, 2N) = (P, {2 * manifold.ncoords}); received "
                             f"{x_quad.shape}.")
        w_quad = np.asarray(w_quad, dtype=np.float64)
        if w_quad.shape != (len(x_quad),) or not np.all(np.isfinite(w_quad)):
            raise ValueError(f"`w_quad` must be finite quadrature weights of shape (P,) = ({len(x_quad)},); "
                             f"received shape {w_quad.shape}.")
        cq = manifold.charts(to_complex(x_quad))
        if np.any(cq[:, 0] != chart[0]) or np.any(cq[:, 1] != chart[1]):
            raise ValueError(f"`x_quad` must lie in chart {chart}.")
        Fq = loss_gradient(manifold, x_quad, chart, loss=loss, kappa=kappa)
        tag = _fingerprint(manifold.name, chart, x_eval, x_quad, w_quad, kappa, space, rescaling, str(loss))
    else:
        nodes = _local_nodes(n_nodes, 2 * manifold.nfold, seed)
        tag = _fingerprint(manifold.name, chart, x_eval, n_nodes, seed, kappa, space, rescaling, str(loss))
    vk = []
    for s in sigmas:
        # the key carries a fingerprint of the inputs, so a store never returns another setting's result
        key = f"{key_prefix}sigma_{s:.6g}-{tag}"
        got = store.get(key) if store is not None else None
        if got is not None and np.shape(got["v"]) == v0.shape:
            vk.append(np.asarray(got["v"]))
            continue
        if quadrature == "mc":
            kern = ManifoldGaussianKernel(s, manifold, chart, space=space, rescaling=rescaling)
            v = kernel_flow_velocity(kern, x_eval, x_quad, Fq, w_quad)
        else:
            v = np.stack([_local_quadrature(manifold, xe, chart, s, nodes, space, rescaling, loss, kappa)
                          for xe in x_eval])
        if store is not None:
            store.put(key, {"v": v})
        vk.append(v)
    vk = np.asarray(vk)
    diff = vk - v0[None]
    rel = np.sqrt(np.sum(diff ** 2, axis=(1, 2)) / np.sum(v0 ** 2))
    mx = np.max(np.abs(diff), axis=(1, 2)) / np.max(np.abs(v0))
    return {"sigmas": sigmas, "rel_error": rel, "max_error": mx, "omega_bar": omega_bar,
            "local": v0, "kernel": vk, "dl_dg": F0}


def _fingerprint(*items) -> str:
    """Short hash of arrays and scalars (store keys)."""
    import hashlib

    h = hashlib.sha1()
    for it in items:
        if isinstance(it, np.ndarray):
            h.update(np.ascontiguousarray(it, dtype=np.float64).tobytes())
        else:
            h.update(repr(it).encode())
        h.update(b"|")
    return h.hexdigest()[:10]

