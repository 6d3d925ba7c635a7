"""The wheel holds every subpackage: pyproject's explicit `packages` list must name each folder
of segapp/ that holds Python modules (a non-editable install would lack a forgotten one)."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_subpackage():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in (ROOT / "segapp").rglob("*")
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py"))
    } | {"segapp"}
    missing = sorted(on_disk - listed)
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}"
