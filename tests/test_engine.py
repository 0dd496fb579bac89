"""The engine against the row-by-row oracle (tests/oracle.py): for generated specs of every source
kind, validate.check, runner.expand and a run's Replay give what the oracle gives: ok or the
same located errors, the same keys in order, bodies as journaled, vars, files, costs, counts,
URL inputs and collapsed rows."""

from __future__ import annotations

import base64
import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runner.cli.commands import main
from runner.endpoints import get_endpoint
from runner.errors import GridError, SpecErrors
from runner.execution.inputguard import InputGuard
from runner.grid import engine, memo, scan
from runner.grid.expand import Collapsed, Replay, expand
from runner.grid.plan import Cost
from runner.models import Request
from runner.spec import check as validate
from runner.spec.check import check
from runner.spec.load import load_spec

from . import oracle
from .conftest import png_bytes

EP = get_endpoint("fal-ai/flux-1/dev/image-to-image")
assert EP is not None
URL = "https://example.com/koala.png"
SMALL = png_bytes(64, 48)
DATA_URI = "data:image/png;base64," + base64.b64encode(png_bytes(40, 30, (1, 2, 3))).decode()
IMAGES = {
    "a.png": SMALL,
    "same.png": SMALL,  # the bytes of a.png: one input, one request
    "big.png": png_bytes(1500, 1200, (9, 9, 9)),  # 2 megapixels
    "b.png": png_bytes(30, 20, (0, 0, 255)),
    "bad.png": b"notes, not a picture",  # an input that is no image
    "b{a}.png": SMALL,  # a file name is never a template
}
VARS = ["a", "b", "tag"]

# Text that templates read. Variables read only later ones (a -> b -> tag), so most specs
# are valid; an odd text now and then brings a cycle, an undefined name or a bad brace.
_plain = st.sampled_from(["x", "cat", " ", "é", "a dog", "{{", "}}", "0.5", "50%", "%s"])
_odd = st.sampled_from(["{nope}", "{", "", "bad \ud800", "{a}", "{seed}"])
_reads = {"a": ["{b}", "{tag}"], "b": ["{tag}"], "tag": [], "prompt": ["{a}", "{b}", "{tag}"]}


def _text(name: str = "prompt") -> st.SearchStrategy[str]:
    pieces = st.one_of(_plain, *(st.just(r) for r in _reads[name])) if _reads[name] else _plain
    usual = st.lists(pieces, min_size=1, max_size=3).map("".join)
    return st.integers(0, 29).flatmap(lambda n: _odd if n == 29 else usual)


_images_ok = st.sampled_from(["images/a.png", "images/same.png", "images/big.png", URL, DATA_URI])
_images = st.integers(0, 9).flatmap(  # now and then a file that is no image, or none at all
    lambda n: st.sampled_from(["images/bad.png", "images/gone.png"]) if n == 9 else _images_ok
)
_scalar = {  # mostly values the schema takes; the last of each, now and then, one it refuses
    "seed": st.sampled_from([0, 1, 1, 1.0, 2, 7, -3, 12]),
    "strength": st.sampled_from([0.5, 0.25, 1, 0.75, 0.5, 0.3, 1.5]),
    "num_images": st.sampled_from([1, 2, 2, 3, 1, 4, 5]),
    "num_inference_steps": st.sampled_from([10, 28, 40, 20, 28, 30, 5, [28]]),
    "guidance_scale": st.sampled_from([2.5, 3.5, 7, 3.5, 5]),
    "enable_safety_checker": st.sampled_from([True, False]),
    "acceleration": st.sampled_from(["none", "high", "regular", "none", "high", "regular", "x"]),
    "image_url": _images,
    "prompt": _text(),
}


