"""Checks a request body against the endpoint's input JSON Schema and phrases every problem the
way fal's (pydantic) models do: `{"loc": ["body", field], "msg", "type"}` items for a 422."""

from __future__ import annotations

from typing import Any

from jsonschema.exceptions import ValidationError

from ..endpoints import Endpoint

Detail = list[dict[str, Any]]

_BOUNDS = {
    "minimum": ("greater than or equal to", "greater_than_equal", "ge"),
    "maximum": ("less than or equal to", "less_than_equal", "le"),
    "exclusiveMinimum": ("greater than", "greater_than", "gt"),
    "exclusiveMaximum": ("less than", "less_than", "lt"),
}
_TYPE_NAMES = {
    "integer": "int",
    "number": "float",
    "string": "string",
    "boolean": "bool",
    "object": "dict",
    "array": "list",
}


def validate_input(endpoint: Endpoint, payload: Any) -> Detail:
    """Every schema violation as fal-style 422 detail items (empty when the body is valid)."""
    if not isinstance(payload, dict):
        return [
            {
                "loc": ["body"],
                "msg": "Input should be a valid dictionary",
                "type": "model_attributes_type",
                "input": payload,
            }
        ]
    errors = sorted(
        endpoint.input_validator.iter_errors(payload),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    detail: Detail = []
    for error in errors:
        detail.extend(_items(error, payload))
    return detail


def _items(error: ValidationError, payload: dict[str, Any]) -> Detail:
    loc: list[Any] = ["body", *error.absolute_path]
    value = error.instance
    kind, limit = error.validator, error.validator_value
    if kind == "required":
        missing = [f for f in limit if f not in payload]
        return [{"loc": ["body", f], "msg": "Field required", "type": "missing"} for f in missing]
    if kind == "additionalProperties":
        extra = [k for k in payload if k not in error.schema.get("properties", {})]
        return [
            {
                "loc": ["body", k],
                "msg": "Extra inputs are not permitted",
                "type": "extra_forbidden",
                "input": payload[k],
            }
            for k in extra
        ]
    if kind in _BOUNDS:
        word, type_name, ctx = _BOUNDS[str(kind)]
        return [
            {
                "loc": loc,
                "msg": f"Input should be {word} {limit}",
                "type": type_name,
                "input": value,
                "ctx": {ctx: limit},
            }
        ]
    if kind == "type":
        wanted = limit if isinstance(limit, list) else [limit]
        names = [_TYPE_NAMES.get(str(w), str(w)) for w in wanted if w != "null"]
        name = names[0] if names else "none"
        article = "an" if name[0] in "aeiou" else "a"
        return [
            {
                "loc": loc,
                "msg": f"Input should be {article} valid {_long(name)}",
                "type": f"{name}_type",
                "input": value,
            }
        ]
    if kind == "enum":
        options = " or ".join(repr(v) for v in limit)
        return [{"loc": loc, "msg": f"Input should be {options}", "type": "enum", "input": value}]
    if kind == "minLength":
        return [
            {
                "loc": loc,
                "msg": f"String should have at least {limit} character"
                + ("s" if limit != 1 else ""),
                "type": "string_too_short",
                "input": value,
            }
        ]
    return [{"loc": loc, "msg": error.message, "type": "value_error", "input": value}]


def _long(name: str) -> str:
    return {"int": "integer", "float": "number", "bool": "boolean", "dict": "dictionary"}.get(
        name, name
    )
