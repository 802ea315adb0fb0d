"""The streams package imports downwards only: no module imports one that imports it back."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from streams.settings import REPOSITORY_ROOT

PACKAGE = REPOSITORY_ROOT / "streams"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPOSITORY_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported(path: Path) -> Iterator[str]:
    """Every streams module ``path`` imports, at the top or inside a function alike: an
    import deferred to call time ties the layers together just as much."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from streams.ops import commands` names a module too.
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module -> the streams modules it imports."""
    return {
        name: {found for found in _imported(path) if found in MODULES and found != name}
        for name, path in MODULES.items()
    }


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle is not None:
            return cycle
    return None


def test_the_walk_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_streams_modules() -> None:
    graph = import_graph()
    assert "streams.app" in graph["streams.worker"]  # the walk sees the package's edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(set(MODULES) - {"streams.__main__"}))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


# The lower layers never reach up: the pure domain and the contract know nothing of Faust's
# agents, and the notifier's channels and deciders nothing of the agents that apply them. The
# backoff is below every layer.
FORBIDDEN_ABOVE: dict[str, tuple[str, ...]] = {
    "streams.backoff": ("streams",),
    "streams.contracts": ("streams.domain", "streams.agents", "streams.notify", "streams.ops"),
    "streams.domain": ("streams.agents", "streams.notify", "streams.ops", "streams.app"),
    "streams.notify": ("streams.agents", "streams.ops", "streams.app"),
    "streams.observability": ("streams.agents", "streams.ops", "streams.app"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_ABOVE))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    graph = import_graph()
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module == layer or module.startswith(f"{layer}.")
        for target in targets
        if target.startswith(FORBIDDEN_ABOVE[layer])
    )
    assert upward == []
