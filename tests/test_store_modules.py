"""The store's modules: no import cycle among them."""

from __future__ import annotations

import ast
from pathlib import Path

import clearance.store

STORE = Path(clearance.store.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(STORE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The store modules that ``path`` imports, anywhere in it (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:  # ``from package import module`` or a name
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
    return found & modules


def test_the_store_and_migration_modules_import_no_cycle() -> None:
    paths = [p for p in STORE.rglob("*.py") if "versions" not in p.parts]
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p, modules) for p in paths}
    assert "clearance.store.migrations.env" in graph and "clearance.store.sqlite.writers" in graph

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        for dep in graph[name]:
            visit(dep, (*path, name))

    for name in graph:
        visit(name, ())

