"""Strict `{name}` templates: a string and a row of values in, the rendered string out. `{{` and
`}}` are literal braces.

A variable's value is a template too, rendered recursively (a cycle is an error naming it).
Templates see only the row (never the environment), names must be plain identifiers, and an
undefined name is an error that lists the defined ones.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from string import Formatter
from typing import Any

from ..errors import GridError, SpecPath


class TemplateError(GridError):
    """A template that cannot render; `key` names the row value whose template it is."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and variable names, alternating."""

    parts: tuple[tuple[str, str | None], ...]  # (literal, name or None)
    names: frozenset[str]


def has_template(value: object) -> bool:
    """Cheap test so plain strings (most of them) skip parsing altogether."""
    return isinstance(value, str) and ("{" in value or "}" in value)


def parse(text: str, path: SpecPath = ()) -> Template:
    """Parse once (cached); a syntax error becomes a GridError at `path`."""
    try:
        return _parse(text)
    except ValueError as e:
        raise GridError(f"bad template {text!r}: {e}", path) from None


def render(
    text: str, values: Mapping[str, Any], key: str = "", literal: Collection[str] = ()
) -> str:
    """Render `text`, the value of `key` in the row `values`. A variable whose value is a string
    is rendered too, recursively, unless it is in `literal` (values never meant as templates:
    file names from {files}). Raises TemplateError, naming the key whose template failed."""
    if not has_template(text):
        return text
    return _render(text, values, literal, (key,))


def _render(
    text: str, values: Mapping[str, Any], literal: Collection[str], stack: tuple[str, ...]
) -> str:
    try:
        template = _parse(text)
    except ValueError as e:
        raise TemplateError(f"bad template {text!r}: {e}", stack[-1]) from None
    out: list[str] = []
    for part, name in template.parts:
        out.append(part)
        if name is None:
            continue
        if name not in values:
            raise TemplateError(undefined_message(name, values), stack[-1])
        value = values[name]
        if isinstance(value, str):  # most values: appended as they are, unless a template
            if ("{" in value or "}" in value) and name not in literal:
                if name in stack:
                    cycle = " → ".join((*stack[stack.index(name) :], name))
                    raise TemplateError(f"template cycle: {cycle}", stack[-1])
                value = _render(value, values, literal, (*stack, name))
            out.append(value)
        else:
            out.append(_text(value))
    return "".join(out)


def undefined_message(name: str, defined: Collection[str]) -> str:
    message = f"undefined template variable {name!r}"
    close = difflib.get_close_matches(name, list(defined), n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    listed = ", ".join(sorted(defined)) or "none"
    return f"{message}; defined: {listed}"


def literal_hint(name: str) -> str:
    """For an undefined name in a data file's row, where braces are often meant as text."""
    return f"HINT: write {{{{{name}}}}} for literal braces"


@lru_cache(maxsize=4096)
def _parse(text: str) -> Template:
    parts: list[tuple[str, str | None]] = []
    # Formatter.parse raises ValueError on a lone brace; its message is rewritten to teach.
    try:
        pieces = list(Formatter().parse(text))
    except ValueError:
        raise ValueError("unmatched brace; write {{ or }} for a literal brace") from None
    for literal, name, spec, conversion in pieces:
        if name is None:
            parts.append((literal, None))
            continue
        whole = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        whole += "}"
        if not name:
            raise ValueError(f"empty {whole}: name a variable, or write {{{{ }}}} for braces")
        if conversion or spec:
            raise ValueError(f"{whole}: only plain {{name}} is supported (no !conversion, :format)")
        if not name.isidentifier():
            raise ValueError(
                f"{whole}: name one variable by a plain identifier; attribute and index "
                "access ({a.b}, {a[0]}) are not supported"
            )
        parts.append((literal, name))
    names = frozenset(n for _, n in parts if n is not None)
    return Template(tuple(parts), names)


def _text(value: Any) -> str:
    # Strings go in as they are; numbers as Python writes them (0.7, 3); the rest as JSON, so
    # true/null/{"a":1} read the same as in the spec rather than as Python reprs.
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
