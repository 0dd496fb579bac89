"""Axis value sources: lists, ranges, files, lines, csv, jsonl."""

from __future__ import annotations

import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.errors import GridError
from runner.grid.sources import axis_source


def values(raw: Any, base: Path = Path(".")) -> list[Any]:
    source = axis_source("ax", raw, base)
    out = list(source)
    assert len(source) == len(out)
    assert list(source) == out  # re-iterable
    return out


def error(raw: Any, base: Path = Path(".")) -> GridError:
    with pytest.raises(GridError) as e:
        axis_source("ax", raw, base)
    return e.value


# --- lists -------------------------------------------------------------------------------------


def test_list_values_and_origins() -> None:
    source = axis_source("ax", ["a", "b"], Path("."))
    assert list(source) == ["a", "b"] and source.fields is None
    assert source.origin(1) == ("matrix", "ax", 1)


def test_list_of_mappings_is_an_object_axis() -> None:
    source = axis_source("look", [{"a": 1, "b": 2}, {"b": 3, "a": 4}], Path("."))
    assert source.fields == ("a", "b")
    assert source.origin(1, "b") == ("matrix", "look", 1, "b")


@pytest.mark.parametrize(
    ("raw", "fragment", "path"),
    [
        ([{"a": 1}, 2], "either all mappings", ("matrix", "ax", 1)),
        ([1, {"a": 1}], "either all mappings", ("matrix", "ax", 1)),
        ([{"a": 1}, {"a": 2, "b": 3}], "unequal paired rows: item 1", ("matrix", "ax", 1)),
        ([{}], "empty mapping", ("matrix", "ax", 0)),
    ],
)
def test_bad_axes(raw: Any, fragment: str, path: tuple[Any, ...]) -> None:
    e = error(raw)
    assert fragment in e.message
    assert e.path == path


# --- ranges ------------------------------------------------------------------------------------


def test_int_range_is_inclusive() -> None:
    assert values({"range": [0, 3]}) == [0, 1, 2, 3]
    assert values({"range": [0, 10], "step": 4}) == [0, 4, 8]
    assert values({"range": [5, 5]}) == [5]
    assert values({"range": [3, 0], "step": -1}) == [3, 2, 1, 0]
    assert all(type(v) is int for v in values({"range": [0, 3]}))


def test_float_range_is_exact_and_never_overshoots() -> None:
    assert values({"range": [0.5, 0.9], "step": 0.2}) == [0.5, 0.7, 0.9]
    assert values({"range": [0, 1], "step": 0.1})[7] == 0.7  # not 0.7000000000000001
    assert values({"range": [0.1, 0.35], "step": 0.1}) == [0.1, 0.2, 0.3]
    assert values({"range": [1, 2], "step": 0.5}) == [1.0, 1.5, 2.0]


@pytest.mark.parametrize(
    ("raw", "fragment", "last"),
    [
        ({"range": [0, 1], "step": -1}, "moves away from stop", "step"),
        ({"range": [3, 0]}, "step: -1", "range"),
    ],
)
def test_bad_ranges(raw: Any, fragment: str, last: str) -> None:
    e = error(raw)
    assert fragment in e.message
    assert e.path == ("matrix", "ax", last)


def test_a_big_range_is_lazy() -> None:
    source = axis_source("ax", {"range": [0, 10**12]}, Path("."))
    assert len(source) == 10**12 + 1
    assert next(iter(source)) == 0


decimals = st.decimals(min_value=-100, max_value=100, places=3, allow_nan=False)


@given(
    decimals,
    st.decimals(min_value=Decimal("0.001"), max_value=10, places=3),
    st.integers(min_value=0, max_value=40),
    st.decimals(min_value=0, max_value=1, places=3),
)
def test_ranges_never_overshoot(start: Decimal, step: Decimal, n: int, part: Decimal) -> None:
    stop = start + step * n + step * part * Decimal("0.999")
    got = values({"range": [float(start), float(stop)], "step": float(step)})
    assert len(got) == n + 1
    assert got == [float(start + i * step) for i in range(n + 1)]  # exact decimals
    assert got[-1] <= float(stop)
    down = values({"range": [float(stop), float(start)], "step": -float(step)})
    assert len(down) == n + 1 and down[-1] >= float(start)


