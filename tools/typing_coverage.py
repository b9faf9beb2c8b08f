"""How much of cyntk's public API is fully annotated (issue 15).

Usage::

    python tools/typing_coverage.py            # one line per package
    python tools/typing_coverage.py --modules  # one line per module
    python tools/typing_coverage.py -v         # and list what is missing

The public names of a package are its ``__all__`` and the ``__all__`` of each of
its modules; for every exported class, its public methods (those defined on the
class itself, properties included) count as public names too, and the class
counts as its ``__init__`` (public methods inherited from cyntk base classes and
mixins count once, under the class that defines them). A name is *fully annotated* when every parameter
except ``self``/``cls`` has an annotation and the return value has one
(``__init__`` may leave out its ``-> None``). Constants and submodules are not
counted. Nothing is type-checked: this only counts annotations; ``mypy`` checks
them.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

PACKAGES = (
    "cyntk._validation",
    "cyntk.geometry",
    "cyntk.models",
    "cyntk.kernels",
    "cyntk.flows",
    "cyntk.callbacks",
    "cyntk.experiments",
    "cyntk.cli",
)


def _unwrap(obj: object) -> Callable[..., object] | None:
    """The plain Python function behind ``obj`` (decorators, tf.function, properties)."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    obj = getattr(obj, "python_function", obj)  # tf.function
    while hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    return obj if inspect.isfunction(obj) else None


def missing(fn: Callable[..., object], *, is_init: bool = False) -> list[str]:
    """Names of ``fn``'s unannotated parameters, and ``"return"`` if its return is unannotated."""
    annotations = getattr(fn, "__annotations__", {})
    out = []
    params = list(inspect.signature(fn).parameters.values())
    for k, p in enumerate(params):
        if k == 0 and p.name in ("self", "cls"):
            continue
        if p.name not in annotations:
            out.append(p.name)
    if "return" not in annotations and not (is_init and len(out) < len(params)):
        out.append("return")
    return out


def _own_init(cls: type) -> Callable[..., object] | None:
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            init = _unwrap(vars(klass)["__init__"])
            if init is not None and klass.__module__.startswith("cyntk"):
                return init
            return None
    return None


def public_callables(module: ModuleType) -> Iterator[tuple[str, Callable[..., object], bool]]:
    """(qualified name, function, is ``__init__``) for the public callables exported by ``module``."""
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name, None)
        if inspect.isclass(obj):
            if not obj.__module__.startswith("cyntk"):
                continue
            init = _own_init(obj)
            if init is not None:
                yield f"{obj.__module__}.{obj.__qualname__}", init, True
            for klass in obj.__mro__:  # its own methods and those of cyntk bases and mixins
                if not klass.__module__.startswith("cyntk"):
                    continue
                for attr, member in vars(klass).items():
                    if attr.startswith("_"):
                        continue
                    fn = _unwrap(member)
                    if fn is not None:
                        yield f"{klass.__module__}.{klass.__qualname__}.{attr}", fn, False
        else:
            fn = _unwrap(obj)
            if fn is not None and getattr(fn, "__module__", "").startswith("cyntk"):
                yield f"{fn.__module__}.{fn.__qualname__}", fn, False


def modules_of(package: str) -> list[ModuleType]:
    top = importlib.import_module(package)
    mods = [top]
    if hasattr(top, "__path__"):
        for info in pkgutil.iter_modules(top.__path__, package + "."):
            mods.append(importlib.import_module(info.name))
    return mods


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="one line per module instead of per package")
    parser.add_argument("-v", "--verbose", action="store_true", help="list the names that are not fully annotated")
    parser.add_argument("packages", nargs="*", default=list(PACKAGES))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    total_done = total_all = 0
    for package in args.packages:
        try:
            mods = modules_of(package)
        except Exception as err:  # a package mid-edit should not hide the others' numbers
            print(f"{package:<22} import failed: {type(err).__name__}: {err}")
            continue
        seen: dict[str, list[str]] = {}
        per_module: dict[str, dict[str, list[str]]] = {}
        for mod in mods:
            for qualname, fn, is_init in public_callables(mod):
                if qualname in seen:
                    continue
                seen[qualname] = missing(fn, is_init=is_init)
                per_module.setdefault(fn.__module__, {})[qualname] = seen[qualname]
        groups = per_module if args.modules else {package: seen}
        for group, names in sorted(groups.items()):
            done = sum(not m for m in names.values())
            print(f"{group:<34} {done:4d} / {len(names):4d} fully annotated")
            if args.verbose:
                for qualname, m in sorted(names.items()):
                    if m:
                        print(f"    {qualname}: {', '.join(m)}")
        total_done += sum(not m for m in seen.values())
        total_all += len(seen)
    print(f"{'total':<34} {total_done:4d} / {total_all:4d} fully annotated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
