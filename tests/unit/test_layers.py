"""The package imports downward: read with ``ast`` from the source, never
by importing it.

- Nothing below the API layer imports it: only the composition root
  (``app``), the dashboard built on the API's endpoints (``ui``) and the
  command line (``cli``) may import ``llm_gateway.api``.
- The wire layer (``wire/``) imports only the canonical types, the error
  tree and the token estimates: never the API, the providers or anything
  that does I/O.
- No import cycles among module-level imports (those inside functions and
  ``if TYPE_CHECKING:`` blocks run later or never, so they cannot cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llm_gateway

ROOT = Path(llm_gateway.__file__).parent
ABOVE_API = ("llm_gateway.app", "llm_gateway.ui", "llm_gateway.cli", "llm_gateway.api")
WIRE_MAY_IMPORT = ("llm_gateway.wire", "llm_gateway.types", "llm_gateway.errors", "llm_gateway.tokens")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}


def _resolve(name: str) -> str | None:
    """The module of the package that ``name`` (a module or a name in one) is."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, top_level_only: bool) -> set[str]:
    """The package's modules ``module`` imports."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                if isinstance(node, ast.If) and _is_type_checking(node):
                    continue
                if top_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for field in ("body", "orelse", "handlers", "finalbody"):
                    visit([n for n in getattr(node, field, []) if isinstance(n, ast.stmt | ast.excepthandler)])
                continue
            found.update(m for n in names if n.startswith("llm_gateway") and (m := _resolve(n)) is not None)

    visit(tree.body)
    found.discard(module)
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_walk_sees_the_package() -> None:
    assert "llm_gateway.pipeline" in MODULES and "llm_gateway.wire.answer" in MODULES
    assert "llm_gateway.wire.answer" in _imports("llm_gateway.pipeline", top_level_only=True)


def test_nothing_below_the_api_imports_it() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module in MODULES if not _within(module, ABOVE_API)
        for target in _imports(module, top_level_only=False) if _within(target, ("llm_gateway.api",))
    )
    assert upward == []


def test_the_wire_layer_imports_only_what_lies_below_it() -> None:
    outward = sorted(
        f"{module} imports {target}"
        for module in MODULES if _within(module, ("llm_gateway.wire",))
        for target in _imports(module, top_level_only=False) if not _within(target, WIRE_MAY_IMPORT)
    )
    assert outward == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph``, or ``None`` (depth-first, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_there_are_no_import_cycles() -> None:
    graph = {m: _imports(m, top_level_only=True) for m in MODULES}
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])


@pytest.mark.parametrize(("graph", "found"), [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
])
def test_the_cycle_check_finds_cycles(graph: dict[str, set[str]], found: bool) -> None:
    assert (_cycle(graph) is not None) is found
