"""Endpoint descriptions: one JSON file per endpoint under schemas/endpoints/ (input and output
JSON Schemas, which inputs are files, pricing). The runner and the emulator both read them here,
so adding an endpoint is a new file, not new code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator


@dataclass(frozen=True)
class Endpoint:
    id: str  # e.g. "fal-ai/flux-1/dev/image-to-image"
    title: str
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any]
    file_fields: frozenset[str]  # input fields that take a file (URL, data: URI, local path)
    usd_per_megapixel: float | None
    # The endpoint file's "pricing" and "timing" blocks as written (texts for `runner fields`
    # and `runner plan`): rounding, the size assumed for a remote input, seconds per request.
    pricing: Mapping[str, Any] = field(default_factory=dict)
    timing: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fields(self) -> Mapping[str, Any]:
        """Input field name -> its JSON Schema."""
        props: Mapping[str, Any] = self.input_schema.get("properties", {})
        return props

    @property
    def input_validator(self) -> Draft202012Validator:
        return _input_validator(self.id)


def schemas_dir() -> Path:
    """The shipped schemas folder (inside the wheel, or the repo's top-level schemas/)."""
    try:
        packaged = Path(str(resources.files("runner.schemas")))
        if (packaged / "job.schema.json").exists():
            return packaged
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "schemas"


def job_schema() -> Path:
    """The installed job schema: what `runner schema` prints, and what editors are pointed at."""
    return schemas_dir() / "job.schema.json"


@cache
def job_schema_document() -> Mapping[str, Any]:
    """The job schema, parsed once (read it, never change it)."""
    document: Mapping[str, Any] = json.loads(job_schema().read_text(encoding="utf-8"))
    return document


def job_default(*path: str) -> Any:
    """The `default` the job schema writes for a spec key, e.g. job_default("execution",
    "retries"). The schema is the one place a default is written: editors show it, the docs
    quote it, and the value types and the loader take it from here."""
    node = job_schema_document()
    for name in path:
        node = node["properties"][name]
    return node["default"]


@cache
def all_endpoints() -> Mapping[str, Endpoint]:
    found: dict[str, Endpoint] = {}
    for path in sorted((schemas_dir() / "endpoints").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        props = doc["input"].get("properties", {})
        found[doc["endpoint_id"]] = Endpoint(
            id=doc["endpoint_id"],
            title=doc.get("title", doc["endpoint_id"]),
            input_schema=doc["input"],
            output_schema=doc.get("output", {}),
            file_fields=frozenset(k for k, v in props.items() if v.get("x-runner-file")),
            usd_per_megapixel=doc.get("pricing", {}).get("usd_per_megapixel"),
            pricing=doc.get("pricing", {}),
            timing=doc.get("timing", {}),
        )
    return found


def get_endpoint(endpoint_id: str) -> Endpoint | None:
    return all_endpoints().get(endpoint_id)


@cache
def _input_validator(endpoint_id: str) -> Draft202012Validator:
    return Draft202012Validator(all_endpoints()[endpoint_id].input_schema)
