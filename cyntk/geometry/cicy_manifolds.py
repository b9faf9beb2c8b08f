"""Named complete intersections: the tetraquadric, the bicubic, any generic CICY.

Generic members have every multi-homogeneous monomial of the configuration with
a real standard-normal coefficient drawn from ``numpy.random.default_rng(seed)``
(the construction of the cymetric reference data in ``shared/reference``).
Monomials of one equation are the products of the per-factor monomials, the
first factor varying slowest, each factor in cymetric's
``generate_monomials`` order.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from cyntk.geometry.cicy import CompleteIntersection, _gm

__all__ = [
    "multidegree_monomials",
    "generic_cicy",
    "tetraquadric",
    "bicubic",
    "parse_configuration",
    "CICY_MANIFOLDS",
    "get_cicy",
]


def multidegree_monomials(ambient, degrees) -> np.ndarray:
    """All monomials of multidegree ``degrees`` in P^{n_1} x ... x P^{n_m}, int64 (M, sum(n_F + 1))."""
    per = [np.array(_gm(int(n) + 1, int(d)), dtype=np.int64) for n, d in zip(ambient, degrees)]
    return np.array([np.concatenate(c) for c in itertools.product(*per)], dtype=np.int64)


def generic_cicy(ambient, configuration, *, seed=0, kmoduli=None, name=None) -> CompleteIntersection:
    """A generic complete intersection with configuration ``configuration`` (m, K).

    Args:
        ambient: int (m,) dimensions n_F.
        configuration: int (m, K): ``configuration[F, k]`` = degree of equation k in factor F.
        seed: seed of the real standard-normal coefficients (equation by equation).
        kmoduli: Kaehler parameters (m,), default ones.
        name: label (default built from the configuration).
    """
    amb = np.asarray(ambient, dtype=np.int64).reshape(-1)
    conf = np.asarray(configuration, dtype=np.int64)
    if conf.ndim != 2 or conf.shape[0] != len(amb):
        raise ValueError(
            f"`configuration` must be an integer matrix (m, K) with one row per factor of "
            f"`ambient` (m = {len(amb)}); received shape {conf.shape}."
        )
    rng = np.random.default_rng(seed)
    monos, coefs = [], []
    for k in range(conf.shape[1]):
        mk = multidegree_monomials(amb, conf[:, k])
        monos.append(mk)
        coefs.append(rng.standard_normal(len(mk)))
    if name is None:
        name = "cicy_" + "_".join(f"P{n}[{','.join(str(v) for v in row)}]" for n, row in zip(amb, conf))
    return CompleteIntersection(monos, coefs, amb, kmoduli, name=name)


def tetraquadric(seed: int = 11, kmoduli=None) -> CompleteIntersection:
    """Generic tetraquadric: one (2,2,2,2) equation in (P^1)^4 (seed 11 = the reference's coefficients)."""
    return generic_cicy([1, 1, 1, 1], [[2], [2], [2], [2]], seed=seed, kmoduli=kmoduli, name="tetraquadric")


def bicubic(seed: int = 0, kmoduli=None) -> CompleteIntersection:
    """Generic bicubic: one (3,3) equation in P^2 x P^2."""
    return generic_cicy([2, 2], [[3], [3]], seed=seed, kmoduli=kmoduli, name="bicubic")


def parse_configuration(text):
    """Parse a configuration given on the command line or in a file.

    Accepted forms:

    * ``"n1|q11,q12;n2|q21,q22"`` (one factor per ``;``: its dimension, ``|``,
      the degrees of the K equations in it), e.g. ``"5|3,3"`` (two cubics in P^5)
      or ``"1|2;1|2;1|2;1|2"`` (the tetraquadric);
    * a path to a JSON file ``{"ambient": [...], "configuration": [[...], ...]}``
      (and optionally ``"kmoduli"``, ``"seed"``).

    Returns:
        dict with ``ambient`` (m,) and ``configuration`` (m, K) int64 arrays
        (plus ``kmoduli``/``seed`` when the file gives them).
    """
    text = str(text).strip()
    p = Path(text)
    if text.endswith(".json") or (p.is_file() and "|" not in text):
        if not p.is_file():
            raise FileNotFoundError(f"configuration file {p} does not exist.")
        data = json.loads(p.read_text())
        if "ambient" not in data or "configuration" not in data:
            raise KeyError(f"{p} must hold 'ambient' and 'configuration'; received keys {sorted(data)}.")
        out = dict(data)
        out["ambient"] = np.asarray(data["ambient"], dtype=np.int64)
        out["configuration"] = np.asarray(data["configuration"], dtype=np.int64)
        return out
    rows = [r.strip() for r in text.split(";") if r.strip()]
    amb, conf = [], []
    try:
        for r in rows:
            n, q = r.split("|")
            amb.append(int(n))
            conf.append([int(v) for v in q.split(",")])
    except ValueError as exc:
        raise ValueError(
            f"configuration {text!r} must read 'n1|q11,q12;n2|q21,q22' (dimension | degrees "
            f"of the equations, one factor per ';'), e.g. '5|3,3'."
        ) from exc
    if not rows or len({len(c) for c in conf}) != 1:
        raise ValueError(
            f"configuration {text!r}: every factor must list the same number of equation degrees; received {conf}."
        )
    return dict(ambient=np.array(amb, dtype=np.int64), configuration=np.array(conf, dtype=np.int64))


#: named complete intersections (factories with ``seed=`` and ``kmoduli=``)
CICY_MANIFOLDS = {"tetraquadric": tetraquadric, "bicubic": bicubic}


def get_cicy(name: str, *, configuration=None, kmoduli=None, seed=None) -> CompleteIntersection:
    """A named complete intersection (``tetraquadric``, ``bicubic``) or ``cicy`` with a configuration.

    Args:
        name: ``'tetraquadric'``, ``'bicubic'`` or ``'cicy'``.
        configuration: for ``'cicy'``: a string or JSON path (:func:`parse_configuration`).
        kmoduli: one float (every factor) or one per factor; default ones (or the file's).
        seed: coefficient seed (default: 11 tetraquadric, 0 otherwise, or the file's).
    """
    key = str(name).lower()
    if key == "cicy":
        if configuration is None:
            raise ValueError(
                "manifold 'cicy' needs a configuration, e.g. '5|3,3' (two cubics in P^5) or a "
                'JSON file {"ambient": [5], "configuration": [[3, 3]]}.'
            )
        cfg = parse_configuration(configuration)
        amb = cfg["ambient"]
        seed = cfg.get("seed", 0) if seed is None else seed
        kmoduli = cfg.get("kmoduli") if kmoduli is None else kmoduli
        if kmoduli is not None and np.ndim(kmoduli) == 0:
            kmoduli = np.full(len(amb), float(kmoduli))
        return generic_cicy(amb, cfg["configuration"], seed=seed, kmoduli=kmoduli)
    if key not in CICY_MANIFOLDS:
        raise ValueError(
            f"Unknown complete intersection {name!r}; expected one of {sorted(CICY_MANIFOLDS) + ['cicy']}."
        )
    if configuration is not None:
        raise ValueError(f"a configuration applies only to manifold 'cicy'; received one for {name!r}.")
    factory = CICY_MANIFOLDS[key]
    m = factory()
    if kmoduli is not None and np.ndim(kmoduli) == 0:
        kmoduli = np.full(m.nproj, float(kmoduli))
    kw = {} if seed is None else {"seed": seed}
    return factory(kmoduli=kmoduli, **kw)
