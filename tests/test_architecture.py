"""docs/architecture.md lists every module under runner/ with its one job, and names none
that does not exist; runner/ itself keeps only the shared primitives (at most 12 modules)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"
MOST_PRIMITIVES = 12


def _modules() -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "runner").rglob("*.py")
        if "__pycache__" not in p.parts
    }


def _listed() -> set[str]:
    """The modules the page lists: one `- \\`runner/...py\\`: its job` line each."""
    text = PAGE.read_text(encoding="utf-8")
    return set(re.findall(r"^- `(runner/[\w/]+\.py)`: \S", text, flags=re.M))


def test_the_page_lists_every_module() -> None:
    assert sorted(_modules() - _listed()) == [], "add these to docs/architecture.md"


def test_the_page_names_no_module_that_does_not_exist() -> None:
    named = set(re.findall(r"`(runner/[\w/]+\.py)`", PAGE.read_text(encoding="utf-8")))
    assert sorted(named - _modules()) == [], "docs/architecture.md names these; they are gone"


def test_runner_keeps_only_the_shared_primitives_at_its_top() -> None:
    top = sorted(p.name for p in (ROOT / "runner").glob("*.py"))
    assert len(top) <= MOST_PRIMITIVES, top
