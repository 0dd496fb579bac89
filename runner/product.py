"""Plain product grids compiled to text: a RowGrid in, its requests' keys and costs in run
order, with no dict, render, file hash or schema check per row.

When every body field is set by one axis at most (directly, or through the variables its
template reads), a request's canonical JSON is a fixed frame with slots, each axis value
filling its own slots: templates, file hashes, the input schema and billing are then worked
out once per axis value, and a row costs one str.format and one sha256. When each axis's
values fill their slots with distinct text, no two rows can make one request, so no set of
seen keys is kept either. Any other grid (include, exclude, sample, a field that two axes
set, a value some check refuses, a very long axis) gets None: grid.expand, the reference,
does the work row by row, and reports the errors. Tests check both give the same keys.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .endpoints import Endpoint
from .grid import LocalFiles
from .keys import KEY_HEX, canonical_json
from .models import Spec
from .plan import Cost, Pricing
from .rowgrid import RowGrid
from .templates import TemplateError, render

__all__ = ["Compiled", "compile_product"]

_URL_PREFIXES = ("http://", "https://")  # a URL input the server fetches (data: is inline)
MAX_VALUES = 100_000  # axis values held at once (each with its slot texts): beyond, row by row

# What one axis value (or the constant part) gives: its slot texts, its billed facts, whether
# a file input is an http(s) URL.
_Part = tuple[tuple[str, ...], tuple[tuple[str, Any], ...], bool]


@dataclass(frozen=True)
class Compiled:
    """The requests of a plain product grid, by key and cost: `count` of them, `remote` with
    an http(s) URL input."""

    count: int
    remote: int
    frame: str  # the canonical request text, with {i[0][k]} for slot k of axis i
    axes: tuple[tuple[_Part, ...], ...]  # per axis, per value
    constant: _Part
    pricing: Pricing

    def rows(self) -> Iterator[tuple[str, Cost]]:
        """(key, cost) of every request, in run order."""
        fill, sha256 = self.frame.format, hashlib.sha256
        cost = self._coster()
        for combo in itertools.product(*self.axes):
            yield sha256(fill(*combo).encode()).hexdigest()[:KEY_HEX], cost(combo)

    def _coster(self) -> Callable[[Sequence[_Part]], Cost]:
        """A row's cost from its parts: one Cost when no axis sets a billed field, else the
        facts of the axes that do, merged (each field has one setter)."""
        billed = [i for i, values in enumerate(self.axes) if any(v[1] for v in values)]
        base = self.constant[1]
        if not billed:
            fixed = self.pricing.cost(base)
            return lambda combo: fixed
        price = self.pricing.cost

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
    if sum(len(source) for _, source in grid.axes) > MAX_VALUES:
        return None
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
        constant = self._part(fixed, dict(grid.defaults))
        axes = tuple(self._values(i, slots[i]) for i in range(len(grid.axes)))
        if any(r not in names for r in self.endpoint.input_schema.get("required", ())):
            raise _NotPlain  # the reference reports the missing field
        frame = self._frame(
            sorted(names), setter, slots, dict(zip(fixed, constant[0], strict=True))
        )
        count = math.prod(len(v) for v in axes)
        if constant[2]:
            remote = count
        else:
            remote = count - math.prod(sum(not v[2] for v in values) for values in axes)
        return Compiled(count, remote, frame, axes, constant, self.pricing)

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
            if name == key and key not in self.grid.templated:
                continue  # a field that never renders reads no names
            todo.extend(self.uses.get(name, ()))
        return found

    def _values(self, i: int, slots: list[str]) -> tuple[_Part, ...]:
        name, source = self.grid.axes[i]
        parts: list[_Part] = []
        seen: set[tuple[str, ...]] = set()
        for value in source:
            row = dict(self.grid.defaults)
            if source.fields is None:
                row[name] = value
            else:
                row.update(value)
            part = self._part(slots, row)
            if part[0] in seen:
                raise _NotPlain  # two values make one request: the reference counts collapses
            seen.add(part[0])
            parts.append(part)
        return tuple(parts)

    def _part(self, slots: list[str], row: Mapping[str, Any]) -> _Part:
        """One axis value's slot texts ("name":value, sorted by name), billed facts and
        whether it gives a URL input. Every row sets every slot's field: a field that some
        rows leave unset (an empty csv cell, no default) has no fixed frame."""
        texts: list[str] = []
        facts: list[tuple[str, Any]] = []
        remote = False
        grid = self.grid
        for f in slots:
            if f not in row:
                raise _NotPlain
            value = row[f]
            if f in grid.templated:
                try:
                    value = render(value, row, f, grid.literal)
                except TemplateError:
                    raise _NotPlain from None
            local: Path | str | None = None
            if f in self.endpoint.file_fields:
                try:
                    found = self.local.resolve(value)
                except OSError:
                    raise _NotPlain from None
                if found is not None:
                    value, local = found
                    if isinstance(local, Path) and self.not_an_image(local) is not None:
                        raise _NotPlain
                remote = remote or (
                    isinstance(value, str) and value[:8].lower().startswith(_URL_PREFIXES)
                )
            if self.problems(f, value):
                raise _NotPlain
            if f in self.pricing.billed:
                facts.append((f, self.pricing.fact(f, value, local)))
            try:
                texts.append(canonical_json(f) + ":" + canonical_json(value))
            except (TypeError, ValueError):
                raise _NotPlain from None
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
