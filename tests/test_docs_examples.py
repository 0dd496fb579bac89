"""Every example spec in README.md and docs/*.md validates as shown, from the repository's
specs/ folder: a spec's paths are relative to its file, and the assets the examples name (images,
photos, text files) ship there.

Which blocks are checked, and how: every fenced block whose info string is `yaml`.
- A block that parses as a mapping holding both required keys, `version` and `endpoint`, is a
  complete spec: it is written into a copy of specs/ and must pass `runner.check`.
- Any other yaml block is a fragment: it must parse as a mapping, and it is checked laid over
  the nearest complete spec above it in the same file (its top-level keys replace that spec's),
  or over BASE when the file has none above it. So a complete spec that lost a required key is
  still checked, as a fragment that must make sense, never skipped.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import runner

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BASE: dict[str, Any] = {
    "version": 1,
    "endpoint": "fal-ai/flux-1/dev/image-to-image",
    "defaults": {"image_url": "images/circle.png", "prompt": "a red ball"},
}


@dataclass(frozen=True)
class Example:
    doc: Path
    line: int  # of the opening fence, 1-based
    spec: dict[str, Any]  # the spec to check: the block, or the fragment laid over its base
    complete: bool

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def yaml_blocks(doc: Path) -> list[tuple[int, str]]:
    """(line of the opening fence, text) of each ```yaml block of `doc`."""
    found, start, lines = [], 0, []
    inside = False
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if not inside and line.startswith("```yaml"):
            inside, start, lines = True, number, []
        elif inside and line.strip() == "```":
            found.append((start, "\n".join(lines) + "\n"))
            inside = False
        elif inside:
            lines.append(line)
    return found


def examples() -> list[Example]:
    found = []
    for doc in DOCS:
        base = BASE
        for line, text in yaml_blocks(doc):
            parsed = yaml.safe_load(text)
            assert isinstance(parsed, dict), f"{doc.name}:{line}: a yaml block is not a mapping"
            if {"version", "endpoint"} <= parsed.keys():
                found.append(Example(doc, line, parsed, True))
                base = parsed
            else:
                found.append(Example(doc, line, {**base, **parsed}, False))
    return found


EXAMPLES = examples()


def test_the_docs_have_examples_of_both_kinds():
    where = {(e.doc.name, e.complete) for e in EXAMPLES}
    assert {("README.md", True), ("README.md", False), ("spec.md", True)} <= where
    assert len([e for e in EXAMPLES if e.doc.name == "README.md"]) >= 4


@pytest.fixture(scope="module")
def specs_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's specs/ (without runs), where each example is written."""
    folder = tmp_path_factory.mktemp("repo") / "specs"
    shutil.copytree(ROOT / "specs", folder, ignore=shutil.ignore_patterns("runs"))
    return folder


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.where)
def test_each_example_spec_validates_from_specs(example: Example, specs_copy: Path):
    path = specs_copy / f"example-{example.doc.stem}-{example.line}.yaml"
    path.write_text(yaml.safe_dump(example.spec, sort_keys=False), encoding="utf-8")
    try:
        checked = runner.check(path)
    except runner.SpecErrors as errors:
        pytest.fail(f"{example.where}: {errors}")
    assert checked.count >= 1


def test_a_fragment_is_checked_over_the_spec_above_it(tmp_path: Path):
    # the rule the docstring states, on a document of its own
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```yaml\nversion: 1\nendpoint: e\nmatrix: {seed: [1]}\n```\n"
        "```yaml\nsample: {n: 1}\n```\n",
        encoding="utf-8",
    )
    (complete, fragment) = yaml_blocks(doc)
    assert complete[0] == 1 and fragment[0] == 6
    DOCS.append(doc)
    try:
        found = [e for e in examples() if e.doc == doc]
    finally:
        DOCS.remove(doc)
    assert [e.complete for e in found] == [True, False]
    assert found[1].spec == {**found[0].spec, "sample": {"n": 1}}


def test_the_library_page_reads_a_run_back_from_the_repository_root(tmp_path, monkeypatch, capsys):
    page = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "latest" in b]
    shutil.copytree(ROOT / "specs", tmp_path / "specs", ignore=shutil.ignore_patterns("runs"))
    monkeypatch.chdir(tmp_path)
    result = asyncio.run(runner.run("specs/quickstart.yaml", runner.RunOptions()))
    assert result.stats.ok == 2
    exec(compile(snippet, "docs/library.md", "exec"), {})
    assert capsys.readouterr().out.startswith("['ok', 'ok'] {'style': ")
