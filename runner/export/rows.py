"""The rows of an export, built from the journal's latest state: one per output image (one per
request without an image for failed or pending ones), the input image found where it is local,
and one plain type per metadata column, so every format gets the same table."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..datauri import is_data_uri
from ..folder.integrity import (
    EXTENSIONS,
    HeldImage,
    InputChecker,
    check_output,
    decode_data_uri,
    image_fields,
)
from ..folder.journal import FAILED, OK, Record, latest
from ..keys import is_url

Status = Literal["ok", "failed", "all"]
Kind = Literal["bool", "int", "float", "string", "null"]

# Columns every export has, before the request's input fields and variables.
BASE_COLUMNS = ("key", "output_index", "status", "width", "height")
ERROR_COLUMNS = ("error_type", "error_message")
# Names the formats use for the two image columns; a field or variable of that name is renamed.
RESERVED = frozenset({"image", "input", "file_name", "input_file_name", "id"})
_TAKEN = RESERVED | frozenset(BASE_COLUMNS) | frozenset(ERROR_COLUMNS)


@dataclass(frozen=True)
class ImageRef(HeldImage):
    """One image to export: a local file, or bytes decoded from a data: URI."""

    name: str  # a unique stem without dots: "<key>-<index>" or the content's sha256
    ext: str  # "png", "jpg", ...
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind


@dataclass(frozen=True)
class ExportRow:
    id: str  # "<key>-<index>": unique, no dots (a WebDataset key, a file stem)
    output: ImageRef | None
    input: ImageRef | None
    values: Mapping[str, Any]  # column name -> value of the column's kind, or None


@dataclass(frozen=True)
class _RawRow:
    """An ExportRow before its values are cast to their columns' kinds (known once every row
    is seen)."""

    id: str
    output: ImageRef | None
    input: ImageRef | None
    values: dict[str, Any]


@dataclass(frozen=True)
class ExportTable:
    columns: tuple[Column, ...]
    rows: tuple[ExportRow, ...]
    input_url_rows: int  # rows whose input image is a remote URL (kept as a URL column)
    missing_inputs: int  # rows whose local input file could not be found (input is null)
    missing_outputs: int  # ok rows whose output file is gone from OUT/images


def build_table(out_dir: Path, status: Status = "ok") -> ExportTable:
    """The export's table for the records of `status` ("all": every key, pending included)."""
    records = [r for r in latest(out_dir).values() if _wanted(r, status)]
    inputs = InputChecker(out_dir)
    raw_rows: list[_RawRow] = []
    url_rows = missing_inputs = missing_outputs = 0
    renames = _renames(records)
    for record in records:
        body = record.get("input") or {}
        field_name = next(iter(image_fields(record)), None)
        input_ref = _input_ref(inputs, record, field_name) if field_name else None
        value = body.get(field_name) if field_name else None
        outputs = [o for o in record.get("outputs") or [] if isinstance(o, dict)]
        if record.get("status") != OK:
            outputs = []
        produced = max(1, len(outputs))
        if is_url(value):
            url_rows += produced
        elif field_name and input_ref is None:
            missing_inputs += produced
        common = _metadata(record, renames)
        if not outputs:
            raw_rows.append(
                _RawRow(f"{record['key']}-0", None, input_ref, {**common, "output_index": 0})
            )
            continue
        for index, output in enumerate(outputs):
            ref = _output_ref(out_dir, record["key"], index, output)
            missing_outputs += ref is None
            values = {
                **common,
                "output_index": index,
                "width": output.get("width"),
                "height": output.get("height"),
            }
            raw_rows.append(_RawRow(f"{record['key']}-{index}", ref, input_ref, values))
    names: dict[str, None] = dict.fromkeys(BASE_COLUMNS)
    if status != OK:
        names.update(dict.fromkeys(ERROR_COLUMNS))
    for raw in raw_rows:
        names.update(dict.fromkeys(raw.values))
    columns = tuple(Column(n, _kind(raw.values.get(n) for raw in raw_rows)) for n in names)
    rows = tuple(
        ExportRow(
            raw.id,
            raw.output,
            raw.input,
            {c.name: _cast(raw.values.get(c.name), c.kind) for c in columns},
        )
        for raw in raw_rows
    )
    return ExportTable(columns, rows, url_rows, missing_inputs, missing_outputs)


