"""runner/ has no import cycle: the graph of its modules' own imports (module level and inside
functions alike) is acyclic, so every module can be read, tested and imported on its own."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "runner"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The runner modules `name` imports. `from . import x` is module x when there is one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_the_graph_sees_imports() -> None:
    g = graph()
    assert "runner.validate" in g["runner"]  # the surface, absolute through `from .x import`
    assert "runner.urls" in g["runner.emulator.state"]  # `from ..urls import`, two levels up
    assert "runner.emulator" in g["runner.backends"]  # an import inside a function counts too


def test_no_import_cycle() -> None:
    try:
        tuple(TopologicalSorter(graph()).static_order())
    except CycleError as error:
        cycle = " -> ".join(reversed(error.args[1]))  # graphlib lists dependencies first
        raise AssertionError(f"import cycle (each imports the next): {cycle}") from None
