"""runner/ has no import cycle: the graph of its modules' own imports (module level and inside
functions alike) is acyclic, so every module can be read, tested and imported on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
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
    assert "runner.spec.check" in g["runner"]  # the surface, absolute through `from .x import`
    assert "runner.urls" in g["runner.emulator.state"]  # `from ..urls import`, two levels up
    # an import inside a function counts too
    assert "runner.emulator" in g["runner.execution.backends"]


def test_no_import_cycle() -> None:
    try:
        tuple(TopologicalSorter(graph()).static_order())
    except CycleError as error:
        cycle = " -> ".join(reversed(error.args[1]))  # graphlib lists dependencies first
        raise AssertionError(f"import cycle (each imports the next): {cycle}") from None


# What each part of runner/ may import besides itself: the pipeline's stages point down only
# (spec -> grid, execution -> spec, grid and the folder; report and export read the folder).
# The modules directly in runner/ are the shared primitives and import nothing else; the
# public surface (runner/__init__.py) may import any stage but the command line, and only
# the command line (and `python -m runner`) imports the command line.
PRIMITIVES = "primitives"
MAY_IMPORT = {
    PRIMITIVES: set(),
    "grid": set(),
    "spec": {"grid"},
    "folder": set(),
    "execution": {"grid", "spec", "folder", "emulator"},
    "emulator": set(),
    "report": {"folder"},
    "export": {"folder"},
    "starter": set(),
}


def part(name: str) -> str:
    """The part of runner/ a module belongs to: its package, or the primitives."""
    if name in ("runner", "runner.__main__"):
        return name
    package = name.split(".")[1]
    return package if (PACKAGE / package).is_dir() else PRIMITIVES


def test_no_part_imports_a_later_stage() -> None:
    upward = []
    for name, imported in graph().items():
        home = part(name)
        for target in imported:
            there = part(target)
            if there in (home, PRIMITIVES) or there in MAY_IMPORT.get(home, set()):
                continue
            if home == "runner" and there != "cli":  # the public surface gathers the stages
                continue
            if home in ("cli", "runner.__main__"):
                continue
            upward.append(f"{name} -> {target}")
    assert upward == [], "imports against the pipeline's direction: " + ", ".join(upward)


def test_the_parts_are_known() -> None:
    found = {part(name) for name in modules()} - {"runner", "runner.__main__"}
    assert found == set(MAY_IMPORT) | {"cli"}


def test_building_the_argument_parser_imports_no_emulator() -> None:
    # every command builds the whole parser, `serve`'s options included: the emulator's
    # server (aiohttp.web, Pillow's filters) must not load for a `runner validate`
    script = (
        "import sys\n"
        "from runner.cli import main\n"
        "from runner.cli.args import build_parser\n"
        "build_parser()\n"
        "heavy = ('runner.emulator.', 'aiohttp.web', 'PIL.ImageFilter')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy) or m == heavy[0][:-1]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_run_folder_file_names_are_imported_from_their_one_home() -> None:
    # a name taken through another module (folder.journal's MANIFEST) hides where it lives
    # and keeps a re-export alive that nothing else needs
    from runner.folder import names

    known = {n for n in vars(names) if n.isupper()}
    elsewhere = []
    for folder in (PACKAGE, PACKAGE.parent / "tests", PACKAGE.parent / "benchmarks"):
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and not _from_names(node):
                    taken = [a.name for a in node.names if a.name in known]
                    elsewhere += [f"{path.name}: {name} from {node.module}" for name in taken]
    assert known >= {"MANIFEST", "LOCK_FILE"} and elsewhere == []


def _from_names(node: ast.ImportFrom) -> bool:
    """`from runner.folder.names import`, `from .names import`, `from ..folder.names import`."""
    module = node.module or ""
    return module == "names" if node.level == 1 else module.endswith("folder.names")