# --- files -------------------------------------------------------------------------------------


def test_files_are_sorted_and_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "images" / "sub").mkdir(parents=True)
    for name in ["b.png", "a.png", "c.jpg", "sub/d.png"]:
        (tmp_path / "images" / name).write_bytes(b"x")
    assert values({"files": "images/*.png"}, tmp_path) == ["images/a.png", "images/b.png"]
    assert values({"files": "images/**/*.png"}, tmp_path)[-1] == "images/sub/d.png"
    assert axis_source("ax", {"files": "images/*"}, tmp_path).origin(0) == ("matrix", "ax", "files")


def test_files_without_a_match_is_an_error(tmp_path: Path) -> None:
    e = error({"files": "images/*.png"}, tmp_path)
    assert "no file matches 'images/*.png'" in e.message
    assert e.path == ("matrix", "ax", "files")


def test_a_glob_without_a_match_names_files_that_differ_only_in_case(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    for name in ["A.JPG", "b.Jpg", "c.JPEG", "d.png"]:
        (tmp_path / "photos" / name).write_bytes(b"x")
    e = error({"files": "photos/*.jpg"}, tmp_path)
    assert e.message == (
        f"no file matches 'photos/*.jpg' (in {tmp_path}); HINT: 2 files differ only in case, "
        "e.g. photos/A.JPG"
    )
    e = error({"files": "Photos/[b]*.jpg"}, tmp_path)  # a [class] keeps its case
    assert e.message.endswith("; HINT: 1 file differs only in case: photos/b.Jpg")
    assert "HINT" not in error({"files": "photos/*.gif"}, tmp_path).message


def test_a_broken_symbolic_link_is_skipped_and_named(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    (tmp_path / "images" / "x.png").symlink_to("gone.png")
    source = axis_source("ax", {"files": "images/*.png"}, tmp_path)
    assert list(source) == ["images/a.png"]
    assert getattr(source, "broken", None) == ["images/x.png"]
    e = error({"files": "images/x*"}, tmp_path)  # nothing else matches: the error says why
    assert e.message.endswith("; HINT: its one match, images/x.png, is a broken symbolic link")


# --- lines -------------------------------------------------------------------------------------


def test_lines_skip_blank_lines_and_strip_the_end(tmp_path: Path) -> None:
    (tmp_path / "styles.txt").write_text("\ufeffoil  \n\n   \n  watercolor\t\r\nink", "utf-8")
    assert values({"lines": "styles.txt"}, tmp_path) == ["oil", "  watercolor", "ink"]


@pytest.mark.parametrize(("content", "fragment"), [("", "no values"), ("\n \n", "no values")])
def test_empty_lines_file_is_an_error(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "x.txt").write_text(content)
    e = error({"lines": "x.txt"}, tmp_path)
    assert fragment in e.message and e.path == ("matrix", "ax", "lines")


def test_missing_or_undecodable_file_is_an_error(tmp_path: Path) -> None:
    assert "not found" in error({"lines": "nope.txt"}, tmp_path).message
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    assert "cannot read" in error({"lines": "bad.txt"}, tmp_path).message


@pytest.mark.slow  # ~10 s: a million lines under tracemalloc
def test_a_million_lines_are_not_held_in_memory(tmp_path: Path) -> None:
    with open(tmp_path / "big.txt", "w") as f:
        for i in range(1_000_000):
            f.write(f"a prompt about thing number {i}\n")
    tracemalloc.start()
    try:
        source = axis_source("ax", {"lines": "big.txt"}, tmp_path)
        assert len(source) == 1_000_000
        assert sum(1 for _ in source) == 1_000_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # a list of a million strings would be ~80 MB


# --- csv and jsonl -----------------------------------------------------------------------------


def test_csv_rows_are_mappings_with_clean_numbers(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text(
        'prompt,strength,seed,id\n"a cat, sitting",0.5,7,007\nan owl,1e-1,-3,x1\n\n'
    )
    source = axis_source("ax", {"csv": "rows.csv"}, tmp_path)
    assert source.fields == ("prompt", "strength", "seed", "id")
    assert list(source) == [
        {"prompt": "a cat, sitting", "strength": 0.5, "seed": 7, "id": "007"},
        {"prompt": "an owl", "strength": 0.1, "seed": -3, "id": "x1"},
    ]
    assert source.origin(1, "seed") == ("matrix", "ax", "csv")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "is empty"),
        ("a,b\n", "no values"),
        ("a,b\n1,2\n3\n", "unequal paired rows: rows.csv line 3 has 1 value, the header has 2"),
        ("a,a\n1,2\n", "repeated column"),
        (
            "prompt;seed\na cat;1\n",
            "rows.csv has one column, named 'prompt;seed'; HINT: the header has ';': runner "
            "reads comma-separated values",
        ),
        ("prompt\tseed\na cat\t1\n", "HINT: the header has a tab: runner reads comma-sep"),
    ],
)
def test_bad_csv(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "rows.csv").write_text(content)
    e = error({"csv": "rows.csv"}, tmp_path)
    assert fragment in e.message and e.path == ("matrix", "ax", "csv")