@st.composite
def jobs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
    """A spec (as a mapping) and the text files it reads."""
    files: dict[str, str] = {}
    taken: set[str] = set()
    defaults: dict[str, Any] = {"image_url": draw(_images_ok), "prompt": draw(_text())}
    if draw(st.integers(0, 3)) < 3:  # the prompt reads every variable: each axis matters
        defaults["prompt"] += " {a}{b}{tag}"
    for name in VARS:
        defaults[name] = draw(_text(name))
    for name in draw(st.lists(st.sampled_from(sorted(_scalar)), max_size=2, unique=True)):
        defaults[name] = draw(_scalar[name])
    matrix: dict[str, Any] = {}
    for n in range(draw(st.sampled_from([2, 3, 1, 2, 3, 0]))):
        kind = draw(st.sampled_from(["list", "objects", "range", "files", "lines", "csv", "jsonl"]))
        axis = _axis(draw, kind, n, taken, files)
        if axis is not None:
            matrix[axis[0]] = axis[1]
    doc: dict[str, Any] = {
        "version": 1,
        "endpoint": EP.id,
        "defaults": defaults,
    }
    if matrix:
        doc["matrix"] = matrix
    if matrix and draw(st.integers(0, 2)) == 2:
        doc["exclude"] = draw(st.lists(_exclude_entry(matrix, defaults), min_size=1, max_size=2))
    if draw(st.integers(0, 3)) == 3:
        doc["include"] = draw(st.lists(_include_row(matrix), min_size=1, max_size=2))
    if draw(st.integers(0, 3)) == 3:
        doc["sample"] = {"n": draw(st.integers(1, 6)), "seed": draw(st.integers(0, 3))}
    if draw(st.integers(0, 4)) == 4:
        doc["limits"] = {"max_requests": draw(st.integers(1, 6))}
    return doc, files


def _axis(
    draw: st.DrawFn, kind: str, n: int, taken: set[str], files: dict[str, str]
) -> tuple[str, Any] | None:
    free = [k for k in [*sorted(_scalar), *VARS] if k not in taken]
    if kind == "list":
        name = draw(st.sampled_from(free))
        values = _scalar[name] if name in _scalar else _text(name)
        taken.add(name)
        unique = draw(st.integers(0, 3)) < 3  # else a value may repeat: rows collapse
        size = draw(st.sampled_from([2, 3, 1, 4, 5]))  # one value: an axis that varies nothing
        by = _spelling if unique else None
        low = 1 if unique else size  # two booleans are all there are
        return name, draw(st.lists(values, min_size=low, max_size=size, unique_by=by))
    if kind == "range":
        name = draw(st.sampled_from([k for k in ("seed", "strength") if k not in taken] or [None]))
        if name is None:
            return None
        taken.add(name)
        if name == "seed":
            return name, draw(st.sampled_from([{"range": [0, 3]}, {"range": [5, 1], "step": -2}]))
        return name, {"range": [0.2, 0.8], "step": 0.3}
    if kind == "files":
        if "image_url" in taken:
            return None
        taken.add("image_url")
        glob = draw(st.sampled_from(["images/[ab]*.png", "images/[abs]*.png", "images/*.png"]))
        return "image_url", {"files": glob}  # *.png: bad.png is no image
    if kind == "lines":
        name = draw(st.sampled_from([k for k in ("prompt", *VARS) if k not in taken] or [None]))
        if name is None:
            return None
        taken.add(name)
        lines = draw(st.lists(st.one_of(_text(name), st.just("")), min_size=2, max_size=6))
        lines = [line.replace("\ud800", "?") for line in lines]  # a file holds UTF-8
        if not any(line.strip() for line in lines):
            lines.append("plain")
        files[f"lines{n}.txt"] = "".join(line + "\n" for line in lines)
        return name, {"lines": f"lines{n}.txt"}
    columns = [
        k
        for k in draw(
            st.lists(
                st.sampled_from(
                    ["prompt", "tag", "seed", "strength", "guidance_scale", "enable_safety_checker"]
                ),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        if k not in taken
    ]
    if not columns:
        return None
    taken.update(columns)
    rows = draw(
        st.lists(
            st.fixed_dictionaries({c: _cell(c, kind) for c in columns}), min_size=2, max_size=5
        )
    )
    name = f"rows{n}"
    if kind == "objects":
        return name, rows
    if kind == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_text(row[c]) for c in columns])
        files[f"{name}.csv"] = buffer.getvalue()
        return name, {"csv": f"{name}.csv"}
    files[f"{name}.jsonl"] = "".join(json.dumps(row) + "\n" for row in rows)
    return name, {"jsonl": f"{name}.jsonl"}


