"""Newton projection onto complete intersections (all K equations); hypersurfaces unchanged."""

import numpy as np
import pytest

from cyntk.geometry import dwork_quintic, fermat_quintic
from cyntk.geometry.cicy_manifolds import bicubic, get_cicy, tetraquadric


def hypersurface_project_before(M, z, max_steps=50, tol=1e-13):
    """Hypersurface.project as it was before it delegated to CompleteIntersection.project."""
    z = np.array(z, dtype=np.complex128)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    for _ in range(max_steps):
        q = M.Q(z)
        res = np.abs(q) / M.monomial_scale(z)
        if np.all(res < tol):
            break
        dq = M.dQdz(z)
        step = (q / np.sum(np.abs(dq) ** 2, axis=1))[:, None] * np.conj(dq)
        z = np.where((res >= tol)[:, None], z - step, z)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
    res = np.abs(M.Q(z)) / M.monomial_scale(z)
    k = np.argmax(np.abs(z), axis=1)
    z = z / z[np.arange(len(z)), k][:, None]
    z[np.arange(len(z)), k] = 1.0 + 0.0j
    return z, res < max(tol, 1e-12)


def _perturbed(M, eps, seed=0, n=200):
    z = M.sample_points(n, seed=seed)
    rng = np.random.default_rng(seed)
    return z + eps * (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape))


@pytest.mark.parametrize("M", [fermat_quintic(), dwork_quintic(0.3)], ids=["fermat", "dwork"])
def test_hypersurface_projection_is_unchanged_bit_for_bit(M):
    zp = _perturbed(M, 0.05)
    got, ok = M.project(zp)
    want, ok_want = hypersurface_project_before(M, zp)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ok, ok_want)
    assert ok.all()


@pytest.mark.parametrize("make", [bicubic, tetraquadric, lambda: get_cicy("cicy", configuration="5|3,3", seed=0)])
def test_projection_onto_all_equations(make):
    M = make()
    zp = _perturbed(M, 0.02, seed=1)
    z, ok = M.project(zp)
    assert ok.mean() > 0.98
    assert M.residual(z[ok]).max() < 1e-12
    np.testing.assert_array_equal(M.patch_normalise(z), z)  # patch-normalised per factor
    # points on X stay where they are
    z0 = M.sample_points(20, seed=3)
    np.testing.assert_allclose(M.project(z0)[0], z0, atol=1e-15)


def test_one_step_is_the_minimum_norm_newton_step():
    M = get_cicy("cicy", configuration="5|3,3", seed=0)
    zp = _perturbed(M, 0.01, seed=2, n=10)
    got, _ = M.project(zp, max_steps=1, tol=1e-300)
    z = zp / np.linalg.norm(zp, axis=1, keepdims=True)
    for i in range(len(z)):
        J = M.dQdz(z[i : i + 1])[0]  # (K, n)
        z[i] = z[i] - np.linalg.pinv(J) @ M.Q(z[i : i + 1])[0]
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_allclose(got, M.patch_normalise(z), rtol=1e-12, atol=1e-13)
