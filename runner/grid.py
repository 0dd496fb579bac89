"""Grid expansion: a JobSpec and its Endpoint in, Requests out, lazily and in run order.

    product of axes (first slowest) → exclude → include → render templates → build body
    → collapse identical requests (first stays) → sample

Pure: reads only the spec's local files (sources, images to hash); never prints or sends.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .endpoints import Endpoint
from .errors import GridError
from .keys import KeySet, file_sha256, is_remote, request_key
from .models import JobSpec, Request
from .rowgrid import Row, RowGrid
from .sources import axis_source
from .templates import TemplateError, render

__all__ = ["axes", "expand"]

_Rendered = tuple[Row, str, dict[str, Any], dict[str, Path]]


def expand(spec: JobSpec, endpoint: Endpoint) -> Iterator[Request]:
    """Every request of the spec, in run order. A generator: the spec's errors (bad sources,
    undefined template variables, unknown keys) raise on the first next(), before any request."""
    grid = RowGrid(spec, endpoint)
    if spec.sample is None:
        yield from _requests(spec, endpoint, grid)
        return
    n = _sample_size(spec)
    total = sum(1 for _ in _unique(spec, endpoint, grid))
    # Selection sampling (Knuth's algorithm S): each request is kept with probability
    # (still needed / still left), so exactly n are kept, in run order, with O(1) memory.
    rng = random.Random(spec.sample.seed)
    left = total
    for request in _requests(spec, endpoint, grid):
        if n <= 0:
            return
        if rng.random() * left < n:
            n -= 1
            yield request
        left -= 1


def axes(spec: JobSpec) -> list[tuple[str, int]]:
    """(axis name, number of values) in matrix order, for `plan` output."""
    return [(name, len(axis_source(name, raw, spec.base_dir))) for name, raw in spec.matrix.items()]


def _requests(spec: JobSpec, endpoint: Endpoint, grid: RowGrid) -> Iterator[Request]:
    for row, key, body, files in _unique(spec, endpoint, grid):
        variables, origins = grid.describe(row)
        try:
            grid.render_vars(row, variables)
        except TemplateError as e:
            raise GridError(e.message, origins.get(e.key, ())) from None
        yield Request(key, body, variables, files, origins)


def _unique(spec: JobSpec, endpoint: Endpoint, grid: RowGrid) -> Iterator[_Rendered]:
    """Rendered rows with repeated requests dropped (the first stays, order kept)."""
    seen = KeySet()
    fields, endpoint_id = endpoint.fields, endpoint.id
    local = _LocalFiles(spec.base_dir)
    for row in grid.rows():
        values = row.values
        body = {k: v for k, v in values.items() if k in fields}
        for k in row.templated:
            try:
                body[k] = render(body[k], values, k, grid.literal_for(row))
            except TemplateError as e:  # origins are built only now, for the error's location
                raise GridError(e.message, grid.describe(row)[1][e.key]) from None
        files: dict[str, Path] = {}
        for k in endpoint.file_fields & body.keys():
            try:
                found = local.resolve(body[k])
            except OSError as e:
                raise GridError(
                    f"cannot read {k} file {body[k]!r}: {e.strerror}", grid.describe(row)[1][k]
                ) from None
            if found is not None:
                body[k], files[k] = found
        try:
            key = request_key(endpoint_id, body)
        except (TypeError, ValueError) as e:
            raise GridError(f"request body is not JSON: {e}", ()) from None
        if seen.add(key):
            yield row, key, body, files


class _LocalFiles:
    """Local file values -> ("sha256:<hex>", absolute path); None for URLs and data: URIs.

    Remembers answers for one expansion, so a million rows naming one image stat it once."""

    def __init__(self, base_dir: Path) -> None:
        self._base = base_dir
        self._known: dict[str, tuple[str, Path] | None] = {}

    def resolve(self, value: Any) -> tuple[str, Path] | None:
        if not isinstance(value, str):
            return None  # not a path: the schema check reports it
        if value in self._known:
            return self._known[value]
        found = None
        if not is_remote(value):
            path = Path(os.path.abspath(self._base / value))
            found = ("sha256:" + file_sha256(path), path)
        if len(self._known) >= 4096:  # bounded: a files axis of 100k images must not pile up
            self._known.clear()
        self._known[value] = found
        return found


def _sample_size(spec: JobSpec) -> int:
    assert spec.sample is not None
    n = spec.sample.n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GridError(f"sample n must be a positive integer, got {n!r}", ("sample", "n"))
    return n
