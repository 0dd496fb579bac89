"""A request's endpoint inputs checked: its body against the endpoint's input schema (each
distinct value once; plain field schemas by a fast path, whole bodies only for a schema the
per-field path cannot follow), and its local input images decoded as the server would."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from ..endpoints import Endpoint
from ..errors import SpecPath
from ..grid.localimages import inspect as inspect_image
from .schemaerrors import describe_error, label

# Top-level input-schema keywords the per-field fast path understands; anything else (allOf,
# if/then, dependentRequired...) falls back to validating each whole body.
_SIMPLE = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "title",
    "description",
    "$schema",
    "$id",
}


# Values checked once per distinct value: scalars keyed by (type, value) as they are (1, 1.0
# and True are different inputs), anything else by its JSON text.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CACHED = 65_536


# Field-schema keywords that only annotate: they never make a value invalid.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment"})


def plain_check(schema: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    """For a field schema of a plain type with bounds (string with lengths, integer or number
    with minimum/maximum, boolean, null, or a list of those types), a test that a value
    plainly satisfies it; None for any other schema. The test may say False of a valid
    value (jsonschema then decides), never True of an invalid one."""
    extra = {k for k in schema if k not in _ANNOTATIONS and not k.startswith("x-")}
    if not extra <= {"type", "minLength", "maxLength", "minimum", "maximum"}:
        return None
    types = schema.get("type")
    kinds = [types] if isinstance(types, str) else types
    if not isinstance(kinds, list) or not kinds:
        return None
    low, high = schema.get("minimum"), schema.get("maximum")
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
    if not all(isinstance(b, int | float) for b in (low, high) if b is not None):
        return None
    if not isinstance(shortest, int) or not isinstance(longest, int | None):
        return None
    if not set(kinds) <= {"string", "integer", "number", "boolean", "null"}:
        return None

    def fine(value: Any) -> bool:
        if value is None:
            return "null" in kinds
        if isinstance(value, bool):
            return "boolean" in kinds
        if isinstance(value, str):
            return (
                "string" in kinds
                and shortest <= len(value)
                and (longest is None or len(value) <= longest)
            )
        number = (type(value) is int and ("integer" in kinds or "number" in kinds)) or (
            type(value) is float and "number" in kinds and math.isfinite(value)
        )
        return number and (low is None or value >= low) and (high is None or value <= high)

    return fine


def _cache_key(name: str, value: Any) -> tuple[str, type, Any]:
    """Where a field value's problems are cached (see _SCALARS)."""
    if value.__class__ in _SCALARS:
        return (name, value.__class__, value)
    return (name, value.__class__, json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True, slots=True)
class InputProblem:
    """What is wrong with a request body, and the input field it is about (None: the body)."""

    field: str | None
    message: str


class InputSchemaChecker:
    """Checks request bodies against the endpoint's input schema, each distinct value once."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        schema = endpoint.input_schema
        self.simple = set(schema) <= _SIMPLE and schema.get("additionalProperties") in (None, False)
        self.closed = schema.get("additionalProperties") is False
        self.required: list[str] = list(schema.get("required", []))
        self.fields = endpoint.fields
        self.validators = {k: Draft202012Validator(v) for k, v in self.fields.items()}
        self.plain = {k: f for k, v in self.fields.items() if (f := plain_check(v)) is not None}
        self.cache: dict[tuple[str, type, Any], list[str]] = {}

    def problems(self, body: Mapping[str, Any]) -> list[InputProblem]:
        if not self.simple:
            errors = self.endpoint.input_validator.iter_errors(dict(body))
            return [self._describe(e, None) for e in errors]
        out: list[InputProblem] = []
        for name in self.required:
            if name not in body:
                msg = f"missing required field '{name}' (set it in defaults, matrix or include)"
                out.append(InputProblem(None, msg))
        for name, value in body.items():
            if name not in self.validators:
                if self.closed:
                    out.append(
                        InputProblem(name, f"'{name}' is not an input of {self.endpoint.id}")
                    )
                continue
            found = self.cache.get(_cache_key(name, value))
            if found is None:
                found = self.field_problems(name, value)
            if found:  # most values are fine: no generator for them
                out.extend(InputProblem(name, m) for m in found)
        return out

    def field_problems(self, name: str, value: Any) -> list[str]:
        """What is wrong with one value of the input field `name` (cached per value)."""
        plainly_fine = self.plain.get(name)
        if plainly_fine is not None and plainly_fine(value):
            return []  # a million distinct prompts need no million jsonschema runs
        cache_key = _cache_key(name, value)
        if cache_key not in self.cache:
            if len(self.cache) >= _CACHED:  # a million distinct seeds must not pile up
                self.cache.clear()
            found = self.validators[name].iter_errors(value)
            self.cache[cache_key] = [self._describe(e, name).message for e in found]
        return self.cache[cache_key]

    def _describe(self, error: ValidationError, field: str | None) -> InputProblem:
        path: SpecPath = ((field,) if field else ()) + tuple(error.absolute_path)
        name = label(path) if path else "the input"
        if error.validator == "required" and not path:
            missing = [k for k in error.validator_value if k not in error.instance]
            msg = f"missing required field '{missing[0]}' (set it in defaults, matrix or include)"
            return InputProblem(None, msg)
        first = path[0] if path and isinstance(path[0], str) else None
        return InputProblem(first, describe_error(error, name))


def not_an_image(path: Path, base: Path | None = None) -> str | None:
    """Why a local input file is no image the server could decode, or None (the whole image
    is decoded: localimages.py). The file is named relative to `base` (the spec's folder)
    when it lies inside it."""
    problem = inspect_image(path).problem
    if problem is None:
        return None
    try:
        shown = str(path.relative_to(base)) if base is not None else path.name
    except ValueError:
        shown = str(path)
    return f"{shown} {problem}"
