"""The row-by-row reference for grid expansion and validation, kept to test the engine against.

Every row of the grid is built as a dict, rendered, hashed and checked on its own, in the
contract's order:

    product of axes (first slowest) -> exclude -> include -> render templates -> build body
    -> collapse identical requests (first stays) -> sample -> vars -> every request checked

It is slow (15-20 us a row) and meant to be obviously right: runner's engine must give the same
requests, keys, costs, counts and errors (tests/test_engine.py). It uses runner's primitives
(sources, templates, keys, LocalFiles, Pricing, the input checker, and validation's checks
before expansion, `checked_grid`: the defaults' fixed fields and RowGrid's static checks).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from runner.endpoints import Endpoint, get_endpoint
from runner.errors import GridError
from runner.grid.expand import Collapsed
from runner.grid.localfiles import LocalFiles
from runner.grid.plan import Cost, Pricing
from runner.grid.rowgrid import Row, RowGrid
from runner.grid.sources import Source
from runner.grid.templates import TemplateError, has_template, render
from runner.keys import KeySet, canonical_json, is_url, request_key
from runner.models import Request, Spec
from runner.spec import check as validate
from runner.spec.check import Checked, too_many
from runner.spec.inputs import InputSchemaChecker, not_an_image
from runner.spec.load import read_spec
from runner.spec.located import LocatedErrors, spells_out

_END: Any = object()
_Rendered = tuple[Row, str, dict[str, Any], dict[str, Path], dict[str, str]]


# --- raw rows -----------------------------------------------------------------------------------


def rows(grid: RowGrid, hits: list[int]) -> Iterator[Row]:
    """Product rows minus exclude, then include rows; `hits` counts the rows each exclude
    entry matched."""
    if grid.has_product:
        shape = [(name, s.fields is None) for name, s in grid.axes]
        for combo in _product([s for _, s in grid.axes]):
            values = dict(grid.defaults)
            for (name, plain), (_, value) in zip(shape, combo, strict=True):
                if plain:
                    values[name] = value
                else:
                    values.update(value)
            if grid.exclude and _dropped(grid, values, combo, hits):
                continue
            yield Row(values, grid.templated, combo)
    for row in grid.include:
        yield Row(dict(row.values), row.templated, fixed=row.fixed)


def _product(sources: Sequence[Source]) -> Iterator[tuple[tuple[int, Any], ...]]:
    if not sources:
        yield ()
        return
    iters = [enumerate(s) for s in sources]
    current = [next(it) for it in iters]
    last = len(sources) - 1
    while True:
        yield tuple(current)
        j = last
        while (item := next(iters[j], _END)) is _END:
            if j == 0:
                return
            iters[j] = enumerate(sources[j])
            current[j] = next(iters[j])
            j -= 1
        current[j] = item


def _dropped(
    grid: RowGrid, values: dict[str, Any], combo: Sequence[tuple[int, Any]], hits: list[int]
) -> bool:
    dropped = False
    for i, (_, entry) in enumerate(grid.exclude):
        if (not dropped or not hits[i]) and _excluded(grid, values, combo, entry):
            hits[i] += 1
            dropped = True
    return dropped


def _excluded(
    grid: RowGrid, values: dict[str, Any], combo: Sequence[tuple[int, Any]], entry: list[Any]
) -> bool:
    for key, want in entry:
        if key in values:
            have = values[key]
        elif key in grid.axis_index:  # an object axis's name stands for its whole mapping
            have = combo[grid.axis_index[key]][1]
        else:
            return False  # an empty csv cell with no default: the row does not set it
        if isinstance(have, bool) or isinstance(want, bool):
            if have is not want:
                return False
        elif have != want:
            return False
    return True


def warnings(grid: RowGrid, hits: list[int]) -> list[tuple[Any, str]]:
    """The grid's own (what it knows once built), then each exclude entry that matched none."""
    return grid.warnings() + [
        (("exclude", j), "this exclude entry matches no row, so it drops nothing")
        for (j, _), n in zip(grid.exclude, hits, strict=True)
        if not n
    ]


# --- requests -----------------------------------------------------------------------------------


