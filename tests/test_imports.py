"""The core's imports: a core module imports no web framework, and no import runs in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "middleware"
# The modules that serve HTTP: the app factory and server, and the blueprints of the core.
WEB_FACING = ("middleware.web", "middleware.ingest.hooks", "middleware.reads.context_api")
UPWARD = ("webui", "plugins", "devkit", "tests")


def module_name(path: Path) -> str:
    """Return the dotted name of a module file of the repository."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> dict[str, Path]:
    """Return every module of the core (migrations aside: Alembic loads them by path)."""
    return {
        module_name(path): path
        for path in sorted(CORE.rglob("*.py"))
        if "migrations" not in path.relative_to(CORE).parts
    }


def imported_names(path: Path, *, module_level: bool) -> set[str]:
    """Return what a module imports, as dotted names, resolving relative imports.

    With module_level, only the imports that run when the module is imported: not those
    inside functions, nor those under `if TYPE_CHECKING:`.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in _statements(tree.body) if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # submodules, if any
    return found


def _statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Return the statements that run at import, entering if/try blocks but not functions."""
    found: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                found += _statements(node.body) + _statements(node.orelse)
        elif isinstance(node, ast.Try):
            handlers = [s for h in node.handlers for s in h.body]
            found += _statements(node.body + handlers + node.orelse + node.finalbody)
        else:
            found.append(node)
    return found


def import_graph() -> dict[str, set[str]]:
    """Return which core modules each core module imports when it is imported."""
    modules = core_modules()
    return {
        name: {
            other
            for other in imported_names(path, module_level=True)
            if other in modules and other != name
        }
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return each group of modules that import one another in a circle (Tarjan's SCC)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_core_modules_import_without_flask_or_the_admin_pages():
    """Importing any core module other than the web-facing ones imports neither Flask nor webui."""
    names = [
        name
        for name in core_modules()
        if not any(name == web or name.startswith(web + ".") for web in WEB_FACING)
    ]
    assert {"middleware.errors", "middleware.config", "middleware.interaction",
            "middleware.store.tables", "middleware.customers.identity",
            "middleware.installation", "middleware.process.worker"} <= set(names)  # fmt: skip
    # One fresh interpreter imports them one by one, and names the first that brings either in.
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(m for m in ('flask', 'webui') if m in sys.modules)\n"
        "    if loaded:\n"
        "        sys.exit(f'{name} imports {loaded}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_no_core_module_imports_another_in_a_circle():
    """The core's module-level imports form no cycle."""
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_circle():
    """A circle of three modules is found; a module that only imports into it is not part of it."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_core_module_imports_pages_plugins_devkit_or_tests():
    """The core imports nothing of webui, plugins, devkit or tests, even inside a function."""
    upward = {
        (name, other)
        for name, path in core_modules().items()
        for other in imported_names(path, module_level=False)
        if other.split(".")[0] in UPWARD
    }
    assert upward == set()


def test_each_stage_says_its_place_in_the_pipeline():
    """Every subpackage of the core opens with a one-line docstring."""
    for init in sorted(CORE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and "\n" not in doc.strip(), init


def test_admin_pages_run_no_sql_of_their_own():
    """No module of webui imports SQLAlchemy or a table: pages ask the core for what they show."""
    from sqlalchemy import Table

    from middleware.store import tables

    table_names = {name for name, value in vars(tables).items() if isinstance(value, Table)}
    found = set()
    for path in sorted((ROOT / "webui").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {
                    (path.name, a.name) for a in node.names if a.name.startswith("sqlalchemy")
                }
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("sqlalchemy"):
                    found.add((path.name, node.module))
                elif node.module == "middleware.store.tables":
                    found |= {(path.name, a.name) for a in node.names if a.name in table_names}
    assert found == set()
