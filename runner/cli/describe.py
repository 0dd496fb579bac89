"""An endpoint's description in words: its input fields (type, range, default, meaning) and its
price and time basis, read from the endpoint file, for `runner fields` and `runner plan`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..endpoints import Endpoint

DEFAULT_ENDPOINT = "fal-ai/flux-1/dev/image-to-image"


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str  # "number", "integer or null", "one of jpeg, png"
    required: bool
    range: str  # "0.01 to 1", or "" when unbounded
    default: str  # as JSON ("0.95", "null"), or "" when the field has none
    description: str


def field_docs(endpoint: Endpoint) -> list[FieldDoc]:
    """Every input field of the endpoint, in the endpoint file's order."""
    required = set(endpoint.input_schema.get("required", []))
    docs = []
    for name, schema in endpoint.fields.items():
        default = json.dumps(schema["default"]) if "default" in schema else ""
        if name in endpoint.file_fields:
            kind = f"{_type(schema)} (a local path, http(s) URL or data: URI)"
        else:
            kind = _type(schema)
        docs.append(
            FieldDoc(
                name=name,
                type=kind,
                required=name in required,
                range=_range(schema),
                default=default,
                description=str(schema.get("description", "")),
            )
        )
    return docs


def price_basis(endpoint: Endpoint) -> str:
    """One line: what a request costs and how it is counted."""
    pricing: Mapping[str, Any] = endpoint.pricing
    price = endpoint.usd_per_megapixel
    if price is None:
        return "price: unknown (the endpoint file states none)"
    unit = pricing.get("unit", "output megapixel")
    line = f"price: ${price:g} per {unit}"
    if "output_size" in pricing:
        line += f"; {pricing['output_size']}"
    if "remote_input_megapixels" in pricing:
        line += (
            f"; an input given as a URL (size unknown before it is fetched) is assumed "
            f"{pricing['remote_input_megapixels']:g} MP"
        )
    return line


def time_basis(endpoint: Endpoint) -> str:
    """One line: the time assumption behind plan's estimate, or "" when the file has none."""
    timing: Mapping[str, Any] = endpoint.timing
    seconds = timing.get("seconds_per_request")
    if seconds is None:
        return ""
    line = f"time: about {seconds:g} s per request on fal"
    if "basis" in timing:
        line += f" ({timing['basis']})"
    if "source" in timing:
        line += f"; {timing['source']}"
    return line


def _type(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v).strip('"') for v in schema["enum"])
    kind = schema.get("type", "any")
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def _range(schema: Mapping[str, Any]) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}" if "minimum" in schema else f"more than {low}"
    if high is not None:
        return f"at most {high}" if "maximum" in schema else f"less than {high}"
    if "minLength" in schema:
        return "not empty"
    return ""
