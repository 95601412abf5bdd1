"""Layering: the core (middleware/) imports no plugin, page or tool, and names no vendor."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from middleware.integrations.registry import PluginRegistry

CORE = Path(__file__).resolve().parents[1] / "middleware"
OUTSIDE_THE_CORE = ("plugins", "webui", "devkit", "tests")


def core_modules() -> list[Path]:
    """Return every module of the core, in a stable order."""
    return sorted(CORE.rglob("*.py"))


def vendor_words() -> frozenset[str]:
    """Return the installed plugins' keys and the identity types they declare."""
    registry = PluginRegistry.from_entry_points()
    return frozenset(registry.classes) | {t.type for t in registry.identity_types()}


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Yield (line, module) for each absolute import in a module, wherever it is."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def docstring_nodes(tree: ast.AST) -> set[int]:
    """Return the ids of the constants that are docstrings (of modules, classes, functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def vendor_literals(source: str, words: frozenset[str]) -> list[tuple[int, str]]:
    """Return (line, text) of each string literal in code that is a vendor word."""
    tree = ast.parse(source)
    docstrings = docstring_nodes(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in words
        and id(node) not in docstrings
    ]


def test_the_core_imports_no_plugin_page_or_tool():
    """No module of middleware/ imports plugins, webui, devkit or tests."""
    found = []
    for path in core_modules():
        module = path.relative_to(CORE).as_posix()
        for line, name in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            if name.split(".")[0] in OUTSIDE_THE_CORE:
                found.append(f"middleware/{module}:{line}: imports {name}")
    assert found == []


def test_the_core_names_no_plugin_key_or_declared_identity_type():
    """No string literal in the core's code is a plugin's key or an identity type it declares."""
    words = vendor_words()
    found = [
        f"middleware/{path.relative_to(CORE).as_posix()}:{line}: {text!r}"
        for path in core_modules()
        for line, text in vendor_literals(path.read_text(encoding="utf-8"), words)
    ]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        'def route(source):\n    if source == "zendesk":\n        return 1\n',
        'LOOKUPS = ("phone", "salesforce_contact")\n',
        'def label(kind):\n    """Name it."""\n    return f"{kind}" if kind != "cti" else ""\n',
    ],
)
def test_a_vendor_literal_in_code_is_found(source):
    """The check finds a plugin key or declared identity type written as a literal in code."""
    assert vendor_literals(source, vendor_words())


def test_docstrings_may_name_a_vendor():
    """A docstring that is exactly a vendor word is not code and is not reported."""
    source = '"""zendesk"""\n\n\ndef f():\n    """twilio"""\n'
    assert vendor_literals(source, vendor_words()) == []
