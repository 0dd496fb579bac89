"""Axis value sources: one matrix axis's raw YAML value in, a re-iterable sized sequence out.

A list, or a mapping with one source key: {range: [a, b], step}, {files: glob}, {lines: file},
{csv: file}, {jsonl: file}. The axis's shape is the job schema's to check (spec/load.py); here
come the checks that need the values or the files. Files are scanned once to check and count,
then re-read on each iteration, so a million-line file is never held as a million objects.
Numbers come out canonical (keys.canonical): an integer-valued 5.0 is 5.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import GridError, SpecPath
from ..keys import canonical
from ..words import counted
from .templates import has_template, parse

SOURCE_KEYS = ("range", "files", "lines", "csv", "jsonl")  # the one list; the schema mirrors it

_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")  # "007" stays a string: it is an id, not a number
_FLOAT = re.compile(r"[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOLS = {"true": True, "false": False}


class Source:
    """The values of one axis. `fields` is the key set of an object axis (None: plain values);
    `names` maps a field (None: the plain value) to the template names its values use."""

    kind = "list"

    def __init__(self, path: SpecPath, fields: tuple[str, ...] | None = None) -> None:
        self.path = path
        self.fields = fields
        self.names: dict[str | None, frozenset[str]] = {}
        # (field, name) -> the file line where a value first used the name: errors name the row
        self.first_use: dict[tuple[str | None, str], int] = {}
        self._line = 0  # the file line of the row being read (file sources)

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def origin(self, index: int, field: str | None = None) -> SpecPath:
        """The YAML path of the node that supplied value `index` (file rows: the source node)."""
        return (*self.path, self.kind)

    def row_place(self, index: int | None = None, field: str | None = None, name: str = "") -> str:
        """Where in its file a row is, "rows.csv line 3", for an error's message ("" for values
        written in the spec): row `index`, or the first row whose `field` uses the name."""
        return ""

    def _note_names(self, field: str | None, value: Any) -> None:
        """Remember the template names a value uses; a bad template is reported where it renders."""
        if has_template(value):
            try:
                used = parse(value).names
            except GridError:
                return
            self.names[field] = self.names.get(field, frozenset()) | used
            for name in used:
                self.first_use.setdefault((field, name), self._line)


def axis_source(name: str, raw: Any, base_dir: Path, booleans: Collection[str] = ()) -> Source:
    """Build the source for matrix axis `name` from a schema-valid raw value; GridError on a
    problem only the values or the files show. `booleans`: fields whose csv cells are true/false."""
    path: SpecPath = ("matrix", name)
    if isinstance(raw, list):
        return ListSource(path, raw)
    assert isinstance(raw, Mapping), "the job schema allows only a list or a source mapping"
    (kind,) = (k for k in raw if k in SOURCE_KEYS)
    if kind == "range":
        return RangeSource(path, raw["range"], raw.get("step", 1), "step" in raw)
    if kind == "files":
        return FilesSource(path, raw["files"], base_dir)
    file = base_dir / raw[kind]
    if not file.is_file():
        raise GridError(f"{kind} file not found: {raw[kind]} (in {base_dir})", (*path, kind))
    if kind == "lines":
        return LinesSource(path, file)
    if kind == "csv":
        return CsvSource(path, file, frozenset(booleans))
    return JsonlSource(path, file)


class ListSource(Source):
    def __init__(self, path: SpecPath, values: Sequence[Any]) -> None:
        assert values, "the job schema requires a non-empty list"
        mappings = [isinstance(v, Mapping) for v in values]
        fields = None
        if any(mappings):
            if not all(mappings):
                i = mappings.index(not mappings[0])
                raise GridError(
                    "an axis is either all mappings (paired fields) or all plain values", (*path, i)
                )
            fields = tuple(values[0])
            for i, row in enumerate(values):
                if not row:
                    raise GridError("an empty mapping sets no field", (*path, i))
                check_paired(fields, row, f"item {i}", (*path, i))
        super().__init__(path, fields)
        self._values = [canonical(v) for v in values]
        for v in self._values:
            for field, value in v.items() if fields else [(None, v)]:
                self._note_names(field, value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def origin(self, index: int, field: str | None = None) -> SpecPath:
        return (*self.path, index) if field is None else (*self.path, index, field)


def check_paired(fields: tuple[str, ...], row: Mapping[str, Any], where: str, at: SpecPath) -> None:
    """Every row of an object axis sets the same fields as the first (they stay paired)."""
    if set(row) != set(fields):
        raise GridError(
            f"unequal paired rows: {where} has keys {sorted(row)}, the first row has "
            f"{sorted(fields)}",
            at,
        )


class RangeSource(Source):
    """Inclusive ends. Floats are computed in decimal, so 0.5..0.9 by 0.2 ends at 0.9 exactly."""

    kind = "range"

    def __init__(self, path: SpecPath, ends: Any, step: Any, explicit_step: bool) -> None:
        super().__init__(path)
        start, stop = ends  # the job schema guarantees two numbers and a non-zero step
        assert step != 0 and all(map(_is_number, (start, stop, step)))
        self._ints = all(isinstance(v, int) for v in (start, stop, step))
        self._start, self._step = Decimal(repr(start)), Decimal(repr(step))
        span = Decimal(repr(stop)) - self._start
        if span * self._step < 0:
            if explicit_step:
                raise GridError(
                    f"step {step!r} moves away from stop {stop!r}: the range is empty",
                    (*path, "step"),
                )
            raise GridError(
                f"empty range: start {start!r} is above stop {stop!r}; HINT: add step: -1 to "
                "count down",
                (*path, "range"),
            )
        self._len = int(span / self._step) + 1

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int | float]:
        start, step = self._start, self._step
        if self._ints:
            return (int(start + i * step) for i in range(self._len))
        return (canonical(float(start + i * step)) for i in range(self._len))


class FilesSource(Source):
    """Sorted paths matching a glob, written relative to the spec folder ("images/a.png").
    `broken` lists the matches that are broken symbolic links: skipped, and worth a warning."""

    kind = "files"

    def __init__(self, path: SpecPath, pattern: str, base_dir: Path) -> None:
        super().__init__(path)
        self._paths, self.broken = _matching_files(base_dir, pattern)
        if not self._paths:
            hint = _broken_hint(self.broken) or _case_hint(base_dir, pattern)
            raise GridError(f"no file matches {pattern!r} (in {base_dir}){hint}", (*path, "files"))

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _matching_files(base_dir: Path, pattern: str) -> tuple[list[str], list[str]]:
    """(the files a glob matches, the broken symbolic links it matches), each sorted."""
    found = glob.glob(pattern, root_dir=base_dir, recursive=True)
    files, broken = [], []
    for p in found:
        full = os.path.join(base_dir, p)
        if os.path.isfile(full):
            files.append(p.replace(os.sep, "/"))
        elif os.path.islink(full) and not os.path.exists(full):
            broken.append(p.replace(os.sep, "/"))
    return sorted(files), sorted(broken)


def _broken_hint(broken: Sequence[str]) -> str:
    if not broken:
        return ""
    if len(broken) == 1:
        return f"; HINT: its one match, {broken[0]}, is a broken symbolic link"
    return f"; HINT: its {len(broken)} matches are broken symbolic links, e.g. {broken[0]}"


def _case_hint(base_dir: Path, pattern: str) -> str:
    """The files the glob would match if it ignored case: a `*.jpg` that skips `.JPG`."""
    near, _ = _matching_files(base_dir, _caseless(pattern))
    if not near:
        return ""
    if len(near) == 1:
        return f"; HINT: 1 file differs only in case: {near[0]}"
    return f"; HINT: {len(near)} files differ only in case, e.g. {near[0]}"


def _caseless(pattern: str) -> str:
    """The glob with each letter outside a [...] class matching either case ("[jJ][pP][gG]");
    a class is kept as written, so the result never matches more than case allows."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            # a class is "[", an optional "!", then at least one character up to "]"
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] != "!" else i + 3)
            if end != -1:
                out.append(pattern[i : end + 1])
                i = end + 1
                continue
            out.append("[[]")  # a lone "[" is a literal one
        else:
            other = c.swapcase()
            out.append(f"[{c}{other}]" if len(other) == 1 and other != c else c)
        i += 1
    return "".join(out)


