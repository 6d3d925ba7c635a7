"""Rules of the package's shape (issue 15), checked on the source with `ast`:

- no module of segapp/ (or of the demo/ launcher) reads another module's private ("_name")
  attributes: `obj._x` is allowed on `self`, `cls` and `super()`, and where `_x` is a name the
  same module defines (a method, an attribute it assigns, a class or function); everything else
  must go through a public property or method.
  Importing a private name from another segapp module is the same thing, and so is
  getattr/setattr/hasattr with a private name on anything but self;
- no module outside segapp/modeling/ is over MAX_MODULE_LINES lines.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import segapp

PACKAGE = Path(segapp.__file__).parent
ROOT = PACKAGE.parent
MAX_MODULE_LINES = 450

# Underscored names that are public API of a third-party or standard-library type.
ALLOWED_PRIVATE = {
    "_replace": "NamedTuple's documented copy-with-changes method",
    "_asdict": "NamedTuple's documented conversion to a dict",
    "_fields": "NamedTuple's documented field names",
    "_make": "NamedTuple's documented constructor from an iterable",
}

def _sources(under: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in ALLOWED_PRIVATE


def _defined_names(tree: ast.AST) -> set[str]:
    """Names the module itself defines: functions, classes, assigned names and attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _is_own_object(node: ast.expr) -> bool:
    """`self`, `cls` or `super()`."""
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def private_accesses(source: str, filename: str = "<source>") -> list[str]:
    """'line: expression' for each access to another module's private name in `source`."""
    tree = ast.parse(source, filename)
    own = _defined_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            if not _is_own_object(node.value) and node.attr not in own:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segapp"):
            found += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names if _is_private(a.name)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _is_private(node.args[1].value) and not _is_own_object(node.args[0])
              and node.args[1].value not in own):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def _violations() -> dict[str, list[str]]:
    out = {}
    demo = ROOT / "demo"  # the repository's demo launcher, beside the package
    for path in _sources() + (_sources(demo) if demo.is_dir() else []):
        found = private_accesses(path.read_text(encoding="utf-8"), str(path))
        if found:
            out[_rel(path)] = found
    return out


def test_no_private_attribute_access_across_modules():
    violations = _violations()
    assert not violations, "private names of other modules used (add a public property or method):\n" + "\n".join(
        f"  {path}:{hit}" for path, hits in violations.items() for hit in hits)


def test_the_private_access_check_finds_what_it_should():
    source = '''
from segapp.image_predictor import _helper
class Track:
    def __init__(self):
        self._points = {}
    def merge(self, other):
        return other._points, self._points, super()._merge(), cls._x
def read(predictor, nt):
    return predictor._embedding, nt._replace(a=1), getattr(predictor, "_cache"), getattr(predictor, "_points")
'''
    found = private_accesses(source)
    assert found == ["2: from segapp.image_predictor import _helper", "9: predictor._embedding",
                     "9: getattr(predictor, '_cache')"]


def test_no_module_outside_modeling_is_over_the_limit():
    modeling = PACKAGE / "modeling"
    over = []
    for path in _sources():
        if modeling in path.parents:
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            over.append(f"{_rel(path)} ({lines})")
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {', '.join(over)}"
