"""Imports flow one way: the registry reads the settings, the settings never reach back."""

from __future__ import annotations

import ast
from pathlib import Path

import pixelgate._config_sections
import pixelgate.config


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_config_imports_nothing_from_providers_not_even_inside_a_function() -> None:
    for module in (pixelgate.config, pixelgate._config_sections):
        imported = _imported_modules(Path(str(module.__file__)))
        assert not [name for name in imported if name.startswith("pixelgate.providers")]
