"""File sources whose rows are mappings — {csv: file} and {jsonl: file} — for object axes:
each row is one value, its columns stay paired. Scanned once, re-read on each iteration."""

from __future__ import annotations

import csv
import json
import re
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import GridError, SpecPath
from .sources import Source, scan

_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")  # "007" stays a string: it is an id, not a number
_FLOAT = re.compile(r"[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


class _RowSource(Source):
    """Rows of mappings from a file: the values of an object axis, columns kept paired."""

    def __init__(self, path: SpecPath, file: Path) -> None:
        super().__init__(path)
        self._file = file
        self._len = scan(self, self._check)

    def _check(self) -> int:
        n = 0
        for where, row in self._rows():
            n += 1
            if self.fields is None:
                self.fields = tuple(row)
            elif set(row) != set(self.fields):
                raise GridError(
                    f"unequal paired rows: {where} has keys {sorted(row)}, the first row has "
                    f"{sorted(self.fields)}",
                    self.origin(0),
                )
        return n

    @abstractmethod
    def _rows(self) -> Iterator[tuple[str, Mapping[str, Any]]]: ...

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return (row for _, row in self._rows())

    def __len__(self) -> int:
        return self._len


class CsvSource(_RowSource):
    """A header line, then one row per line; numbers that parse cleanly become numbers."""

    kind = "csv"

    def _rows(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        with open(self._file, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise GridError(
                    f"{self._file.name} is empty: a csv source needs a header line", self.origin(0)
                )
            if len(set(header)) != len(header):
                raise GridError(f"{self._file.name}: repeated column name", self.origin(0))
            for cells in reader:
                if not cells:
                    continue
                where = f"{self._file.name} line {reader.line_num}"
                if len(cells) != len(header):
                    raise GridError(
                        f"unequal paired rows: {where} has {len(cells)} values, the "
                        f"header has {len(header)}",
                        self.origin(0),
                    )
                yield where, dict(zip(header, map(_cell, cells), strict=True))


class JsonlSource(_RowSource):
    kind = "jsonl"

    def _rows(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        with open(self._file, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                if line.isspace():
                    continue
                where = f"{self._file.name} line {number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise GridError(f"{where}: not JSON ({e.msg})", self.origin(0)) from None
                if not isinstance(row, dict) or not row:
                    raise GridError(
                        f"{where}: each jsonl row must be a non-empty object", self.origin(0)
                    )
                yield where, row


def _cell(text: str) -> int | float | str:
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text