def test_jsonl_rows(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"a": 1, "b": "x"}\n\n{"b": "y", "a": 2.5}\n')
    assert values({"jsonl": "rows.jsonl"}, tmp_path) == [{"a": 1, "b": "x"}, {"b": "y", "a": 2.5}]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"a": 1}\n[1]\n', "rows.jsonl line 2: each jsonl row must be a non-empty object"),
        ('{"a": 1}\n{"b": 1}\n', "unequal paired rows"),
        ('{"a": 1}\n{oops\n', "line 2: not JSON"),
        ("", "no values"),
    ],
)
def test_bad_jsonl(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "rows.jsonl").write_text(content)
    e = error({"jsonl": "rows.jsonl"}, tmp_path)
    assert fragment in e.message and e.path == ("matrix", "ax", "jsonl")


def test_csv_booleans_for_boolean_fields_and_empty_cells_unset(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("flag,note,strength\nfalse,true,\nTRUE,,0.5\n")
    source = axis_source("ax", {"csv": "rows.csv"}, tmp_path, booleans=["flag"])
    assert list(source) == [
        {"flag": False, "note": "true"},  # only a boolean field's cell becomes a boolean
        {"flag": True, "strength": 0.5},  # an empty cell sets nothing
    ]
    assert source.fields == ("flag", "note", "strength")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("rows.jsonl", '{"a": 1}\n{"a": 1e999}\n', "rows.jsonl line 2: '1e999' is not a finite"),
        ("rows.jsonl", '{"a": NaN}\n', "rows.jsonl line 1: NaN is not a number JSON allows"),
        ("rows.csv", "a\n1\n2e999\n", "rows.csv line 3: '2e999' is not a finite number"),
    ],
)
def test_a_bad_number_in_a_row_file_names_the_file_and_line(
    tmp_path: Path, name: str, content: str, fragment: str
) -> None:
    (tmp_path / name).write_text(content)
    e = error({name.split(".")[1]: name}, tmp_path)
    assert fragment in e.message


def test_the_job_schema_lists_exactly_the_source_keys() -> None:
    """SOURCE_KEYS is the one list; the schema's axis branches must say the same."""
    from runner.grid.sources import SOURCE_KEYS
    from runner.spec.load import job_validator

    branches = job_validator().schema["$defs"]["axis"]["oneOf"][1:]
    assert [b["required"][0] for b in branches] == list(SOURCE_KEYS)
