"""Plain product grids compiled to text: a RowGrid in, its requests' keys and costs in run
order, with no dict, render, file hash or schema check per row.

When every body field is set by one axis at most (directly, or through the variables its
template reads), a request's canonical JSON is a fixed frame with slots, each axis value
filling its own slots: templates, file hashes, the input schema and billing are then worked
out once per axis value, and a row costs one str.format and one sha256. When each axis's
values fill their slots with distinct text, no two rows can make one request, so no set of
seen keys is kept either. One axis may be too long to hold (a file of a million prompts):
its values are worked out as they come, and the rows' keys (8 bytes each) are checked
distinct before any is handed on. Any other grid (include, exclude, sample, a field that two
axes set, two values alike, a value some check refuses, a variable that cannot render) gets
None: grid.expand, the reference, does the work row by row, and reports the errors. Tests
check both give the same keys.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import json.encoder
import math
import operator
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .endpoints import Endpoint
from .errors import GridError
from .grid import LocalFiles
from .keys import KEY_HEX, canonical_json, is_url
from .models import Spec
from .plan import Cost, Pricing
from .rowgrid import RowGrid
from .templates import TemplateError, has_template, parse, render

__all__ = ["Compiled", "compile_product"]

_string = json.encoder.encode_basestring  # what canonical_json gives for a str (ensure_ascii off)
MAX_VALUES = 100_000  # axis values held at once (each with its slot texts); one axis may be longer

# What one axis value (or the constant part) gives: its slot texts, its billed facts, whether
# a file input is an http(s) URL.
_Part = tuple[tuple[str, ...], tuple[tuple[str, Any], ...], bool]


@dataclass(frozen=True)
class Compiled:
    """The requests of a plain product grid, by key and cost: `count` of them, `remote` with
    an http(s) URL input; rows() gives (key, cost) of each, in run order."""

    count: int
    remote: int
    rows: Callable[[], Iterator[tuple[str, Cost]]]


def _filled(
    frame: str, axes: Sequence[Sequence[_Part]], cost: Callable[[Sequence[_Part]], Cost]
) -> Callable[[], Iterator[tuple[str, Cost]]]:
    """The rows of a grid whose axes' parts are all held: the frame filled per row."""

    def rows() -> Iterator[tuple[str, Cost]]:
        fill, sha256 = frame.format, hashlib.sha256
        for combo in itertools.product(*axes):
            yield sha256(fill(*combo).encode()).hexdigest()[:KEY_HEX], cost(combo)

    return rows


def _coster(
    billed: Sequence[int], constant: _Part, pricing: Pricing
) -> Callable[[Sequence[_Part]], Cost]:
    """A row's cost from its parts: the constant facts and those of the `billed` axes (the
    ones that set a field billing reads), merged (each field has one setter)."""
    base = constant[1]
    if not billed:
        fixed = pricing.cost(base)
        return lambda combo: fixed
    price = pricing.cost

    def cost(combo: Sequence[_Part]) -> Cost:
        facts = list(base)
        for i in billed:
            facts.extend(combo[i][1])
        return price(tuple(sorted(facts)))

    return cost


def compile_product(
    spec: Spec,
    endpoint: Endpoint,
    grid: RowGrid,
    problems: Callable[[str, Any], list[str]],
    not_an_image: Callable[[Path], str | None],
) -> Compiled | None:
    """The compiled grid, or None when it does not apply (see the module docstring).
    `problems(field, value)`: the input schema's complaints about one value; any makes None,
    as does a local input that `not_an_image` refuses."""
    if (
        grid.include
        or grid.exclude
        or spec.sample is not None
        or not grid.has_product
        or not grid.complete
        or grid.uses is None
    ):
        return None
    sizes = sorted(len(source) for _, source in grid.axes)
    if sum(sizes[:-1]) > MAX_VALUES or math.prod(sizes) > spec.max_requests:
        return None  # only one axis may be too long to hold; the reference says what is over
    try:
        return _Compiler(spec, endpoint, grid, problems, not_an_image).compile()
    except _NotPlain:
        return None


class _NotPlain(Exception):
    """The grid is not a plain product: grid.expand must do it."""