def expand(
    spec: Spec,
    endpoint: Endpoint,
    grid: RowGrid | None = None,
    collapsed: Collapsed | None = None,
    hits: list[int] | None = None,
) -> Iterator[Request]:
    grid = grid or RowGrid(spec, endpoint)
    hits = [0] * len(grid.exclude) if hits is None else hits
    rendered = _unique(spec, endpoint, grid, hits, collapsed)
    if spec.sample is not None:
        rendered = _bottom_k(rendered, spec.sample.n, spec.sample.seed)
    for row, key, body, files, inline in rendered:
        described = grid.describe(row)
        variables, origins = described.vars, described.origins
        try:
            _render_vars(grid, row, variables)
        except TemplateError as e:
            raise grid.template_error(row, e) from None
        if inline:
            for name, value in variables.items():
                if name in inline:
                    variables[name] = body[name]
                elif isinstance(value, dict) and inline.keys() & value.keys():
                    variables[name] = {f: body[f] if f in inline else v for f, v in value.items()}
        yield Request(key, body, variables, files, origins, inline)


def _render_vars(grid: RowGrid, row: Row, variables: dict[str, Any]) -> None:
    literal = grid.literal if row.fixed is None else frozenset()
    for name, value in variables.items():
        if name not in grid.fields and name not in literal and has_template(value):
            variables[name] = render(value, row.values, name, literal)
        elif name in grid.objects and isinstance(value, dict):
            variables[name] = {
                f: render(v, row.values, f, literal) if has_template(v) else v
                for f, v in value.items()
            }


def _unique(
    spec: Spec, endpoint: Endpoint, grid: RowGrid, hits: list[int], collapsed: Collapsed | None
) -> Iterator[_Rendered]:
    seen = KeySet()
    local = LocalFiles(spec.base_dir)
    causes = _Causes(grid)
    for row in rows(grid, hits):
        values = row.values
        literal = grid.literal if row.fixed is None else frozenset()
        body = {k: v for k, v in values.items() if k in grid.fields}
        for k in sorted(row.templated):  # in name order: the first failing field is reported
            if k not in body:
                continue
            try:
                body[k] = render(body[k], values, k, literal)
            except TemplateError as e:
                raise grid.template_error(row, e) from None
        files: dict[str, Path] = {}
        inline: dict[str, str] = {}
        named: list[tuple[str, str]] = []
        for k in sorted(endpoint.file_fields & body.keys()):
            try:
                found = local.resolve(body[k])
            except OSError as e:
                raise GridError(
                    f"cannot read {k} file {body[k]!r}: {e.strerror}", grid.describe(row).origins[k]
                ) from None
            if found is not None:
                ref, where = found
                named.append((ref, body[k] if isinstance(where, Path) else "a data: URI"))
                if isinstance(where, Path):
                    files[k] = where
                else:
                    inline[k] = where
                body[k] = ref
        try:
            key = request_key(endpoint.id, body)
        except (TypeError, ValueError) as e:
            raise GridError(f"request body is not JSON: {e}", ()) from None
        if seen.add(key):
            causes.saw(named)
            yield row, key, body, files, inline
        elif collapsed is not None:
            collapsed.rows += 1
            for cause in causes.of(row, named):
                collapsed.by[cause] = collapsed.by.get(cause, 0) + 1


def _bottom_k(rendered: Iterator[_Rendered], n: int, seed: int) -> Iterator[_Rendered]:
    salt = hashlib.sha256(f"runner sample {seed}".encode()).digest()[:16]
    heap: list[tuple[int, int, _Rendered]] = []
    for position, item in enumerate(rendered):
        rank = int.from_bytes(
            hashlib.blake2b(item[1].encode(), key=salt, digest_size=8).digest(), "big"
        )
        entry = (-rank, -position, item)
        if len(heap) < n:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
    for _, _, item in sorted(heap, key=lambda e: -e[1]):
        yield item


