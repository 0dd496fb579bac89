"""Located errors: each problem of a spec at the YAML node it comes from, said once (the
same problem from many rows is one error, the row context naming where it first was), past
MAX_ERRORS only counted; and the warnings' located lines."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import SpecError, SpecErrors, SpecPath
from ..models import Location, Request, Spec
from .yamlsource import Locator

MAX_ERRORS = 20


def spells_out(spec: Spec, path: SpecPath) -> bool:
    """Whether the spec file spells out `path` (the locator knows every node it saw)."""
    return isinstance(spec.locate, Locator) and path in spec.locate


class LocatedErrors:
    """Located errors, each (line, col, message) once; past MAX_ERRORS they are only counted."""

    def __init__(self, file: Path, locate: Callable[[SpecPath], Location] | None) -> None:
        self.file = str(file)
        self.locate = locate or (lambda path: Location(1, 1))
        self.errors: list[SpecError] = []
        self.seen: set[tuple[int, int, str]] = set()
        self.hidden = 0

    def full(self) -> bool:
        return len(self.errors) >= MAX_ERRORS

    def add(self, path: SpecPath, message: str, context: str = "") -> None:
        loc = self.locate(path)
        self.add_error(SpecError(message, self.file, loc.line, loc.col), context)

    def add_error(self, error: SpecError, context: str = "") -> None:
        # The same problem from many rows is one error; the row context says where it first was.
        if (error.line, error.col, error.message) in self.seen:
            return
        self.seen.add((error.line, error.col, error.message))
        if self.full():
            self.hidden += 1
            return
        self.errors.append(SpecError(error.message + context, self.file, error.line, error.col))

    def as_error(self) -> SpecErrors:
        self.errors.sort(key=lambda e: (e.line, e.col))
        return SpecErrors(self.errors, hidden=self.hidden)

    def warning(self, path: SpecPath, message: str) -> str:
        loc = self.locate(path)
        return f"{self.file}:{loc.line}:{loc.col}: warning: {message}"

    def input_problem(
        self, field: str | None, message: str, request: Request, row: int, spec: Spec
    ) -> None:
        origin = request.origins.get(field) if field else None
        if origin is None:
            # Nothing in the spec set this field: point where it could be set.
            rows = [p[:2] for p in request.origins.values() if p[:1] == ("include",)]
            spots = [*rows, *(p for p in (("defaults",), ("matrix",)) if spells_out(spec, p))]
            spot = spots[0] if spots else ()
            self.add(spot, message)
        elif origin[:1] == ("matrix",):
            # The same node feeds many rows: name the first failing one, report the node once.
            skip = {field, *spec.defaults}
            self.add(origin, message, _row(row, request.vars, skip))
        else:
            self.add(origin, message)


def _row(n: int, values: Mapping[str, Any], skip: set[str | None]) -> str:
    """` (row 3: animal=owl, seed=2)`: the row's axis values, flattened and kept short."""
    flat: list[tuple[str, Any]] = []
    for name, value in values.items():
        pairs = value.items() if isinstance(value, Mapping) else [(name, value)]
        flat.extend((k, v) for k, v in pairs if k not in skip)
    shown = []
    for name, value in flat[:4]:
        text = value if isinstance(value, str) else json.dumps(value)
        shown.append(f"{name}={text if len(text) <= 24 else text[:21] + '...'}")
    more = ", ..." if len(flat) > 4 else ""
    return f" (row {n}: {', '.join(shown)}{more})" if shown else f" (row {n})"
