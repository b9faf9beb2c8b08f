"""Shared pytest fixtures: reference data location, seeds and per-dtype tolerances."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
#: Reference arrays made by cymetric and neural-tangents, one folder each with a README.md data sheet.
DATA = REPO / "tests" / "data"
#: The real cymetric's snapshot (``../shared/cymetric``, or ``$CYNTK_CYMETRIC``): ground truth, never a dependency.
CYMETRIC = Path(os.environ.get("CYNTK_CYMETRIC", REPO.parent / "shared" / "cymetric"))

#: Tolerances per dtype, used by every numerical test (one place to change them).
TOLERANCES = {
    "float64": {"rtol": 1e-10, "atol": 1e-12},
    "float32": {"rtol": 2e-5, "atol": 1e-6},
}


def tol(dtype) -> dict:
    """``dict(rtol=..., atol=...)`` for ``dtype`` (a name or NumPy/TF dtype)."""
    name = getattr(dtype, "name", str(dtype))
    return dict(TOLERANCES["float64" if "64" in name else "float32"])


def reference_data(sub: str) -> Path:
    """``tests/data/<sub>``: part of the repository, so a missing folder is an error, not a skip."""
    path = DATA / sub
    if not path.is_dir():
        raise FileNotFoundError(f"reference data {path} is missing from the repository checkout")
    return path


@pytest.fixture(scope="session")
def cymetric_reference_dir() -> Path:
    """tests/data/cymetric_quintic (cymetric's Fermat-quintic dataset, basis and per-point arrays)."""
    return reference_data("cymetric_quintic")


@pytest.fixture(scope="session")
def ntk_reference_dir() -> Path:
    """tests/data/ntk (neural-tangents infinite-width ReLU kernels)."""
    return reference_data("ntk")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def small_mlp(n_in, n_out, width=16, depth=2, dtype="float64", seed=0, features=False, last_std=None):
    """A small seeded gelu MLP (optionally starting with ProjectiveFeatures) used by the model tests."""
    import keras

    from cyntk.models import ProjectiveFeatures

    keras.utils.set_random_seed(seed)
    init = "glorot_uniform" if last_std is None else keras.initializers.RandomNormal(stddev=last_std, seed=seed)
    layers = [keras.Input((n_in,), dtype=dtype)]
    if features:
        layers.append(ProjectiveFeatures(dtype=dtype))
    layers += [keras.layers.Dense(width, "gelu", dtype=dtype) for _ in range(depth)]
    layers.append(keras.layers.Dense(n_out, use_bias=False, kernel_initializer=init, dtype=dtype))
    return keras.Sequential(layers)


@pytest.fixture(scope="module")
def cymetric():
    """The real cymetric (its folder on ``sys.path`` for the requesting module): its ``models``,
    ``helper`` and ``PointGenerator``; the test is skipped with the reason when it is absent."""
    if not (CYMETRIC / "cymetric" / "models").is_dir():
        pytest.skip(
            f"the real cymetric is absent ({CYMETRIC}); put its snapshot in ../shared/cymetric or set CYNTK_CYMETRIC"
        )
    for dep in ("sympy", "joblib", "wolframclient"):
        pytest.importorskip(dep, reason=f"cymetric.pointgen imports {dep} (pip install -e '.[test]')")
    sys.path.insert(0, str(CYMETRIC))
    try:
        import cymetric.models.helper as helper
        import cymetric.models.models as models
        from cymetric.pointgen.pointgen import PointGenerator

        yield {"models": models, "helper": helper, "PointGenerator": PointGenerator}
    finally:
        sys.path.remove(str(CYMETRIC))