def _spelling(value: Any) -> str:
    return json.dumps(value)


def _cell(column: str, kind: str) -> st.SearchStrategy[Any]:
    """A row's value for `column`; in a csv, maybe an empty cell (the field left unset)."""
    if column in ("prompt", "tag"):
        value = _text(column)
    elif column == "enable_safety_checker" and kind == "csv":
        value = st.sampled_from([True, False, "TRUE", "false"])
    else:
        value = _scalar[column]
    return st.one_of(value, value, st.just("")) if kind == "csv" else value


def _csv_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace("\ud800", "?")


def _exclude_entry(matrix: dict[str, Any], defaults: dict[str, Any]) -> st.SearchStrategy[Any]:
    keys = [k for k, v in matrix.items() if isinstance(v, list)]
    keys += [k for k in sorted(defaults) if k not in matrix] if not keys else []
    return st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True).flatmap(
        lambda names: st.fixed_dictionaries(
            {
                name: st.sampled_from(matrix[name]) if name in matrix else st.just(defaults[name])
                for name in names
            }
        )
    )


def _include_row(matrix: dict[str, Any]) -> st.SearchStrategy[Any]:
    objects = [k for k, v in matrix.items() if isinstance(v, list) and isinstance(v[0], dict)]
    keys = {"prompt": _text(), "seed": _scalar["seed"], "image_url": _images, "a": _text("a")}
    for name in objects:
        keys[name] = st.sampled_from(matrix[name])
    return st.lists(st.sampled_from(sorted(keys)), min_size=1, max_size=2, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({n: keys[n] for n in names})
    )


# --- the comparison -----------------------------------------------------------------------------


def write(folder: Path, doc: dict[str, Any], files: dict[str, str]) -> Path:
    (folder / "images").mkdir()
    for name, data in IMAGES.items():
        (folder / "images" / name).write_bytes(data)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=False), encoding="utf-8")
    return path


def whole(request: Request) -> tuple[Any, ...]:
    return (
        request.key,
        dict(request.input),
        json.dumps(dict(request.vars), sort_keys=True, ensure_ascii=False),
        list(request.input),  # the body's field order, as journaled
        dict(request.files),
        dict(request.origins),
        dict(request.inline),
    )


def outcome(run: Any, path: Path) -> tuple[Any, ...]:
    """What check (the engine's or the oracle's) says of a spec."""
    rows: list[tuple[str, Cost]] = []
    collapsed = Collapsed()
    try:
        if run is oracle.check:  # told each request's key and cost as it expands
            checked = run(
                path, each=lambda k, c: rows.append((k, c)), collapsed=collapsed, preview=3
            )
        else:  # keeps them for a run, which asks for them again
            checked = run(path, collapsed=collapsed, preview=3)
            assert checked.rows is not None
            rows = list(Replay(checked.rows).costs())
    except SpecErrors as e:
        return ("error", [(x.line, x.col, x.message) for x in e.errors], e.hidden), None
    said = (
        "ok",
        checked.count,
        checked.remote_inputs,
        checked.warnings,
        checked.axes,
        [whole(r) for r in checked.first],
        rows,
        (collapsed.rows, collapsed.by),
    )
    return said, checked


