"""Where each record goes in a report, for the HTML page and the PNG grids alike: the axis
down (y), the axis across (x), the axes that split the run into tables, and the axes folded
into cell captions when splitting would leave tables of one cell. Pure: records in, Layout out.

Defaults: the two swept axes with the most values (more values down the page, ties in spec
order); the other axes make one table per combination while the tables stay at least half
full, else the axis with the most values moves into the captions, and so on."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..folder.journal import Record

MIN_FILL = 0.5  # a table should have at least half of its x*y cells filled
MAX_TABLES = 50  # beyond this many tables, fold more axes into captions


@dataclass(frozen=True)
class Table:
    title: Mapping[str, Any]  # page axis -> its value in this table (empty: the only table)
    records: tuple[Record, ...]


@dataclass(frozen=True)
class Layout:
    rows: str | None  # y: the axis down each table
    columns: str | None  # x: the axis across (the only axis of a one-row report)
    pages: tuple[str, ...]  # one table per combination of these
    captions: tuple[str, ...]  # shown with each record inside its cell
    tables: tuple[Table, ...]
    axes: tuple[str, ...]  # every swept axis, in spec order


def choose_layout(records: Sequence[Record], x: str | None = None, y: str | None = None) -> Layout:
    """The layout of `records`; `x`/`y` name the axes across and down (else chosen)."""
    axes = swept_axes(records)
    known = {name for r in records for name in vars_of(r)}
    for flag, name in (("--x", x), ("--y", y)):
        if name is not None and name not in known:
            listed = ", ".join(axes) or "none"
            raise UsageError(f"{flag} {name!r} is not an axis of this run (swept axes: {listed})")
    if x is not None and x == y:
        raise UsageError(f"--x and --y name the same axis {x!r}")
    sizes = {a: len(values(records, a)) for a in axes}
    ranked = sorted(axes, key=lambda a: (-sizes[a], axes.index(a)))
    if y is None:
        y = next((a for a in ranked if a != x), None)
    if x is None:
        # an axis with one value per row (a variable that the rendered prompt down the side
        # already names) would fill only a diagonal: across goes the next one, if any
        others = [a for a in ranked if a != y]
        x = next((a for a in others if not _follows(records, a, y)), None)
        x = x or next(iter(others), None)
    if x is None:  # one axis in all: a single labelled row
        x, y = y, None
    rest = [a for a in axes if a not in (x, y)]
    pages = _pages(records, x, y, rest)
    captions = tuple(a for a in rest if a not in pages)
    groups = group(records, pages)
    orders = [list(values(records, a)) for a in pages]
    ranked_keys = sorted(groups, key=lambda k: [o.index(v) for o, v in zip(orders, k, strict=True)])
    tables = tuple(
        Table({a: value_of(groups[k][0], a) for a in pages}, tuple(groups[k])) for k in ranked_keys
    ) or (Table({}, ()),)
    return Layout(y, x, tuple(pages), captions, tables, tuple(axes))


def _follows(records: Sequence[Record], axis: str, by: str | None) -> bool:
    """True when each value of `by` goes with a single value of `axis` across the records."""
    if by is None:
        return False
    seen: dict[str, str] = {}
    for record in records:
        value = canon(value_of(record, axis))
        if seen.setdefault(canon(value_of(record, by)), value) != value:
            return False
    return True


def _pages(records: Sequence[Record], x: str | None, y: str | None, rest: list[str]) -> list[str]:
    """The page axes: as many of `rest` as keep the tables full enough (fewest values first)."""
    pages = sorted(rest, key=lambda a: (len(values(records, a)), rest.index(a)))
    cells = len(values(records, x)) * len(values(records, y)) if x and y else 0
    while pages:
        groups = group(records, pages)
        filled = [len(group(rs, [a for a in (x, y) if a])) for rs in groups.values()]
        fill = sum(filled) / (len(filled) * cells) if cells else 1.0
        if fill >= MIN_FILL and len(groups) <= MAX_TABLES and max(filled) > 1:
            break
        pages.pop()  # the axis with the most values goes into the captions
    return [a for a in rest if a in pages]  # spec order


def swept_axes(records: Sequence[Record]) -> list[str]:
    """The `vars` names whose value differs across records, in first-seen (spec) order."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(vars_of(record)))
    return [n for n in names if len({canon(value_of(r, n)) for r in records}) > 1]


def vars_of(record: Record) -> dict[str, Any]:
    """The row's variables as the journal recorded them (a field axis as the spec wrote it)."""
    found = record.get("vars")
    return found if isinstance(found, dict) else {}


def value_of(record: Record, axis: str) -> Any:
    """The record's value on `axis` as its request sent it. A variable that is an input field
    shows the body's value: its template rendered, `{{` as the `{` that was sent, and the value
    of a row (an include row) that set the field without the variable. A local image keeps the
    path its row named (or the run recorded) rather than its sha256."""
    body = record.get("input")
    if not isinstance(body, dict) or axis not in body:
        return vars_of(record).get(axis)
    sent = body[axis]
    if not (isinstance(sent, str) and sent.startswith("sha256:")):
        return sent
    named = vars_of(record).get(axis)
    if named is not None:
        return named
    files = record.get("input_files")
    return files.get(axis, sent) if isinstance(files, dict) else sent


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def group(records: Iterable[Record], axes: Sequence[str]) -> dict[tuple[str, ...], list[Record]]:
    """Records by their (canonical) values on `axes`, in run order."""
    groups: dict[tuple[str, ...], list[Record]] = {}
    for record in records:
        groups.setdefault(tuple(canon(value_of(record, a)) for a in axes), []).append(record)
    return groups


def values(records: Iterable[Record], axis: str | None) -> dict[str, Any]:
    """canonical form -> value: numbers ascending, anything else in first-seen order (the run
    order, give or take the shuffling of concurrent workers)."""
    found: dict[str, Any] = {}
    if axis is None:
        return {canon(None): None}
    for record in records:
        value = value_of(record, axis)
        found.setdefault(canon(value), value)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in found.values()):
        return dict(sorted(found.items(), key=lambda item: item[1]))
    return found
