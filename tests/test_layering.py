"""The package's layers import one way: geometry -> models -> kernels -> flows -> callbacks -> experiments -> cli.

Every ``import`` and ``from ... import`` in every module of ``cyntk`` (module
level and inside functions) is read from the source with :mod:`ast`, so a lazy
import cannot hide a back edge.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "cyntk"

#: layer of each part of the package; a module may import only its own layer or lower ones
LAYERS = {
    "cyntk._validation": 0,
    "cyntk.geometry": 1,
    "cyntk.models": 2,
    "cyntk.kernels": 3,
    "cyntk.flows": 4,
    "cyntk.callbacks": 5,
    "cyntk.experiments": 6,
    "cyntk.cli": 7,
    "cyntk.__main__": 7,
    "cyntk": 7,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(module)


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path, module: str):
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # ``from cyntk import flows`` names a subpackage
                yield node.lineno, f"{target}.{alias.name}"


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in MODULES:
        _layer(_module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_imports_run_one_way(path):
    module = _module_name(path)
    own = _layer(module)
    back = []
    for lineno, target in _imports(path, module):
        if not (target == "cyntk" or target.startswith("cyntk.")):
            continue
        try:
            layer = _layer(target)
        except KeyError:
            continue  # ``from cyntk.x import name`` also yields ``cyntk.x.name``: fine when x has a layer
        if target == "cyntk":
            continue
        if layer > own:
            back.append(f"line {lineno}: {module} (layer {own}) imports {target} (layer {layer})")
    assert not back, "imports must run one way (geometry -> ... -> cli):\n" + "\n".join(back)


@pytest.mark.parametrize("package", ["geometry"])
def test_numpy_layers_do_not_import_tensorflow(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for lineno, target in _imports(path, _module_name(path)):
            if target.split(".")[0] in ("tensorflow", "keras"):
                bad.append(f"{path.name}:{lineno} imports {target}")
    assert not bad, f"cyntk.{package} is NumPy-only:\n" + "\n".join(bad)


def test_the_checker_sees_a_back_edge(tmp_path):
    """The rule is not vacuous: a lazy import of a higher layer inside a function is caught."""
    fake = ROOT / "geometry" / "_layering_probe.py"
    src = "def f():\n    from cyntk.flows import KernelModel\n    return KernelModel\n"
    target = tmp_path / "probe.py"
    target.write_text(src)
    found = [t for _, t in _imports(target, "cyntk.geometry._layering_probe")]
    assert "cyntk.flows" in found and _layer("cyntk.flows") > _layer(_module_name(fake))