def expanded(make: Any, path: Path) -> tuple[Any, ...]:
    spec = load_spec(path)
    collapsed = Collapsed()
    try:
        requests = [whole(r) for r in make(spec, EP, collapsed=collapsed)]
    except GridError as e:
        return ("error", e.message, e.path)
    return ("ok", requests, collapsed.rows, collapsed.by)


def _bucket(n: int) -> str:
    return next(f"{low}+" for low in (100, 30, 10, 4, 2, 1, 0) if n >= low)


def agree(path: Path) -> str:
    """Compare; say what the spec is (ok and how big, or its first error), for statistics."""
    engine, checked = outcome(check, path)
    reference, _ = outcome(oracle.check, path)
    assert engine == reference
    if checked is None:
        return f"error: {engine[1][0][2][:40]}"
    want = expanded(oracle.expand, path)
    assert expanded(expand, path) == want
    assert checked.rows is not None
    assert [whole(r.request()) for r in Replay(checked.rows)] == want[1]
    return f"ok, {_bucket(engine[1])} requests"


@pytest.mark.parametrize("small", [False, True], ids=["memoized", "streamed"])
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(job=jobs())
def test_the_engine_gives_what_the_oracle_gives(
    small: bool, job: tuple[dict[str, Any], dict[str, str]]
) -> None:
    """Every source kind, exclude, include, sample and limits; "streamed": every axis of more
    than two values read from its source as it goes, no table of more than three cells, and
    validation taking the scan two rows at a time and counting to twice the limit, and each
    innermost loop getting its rows' key text from a template of the outer loops, and samples
    picked by the n-th smallest hash rather than a heap."""
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as folder:
        if small:
            patch.setattr(memo, "HELD", 2)
            patch.setattr(memo, "TABLE_BUDGET", 3)
            patch.setattr(validate, "SCAN_BLOCK", 2)
            patch.setattr(validate, "COUNT_PAST_LIMIT", 2)  # "at least" comes soon
            patch.setattr(scan, "INNER_FRAME_FROM", 2)
            patch.setattr(engine, "HEAPED", 1)  # a sample of two or more: by a sorted copy
        event(agree(write(Path(folder), *job)))


# --- shapes where what a cell reads varies from row to row, and rows that cannot be built ---------

HEAD = f"version: 1\nendpoint: {EP.id}\n"


def spec_file(folder: Path, text: str, files: dict[str, str] | None = None) -> Path:
    for name, data in (files or {}).items():
        (folder / name).write_text(data, encoding="utf-8")
    path = folder / "job.yaml"
    path.write_text(HEAD + text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "files", "count"),
    [
        (  # an empty cell keeps the default, whose template reads another axis
            "defaults: {image_url: 'https://x/a.png', prompt: 'a {seed}'}\n"
            "matrix:\n  rows: {csv: rows.csv}\n  seed: [1, 2]\n",
            {"rows.csv": "prompt,strength\ncat,0.5\n,0.6\n"},
            4,
        ),
        (  # ... through a variable
            "defaults: {image_url: 'https://x/a.png', prompt: 'a {tag}', tag: '{seed} style'}\n"
            "matrix:\n  rows: {csv: rows.csv}\n  seed: [1, 2]\n",
            {"rows.csv": "tag,strength\ncat,0.5\n,0.6\n"},
            4,
        ),
        (  # a value that reads a later axis only in some rows, from a file read as it goes
            "defaults: {image_url: 'https://x/a.png'}\n"
            "matrix:\n  prompt: {lines: p.txt}\n  tag: [red, blue]\n  seed: [1, 2]\n",
            {"p.txt": "plain\nplain too\na {tag} one\n"},
            8,  # a plain prompt is one request whatever the tag
        ),
    ],
)
def test_what_rendering_reads_decides_a_fields_axes(
    tmp_path: Path, text: str, files: dict[str, str], count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memo, "HELD", 2)  # the prompts file is read as the scan goes
    assert agree(spec_file(tmp_path, text, files)).startswith("ok")
    assert check(tmp_path / "job.yaml").count == count


