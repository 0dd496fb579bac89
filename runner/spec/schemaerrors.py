"""jsonschema errors reworded for people: one jsonschema error -> (document path, one short
line) for each problem it stands for, and the words for values and paths (`label`, `show`).
The spec's schema errors (load.py) and the endpoint input errors (inputs.py) read the same."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from jsonschema import ValidationError

from ..errors import SpecPath
from ..grid.sources import SOURCE_KEYS as SOURCES

_SOURCES_TEXT = "a list or one of " + ", ".join("{" + k + "}" for k in SOURCES)
_TYPES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "null": "null",
}


def reword(error: ValidationError) -> list[tuple[SpecPath, str]]:
    """One jsonschema error -> (path, one short line) for each problem it stands for."""
    path: SpecPath = tuple(error.absolute_path)
    name, inst, schema, kind = label(path), error.instance, error.schema, error.validator
    if not isinstance(schema, dict):
        return [(path, f"{name}: {error.message}")]
    if kind == "additionalProperties" and isinstance(inst, dict):
        allowed = list(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        where = "" if not path else f" in {_where(path)}"
        extra = [k for k in inst if k not in allowed and not any(p.search(k) for p in patterns)]
        out = [((*path, k), unknown_key(k, allowed, where)) for k in extra]
        if not path:  # no close match: maybe a key to hold anchors
            hint = "; keys starting with x- are ignored (a place for YAML anchors)"
            out = [(p, m if "did you mean" in m else m + hint) for p, m in out]
        return out
    if kind == "required" and isinstance(inst, dict):
        missing = [k for k in schema.get("required", []) if k not in inst]
        where = f" in {name}" if path else ""
        hint = " (add `version: 1` at the top)" if missing == ["version"] and not path else ""
        return [(path, f"missing required key '{k}'{where}{hint}") for k in missing]
    if kind == "oneOf" and len(path) == 2 and path[0] == "matrix":
        return _axis_error(error, path)
    return [(path, describe_error(error, name))]


def _axis_error(error: ValidationError, path: SpecPath) -> list[tuple[SpecPath, str]]:
    inst, axis = error.instance, f"matrix axis '{path[-1]}'"
    if isinstance(inst, list):
        return [(path, f"{axis} must not be empty")]
    if not isinstance(inst, dict):
        return [(path, f"{axis}: expected {_SOURCES_TEXT}, got {show(inst)}")]
    found = [k for k in SOURCES if k in inst]
    if len(found) == 1:
        branch = 1 + SOURCES.index(found[0])
        subs = [e for e in error.context or () if e.relative_schema_path[0] == branch]
        return [p for e in subs for p in reword(e)]
    if len(found) > 1:
        return [(path, f"{axis} takes one source, got {' and '.join(found)}")]
    for key in inst:
        close = difflib.get_close_matches(str(key), SOURCES, n=1, cutoff=0.6)
        if close:
            return [((*path, key), f"unknown key '{key}' in {axis} (did you mean '{close[0]}'?)")]
    return [(path, f"{axis}: expected {_SOURCES_TEXT}, got {show(inst)}")]


def describe_error(error: ValidationError, name: str) -> str:
    """One jsonschema error about the value called `name` -> one short line."""
    kind, inst, arg = error.validator, error.instance, error.validator_value
    if kind == "type":
        wanted = [arg] if isinstance(arg, str) else list(arg)
        return f"{name} must be {' or '.join(_TYPES.get(t, t) for t in wanted)}, got {show(inst)}"
    if kind == "minimum":
        return f"{name} must be at least {arg}, got {show(inst)}"
    if kind == "maximum":
        return f"{name} must be at most {arg}, got {show(inst)}"
    if kind == "exclusiveMinimum":
        return f"{name} must be greater than {arg}, got {show(inst)}"
    if kind == "exclusiveMaximum":
        return f"{name} must be less than {arg}, got {show(inst)}"
    if kind == "enum":
        close = difflib.get_close_matches(str(inst), [str(a) for a in arg], n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{name} must be one of {', '.join(map(str, arg))}, got {show(inst)}{hint}"
    if kind == "not" and isinstance(arg, dict) and "const" in arg:
        return f"{name} must not be {show(arg['const'])}"
    if kind == "const":
        return f"{name} must be {show(arg)}, got {show(inst)}"
    if kind in ("minItems", "maxItems") and name.startswith("'range"):
        return f"{name} must be [start, stop], got {show(inst)}"
    if kind in ("minItems", "minProperties", "minLength") and arg == 1:
        return f"{name} must not be empty"
    if kind in ("minItems", "maxItems"):
        return f"{name} must have {'at least' if kind == 'minItems' else 'at most'} {arg} items"
    return f"{name}: {error.message}"


def unknown_key(key: str, allowed: list[str], where: str = "") -> str:
    """`unknown key 'matrx' (did you mean 'matrix'?)`, or the allowed keys when none is close."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(allowed)}"
    return f"unknown key '{key}'{where} ({hint})"


def _where(path: SpecPath) -> str:
    if len(path) == 2 and path[0] == "matrix":
        return f"matrix axis '{path[1]}'"
    return label(path)


def label(path: SpecPath) -> str:
    """A short quoted name for a document path: ('exclude', 0) -> 'exclude[0]'."""
    if not path:
        return "the spec"
    i = len(path)
    while i > 0 and isinstance(path[i - 1], int):
        i -= 1
    head = str(path[i - 1]) if i > 0 else ""
    return "'" + head + "".join(f"[{p}]" for p in path[i:]) + "'"


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, kept short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        text = json.dumps(value)
        return text if len(text) <= 40 else "a list"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return repr(value)
