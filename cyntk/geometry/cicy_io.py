"""Which cyntk class a cymetric ``basis.pickle`` describes."""

from __future__ import annotations

import numpy as np

from cyntk.geometry.cicy import CompleteIntersection
from cyntk.geometry.hypersurface import Hypersurface

__all__ = ["manifold_from_basis"]


def manifold_from_basis(basis: dict, name: str = "from_basis"):
    """A :class:`Hypersurface` for one equation in one P^n, else a :class:`CompleteIntersection`.

    Args:
        basis: a cymetric basis dict (NHYPER, AMBIENT, QB<k>, QF<k>, KMODULI, ...).
        name: label of the manifold.
    """
    if not isinstance(basis, dict):
        raise TypeError(f"`basis` must be a cymetric basis dict; received {type(basis).__name__}.")
    nhyper = int(np.real(np.asarray(basis.get("NHYPER", 1))))
    amb = np.real(np.asarray(basis.get("AMBIENT", [0]))).reshape(-1)
    if nhyper == 1 and amb.shape[0] == 1:
        return Hypersurface.from_basis(basis, name=name)
    return CompleteIntersection.from_basis(basis, name=name)
