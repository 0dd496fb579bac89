"""docs/spec.md against schemas/job.schema.json and the command line: every key of the schema
has a row in the reference with the schema's default, so the two cannot drift apart."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from runner.cli.args import build_parser
from runner.cli.commands import main
from runner.endpoints import schemas_dir

ROOT = Path(__file__).resolve().parent.parent
SPEC_MD = ROOT / "docs" / "spec.md"


def schema_keys(schema: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, its schema) for every property at any depth, sources under $defs included."""
    for name, sub in schema.get("properties", {}).items():
        key = prefix + name
        yield key, sub
        if isinstance(sub, Mapping):
            yield from schema_keys(sub, key + ".")
    for branch in schema.get("oneOf", []):
        yield from schema_keys(branch, prefix)
    for sub in schema.get("$defs", {}).values():
        yield from schema_keys(sub, prefix)


def documented_rows() -> dict[str, list[str]]:
    """First cell `key` of every table row in docs/spec.md -> the row's cells."""
    rows = {}
    for line in SPEC_MD.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and (m := re.fullmatch(r"`([\w.]+)`", cells[0])):
            rows[m.group(1)] = cells
    return rows


def test_every_schema_key_is_documented_with_its_default():
    schema = json.loads((ROOT / "schemas" / "job.schema.json").read_text(encoding="utf-8"))
    rows = documented_rows()
    keys = dict(schema_keys(schema))
    assert {"version", "execution.concurrency", "sample.n", "range", "jsonl"} <= keys.keys()
    missing = sorted(k for k in keys if k not in rows)
    assert not missing, f"keys of job.schema.json not documented in docs/spec.md: {missing}"
    for key, sub in keys.items():
        if "default" in sub:
            default = sub["default"]
            shown = json.dumps(default) if not isinstance(default, str) else default
            assert f"`{shown}`" in rows[key][2], f"{key}: docs/spec.md default is not {shown}"


def test_documented_keys_exist_in_the_schema():
    schema = json.loads((ROOT / "schemas" / "job.schema.json").read_text(encoding="utf-8"))
    keys = set(dict(schema_keys(schema)))
    # the reference's other tables (commands, exit codes, variables) use other first cells
    stale = [k for k in documented_rows() if k.islower() and "_URL" not in k and k not in keys]
    assert not stale, f"docs/spec.md documents keys the schema does not have: {stale}"


def test_every_command_is_documented():
    text = SPEC_MD.read_text(encoding="utf-8")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands
    for name in commands:
        assert f"`runner {name}" in text, f"runner {name} is not in docs/spec.md"


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_merge_conflict_markers_in_the_docs():
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        marks = [n for n, x in enumerate(lines, 1) if x.startswith(("<<<<<<< ", ">>>>>>> "))]
        assert not marks, f"{doc.name}: merge conflict markers at lines {marks}"


def test_no_link_leaves_the_repository():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text
        for target in re.findall(r"\]\(([^)#]+)", text):
            if not target.startswith(("http://", "https://")):
                path = (doc.parent / target).resolve()
                assert path.is_relative_to(ROOT), target
                assert path.exists(), f"{doc.name}: broken link {target}"


def test_every_link_to_a_section_finds_its_heading():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", text):
            page = (doc.parent / target).resolve() if target else doc
            assert anchor in anchors(page), f"{doc.name}: no heading for {target}#{anchor}"


def anchors(page: Path) -> set[str]:
    """The GitHub anchors of a page's headings: lower case, punctuation dropped, spaces as -."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_schema_prints_the_installed_schema(capsys):
    assert main(["schema"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == schemas_dir() / "job.schema.json" and path.is_file()
    assert json.loads(path.read_text(encoding="utf-8"))["required"] == ["version", "endpoint"]


def test_fields_lists_every_input_with_range_default_and_price(capsys):
    assert main(["fields"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fal-ai/flux-1/dev/image-to-image")
    assert "\nstrength: number, 0.01 to 1, default 0.95\n" in out
    assert "\nimage_url: string (a local path, http(s) URL or data: URI), required" in out
    assert "\nnum_images: integer, 1 to 4, default 1\n" in out
    assert "$0.025 per output megapixel, rounded up per image" in out
    assert "assumed 1 MP" in out


def test_fields_of_an_unknown_endpoint_is_a_usage_error(capsys):
    assert main(["fields", "fal-ai/nope"]) == 2
    assert "known: fal-ai/flux-1/dev/image-to-image" in capsys.readouterr().err
