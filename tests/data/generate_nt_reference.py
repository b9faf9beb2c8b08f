"""Generate tests/data/nt_infinite_width.npz with neural-tangents (NOT imported by the tests).

Run in a separate environment (neural-tangents is not a dependency of cyntk)::

    python3 -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install "jax==0.4.25" "jaxlib==0.4.25" "neural-tangents==0.6.5" \
        "numpy==1.26.4" "ml_dtypes==0.5.1"
    /tmp/ntvenv/bin/python tests/data/generate_nt_reference.py

Every architecture is ``stax.serial(Dense, phi, ..., Dense, phi, Dense(1))``; its description is
stored as JSON in the array ``<name>_spec`` (see NT_REFERENCE.md beside this file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = Path(__file__).resolve().parent / "nt_infinite_width.npz"


def draw(rng, n):
    """Points of S^9 in cymetric's layout (the recipe of shared/reference/ntk/README.txt)."""
    re = rng.standard_normal((n, 5))
    im = rng.standard_normal((n, 5))
    z = re + 1j * im
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return np.concatenate([z.real, z.imag], axis=1)


def _sigmoid(x):
    return jax.nn.sigmoid(x)


def _dsigmoid(x):
    s = jax.nn.sigmoid(x)
    return s * (1 - s)


def _silu(x):
    return x * jax.nn.sigmoid(x)


def _dsilu(x):
    s = jax.nn.sigmoid(x)
    return s * (1 + x * (1 - s))


NUMERICAL = {
    "tanh": (jnp.tanh, lambda x: 1 - jnp.tanh(x) ** 2),
    "sigmoid": (_sigmoid, _dsigmoid),
    "softplus": (jax.nn.softplus, _sigmoid),
    "silu": (_silu, _dsilu),
    "elu": (jax.nn.elu, lambda x: jnp.where(x > 0, 1.0, jnp.exp(jnp.minimum(x, 0.0)))),
}


def phi_layer(activation, deg):
    if activation == "relu":
        return stax.Relu()
    if activation == "erf":
        return stax.Erf()
    if activation == "gelu":
        return stax.Gelu(approximate=False)
    if activation == "sin":
        return stax.Sin()
    if activation == "cos":
        return stax.Cos()
    if activation == "abs":
        return stax.Abs()
    if activation == "leaky_relu":
        return stax.LeakyRelu(0.2)
    if activation == "identity":
        return stax.Identity()
    fn, dfn = NUMERICAL[activation]
    return stax.ElementwiseNumerical(fn, deg, df=dfn)


def build(spec):
    layers = []
    depth = spec["depth"]
    param = spec["parameterization"]
    for layer in range(depth + 1):
        units = 1 if layer == depth else spec["width"]
        layers.append(stax.Dense(units, W_std=spec["W_std"][layer], b_std=spec["b_std"][layer], parameterization=param))
        if layer < depth:
            layers.append(phi_layer(spec["activation"], spec.get("deg", 0)))
    return stax.serial(*layers)


def spec(activation, depth, W_std, b_std, parameterization="ntk", width=512, deg=0):
    W_std = list(W_std) if isinstance(W_std, (list, tuple)) else [W_std] * (depth + 1)
    b_std = list(b_std) if isinstance(b_std, (list, tuple)) else [b_std] * (depth + 1)
    return dict(
        activation=activation,
        depth=depth,
        W_std=W_std,
        b_std=b_std,
        parameterization=parameterization,
        width=width,
        deg=deg,
    )


#: closed-form activations on the first 32 x 24 points
CLOSED = {
    "relu_d2_perlayer_nobias": spec("relu", 2, [1.2, 1.6, 0.9], [0.3, 0.1, None]),
    "relu_d1_paper_std": spec("relu", 1, 1.3, 0.2, "standard", width=256),
    "erf_d2": spec("erf", 2, 1.7, 0.3),
    "erf_d3_std": spec("erf", 3, [1.1, 1.4, 1.2, 0.8], [0.1, 0.2, 0.0, None], "standard", 128),
    "gelu_d1": spec("gelu", 1, 1.0, 0.0),
    "gelu_d3": spec("gelu", 3, 1.5, 0.2),
    "gelu_d2_large": spec("gelu", 2, [80.52, 2.0, 1.0], [5.716, 0.5, 0.1]),
    "gelu_d2_std_nobias": spec("gelu", 2, 1.4, [0.1, 0.1, None], "standard", 64),
    "gelu_d4_readout": spec("gelu", 4, [1.3, 1.3, 1.3, 1.3, 0.5], [0.05, 0.05, 0.05, 0.05, 0.3]),
    "sin_d2": spec("sin", 2, 1.3, 0.4),
    "cos_d2": spec("cos", 2, 0.9, 0.2),
    "abs_d2": spec("abs", 2, 1.1, 0.2),
    "leaky_relu_d2": spec("leaky_relu", 2, 1.4, 0.1),
    "identity_d2": spec("identity", 2, 1.2, 0.3),
}

#: Gauss-Hermite activations on the first 16 x 12 points (deg points per axis)
NUMERIC = {
    "tanh_d2": spec("tanh", 2, 1.5, 0.1, deg=120),
    "tanh_d1_std": spec("tanh", 1, 1.2, 0.2, "standard", 64, deg=120),
    "sigmoid_d2": spec("sigmoid", 2, 2.0, 0.5, deg=120),
    "softplus_d2": spec("softplus", 2, 1.3, 0.2, deg=120),
    "silu_d3": spec("silu", 3, 1.6, 0.1, deg=120),
    "elu_d2": spec("elu", 2, 1.2, 0.3, deg=120),
}


def main():
    rng = np.random.default_rng(0)
    x1, x2 = draw(rng, 64), draw(rng, 48)
    out = {"x1": x1, "x2": x2}
    for table, (p1, p2) in ((CLOSED, (32, 24)), (NUMERIC, (16, 12))):
        for name, sp in table.items():
            _, _, kernel_fn = build(sp)
            a, b = x1[:p1], x2[:p2]
            k12 = kernel_fn(a, b, ("nngp", "ntk"))
            k11 = kernel_fn(a, None, ("nngp", "ntk"))
            out[f"{name}_nngp_12"] = np.asarray(k12.nngp, np.float64)
            out[f"{name}_ntk_12"] = np.asarray(k12.ntk, np.float64)
            out[f"{name}_nngp_11"] = np.asarray(k11.nngp, np.float64)
            out[f"{name}_ntk_11"] = np.asarray(k11.ntk, np.float64)
            out[f"{name}_spec"] = np.array(json.dumps(sp))
            print(name, out[f"{name}_ntk_12"].shape, float(np.abs(out[f"{name}_ntk_11"]).max()), file=sys.stderr)
    out["versions"] = np.array(
        json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__, "numpy": np.__version__})
    )
    np.savez_compressed(OUT, **out)
    print(OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
