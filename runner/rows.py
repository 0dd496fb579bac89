"""Row shapes: a JobSpec and its Endpoint in, a checked Plan that yields raw rows (pre-template)
in run order: the product of the matrix axes minus `exclude`, then the `include` rows.

Every check that needs no iteration runs when the Plan is built, so errors come before any row.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .endpoints import Endpoint
from .errors import GridError, SpecPath
from .models import JobSpec
from .sources import ListSource, Source, axis_source
from .templates import has_template, parse, undefined_message

_END: Any = object()
_WRITTEN = ("lines", "csv", "jsonl")  # file sources whose text is the user's: may hold templates


@dataclass(frozen=True, slots=True)
class Row:
    """A raw row. `values` (flattened name -> value) is what templates and the body read;
    `combo` (index, value) per axis, or `fixed` (vars, origins) for an include row, lets
    Plan.describe build vars and origins only for the rows that become requests."""

    values: dict[str, Any]
    templated: frozenset[str]  # body fields whose value may hold a template: only these render
    combo: tuple[tuple[int, Any], ...] = ()
    fixed: tuple[dict[str, Any], dict[str, SpecPath]] | None = None


class Plan:
    """The checked grid of one spec: its axes, defaults, exclude and include entries."""

    def __init__(self, spec: JobSpec, endpoint: Endpoint) -> None:
        self.fields = endpoint.fields
        self.axes = [
            (name, axis_source(name, raw, spec.base_dir)) for name, raw in spec.matrix.items()
        ]
        self.axis_index = {name: i for i, (name, _) in enumerate(self.axes)}
        # GitHub's rule: a matrix of only `include` rows runs just those rows; none at all, one.
        self.has_product = bool(self.axes) or not spec.include
        d = spec.defaults
        self.defaults = dict(d)
        self.def_origins: dict[str, SpecPath] = {k: ("defaults", k) for k in d}
        self.def_vars = {k: v for k, v in d.items() if k not in self.fields}
        owner = self._owners()
        self.product_keys = set(d) | set(owner)
        known = self.product_keys | {n for n, s in self.axes if s.fields is not None}
        self.exclude = [self._entry("exclude", j, e, known) for j, e in enumerate(spec.exclude)]
        self.include = [
            self._include(j, e, known | set(self.fields)) for j, e in enumerate(spec.include)
        ]
        used = self._check_templates(owner)
        self._check_typos(owner, used)
        self.templated = frozenset(
            k
            for k in self.product_keys & set(self.fields)
            if any(
                has_template(v) for v, _ in _literal_values(k, owner.get(k), self.defaults, True)
            )
        )

    def rows(self) -> Iterator[Row]:
        if self.has_product:
            shape = [(name, s.fields is None) for name, s in self.axes]
            for combo in _product([s for _, s in self.axes]):
                values = dict(self.defaults)
                for (name, plain), (_, value) in zip(shape, combo):  # noqa: B905 (hot loop)
                    if plain:
                        values[name] = value
                    else:
                        values.update(value)
                if self.exclude and any(self._excluded(values, combo, e) for e in self.exclude):
                    continue
                yield Row(values, self.templated, combo)
        for row in self.include:
            yield Row(dict(row.values), row.templated, fixed=row.fixed)

    def describe(self, row: Row) -> tuple[dict[str, Any], dict[str, SpecPath]]:
        """A row's vars (axis name -> value, plus defaults' variables) and origins."""
        if row.fixed is not None:
            return dict(row.fixed[0]), dict(row.fixed[1])
        origins = dict(self.def_origins)
        axis_vars: dict[str, Any] = {}
        for (name, source), (i, value) in zip(self.axes, row.combo, strict=True):
            axis_vars[name] = value if source.fields is None else dict(value)
            origins[name] = source.origin(i)
            for f in source.fields or ():
                origins[f] = source.origin(i, f)
        return {**self.def_vars, **axis_vars}, origins

    def _excluded(
        self, values: dict[str, Any], combo: Sequence[tuple[int, Any]], entry: list[tuple[str, Any]]
    ) -> bool:
        for key, want in entry:
            # An object axis's name stands for its whole mapping.
            have = values[key] if key in values else combo[self.axis_index[key]][1]
            if not _same(have, want):
                return False
        return True

    def _owners(self) -> dict[str, Source]:
        """Which axis sets each row key; a key set by two axes is an error."""
        owner = {name: s for name, s in self.axes if s.fields is None}
        for name, s in self.axes:
            for f in s.fields or ():
                if f in owner:
                    raise GridError(
                        f"field {f!r} is set twice: by axis {name!r} and by axis "
                        f"{_axis_name(owner[f], f)!r}",
                        ("matrix", name),
                    )
                owner[f] = s
        for name, s in self.axes:
            if s.fields is not None and (name in owner or name in self.defaults):
                # exclude and include name an object axis to mean its whole mapping
                raise GridError(f"object axis name {name!r} is also a field or variable", s.path)
        return owner

    def _entry(self, part: str, j: int, entry: Any, known: Collection[str]) -> list[Any]:
        if not isinstance(entry, Mapping) or not entry:
            raise GridError(f"each {part} entry must be a non-empty mapping", (part, j))
        for key in entry:
            if key not in known:
                raise GridError(_unknown(part, key, known), (part, j, key))
        return list(entry.items())

    def _include(self, j: int, entry: Any, known: Collection[str]) -> Row:
        objects = {n: s for n, s in self.axes if s.fields is not None}
        values, origins = dict(self.defaults), dict(self.def_origins)
        for key, value in self._entry("include", j, entry, known):
            origins[key] = ("include", j, key)
            if key not in objects:
                values[key] = value
            elif not isinstance(value, Mapping):
                raise GridError(
                    f"{key!r} is an object axis: give it a mapping of fields", ("include", j, key)
                )
            else:
                values.update(value)
                origins.update({f: ("include", j, key, f) for f in value})
        templated = frozenset(k for k in values if k in self.fields and has_template(values[k]))
        return Row(values, templated, fixed=({**self.def_vars, **entry}, origins))

    def _check_templates(self, owner: Mapping[str, Source]) -> set[str]:
        """Parse every template the spec itself holds and check its names against each row
        shape it is used in. Returns every name some template uses."""
        used: set[str] = set()
        for key, value in self.defaults.items():
            if key in self.fields and has_template(value):
                used |= parse(value, ("defaults", key)).names
        if self.has_product:
            for key in self.product_keys & set(self.fields):
                for value, path in _literal_values(key, owner.get(key), self.defaults):
                    used |= _check(value, path, self.product_keys)
        for row in self.include:
            origins = self.describe(row)[1]
            for key in row.values.keys() & set(self.fields):
                used |= _check(row.values[key], origins[key], row.values)
        return used

    def _check_typos(self, owner: Mapping[str, Source], used: Collection[str]) -> None:
        """A variable nobody reads that looks like an endpoint field is a misspelt field."""
        paths: dict[str, SpecPath] = {k: ("defaults", k) for k in self.defaults}
        paths.update({k: s.origin(0, k) if s.fields else s.path for k, s in owner.items()})
        for key, path in paths.items():
            if key in self.fields or key in used:
                continue
            close = difflib.get_close_matches(key, list(self.fields), n=1, cutoff=0.8)
            if close:
                raise GridError(f"unknown field {key!r} (did you mean {close[0]!r}?)", path)


def _literal_values(
    key: str, source: Source | None, defaults: Mapping[str, Any], files: bool = False
) -> Iterable[tuple[Any, SpecPath]]:
    """The values of `key` written in the spec itself. Values that lines, csv and jsonl files
    hold are checked as they render (with `files`, a stand-in says they may be templates);
    values that range and files make are never templates (a file name may hold braces)."""
    if source is None:
        return [(defaults[key], ("defaults", key))]
    if not isinstance(source, ListSource):
        return [("{}", source.path)] if files and source.kind in _WRITTEN else []
    if source.fields is None:
        return ((v, source.origin(i)) for i, v in enumerate(source))
    return ((v[key], source.origin(i, key)) for i, v in enumerate(source))


def _check(value: Any, path: SpecPath, defined: Collection[str]) -> frozenset[str]:
    if not has_template(value):
        return frozenset()
    names = parse(value, path).names
    for name in sorted(names):
        if name not in defined:
            raise GridError(undefined_message(name, defined), path)
    return names


def _product(sources: Sequence[Source]) -> Iterator[tuple[tuple[int, Any], ...]]:
    """Like itertools.product (first axis slowest), but re-iterates each source instead of
    copying it into a tuple, so a million-line axis is never held in memory."""
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


def _same(a: Any, b: Any) -> bool:
    # YAML's true is not 1: compare booleans only with booleans.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _unknown(part: str, key: str, known: Collection[str]) -> str:
    message = f"{part} key {key!r} names no axis, field or variable"
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return message + (f" (did you mean {close[0]!r}?)" if close else "")


def _axis_name(source: Source, fallback: str) -> str:
    return str(source.path[-1]) if source.path else fallback