class _FileSource(Source):
    """A source read from a text file: scanned once (checked, counted, template names noted)
    when built, re-read on each iteration."""

    def __init__(self, path: SpecPath, file: Path) -> None:
        super().__init__(path)
        self._file = file
        n = 0
        try:
            for row in self._read():
                n += 1
                self._scan(row)
        except (OSError, UnicodeDecodeError) as e:
            raise GridError(f"cannot read {self.kind} file: {e}", self.origin(0)) from None
        except csv.Error as e:
            raise GridError(f"bad csv: {e}", self.origin(0)) from None
        if n == 0:
            msg = f"{self.kind} source has no values: a product with it has no rows"
            raise GridError(msg, self.origin(0))
        self._len = n

    def _read(self) -> Iterator[Any]:
        raise NotImplementedError

    def _scan(self, row: Any) -> None:
        self._note_names(None, row)

    def __iter__(self) -> Iterator[Any]:
        return self._read()

    def __len__(self) -> int:
        return self._len

    def _error(self, message: str) -> GridError:
        return GridError(message, self.origin(0))

    def row_place(self, index: int | None = None, field: str | None = None, name: str = "") -> str:
        line = self.first_use.get((field, name)) if index is None else None
        if index is not None:  # only for an error: read the file again as far as the row
            line = next((self._line for i, _ in enumerate(self._read()) if i == index), None)
        return f"{self._file.name} line {line}" if line else ""


