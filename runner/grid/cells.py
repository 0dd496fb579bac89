"""One body field or one variable of one row, worked out: a name and the row's values in, a
Cell out. Each per-field step (render the template, resolve a local file or data: URI, check
the value against the field's schema, the billing fact, the key fragment) is written once,
here, and every way of expanding a grid calls it.

A row's values may be partial (only some axes bound, to memoize a cell per combination of the
axes it reads): a template error there is explained through a Probe, which raises NeedAxis for
a name whose axis is not bound (memo.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..endpoints import Endpoint
from ..keys import is_url, speller
from .localfiles import LocalFiles
from .plan import Pricing
from .templates import TemplateError, has_template, render

# What a cell asks of its row, least to most: nothing; a look by the validation walk (a value
# the schema refuses, an input that is no image, a variable that cannot render); or the end of
# the expansion at this row (a field that cannot render, be read or be spelt as JSON).
OK, LOOK, STOP = 0, 1, 2


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # the value of a field the row leaves unset (an empty csv cell)


class Cell(NamedTuple):
    """A field's or a variable's result in one row. `value`: the body value as journaled (a
    local file or data: URI as its "sha256:" reference), a variable's rendered value, ABSENT,
    or, when `trouble` is STOP (or LOOK for a variable), the exception it raised."""

    value: Any
    fragment: str  # keys.fragment of the value: "" for a variable or an absent field
    trouble: int = OK
    local: Path | str | None = None  # a file field's file (Path) or data: URI (str) to send
    # a file field's value as rendered, before it was resolved; for a value that is no JSON,
    # that value (the error message spells the whole body)
    written: Any = None
    fact: Any = None  # the billing fact (Pricing.fact) of a billed field
    remote: bool = False  # a file field given as an http(s) URL


class NeedAxis(Exception):
    """A cell read a name that axis `axis` sets while that axis was not bound."""

    def __init__(self, axis: int) -> None:
        super().__init__(axis)
        self.axis = axis


class Probe(Mapping[str, Any]):
    """A partial row that says which unbound axis a name needs: reading (or asking for) a name
    that an unbound axis sets raises NeedAxis. Used only to explain a template error seen on
    the partial row, so its speed does not matter."""

    def __init__(self, values: Mapping[str, Any], owner: Mapping[str, int], bound: Collection[int]):
        self._values, self._owner, self._bound = values, owner, bound

    def _need(self, name: str) -> None:
        axis = self._owner.get(name)
        if axis is not None and axis not in self._bound:
            raise NeedAxis(axis)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name not in self._values:
            self._need(name)
        return name in self._values

    def __getitem__(self, name: str) -> Any:
        if name not in self._values:
            self._need(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class Steps:
    """The per-field steps of one expansion and what they need: the endpoint, LocalFiles, the
    pricing, and (for validation) `problems(field, value)`, the input schema's complaints
    about one value, and `not_an_image(path)`, why a local input is no image."""

    def __init__(
        self,
        endpoint: Endpoint,
        local: LocalFiles,
        problems: Callable[[str, Any], list[str]] | None = None,
        not_an_image: Callable[[Path], str | None] | None = None,
    ) -> None:
        self.fields = endpoint.fields
        self.file_fields = endpoint.file_fields
        self.required = frozenset(endpoint.input_schema.get("required", ()))
        self.pricing = Pricing(endpoint)
        self.billed = self.pricing.billed
        self.local = local
        self.problems = problems
        self.not_an_image = not_an_image

    def field(
        self, name: str, templated: bool, literal: Collection[str]
    ) -> Callable[[Mapping[str, Any], Any], Cell]:
        """The step that works out body field `name` of a row, step(values, row=None) -> Cell:
        `templated` says whether its value may be a template (values from {files} and {range}
        never are); `literal` names the values that are not rendered when a template reads
        them. A step per field, so a million rows test only what their field needs."""
        is_file, billed = name in self.file_fields, name in self.billed
        lean = not (is_file or billed)  # most fields: no file, no billing fact
        required = self.problems is not None and name in self.required
        absent = Cell(ABSENT, "", LOOK if required else OK)
        problems, not_an_image = self.problems, self.not_an_image
        resolve, fact_of, spell = self.local.resolve, self.pricing.fact, speller(name)
        new = tuple.__new__  # Cell(...) without its keyword handling: a million values come here

        def step(values: Mapping[str, Any], row: Any = None) -> Cell:
            if name not in values:  # an empty csv cell with no default: the field is left out
                return absent
            value = values[name]
            if templated and isinstance(value, str) and ("{" in value or "}" in value):
                try:
                    value = render(value, values, name, literal)
                except TemplateError as e:
                    return Cell(e, "", STOP)
            local: Path | str | None = None
            written = None
            if is_file:
                written = value
                try:
                    found = resolve(value)
                except OSError as e:
                    return Cell(e, "", STOP, written=written)
                if found is not None:
                    value, local = found
            try:
                text = spell(value)
                text.isascii() or text.encode()  # a lone surrogate is no UTF-8: no key
            except (TypeError, ValueError) as e:
                return Cell(e, "", STOP, written=value)  # the body's JSON names the value
            trouble = OK
            if problems is not None and (
                problems(name, value)
                or (
                    is_file
                    and isinstance(local, Path)
                    and not_an_image
                    and not_an_image(local) is not None
                )
            ):
                trouble = LOOK
            if lean:
                return new(Cell, (value, text, trouble, None, None, None, False))
            fact = fact_of(name, value, local) if billed else None
            return Cell(value, text, trouble, local, written, fact, is_file and is_url(value))

        return step

    def var(
        self, name: str, raw: Any, values: Mapping[str, Any], literal: Collection[str], paired: bool
    ) -> Cell:
        """Variable `name` of the row `values`, as its vars record it: a template rendered, and
        an object axis's row (`paired`) with each field that holds a template rendered. `raw`
        is the variable's value in the row (an object axis's mapping)."""
        try:
            if name not in self.fields and name not in literal and has_template(raw):
                return Cell(render(raw, values, name, literal), "")
            if paired and isinstance(raw, dict):
                # An object axis's fields, request fields too: a csv row's "a {tag} dog" went
                # into the body rendered, so its vars say what the row really sent.
                return Cell(
                    {
                        f: render(v, values, f, literal) if has_template(v) else v
                        for f, v in raw.items()
                    },
                    "",
                )
        except TemplateError as e:
            return Cell(e, "", LOOK)  # reported where the validation walk reaches the row
        return Cell(raw, "")
