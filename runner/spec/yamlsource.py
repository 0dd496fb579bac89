"""Safe YAML loading for job specs: text in, plain JSON-like data out, plus a locator that maps a
document path (keys and indices) to the 1-based line and column of the node it names."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import SpecPath
from ..models import Location

_T = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_T + t for t in ("str", "int", "float", "bool", "null")}
# YAML 1.1 reads these as booleans; a sweep over [yes, no] silently becoming True/False is a
# classic trap, so they must be written as true/false or quoted.
_AMBIGUOUS_BOOLS = {"yes", "no", "on", "off"}
# YAML 1.1 numbers nobody means: base 60 (`12:30` is 750, a time in a prompt) and a leading
# zero (`010` is octal 8). YAML 1.2 reads neither so; rather than guess, both must be quoted.
_YAML11_ONLY = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?|0[0-9_]+)$")
# Alias expansion guard ("billion laughs"); long value lists belong in {lines}/{csv} files.
_MAX_NODES = 200_000


class YamlError(Exception):
    """A problem in the YAML text itself, at a 1-based line and column."""

    def __init__(self, message: str, line: int = 1, col: int = 1) -> None:
        super().__init__(f"{line}:{col}: {message}")
        self.message = message
        self.line = line
        self.col = col


@dataclass(frozen=True)
class Locator:
    """Document path -> Location; an unknown path falls back to its nearest known ancestor.

    A mapping entry is located at its key (the line a person reads as "that setting"), a list item
    at the item itself.
    """

    places: dict[SpecPath, Location]

    def __contains__(self, path: object) -> bool:
        return path in self.places

    def __call__(self, path: SpecPath) -> Location:
        path = tuple(path)
        while path:
            if path in self.places:
                return self.places[path]
            path = path[:-1]
        return self.places.get((), Location(1, 1))


class _Loader(yaml.SafeLoader):
    """The safe loader, plus: no explicit tags (every value is a plain value), and YAML 1.2
    floats with an exponent and no dot (`5e0`, `1e-3`), which YAML 1.1 reads as strings."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise YamlError(_tag_message(tag), *_mark(event.start_mark))
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver(
    _T + "float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _tag_message(tag: str) -> str:
    shown = "!!" + tag[len(_T) :] if tag.startswith(_T) else tag
    if tag.startswith(_T + "python/"):
        return f"python object tags are not allowed ('{shown}')"
    return f"unsupported YAML tag '{shown}' (plain values only: no tags)"


def _mark(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def load_yaml(text: str) -> tuple[Any, Locator]:
    """Parse one YAML document safely; returns (data, locator). Raises YamlError."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader rejects control characters right here
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        what, mark = _explain(exc)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError(f"invalid YAML: {what}", line, col) from None
    except yaml.reader.ReaderError as exc:
        line, col = _position(text, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        what = f"invalid YAML: control character U+{char:04X} is not allowed"
        raise YamlError(what, line, col) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise YamlError("invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    places: dict[SpecPath, Location] = {}
    if root is None:
        return None, Locator(places)
    places[()] = _loc(root)
    assert loader is not None
    if _expanded_size(root, {}, set()) > _MAX_NODES:
        raise YamlError("the document is too large (aliases expand too far)", *_start(root))
    builder = _Builder(loader, places)
    try:
        data = builder.build(root, ())
    except RecursionError:
        raise YamlError("invalid YAML: nested too deeply", *_start(root)) from None
    return data, Locator(places)


# PyYAML's wording for the most common slips, said the way a person would fix them; True: the
# place to point at is where the construct started (the context mark), not where parsing gave up.
_HINTS = {
    "found character '\\t' that cannot start any token": (
        "a tab character; indent with spaces",
        False,
    ),
    "mapping values are not allowed here": (
        "unexpected ':' (quote a value that contains ': ')",
        False,
    ),
    "expected <block end>": ("this line's indentation does not match the lines above it", False),
    "could not find expected ':'": ("expected 'key: value' (is a ':' missing?)", True),
    "found unexpected end of stream": ("this quoted string is never closed", True),
}


def _explain(exc: yaml.MarkedYAMLError) -> tuple[str, yaml.Mark | None]:
    problem, context = exc.problem or "", exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    for start, (hint, at_start) in _HINTS.items():
        if problem.startswith(start) and (
            start != "found unexpected end of stream" or "quoted" in context
        ):
            return hint, (exc.context_mark or mark) if at_start else mark
    if problem.startswith("but "):  # "expected a single document in the stream, but found..."
        return f"{context}, {problem}", mark
    if context and exc.context_mark is not None:
        return f"{problem} ({context} at line {exc.context_mark.line + 1})", mark
    return problem or context or "cannot parse", mark


def _expanded_size(node: Node, sizes: dict[int, int], active: set[int]) -> int:
    """Node count with every alias expanded, each distinct node measured once."""
    if id(node) in sizes:
        return sizes[id(node)]
    if isinstance(node, ScalarNode) or id(node) in active:
        return 1  # a cycle is reported, located, by the builder
    active.add(id(node))
    children = (
        node.value if isinstance(node, SequenceNode) else [n for kv in node.value for n in kv]
    )
    size = 1 + sum(_expanded_size(child, sizes, active) for child in children)
    active.discard(id(node))
    sizes[id(node)] = size
    return size


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _start(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _loc(node: Node) -> Location:
    return Location(*_start(node))


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, recording where each path starts."""

    def __init__(self, loader: _Loader, places: dict[SpecPath, Location]) -> None:
        self.loader = loader
        self.places = places
        self.active: set[int] = set()

    def build(self, node: Node, path: SpecPath) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if id(node) in self.active:
            raise YamlError("an alias refers to the node that contains it", *_start(node))
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self.check_tag(node, _T + "seq")
                out: list[Any] = []
                for i, item in enumerate(node.value):
                    self.places.setdefault((*path, i), _loc(item))
                    out.append(self.build(item, (*path, i)))
                return out
            assert isinstance(node, MappingNode)
            return self.mapping(node, path)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: MappingNode, path: SpecPath) -> dict[str, Any]:
        """YAML 1.1 merge keys: `<<: *base` (or a list of them) supplies the keys this mapping
        does not write itself; a key written twice in one mapping stays an error."""
        self.check_tag(node, _T + "map")
        explicit, merged = self.pairs(node)
        out: dict[str, Any] = {}
        first: dict[str, Node] = {}
        for key_node, _ in explicit:
            key = self.key(key_node)
            if key in first:
                raise YamlError(
                    f"duplicate key '{key}' (first at line {first[key].start_mark.line + 1})",
                    *_start(key_node),
                )
            first[key] = key_node
        # Merged keys come first (PyYAML's order), earlier merges winning; written keys win.
        for key_node, value_node in [*merged, *explicit]:
            key = self.key(key_node)
            if key in out or (key in first and first[key] is not key_node):
                continue
            self.places.setdefault((*path, key), _loc(key_node))
            out[key] = self.build(value_node, (*path, key))
        return out

    def pairs(self, node: MappingNode) -> tuple[list[tuple[Node, Node]], list[tuple[Node, Node]]]:
        """(the pairs written in `node`, the pairs its `<<` merge keys bring, in precedence)."""
        explicit: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _T + "merge":
                explicit.append((key_node, value_node))
                continue
            subs = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for sub in subs:
                if not isinstance(sub, MappingNode):
                    raise YamlError("'<<' merges a mapping or a list of mappings", *_start(sub))
                if id(sub) in self.active:
                    raise YamlError("an alias refers to the node that contains it", *_start(sub))
                self.active.add(id(sub))
                try:
                    written, more = self.pairs(sub)
                finally:
                    self.active.discard(id(sub))
                merged += written + more
        return explicit, merged

    def key(self, key_node: Node) -> str:
        if not isinstance(key_node, ScalarNode):
            raise YamlError(
                "a mapping key must be a plain name, not a list or mapping", *_start(key_node)
            )
        self.check_tag(key_node, None)
        # Keys stay the text as written: `on:` or `1:` is a name here, never True or 1.
        return str(key_node.value)

    def check_tag(self, node: Node, expected: str | None) -> None:
        # Explicit tags never get here (_Loader refuses them); this guards implicit ones.
        allowed = _PLAIN_TAGS if expected is None else {expected}
        if str(node.tag) not in allowed:
            raise YamlError(_tag_message(str(node.tag)), *_start(node))

    def scalar(self, node: ScalarNode) -> Any:
        if node.tag == _T + "timestamp":
            return str(node.value)  # dates stay text: JSON has no date type
        self.check_tag(node, None)
        plain = node.style is None
        if node.tag == _T + "bool" and plain and node.value.lower() in _AMBIGUOUS_BOOLS:
            raise YamlError(
                f"ambiguous value '{node.value}': write true or false, or quote it as a string",
                *_start(node),
            )
        try:
            value = self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError):
            raise YamlError(f"invalid value '{node.value}'", *_start(node)) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise YamlError(f"'{node.value}' is not a finite number", *_start(node))
        if plain and node.tag in (_T + "int", _T + "float") and _YAML11_ONLY.match(node.value):
            raise YamlError(
                f"'{node.value}' is read by YAML 1.1 as the number {value} (base 60 or octal): "
                f"quote it to keep the text ('{node.value}'), or write the number you mean",
                *_start(node),
            )
        return value