def _wanted(record: Record, status: Status) -> bool:
    return status == "all" or record.get("status") == (OK if status == "ok" else FAILED)


def _metadata(record: Record, renames: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """key, status, error, then every input field, then every variable that says more."""
    values: dict[str, Any] = {"key": record["key"], "status": record.get("status")}
    error = record.get("error")
    if error:
        values["error_type"] = error.get("type")
        values["error_message"] = error.get("message")
    for prefix, name, plain, value in _named_values(record):
        if prefix == "input" and isinstance(value, str) and is_data_uri(value):
            value = _data_ref(value)  # the bytes are the input image column; keep identity only
        values[name if plain else renames[prefix, name]] = value
    return values


def _named_values(record: Record) -> Iterator[tuple[str, str, bool, Any]]:
    """(origin, name, keeps its name, value) of every input field ("input") and of every
    variable that says more than the field of its name ("var")."""
    body = record.get("input") or {}
    for name, value in body.items():
        yield "input", name, name not in _TAKEN, value
    for name, value in (record.get("vars") or {}).items():
        if name in body and _same(body[name], value):
            continue  # an axis that sets a field: its column is the field's
        yield "var", name, name not in _TAKEN and name not in body, value


def _renames(records: Iterable[Record]) -> dict[tuple[str, str], str]:
    """The column of each field or variable that cannot keep its name (a reserved name, or a
    variable beside a field of its name): `<origin>_<name>`, the prefix repeated until no
    other column has that name (`var_key`, or `var_var_key` beside a variable `var_key`).
    Names kept as they are win over made ones, so every value has a column of its own."""
    plain: dict[str, None] = {}
    wanted: dict[tuple[str, str], None] = {}
    for record in records:
        for prefix, name, keeps, _ in _named_values(record):
            if keeps:
                plain[name] = None
            else:
                wanted[prefix, name] = None
    taken = set(_TAKEN) | set(plain)
    renames: dict[tuple[str, str], str] = {}
    for prefix, name in wanted:
        column = f"{prefix}_{name}"
        while column in taken:
            column = f"{prefix}_{column}"
        taken.add(column)
        renames[prefix, name] = column
    return renames


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _data_ref(uri: str) -> str:
    decoded = decode_data_uri(uri)
    return "sha256:" + hashlib.sha256(decoded.data).hexdigest() if decoded else uri[:64]


def _output_ref(out_dir: Path, key: str, index: int, output: Mapping[str, Any]) -> ImageRef | None:
    """The output's file if it is still the journaled result: an image edited or damaged since
    the run (even at the same size) would put a picture the model never made into the dataset."""
    found = check_output(out_dir, output)
    if found.path is None:
        return None
    ext = found.path.suffix.lstrip(".").lower() or EXTENSIONS.get(str(output.get("content_type")))
    return ImageRef(f"{key}-{index}", ext or "png", path=found.path)


def _input_ref(inputs: InputChecker, record: Record, name: str) -> ImageRef | None:
    """The input image exactly as sent (a local file checked by its sha256), else None."""
    found = inputs.check(record, name)
    if found is None or not found.intact or found.digest is None:
        return None
    return ImageRef(found.digest, found.ext, path=found.path, data=found.data)


def _kind(values: Iterable[Any]) -> Kind:
    kinds = {_kind_of(v) for v in values if v is not None}
    if not kinds:
        return "null"
    if len(kinds) == 1:
        return kinds.pop()
    return "float" if kinds == {"int", "float"} else "string"


def _kind_of(value: Any) -> Kind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**63 else "string"
    if isinstance(value, float):
        return "float"
    return "string"


def _cast(value: Any, kind: Kind) -> Any:
    """A value as its column's kind: nested values and mixed columns become JSON text."""
    if value is None or kind == "null":
        return None
    if kind == "float":
        return float(value)
    if kind == "string" and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, sort_keys=False, default=str)
    return value