class LinesSource(_FileSource):
    """One value per non-empty line, trailing whitespace stripped."""

    kind = "lines"

    def _read(self) -> Iterator[str]:
        with open(self._file, encoding="utf-8-sig") as f:
            for self._line, line in enumerate(f, 1):
                if not line.isspace():
                    yield line.rstrip()


class _RowSource(_FileSource):
    """Rows of mappings from a file: the values of an object axis, columns kept paired."""

    def _scan(self, row: Mapping[str, Any]) -> None:
        for field, value in row.items():
            self._note_names(field, value)


class CsvSource(_RowSource):
    """A header line, then one row per line. Clean numbers become numbers, true/false become
    booleans for boolean fields, and an empty cell leaves its field unset (the default applies)."""

    kind = "csv"

    def __init__(self, path: SpecPath, file: Path, booleans: frozenset[str]) -> None:
        self._booleans = booleans
        super().__init__(path, file)

    def _read(self) -> Iterator[Mapping[str, Any]]:
        name = self._file.name
        with open(self._file, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise self._error(f"{name} is empty: a csv source needs a header line")
            if len(set(header)) != len(header):
                raise self._error(f"{name}: repeated column name")
            if len(header) == 1 and (sep := next((c for c in ";\t" if c in header[0]), None)):
                # such a column can feed no field or template: the file is split another way
                has = "a tab" if sep == "\t" else repr(sep)
                raise self._error(
                    f"{name} has one column, named {header[0]!r}; HINT: the header has {has}: "
                    "runner reads comma-separated values"
                )
            self.fields = tuple(header)
            bools = [h in self._booleans for h in header]
            for cells in reader:
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise self._error(
                        f"unequal paired rows: {name} line {reader.line_num} has "
                        f"{counted(len(cells), 'value')}, the header has {len(header)}"
                    )
                self._line = reader.line_num
                row: dict[str, Any] = {}
                for column, text, boolean in zip(header, cells, bools, strict=True):
                    if text:
                        row[column] = self._cell(text, boolean, reader.line_num)
                yield row

    def _cell(self, text: str, boolean: bool, line: int) -> int | float | str | bool:
        if boolean and text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
        if _INT.fullmatch(text):
            return int(text)
        if _FLOAT.fullmatch(text):
            value = float(text)
            if not math.isfinite(value):
                raise self._error(f"{self._file.name} line {line}: {text!r} is not a finite number")
            return int(value) if value.is_integer() else value  # canonical
        return text


class JsonlSource(_RowSource):
    """One JSON object a line; every row sets the same keys as the first."""

    kind = "jsonl"

    def _read(self) -> Iterator[Mapping[str, Any]]:
        with open(self._file, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                if line.isspace():
                    continue
                self._line = number
                where = f"{self._file.name} line {number}"
                try:
                    row = json.loads(line, parse_constant=_no_constant, parse_float=_finite)
                except json.JSONDecodeError as e:
                    raise self._error(f"{where}: not JSON ({e.msg})") from None
                except ValueError as e:
                    raise self._error(f"{where}: {e}") from None
                if not isinstance(row, dict) or not row:
                    raise self._error(f"{where}: each jsonl row must be a non-empty object")
                if self.fields is None:
                    self.fields = tuple(row)
                check_paired(self.fields, row, where, self.origin(0))
                yield canonical(row)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a number JSON allows")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
