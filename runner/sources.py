"""Axis value sources: one matrix axis's raw YAML value in, a re-iterable sized sequence out.

A list, or a mapping with one source key: {range: [a, b], step}, {files: glob}, {lines: file},
{csv: file}, {jsonl: file}. Files are scanned once to check and count, then re-read on each
iteration, so a million-line file is never held as a million objects.
"""

from __future__ import annotations

import csv
import difflib
import glob
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from .errors import GridError, SpecPath

SOURCE_KEYS = ("range", "files", "lines", "csv", "jsonl")


class Source(ABC):
    """The values of one axis. `fields` is the key set of an object axis (None: plain values)."""

    kind = "list"

    def __init__(self, path: SpecPath, fields: tuple[str, ...] | None = None) -> None:
        self.path = path
        self.fields = fields

    @abstractmethod
    def __iter__(self) -> Iterator[Any]: ...

    @abstractmethod
    def __len__(self) -> int: ...

    def origin(self, index: int, field: str | None = None) -> SpecPath:
        """The YAML path of the node that supplied value `index` (file rows: the source node)."""
        return (*self.path, self.kind)


def axis_source(name: str, raw: Any, base_dir: Path) -> Source:
    """Build the source for matrix axis `name`; GridError on a bad or empty one."""
    path: SpecPath = ("matrix", name)
    if isinstance(raw, list):
        return ListSource(path, raw)
    if not isinstance(raw, Mapping):
        raise GridError(
            f"axis {name!r} must be a list or a source ({', '.join(SOURCE_KEYS)}); "
            "HINT: a single fixed value belongs under defaults",
            path,
        )
    keys = [k for k in raw if k in SOURCE_KEYS]
    for k in raw:
        if k not in SOURCE_KEYS and not (k == "step" and "range" in raw):
            close = difflib.get_close_matches(str(k), [*SOURCE_KEYS, "step"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GridError(
                f"unknown source key {k!r}{hint}; an axis mapping takes one of "
                f"{', '.join(SOURCE_KEYS)}. HINT: paired values are a list of mappings",
                (*path, k),
            )
    if len(keys) != 1:
        raise GridError(f"axis {name!r} needs exactly one source key, got {keys}", path)
    kind = keys[0]
    if kind == "range":
        return RangeSource(path, raw["range"], raw.get("step", 1), "step" in raw)
    if kind == "files":
        return FilesSource(path, raw["files"], base_dir)
    file = _source_file(path, kind, raw[kind], base_dir)
    if kind == "lines":
        return LinesSource(path, file)
    from .tablesources import CsvSource, JsonlSource  # they build on Source: import cycle

    return CsvSource(path, file) if kind == "csv" else JsonlSource(path, file)


class ListSource(Source):
    def __init__(self, path: SpecPath, values: Sequence[Any]) -> None:
        if not values:
            raise GridError(f"axis {path[-1]!r} is empty: a product with it has no rows", path)
        mappings = [isinstance(v, Mapping) for v in values]
        fields = None
        if any(mappings):
            if not all(mappings):
                i = mappings.index(not mappings[0])
                raise GridError(
                    "an axis is either all mappings (paired fields) or all plain values", (*path, i)
                )
            fields = tuple(values[0])
            check_paired(path, values, fields, lambda i: (*path, i))
        super().__init__(path, fields)
        self._values = values

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def origin(self, index: int, field: str | None = None) -> SpecPath:
        return (*self.path, index) if field is None else (*self.path, index, field)


class RangeSource(Source):
    """Inclusive ends. Floats are computed in decimal, so 0.5..0.9 by 0.2 ends at 0.9 exactly."""

    kind = "range"

    def __init__(self, path: SpecPath, ends: Any, step: Any, explicit_step: bool) -> None:
        super().__init__(path)
        at: SpecPath = (*path, "range")
        if not (isinstance(ends, list) and len(ends) == 2 and all(map(_is_number, ends))):
            raise GridError("range takes two numbers: [start, stop] (both included)", at)
        if not _is_number(step) or step == 0:
            raise GridError(f"step must be a non-zero number, got {step!r}", (*path, "step"))
        start, stop = ends
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
                at,
            )
        self._len = int(span / self._step) + 1

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int | float]:
        start, step = self._start, self._step
        convert = int if self._ints else float
        return (convert(start + i * step) for i in range(self._len))


class FilesSource(Source):
    """Sorted paths matching a glob, written relative to the spec folder ("images/a.png")."""

    kind = "files"

    def __init__(self, path: SpecPath, pattern: Any, base_dir: Path) -> None:
        super().__init__(path)
        at: SpecPath = (*path, "files")
        if not isinstance(pattern, str) or not pattern:
            raise GridError('files takes a glob pattern, e.g. "images/*.png"', at)
        found = glob.glob(pattern, root_dir=base_dir, recursive=True)
        self._paths = sorted(
            p.replace(os.sep, "/") for p in found if os.path.isfile(os.path.join(base_dir, p))
        )
        if not self._paths:
            raise GridError(f"no file matches {pattern!r} (in {base_dir})", at)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


class LinesSource(Source):
    """One value per non-empty line, trailing whitespace stripped."""

    kind = "lines"

    def __init__(self, path: SpecPath, file: Path) -> None:
        super().__init__(path)
        self._file = file
        self._len = scan(self, lambda: sum(1 for _ in self))

    def __iter__(self) -> Iterator[str]:
        with open(self._file, encoding="utf-8-sig") as f:
            for line in f:
                if not line.isspace():
                    yield line.rstrip()

    def __len__(self) -> int:
        return self._len


def _source_file(path: SpecPath, kind: str, name: Any, base_dir: Path) -> Path:
    if not isinstance(name, str) or not name:
        raise GridError(f"{kind} takes a file name, relative to the spec", (*path, kind))
    file = base_dir / name
    if not file.is_file():
        raise GridError(f"{kind} file not found: {name} (in {base_dir})", (*path, kind))
    return file


def scan(source: Source, count: Callable[[], int]) -> int:
    """Read a file source once to check it and count its values; an empty one is an error."""
    at = source.origin(0)
    try:
        n = count()
    except (OSError, UnicodeDecodeError) as e:
        raise GridError(f"cannot read {source.kind} file: {e}", at) from None
    except csv.Error as e:
        raise GridError(f"bad csv: {e}", at) from None
    if n == 0:
        raise GridError(f"{source.kind} source has no values: a product with it has no rows", at)
    return n


def check_paired(
    path: SpecPath, rows: Sequence[Mapping[str, Any]], fields: tuple[str, ...], at: Any
) -> None:
    for i, row in enumerate(rows):
        if set(row) != set(fields):
            raise GridError(
                f"unequal paired rows: item {i} sets {sorted(row)}, item 0 sets {sorted(fields)}",
                at(i),
            )
        if not row:
            raise GridError("an empty mapping sets no field", at(i))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