def test_a_variable_no_field_reads_still_renders_for_vars(tmp_path: Path) -> None:
    """Every row renders its variables (its vars say what it used): one that cannot (a cycle)
    is an error at validate, not a run that halts later."""
    for text in (
        "defaults: {image_url: 'https://x/a.png', prompt: p, mood: 'a {mood}'}\n"
        "matrix:\n  seed: [1, 2]\n",
        "defaults: {image_url: 'https://x/a.png', v: '{tag}'}\n"
        "matrix:\n  look: [{prompt: '{v}', tag: a}, {prompt: plain, tag: '{v}'}]\n",
    ):
        path = spec_file(tmp_path, text)
        with pytest.raises(SpecErrors, match="template cycle"):
            check(path)
        agree(path)


def test_a_value_that_is_no_utf8_is_a_located_error(tmp_path: Path) -> None:
    path = spec_file(
        tmp_path,
        "defaults: {image_url: 'https://x/a.png'}\n"
        'matrix:\n  prompt: [ok, "bad \\ud800"]\n  seed: [1, 2]\n',
    )
    with pytest.raises(SpecErrors, match="request body is not JSON"):
        check(path)
    agree(path)


def test_plan_says_why_rows_collapsed_beside_a_value_that_is_no_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The causes of a collapse read every axis's values, one that is no UTF-8 among them:
    plan says what is wrong in one line, no traceback."""
    path = spec_file(
        tmp_path,
        "defaults: {image_url: 'https://x/a.png', prompt: 'x {tag}'}\n"
        'matrix:\n  look: [{tag: x}, {tag: x}, {tag: "bad \\ud800"}]\n',
    )
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "request body is not JSON" in err


def test_an_exclude_key_that_a_csv_row_leaves_unset_does_not_match_it(tmp_path: Path) -> None:
    """An empty csv cell with no default leaves its field unset: an exclude entry naming that
    field does not match the row."""
    path = spec_file(
        tmp_path,
        "defaults: {image_url: 'https://x/a.png'}\n"
        "matrix:\n  rows: {csv: rows.csv}\n  seed: [1, 2]\n"
        "exclude:\n  - {strength: 0.5, seed: 1}\n",
        {"rows.csv": "prompt,strength\na cat,0.5\na dog,\n"},
    )
    assert check(path).count == 3
    agree(path)


def test_a_run_reading_a_long_axis_again_stops_when_its_file_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long axis is read from its file again as the run builds its requests: a file edited
    or removed since validation is a GridError (the executor stops the run), never a request
    validation did not see."""
    monkeypatch.setattr(memo, "HELD", 2)  # the prompts file is not held
    path = spec_file(
        tmp_path,
        "defaults: {image_url: 'https://x/a.png'}\n"
        "matrix:\n  prompt: {lines: p.txt}\n  seed: [1, 2]\n",
        {"p.txt": "one\ntwo\nthree\n"},
    )
    checked = check(path)
    assert checked.rows is not None
    replayed = [r.request() for r in Replay(checked.rows)]
    assert [r.input["prompt"] for r in replayed] == ["one"] * 2 + ["two"] * 2 + ["three"] * 2
    (tmp_path / "p.txt").write_text("one\nTWO\nthree\n")
    guard = InputGuard(checked.inputs)
    stops = [guard.row_changed(r.key, r.request()) for r in Replay(checked.rows)]
    assert stops[:2] == [None, None]  # the first line is as validated
    assert stops[2] is not None and "p.txt changed during the run" in stops[2].reason
    (tmp_path / "p.txt").write_text("one\n")
    with pytest.raises(GridError, match="has fewer values than when it was checked"):
        [r.request() for r in Replay(checked.rows)]
    (tmp_path / "p.txt").unlink()
    with pytest.raises(GridError, match="cannot read 'prompt' any more"):
        [r.request() for r in Replay(checked.rows)]