class _Causes:
    MAX_PAIRS = 3

    def __init__(self, grid: RowGrid) -> None:
        self._grid = grid
        self._repeats: list[set[int]] | None = None
        self._first_name: dict[str, str] = {}
        self._pairs: set[str] = set()

    def saw(self, named: list[tuple[str, str]]) -> None:
        for ref, name in named:
            self._first_name.setdefault(ref, name)

    def of(self, row: Row, named: list[tuple[str, str]]) -> list[str]:
        if row.fixed is not None:
            return ["include"]
        if self._repeats is None:
            self._repeats = [_repeated(source) for _, source in self._grid.axes]
        names = [
            name
            for (name, _), (i, _), repeats in zip(
                self._grid.axes, row.combo, self._repeats, strict=True
            )
            if i in repeats
        ]
        return names or self._same_files(named) or ["templates"]

    def _same_files(self, named: list[tuple[str, str]]) -> list[str]:
        for ref, name in named:
            first = self._first_name.get(ref, name)
            if first != name:
                pair = f"identical input files ({first} = {name})"
                if pair in self._pairs or len(self._pairs) < self.MAX_PAIRS:
                    self._pairs.add(pair)
                    return [pair]
                return ["identical input files (others)"]
        return []


def _repeated(values: Any) -> set[int]:
    seen: set[str] = set()
    out: set[int] = set()
    for i, value in enumerate(values):
        text = canonical_json(value)
        if text in seen:
            out.add(i)
        seen.add(text)
    return out


# --- validation ---------------------------------------------------------------------------------


def check(
    path: str | Path,
    *,
    each: Callable[[str, Cost], None] | None = None,
    collapsed: Collapsed | None = None,
    preview: int = 0,
) -> Checked:
    """validate.check's answer for one spec, row by row."""
    loaded = read_spec(path)
    found = LocatedErrors(Path(path), loaded.spec.locate if loaded.spec else None)
    for error in loaded.errors:
        found.add_error(error)
    spec = loaded.spec
    if spec is None:
        raise found.as_error()
    endpoint = get_endpoint(spec.endpoint)
    assert endpoint is not None
    inputs = InputSchemaChecker(endpoint)
    grid = validate.checked_grid(loaded, spec, endpoint, inputs, found)
    n, remote = 0, 0
    first: tuple[Request, ...] = ()
    hits: list[int] = []
    if grid is not None and loaded.expand_ok:
        hits = [0] * len(grid.exclude)
        n, remote, first = _expand(
            spec, endpoint, grid, inputs, found, hits, each, collapsed, preview
        )
    if found.errors:
        raise found.as_error()
    said = tuple(found.warning(p, m) for p, m in warnings(grid, hits)) if grid else ()
    sizes = tuple((name, len(source)) for name, source in grid.axes) if grid else ()
    return Checked(spec, endpoint, n, remote, said, None, first, sizes)


def _expand(
    spec: Spec,
    endpoint: Endpoint,
    grid: RowGrid,
    inputs: InputSchemaChecker,
    found: LocatedErrors,
    hits: list[int],
    each: Callable[[str, Cost], None] | None,
    collapsed: Collapsed | None,
    preview: int,
) -> tuple[int, int, tuple[Request, ...]]:
    n, cap, remote = 0, spec.max_requests * validate.COUNT_PAST_LIMIT, 0
    pricing = Pricing(endpoint)
    kept: list[Request] = []
    try:
        for request in expand(spec, endpoint, grid, collapsed, hits):
            n += 1
            if each is not None:
                each(request.key, pricing.of(request))
            if len(kept) < preview:
                kept.append(request)
            if any(is_url(request.input.get(f)) for f in endpoint.file_fields):
                remote += 1
            if n <= spec.max_requests:
                for wrong in inputs.problems(request.input):
                    found.input_problem(wrong.field, wrong.message, request, n, spec)
                for field, file in request.files.items():
                    if (problem := not_an_image(file, spec.base_dir)) is not None:
                        found.input_problem(field, problem, request, n, spec)
            if n >= cap or (n >= spec.max_requests and found.full()):
                break
    except GridError as exc:
        found.add(exc.path, exc.message)
    if n > spec.max_requests:
        where = ("limits", "max_requests") if spells_out(spec, ("limits",)) else ("matrix",)
        size = f"at least {n}" if n >= cap else str(n)
        found.add(where, too_many(size, spec.max_requests))
    return n, remote, tuple(kept)
