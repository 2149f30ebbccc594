"""The package's shape: one import direction, no late imports, no private names across modules."""

from __future__ import annotations

import ast
import gc
import importlib.metadata
from pathlib import Path

import prefill_guard

PACKAGE = Path(prefill_guard.__file__).parent


def _modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name (``prefill_guard.testing.server``, ...).

    Parsed with the garbage collector paused: on CPython 3.11.7 a finalizer that runs while
    ``ast.parse`` builds its tree (one a framework's test left behind) makes it raise
    "SystemError: AST constructor recursion depth mismatch".
    """
    found = {}
    gc.collect()
    gc.disable()
    try:
        for path in sorted(PACKAGE.rglob("*.py")):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = ast.parse(path.read_text(), str(path))
    finally:
        gc.enable()
    return found


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute name a (possibly relative) ``from ... import`` refers to."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _runtime_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """The module-level imports, without those under ``if TYPE_CHECKING:`` (types only)."""
    imports: list[ast.ImportFrom | ast.Import] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
    return imports


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
        for node in _runtime_imports(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, node, is_package)
                for alias in node.names:
                    as_module = f"{target}.{alias.name}"
                    graph[name].add(as_module if as_module in modules else target)
            else:
                graph[name].update(a.name for a in node.names if a.name in modules)
        graph[name] = {t for t in graph[name] if t in modules and t != name}
    return graph


def test_the_imports_between_modules_form_no_cycle() -> None:
    """At run time the modules import each other in one direction only (the contract at the
    bottom; agent, streaming and middleware on top): a depth-first walk finds no cycle.
    A package's ``__init__`` re-exporting its own modules is left out of the walk."""
    graph = {
        name: {t for t in targets if not t.startswith(name + ".")}
        for name, targets in _graph().items()
    }
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            assert state.get(target) != "open", f"import cycle: {' -> '.join([*path, target])}"
            if target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_module_imports_inside_a_function() -> None:
    """Every import of the package is at module level: no late import hides a cycle."""
    late = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        late.append(f"{name}:{inner.lineno}")
    assert late == []


def test_no_module_imports_another_modules_private_name() -> None:
    """``from .x import _y`` would tie a module to another's internals."""
    crossing = []
    for name, tree in _modules().items():
        for node in _runtime_imports(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level or "prefill_guard" in (node.module or "")
            ):
                crossing += [f"{name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert crossing == []


def test_the_public_api_is_small_and_every_name_is_documented() -> None:
    """At most 30 names at the top (the rest lives in the submodules), each with a docstring."""
    assert len(prefill_guard.__all__) <= 30
    for name in prefill_guard.__all__:
        value = getattr(prefill_guard, name)
        assert getattr(value, "__doc__", None), name


def test_the_version_is_the_installed_distributions() -> None:
    """``__version__`` comes from the package metadata, not a second hard-coded copy."""
    assert prefill_guard.__version__ == importlib.metadata.version("prefill-guard")