class _Compiler:
    def __init__(
        self,
        spec: Spec,
        endpoint: Endpoint,
        grid: RowGrid,
        problems: Callable[[str, Any], list[str]],
        not_an_image: Callable[[Path], str | None],
    ) -> None:
        self.endpoint, self.grid = endpoint, grid
        self.problems, self.not_an_image = problems, not_an_image
        self.local = LocalFiles(spec.base_dir)
        self.pricing = Pricing(endpoint)
        assert grid.uses is not None
        self.uses = grid.uses
        self.labels = {f: canonical_json(f) + ":" for f in endpoint.fields}  # '"seed":'
        # which axis sets each row name (plain axes by their name, object axes their fields)
        self.owner: dict[str, int] = {}
        for i, (name, source) in enumerate(grid.axes):
            for key in source.fields if source.fields is not None else (name,):
                self.owner[key] = i

    def compile(self) -> Compiled:
        grid, fields = self.grid, self.endpoint.fields
        names = [k for k in grid.product_keys if k in fields]
        setter: dict[str, int | None] = {}
        for f in names:
            readers = self._axes_of(f)
            if len(readers) > 1:
                raise _NotPlain
            setter[f] = next(iter(readers), None)
        slots = [sorted(f for f in names if setter[f] == i) for i in range(len(grid.axes))]
        if not all(slots):
            raise _NotPlain  # an axis that sets no field alone
        fixed = sorted(f for f in names if setter[f] is None)
        self._variables()
        constant = self._part(fixed, dict(grid.defaults), self.renders[None])
        if any(r not in names for r in self.endpoint.input_schema.get("required", ())):
            raise _NotPlain  # the reference reports the missing field
        frame = self._frame(
            sorted(names), setter, slots, dict(zip(fixed, constant[0], strict=True))
        )
        sizes = [len(source) for _, source in grid.axes]
        if sum(sizes) <= MAX_VALUES:
            axes = tuple(tuple(self._values(i, slots[i], distinct=True)) for i in range(len(sizes)))
            count = math.prod(len(v) for v in axes)
            local = math.prod(sum(not v[2] for v in values) for values in axes)
            remote = count if constant[2] else count - local
            cost = _coster(self._billed(slots), constant, self.pricing)
            return Compiled(count, remote, _filled(frame, axes, cost))
        return self._streamed(frame, slots, constant, sizes.index(max(sizes)))

    def _streamed(self, frame: str, slots: list[list[str]], constant: _Part, long: int) -> Compiled:
        """The grid with one axis too long to hold its parts: each of its values' parts is
        worked out as it comes, and every row's key kept (8 bytes a row), so that they are
        checked distinct before any is handed on (two alike: the reference collapses them)."""
        held = [
            () if i == long else tuple(self._values(i, slots[i], distinct=True))
            for i in range(len(self.grid.axes))
        ]
        before, after = held[:long], held[long + 1 :]
        fill, sha256 = frame.format, hashlib.sha256
        billed = self._billed(slots)
        cost = _coster(billed, constant, self.pricing)
        fixed = None if billed else cost(())  # one cost for every row: none kept per row
        keys = array("Q")
        append, to_int = keys.append, int.from_bytes
        costs: list[Cost] = []
        local = 0  # the long axis's values with no URL input
        inners = list(itertools.product(*after))  # held axes: a few combinations
        for n, outer in enumerate(itertools.product(*before)):
            for part in self._values(long, slots[long]):
                local += n == 0 and not part[2]
                for inner in inners:
                    combo = (*outer, part, *inner)
                    append(to_int(sha256(fill(*combo).encode()).digest()[:8], "big"))
                    if fixed is None:
                        costs.append(cost(combo))
        ordered = sorted(keys)
        if any(map(operator.eq, ordered, itertools.islice(ordered, 1, None))):
            raise _NotPlain  # two rows make one request: the reference collapses them
        del ordered
        count = len(keys)
        local *= math.prod(sum(not v[2] for v in values) for values in before + after)
        remote = count if constant[2] else count - local

        def rows() -> Iterator[tuple[str, Cost]]:
            row_costs = costs if fixed is None else itertools.repeat(fixed, len(keys))
            for value, row_cost in zip(keys, row_costs, strict=True):
                yield f"{value:0{KEY_HEX}x}", row_cost

        return Compiled(count, remote, rows)

    def _billed(self, slots: list[list[str]]) -> list[int]:
        """The axes that set a field billing reads."""
        return [i for i, fields in enumerate(slots) if self.pricing.billed & set(fields)]

    def _axes_of(self, key: str) -> set[int]:
        """The axes whose values `key`'s value depends on: its setter, and the setters of every
        name its template reads, through variables' templates too."""
        found: set[int] = set()
        todo, seen = [key], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in self.owner:
                found.add(self.owner[name])
                todo.extend(self._default_names(name))
            if name == key and key in self.endpoint.fields and key not in self.grid.templated:
                continue  # a field that never renders reads no names
            todo.extend(self.uses.get(name, ()))
        return found

    def _default_names(self, name: str) -> frozenset[str]:
        """The names read by the default of `name` where an axis may leave it unset: an empty
        csv cell keeps the default, whose template (uses leaves it out) may read another axis."""
        source = self.grid.axes[self.owner[name]][1]
        default = self.grid.defaults.get(name)
        if source.kind != "csv" or not isinstance(default, str) or not has_template(default):
            return frozenset()
        try:
            return parse(default).names
        except GridError:
            raise _NotPlain from None

    def _variables(self) -> None:
        """Which variables of the defaults each axis's values (None: the constant part) must
        render: every row renders them for its vars, read by a field or not, and one that
        cannot render (a cycle) is the reference's error. A variable that reads two axes is
        rendered per row only: the reference's."""
        self.renders: dict[int | None, list[str]] = {None: []}
        self.renders.update((i, []) for i in range(len(self.grid.axes)))
        for name, value in self.grid.product_def_vars.items():
            if name in self.grid.literal or not has_template(value):
                continue
            axes = self._axes_of(name)
            if len(axes) > 1:
                raise _NotPlain
            self.renders[next(iter(axes), None)].append(name)

    def _values(self, i: int, slots: list[str], distinct: bool = False) -> Iterator[_Part]:
        """The parts of axis i's values, in order; with `distinct`, two alike (two values that
        make one request) mean the reference must collapse them."""
        name, source = self.grid.axes[i]
        seen: set[tuple[str, ...]] = set()

        def variables(names: Iterable[str]) -> list[str]:  # the row's names it renders
            fields, literal = self.endpoint.fields, self.grid.literal
            return [n for n in names if n not in fields and n not in literal] + self.renders[i]

        plain = variables([name]) if source.fields is None else []  # the same for every value
        for value in source:
            row = dict(self.grid.defaults)
            if source.fields is None:
                row[name] = value
                renders = plain
            else:
                row.update(value)
                renders = variables(value.keys())
            part = self._part(slots, row, renders)
            if distinct:
                if part[0] in seen:
                    raise _NotPlain
                seen.add(part[0])
            yield part

    def _part(self, slots: list[str], row: Mapping[str, Any], renders: Sequence[str] = ()) -> _Part:
        """One axis value's slot texts ("name":value, sorted by name), billed facts and
        whether it gives a URL input. Every row sets every slot's field: a field that some
        rows leave unset (an empty csv cell, no default) has no fixed frame."""
        texts: list[str] = []
        facts: list[tuple[str, Any]] = []
        remote = False
        grid = self.grid
        literal, templated = grid.literal, grid.templated  # locals: a million values come here
        file_fields, billed, labels = self.endpoint.file_fields, self.pricing.billed, self.labels
        for name in renders:  # variables: only whether they render
            if isinstance(row[name], str) and has_template(row[name]):
                try:
                    render(row[name], row, name, literal)
                except TemplateError:
                    raise _NotPlain from None
        for f in slots:
            if f not in row:
                raise _NotPlain
            value = row[f]
            if f in templated:
                try:
                    value = render(value, row, f, literal)
                except TemplateError:
                    raise _NotPlain from None
            local: Path | str | None = None
            if f in file_fields:
                try:
                    found = self.local.resolve(value)
                except OSError:
                    raise _NotPlain from None
                if found is not None:
                    value, local = found
                    if isinstance(local, Path) and self.not_an_image(local) is not None:
                        raise _NotPlain
                remote = remote or is_url(value)
            if self.problems(f, value):
                raise _NotPlain
            if f in billed:
                facts.append((f, self.pricing.fact(f, value, local)))
            try:  # a string (most values) straight through the C encoder canonical_json uses
                text = _string(value) if type(value) is str else canonical_json(value)
                text.isascii() or text.encode()  # a lone surrogate is no UTF-8: no key
            except (TypeError, ValueError):
                raise _NotPlain from None
            texts.append(labels[f] + text)
        return tuple(texts), tuple(facts), remote

    def _frame(
        self,
        names: list[str],
        setter: Mapping[str, int | None],
        slots: list[list[str]],
        const: Mapping[str, str],
    ) -> str:
        pieces = []
        for f in names:
            i = setter[f]
            if i is None:
                pieces.append(const[f].replace("{", "{{").replace("}", "}}"))
            else:
                pieces.append(f"{{{i}[0][{slots[i].index(f)}]}}")
        head = '{"endpoint":' + canonical_json(self.endpoint.id) + ',"input":{'
        return head.replace("{", "{{") + ",".join(pieces) + "}}}}"
