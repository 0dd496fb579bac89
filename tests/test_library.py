"""The public library surface: `runner.__all__` lists exactly the public names, and
the script in docs/library.md runs as written."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import runner
from runner import errors

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(runner).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public | {"__version__"} == set(runner.__all__)
    assert all(hasattr(runner, name) for name in runner.__all__)


def test_the_whole_error_tree_is_public() -> None:
    tree = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.RunnerError)
    }
    assert tree <= set(runner.__all__)


def library_script() -> str:
    page = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", page, re.S)
    assert found, "docs/library.md has no python block"
    return found.group(1)


def test_the_library_page_s_script_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fal_server: Any,
) -> None:
    # a sharded run on fal under a cap, through the one entry `runner run` takes too
    server = fal_server()
    shutil.copytree(ROOT / "specs", tmp_path / "specs", ignore=shutil.ignore_patterns("runs"))
    monkeypatch.chdir(tmp_path)
    script = library_script()
    assert len([line for line in script.splitlines() if line and "import" not in line]) == 6
    exec(compile(script, "docs/library.md", "exec"), {})
    out = tmp_path / "runs" / "quickstart-fal"
    assert capsys.readouterr().out == f"1 ok of 1 rows; stopped: None -> {out}\n"
    records = runner.latest(out)
    assert [r["status"] for r in records.values()] == ["ok"]  # part 1 of the spec's 2 rows
    assert server.stats.submissions == 1 and {r["backend"] for r in records.values()} == {"fal"}
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert runs[0]["shard"] == "1/2"
    assert json.loads((out / "stats.json").read_text())["max_usd"] == 0.1
    # a folder given as a string, as a script would write it, reads as the Path does
    assert runner.latest("runs/quickstart-fal") == records


def imported_runner_modules(path: Path) -> set[str]:
    """Every `runner...` module a file imports (absolute imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "runner" or m.startswith("runner.")}


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_only_the_public_surface(path: Path) -> None:
    # runner.emulator is a public package of its own (with its own __all__)
    assert imported_runner_modules(path) <= {"runner", "runner.emulator"}


def test_no_class_name_has_two_meanings() -> None:
    # Two Plans and three Jobs once made a newcomer stumble: one name, one concept.
    homes: dict[str, list[str]] = {}
    for path in sorted((ROOT / "runner").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                homes.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert {name: where for name, where in homes.items() if len(where) > 1} == {}


def test_the_cli_takes_the_library_through_its_public_names() -> None:
    # Like any script: a name the surface offers is imported from `runner`, not its module.
    tree = ast.parse((ROOT / "runner" / "cli" / "commands.py").read_text(encoding="utf-8"))
    reached = {
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module
        for alias in node.names
        if alias.name in runner.__all__
    }
    assert reached == set()
