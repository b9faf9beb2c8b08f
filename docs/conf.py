"""Sphinx configuration of the cyntk documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (``pip install -e ".[docs]"``).

The API reference is generated at build time from the ``__all__`` of every subpackage of
:mod:`cyntk` (``docs/api/``, not committed), so it follows the package as modules move.
Notebooks are rendered by myst-nb without executing them (``nb_execution_mode = "off"``).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import cyntk  # noqa: E402

project = "cyntk"
author = "cyntk developers"
copyright = "2026, cyntk developers"
release = version = cyntk.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the package's docstrings are Google style (Args:, Returns:)
    "sphinx.ext.mathjax",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path = ["_templates"]

# --- MyST / notebooks
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # executed by tests/test_notebooks.py, not by the docs build

# --- autodoc
autosummary_generate = True
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # Keras' own docstrings are not ours to render
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = f"cyntk {release}"
html_static_path: list[str] = []
html_theme_options = {"description": "Metric neural tangent kernels for Calabi–Yau metrics", "fixed_sidebar": True}


# --- API pages from __all__ -------------------------------------------------------------------------
def _public_modules() -> list[tuple[str, list[str], str]]:
    """(module name, its __all__, first docstring line) for every subpackage/module of cyntk with __all__."""
    found = []
    for info in sorted(pkgutil.iter_modules(cyntk.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"cyntk.{info.name}")
        names = list(getattr(mod, "__all__", []))
        if names:
            doc = (mod.__doc__ or "").strip().splitlines()
            found.append((mod.__name__, names, doc[0] if doc else ""))
    return found


def _write_api_pages() -> None:
    out = HERE / "api"
    out.mkdir(exist_ok=True)
    modules = _public_modules()
    # pages of names a package no longer exports (moved or removed) must not survive a rebuild
    current = {f"{m}.{n}" for m, names, _ in modules for n in names}
    for page in (out / "generated").glob("*.rst") if (out / "generated").is_dir() else ():
        if page.stem not in current:
            page.unlink()
    for page in out.glob("cyntk.*.rst"):
        if page.stem not in {m for m, _, _ in modules}:
            page.unlink()
    index = [
        "API reference",
        "=============",
        "",
        "Every name a subpackage exports in its ``__all__``, generated from the docstrings.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    index += [f"   {name}" for name, _, _ in modules]
    _write(out / "index.rst", "\n".join(index) + "\n")
    for name, names, _ in modules:
        lines = [
            name,
            "=" * len(name),
            "",
            f".. automodule:: {name}",
            "   :no-members:",
            "",
            f".. currentmodule:: {name}",
            "",
            ".. autosummary::",
            "   :toctree: generated",
            "   :nosignatures:",
            "",
        ]
        lines += [f"   {n}" for n in names]
        _write(out / f"{name}.rst", "\n".join(lines) + "\n")


def _write(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:  # unchanged files keep Sphinx's incremental build
        path.write_text(text)


_write_api_pages()


# --- docstrings written as plain text ----------------------------------------------------------------
# The package's docstrings are Google style with ``literals`` and :roles:, and write mathematics as plain
# text (|Omega|^2, x**2, sklearn-style ``labels_``). reStructuredText would read |...| as a substitution,
# a lone * or ** as emphasis and a trailing _ as a link; this hook escapes those characters outside
# literals, roles and real emphasis so the docstrings render as written.
import re  # noqa: E402

# "Attributes" sections are free text in this package (several names per line): shown as written
napoleon_custom_sections = ["Call", "Attributes"]

_PROTECT = re.compile(
    r"``.+?``"  # inline literals
    r"|:[\w:+-]+:`[^`]+`"  # roles
    r"|`[^`]+`_{0,2}"  # interpreted text / links
    r"|(?<![\w*\\])\*\*(?=[^\s*])[^*]*?(?<=[^\s*])\*\*(?![\w*])"  # **strong**
    r"|(?<![\w*\\])\*(?=[^\s*])[^*]*?(?<=[^\s*])\*(?![\w*])"  # *emphasis*
    r"|\$[^$]+\$"  # math written as $...$
)
_TRAILING_UNDERSCORE = re.compile(r"\b([A-Za-z]\w*?[A-Za-z0-9])_(?=[\s,.;:)\]]|$)")
_SECTION_WITH_NOTE = re.compile(r"^(\s*)(Args|Arguments|Attributes|Returns|Raises)\s*\((.+)\):\s*$")
_NAMES_CONTINUED = re.compile(r"^\s+\w+(, *\w+)*,\s*$")  # "a, b, c," continued on the next line


def _escape(text: str) -> str:
    text = text.replace("|", r"\|")
    text = re.sub(r"(?<!\\)\*", r"\*", text)
    return _TRAILING_UNDERSCORE.sub(r"\1\_", text)


def _escape_line(line: str) -> str:
    stripped = line.lstrip()
    if stripped.startswith(("| ", "+-", "+=", ".. ", ">>>", "...")):
        return line
    indent = line[: len(line) - len(stripped)]
    bullet = ""
    if stripped.startswith(("* ", "- ")):
        bullet, stripped = stripped[:2], stripped[2:]
    out, pos = [], 0
    for m in _PROTECT.finditer(stripped):
        out.append(_escape(stripped[pos : m.start()]))
        # " . " (a product) inside a literal would end autosummary's one-sentence summary mid-literal
        out.append(m.group(0).replace(" . ", " · ") if m.group(0).startswith("``") else m.group(0))
        pos = m.end()
    out.append(_escape(stripped[pos:]))
    return indent + bullet + "".join(out)


def _attributes_as_list(lines: list[str]) -> None:
    """Free-text ``Attributes:`` entries (one per line, continuations indented) become a bullet list."""
    i = 0
    while i < len(lines):
        if lines[i].strip() != "Attributes:":
            i += 1
            continue
        j = i + 1
        body = [ln for ln in lines[j:] if ln.strip()]
        if not body:
            return
        base = len(body[0]) - len(body[0].lstrip())
        if body[0].lstrip().startswith("- "):  # already a list
            i += 1
            continue
        entries: list[str] = []
        while j < len(lines):
            ln = lines[j]
            ind = len(ln) - len(ln.lstrip())
            if not ln.strip():
                nxt = next((x for x in lines[j + 1 :] if x.strip()), None)
                if nxt is None or len(nxt) - len(nxt.lstrip()) < base:
                    break
            elif ind < base:
                break
            elif ind == base or not entries:
                entries.append(ln.strip())
            else:
                entries[-1] += " " + ln.strip()
            j += 1
        lines[i + 1 : j] = [" " * base + "- " + e for e in entries]
        i += 1 + len(entries)


def _section_headers(app, what, name, obj, options, lines):
    """Before napoleon: ``Args (keyword-only, ...):`` becomes ``Args:`` after a sentence with the note."""
    _attributes_as_list(lines)
    for i, line in enumerate(lines):
        if _NAMES_CONTINUED.match(line) and i + 1 < len(lines) and ":" in lines[i + 1]:
            lines[i : i + 2] = [line.rstrip() + " " + lines[i + 1].strip()]
            return _section_headers(app, what, name, obj, options, lines)
        m = _SECTION_WITH_NOTE.match(line)
        if m:
            lines[i : i + 1] = [f"{m.group(1)}*{m.group(2)}*: {m.group(3)}.", "", f"{m.group(1)}{m.group(2)}:"]
            return _section_headers(app, what, name, obj, options, lines)


def _plain_text_docstring(app, what, name, obj, options, lines):
    if what in ("data", "attribute") and lines and obj is not None:
        type_doc = type(obj).__doc__
        type_doc = type_doc.strip().splitlines() if isinstance(type_doc, str) else []
        if type_doc and lines[0].strip() == type_doc[0].strip():  # the value's type docstring (dict, tuple)
            lines[:] = []
            return
    literal_block = False
    literal_indent = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if literal_block:
            if stripped and indent <= literal_indent:
                literal_block = False
            else:
                continue
        if stripped.endswith("::") or stripped.startswith((".. math::", ".. code")):
            lines[i] = _escape_line(line[:-2]) + "::" if stripped.endswith("::") else line
            literal_block, literal_indent = True, indent
            continue
        lines[i] = _escape_line(line)


def setup(app):
    app.connect("autodoc-process-docstring", _section_headers, priority=100)  # before napoleon (500)
    app.connect("autodoc-process-docstring", _plain_text_docstring, priority=900)  # after napoleon
