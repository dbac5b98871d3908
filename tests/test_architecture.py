"""The package layout's rules (docs/architecture.md), checked on the source itself.

The layer contracts are lint-imports' job (pyproject.toml, run by scripts/test.sh); these
tests walk the import graph for cycles and the source for the other rules: no module over
500 lines, and no function-local import of a harness module (one hides a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "harness"
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_import_graph_has_no_cycles():
    graph = grimp.build_graph("harness")
    assert _cycles(graph) == []


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_harness_modules_are_imported_at_module_level():
    """A function-local `from harness... import` is how a cycle hides; heavy third-party
    libraries (torch, transformers, ...) may still be imported inside functions."""
    local = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if any(n == "harness" or n.startswith("harness.") for n in names):
                    local.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert local == []


def test_every_registered_component_can_be_loaded():
    """A registry row names a module and attribute as a string: a typo would only show when a
    config picks it, so every row is resolved here."""
    from harness import cli, registry

    tables = [v for v in vars(registry).values() if isinstance(v, registry.Registry)]
    assert len(tables) == 13   # ... JUDGE_SERVICES, TASKS, LAUNCH_MODES, PRUNE_SIGNALS
    for table in [*tables, cli.ACTIONS]:
        for name in table.names():
            assert callable(table.load(name)), f"{table.field}={name}"
    assert callable(registry.resolve(registry.TRIAL_ENTRY))
