"""The checked grid of one spec: a Spec and its Endpoint in, a RowGrid out: its axes, defaults,
exclude entries and include rows, and what a row's vars and origins are. The engine (engine.py)
expands it into requests.

Every check that needs no iteration runs when the RowGrid is built, and all of them run, so
`validate` reports every independent problem at once (GridErrors); errors come before any row.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..endpoints import Endpoint
from ..errors import GridError, GridErrors, SpecPath
from ..keys import canonical
from ..models import Spec
from ..words import counted
from .sources import ListSource, Source, axis_source
from .templates import TemplateError, has_template, literal_hint, parse, undefined_message

REPEAT_HINT = "HINT: to repeat a request, sweep 'seed'"
# A name this long found inside a field's is taken for it (`steps`); a shorter one (`b`, `in`)
# is inside too many names to mean one.
MEANT_PART = 4


@dataclass(frozen=True, slots=True)
class RowVars:
    """A row's vars (axis name -> value, plus the defaults' variables it uses) and origins
    (field or variable name -> the YAML path its value came from)."""

    vars: dict[str, Any]
    origins: dict[str, SpecPath]


@dataclass(frozen=True, slots=True)
class Row:
    """A raw row. `values` (flattened name -> value) is what templates and the body read;
    `combo` (index, value) per axis, or `fixed` for an include row, lets RowGrid.describe
    build vars and origins only for the rows that become requests."""

    values: dict[str, Any]
    templated: frozenset[str]  # body fields whose value may hold a template: only these render
    combo: tuple[tuple[int, Any], ...] = ()
    fixed: RowVars | None = None


class _Unknown(Source):
    """Stands for an axis whose values are broken (reported elsewhere): its name is defined,
    its fields are known when it is written as a list of mappings, and it yields nothing."""

    def __init__(self, path: SpecPath, raw: Any) -> None:
        fields = None
        if isinstance(raw, list) and raw and all(isinstance(v, Mapping) for v in raw):
            fields = tuple(dict.fromkeys(k for v in raw for k in v))
        super().__init__(path, fields)
        # A broken csv or jsonl axis may define fields nobody can see: name checks are off.
        self.opaque = isinstance(raw, Mapping) and not {"range", "files", "lines"} & set(raw)

    def __len__(self) -> int:
        return 0


class RowGrid:
    """The checked grid of one spec: its axes, defaults, exclude and include entries.

    `broken` names axes already reported as invalid (by the job schema): they are not built,
    and the grid then only checks; `complete` says whether it can yield rows.
    """

    def __init__(self, spec: Spec, endpoint: Endpoint, broken: Collection[str] = ()) -> None:
        self.endpoint_id = endpoint.id
        self.fields = endpoint.fields
        self._problems: list[GridError] = []
        self.axes = [
            (name, self._source(name, raw, spec.base_dir, name in broken))
            for name, raw in spec.matrix.items()
        ]
        self.complete = not any(isinstance(s, _Unknown) for _, s in self.axes)
        self.axis_index = {name: i for i, (name, _) in enumerate(self.axes)}
        # GitHub's rule: a matrix of only `include` rows runs just those rows; none at all, one.
        self.has_product = bool(self.axes) or not spec.include
        self.defaults: dict[str, Any] = canonical(dict(spec.defaults))
        self.def_origins: dict[str, SpecPath] = {k: ("defaults", k) for k in self.defaults}
        owner = self._owners()
        self.objects = {n: s for n, s in self.axes if s.fields is not None}
        self.product_keys = set(self.defaults) | set(owner)
        # The defaults' variables a product row really uses: an object axis may override some.
        self.def_vars = {k: v for k, v in self.defaults.items() if k not in self.fields}
        self.product_def_vars = {k: v for k, v in self.def_vars.items() if k not in owner}
        # Values made by {files} are names, never templates (a file name may hold braces).
        self.literal = frozenset(n for n, s in self.axes if s.kind == "files")
        known = self.product_keys | set(self.objects)
        self.exclude = [
            (j, e)
            for j, raw in enumerate(spec.exclude)
            if (e := self._try(self._entry, "exclude", j, raw, known)) is not None
        ]
        self.include = [
            row
            for j, raw in enumerate(spec.include)
            if (row := self._try(self._include, j, raw)) is not None
        ]
        # Per name, the names its templates read (None: an axis's fields cannot be seen).
        self.uses: dict[str, set[str]] | None = None
        self._unsent: list[str] = []  # defaults no request carries, in any form
        if not any(getattr(s, "opaque", False) for _, s in self.axes):
            before = len(self._problems)
            uses, reads = self._check_templates(owner)
            self.uses = uses
            used = _closure(uses, self.fields)
            if len(self._problems) == before:  # a misspelt name makes its axis look unused
                self._check_unused(used, reads)
                self._check_typos(used)
                self._unsent = [k for k in self.defaults if k not in self.fields and k not in used]
        self.templated = frozenset(
            k for k in self.product_keys & set(self.fields) if self._may_template(k, owner.get(k))
        )
        if len(self._problems) == 1:
            raise self._problems[0]
        if self._problems:
            raise GridErrors(self._problems)

    # --- one row ------------------------------------------------------------------------------

    def describe(self, row: Row) -> RowVars:
        """A row's vars and origins, each a new dict."""
        if row.fixed is not None:
            variables, origins = dict(row.fixed.vars), dict(row.fixed.origins)
        else:
            origins = dict(self.def_origins)
            variables = dict(self.product_def_vars)
            for (name, source), (i, value) in zip(self.axes, row.combo, strict=True):
                variables[name] = value if source.fields is None else dict(value)
                origins[name] = source.origin(i)
                for f in source.fields or ():
                    origins[f] = source.origin(i, f)
        return RowVars(variables, origins)

    def template_error(self, row: Row, error: TemplateError) -> GridError:
        """A row's template error, at the spec node of the value that failed; a value from a
        file source also names its row there ("rows.csv line 3: ...")."""
        message = error.message
        for (name, source), (i, _) in zip(self.axes, row.combo):  # noqa: B905 (include: no combo)
            if error.key == name or error.key in (source.fields or ()):
                where = source.row_place(i)
                message = f"{where}: {message}" if where else message
        return GridError(message, self.describe(row).origins.get(error.key, ()))

    def warnings(self) -> list[tuple[SpecPath, str]]:
        """(where, what) for what is suspicious but allowed, known once the grid is built: a
        {files} glob's broken symbolic links (skipped); a default that is no field and that no
        template reads (a constant kept for the journal's vars, or a field name mistyped)."""
        found: list[tuple[SpecPath, str]] = [
            (
                ("defaults", key),
                f"defaults key {key!r} is not sent: it is no input of {self.endpoint_id} and no "
                f"template reads it{self._did_you_mean(key)}; it is only kept in each row's vars",
            )
            for key in self._unsent
        ]
        for _, source in self.axes:
            broken = getattr(source, "broken", ())  # a {files} glob's dangling matches
            if broken:
                more = counted(len(broken) - 1, "more match", "more matches")
                what = (
                    f"{broken[0]} and {more} are broken symbolic links"
                    if len(broken) > 1
                    else f"{broken[0]} is a broken symbolic link"
                )
                found.append(((*source.path, "files"), f"{what}; skipped"))
        return found

    # --- building and checking ------------------------------------------------------------------

    def _try(self, check: Any, *args: Any) -> Any:
        """Run one independent check; its GridError is collected, not raised."""
        try:
            return check(*args)
        except GridErrors as e:
            self._problems.extend(e.errors)
        except GridError as e:
            self._problems.append(e)
        return None

    def _source(self, name: str, raw: Any, base_dir: Path, broken: bool) -> Source:
        booleans = [k for k, f in self.fields.items() if f.get("type") == "boolean"]
        source = None if broken else self._try(axis_source, name, raw, base_dir, booleans)
        return source if source is not None else _Unknown(("matrix", name), raw)

    def _owners(self) -> dict[str, Source]:
        """Which axis sets each row key; a key set by two axes is an error."""
        owner = {name: s for name, s in self.axes if s.fields is None}
        for name, s in self.axes:
            for f in s.fields or ():
                if f in owner:
                    self._problems.append(
                        GridError(
                            f"field {f!r} is set twice: by axis {name!r} and by axis "
                            f"{_axis_name(owner[f], f)!r}",
                            ("matrix", name),
                        )
                    )
                owner[f] = s
        for name, s in self.axes:
            if s.fields is not None and (name in owner or name in self.defaults):
                # exclude and include name an object axis to mean its whole mapping
                msg = f"object axis name {name!r} is also a field or variable"
                self._problems.append(GridError(msg, s.path))
        return owner

    def _entry(self, part: str, j: int, entry: Any, known: Collection[str]) -> list[Any]:
        assert isinstance(entry, Mapping) and entry, "the job schema requires non-empty mappings"
        for key in entry:
            if key not in known:
                raise GridError(_unknown(part, key, known), (part, j, key))
        return list(canonical(dict(entry)).items())

    def _include(self, j: int, entry: Any) -> Row:
        """An include row. A key that is no field and no known name is the row's own variable
        (`_check_unused` refuses it when no template of the row reads it)."""
        assert isinstance(entry, Mapping) and entry, "the job schema requires non-empty mappings"
        values, origins = dict(self.defaults), dict(self.def_origins)
        overridden: set[str] = set()
        for key, value in canonical(dict(entry)).items():
            origins[key] = ("include", j, key)
            if key not in self.objects:
                values[key] = value
            elif not isinstance(value, Mapping):
                raise GridError(
                    f"{key!r} is an object axis: give it a mapping of fields", ("include", j, key)
                )
            else:
                values.update(value)
                overridden |= set(value)
                origins.update({f: ("include", j, key, f) for f in value})
        templated = frozenset(k for k in values if k in self.fields and has_template(values[k]))
        used_vars = {k: v for k, v in self.def_vars.items() if k not in overridden}
        return Row(
            values, templated, fixed=RowVars({**used_vars, **canonical(dict(entry))}, origins)
        )

    def _check_templates(
        self, owner: Mapping[str, Source]
    ) -> tuple[dict[str, set[str]], list[set[str]]]:
        """Parse every template the spec holds (in fields and variables alike: a variable's
        value is a template too) and check its names against each row shape it is used in.
        Returns, per key, the names its templates use; and per include row, the names that
        its known keys' templates read, directly or through the row's own variables."""
        uses: dict[str, set[str]] = {}
        if self.has_product:
            for key in self.product_keys:
                if key in self.literal:
                    continue
                source = owner.get(key)
                for value, path in _literal_values(key, source, self.defaults):
                    uses.setdefault(key, set()).update(self._names(value, path, self.product_keys))
                if source is not None and not isinstance(source, ListSource):
                    field = key if source.fields else None
                    names = source.names.get(field, frozenset())
                    place = partial(source.row_place, None, field)  # the file row, by name
                    self._undefined(names, source.origin(0), self.product_keys, place)
                    uses.setdefault(key, set()).update(names)
        reads: list[set[str]] = []
        for row in self.include:
            origins = row.fixed.origins if row.fixed else {}
            row_uses = {
                key: self._names(value, origins[key], row.values)
                for key, value in row.values.items()
            }
            for key, read in row_uses.items():
                uses.setdefault(key, set()).update(read)
            # Every known name of the row renders (fields into the body, variables into vars),
            # so what their templates read is read; the row's own variables only through them.
            rendered = [k for k in row_uses if k in self.fields or k in self.product_keys]
            reads.append(_closure(row_uses, rendered))
        return uses, reads

    def _names(self, value: Any, path: SpecPath, defined: Collection[str]) -> set[str]:
        if not has_template(value):
            return set()
        template = self._try(parse, value, path)
        if template is None:
            return set()
        self._undefined(template.names, path, defined)
        return set(template.names)

    def _undefined(
        self,
        names: Iterable[str],
        path: SpecPath,
        defined: Collection[str],
        place: Callable[[str], str] = lambda name: "",
    ) -> None:
        for name in sorted(names):
            if name not in defined:
                message = undefined_message(name, defined)
                where = place(name)  # a file source's "rows.csv line 3"
                if where:  # a data file's text: its braces may be meant literally
                    message = f"{where}: {message}; {literal_hint(name)}"
                self._problems.append(GridError(message, path))
                return

    def _check_unused(self, used: Collection[str], reads: Sequence[Collection[str]]) -> None:
        """An axis, object-axis field or include key that is no endpoint field and that no
        template uses would change no request: the grid would silently collapse. `reads`:
        per include row, what its templates read (a row's own variable must be among them)."""

        def check(what: str, key: str, path: SpecPath) -> None:
            if key not in self.fields and key not in used:
                self._problems.append(GridError(self._unused(what, key), path))

        for name, s in self.axes:
            if s.fields is None:
                check("axis", name, s.path)
            for f in s.fields or ():
                check(f"field of axis {name!r},", f, s.origin(0, f))
        known = self.product_keys | set(self.objects) | set(self.fields)
        for row, read in zip(self.include, reads, strict=True):
            for key, path in row.fixed.origins.items() if row.fixed else ():
                if path[:1] != ("include",) or key in self.objects:
                    continue  # from defaults; or an object axis, checked by its fields
                if len(path) == 4:  # a field of an object axis the row sets by name
                    check(f"field of {path[2]!r}", key, path)
                elif key in self.product_keys:
                    check("include key", key, path)
                elif key not in self.fields and key not in read:
                    unread = _unknown(
                        "include", key, known, ", and no template of its row reads it"
                    )
                    self._problems.append(GridError(unread, path))

    def _unused(self, what: str, key: str) -> str:
        return (
            f"{what} {key!r} is no input of {self.endpoint_id} and no template uses it, so it "
            f"changes no request{self._did_you_mean(key)}; {REPEAT_HINT}"
        )

    def _did_you_mean(self, key: str) -> str:
        """The note `(did you mean 'guidance_scale'?)` for a name close to a field's or part
        of one (a prefix like `guidance`, `steps` of `num_inference_steps`), else nothing."""
        close = difflib.get_close_matches(key, list(self.fields), n=1, cutoff=0.6)
        if len(key) >= MEANT_PART:
            close = close or [f for f in self.fields if key in f]
        return f" (did you mean {close[0]!r}?)" if close else ""

    def _check_typos(self, used: Collection[str]) -> None:
        """A variable in defaults that nobody reads and that looks like a field is misspelt."""
        for key in self.defaults:
            if key in self.fields or key in used:
                continue
            close = difflib.get_close_matches(key, list(self.fields), n=1, cutoff=0.8)
            if close:
                msg = f"unknown field {key!r} (did you mean {close[0]!r}?)"
                self._problems.append(GridError(msg, ("defaults", key)))

    def _may_template(self, key: str, source: Source | None) -> bool:
        if source is None:
            return has_template(self.defaults[key])
        if not isinstance(source, ListSource):
            return source.kind in ("lines", "csv", "jsonl")  # file text is the user's
        return any(has_template(v) for v, _ in _literal_values(key, source, self.defaults))


def _closure(uses: Mapping[str, Collection[str]], keys: Collection[str]) -> set[str]:
    """Every name the templates of `keys` use, directly or through variables."""
    used: set[str] = set()
    todo = [name for key in keys for name in uses.get(key, ())]
    while todo:
        name = todo.pop()
        if name not in used:
            used.add(name)
            todo.extend(uses.get(name, ()))
    return used


def _literal_values(
    key: str, source: Source | None, defaults: Mapping[str, Any]
) -> Iterable[tuple[Any, SpecPath]]:
    """The values of `key` written in the spec itself (file sources: none)."""
    if source is None:
        return [(defaults[key], ("defaults", key))]
    if not isinstance(source, ListSource):
        return []
    if source.fields is None:
        return ((v, source.origin(i)) for i, v in enumerate(source))
    return ((v[key], source.origin(i, key)) for i, v in enumerate(source))


def _unknown(part: str, key: str, known: Collection[str], more: str = "") -> str:
    message = f"{part} key {key!r} names no axis, field or variable{more}"
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return message + (f" (did you mean {close[0]!r}?)" if close else "")


def _axis_name(source: Source, fallback: str) -> str:
    return str(source.path[-1]) if source.path else fallback
