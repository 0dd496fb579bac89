"""The rows of an export, built from the journal's latest state: one per output image (one per
request without an image for failed or pending ones), the input image found where it is local,
and one plain type per metadata column, so every format gets the same table."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import mimetypes
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ..endpoints import get_endpoint
from ..manifest import FAILED, OK, Record, latest, read_runs

Status = Literal["ok", "failed", "all"]
Kind = Literal["bool", "int", "float", "string", "null"]

# Columns every export has, before the request's input fields and variables.
BASE_COLUMNS = ("key", "output_index", "status", "width", "height")
ERROR_COLUMNS = ("error_type", "error_message")
# Names the formats use for the two image columns; a field or variable of that name is renamed.
RESERVED = frozenset({"image", "input", "file_name", "input_file_name", "id"})
_TAKEN = RESERVED | frozenset(BASE_COLUMNS) | frozenset(ERROR_COLUMNS)

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


@dataclass(frozen=True)
class ImageRef:
    """One image to export: a local file, or bytes decoded from a data: URI."""

    name: str  # a unique stem without dots: "<key>-<index>" or the content's sha256
    ext: str  # "png", "jpg", ...
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


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
class ExportTable:
    columns: tuple[Column, ...]
    rows: tuple[ExportRow, ...]
    input_url_rows: int  # rows whose input image is a remote URL (kept as a URL column)
    missing_inputs: int  # rows whose local input file could not be found (input is null)
    missing_outputs: int  # ok rows whose output file is gone from OUT/images


def build_table(out_dir: Path, status: Status = "ok") -> ExportTable:
    """The export's table for the records of `status` ("all": every key, pending included)."""
    records = [r for r in latest(out_dir).values() if _wanted(r, status)]
    finder = _InputFinder(out_dir)
    raw_rows: list[tuple[str, ImageRef | None, ImageRef | None, dict[str, Any]]] = []
    url_rows = missing_inputs = missing_outputs = 0
    renames = _renames(records)
    for record in records:
        body = record.get("input") or {}
        field_name = _image_field(record, body)
        input_ref = finder.find(record, field_name) if field_name else None
        value = body.get(field_name) if field_name else None
        outputs = [o for o in record.get("outputs") or [] if isinstance(o, dict)]
        if record.get("status") != OK:
            outputs = []
        produced = max(1, len(outputs))
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            url_rows += produced
        elif field_name and input_ref is None:
            missing_inputs += produced
        common = _metadata(record, renames)
        if not outputs:
            raw_rows.append((f"{record['key']}-0", None, input_ref, {**common, "output_index": 0}))
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
            raw_rows.append((f"{record['key']}-{index}", ref, input_ref, values))
    names: dict[str, None] = dict.fromkeys(BASE_COLUMNS)
    if status != OK:
        names.update(dict.fromkeys(ERROR_COLUMNS))
    for _, _, _, values in raw_rows:
        names.update(dict.fromkeys(values))
    columns = tuple(Column(n, _kind(v[3].get(n) for v in raw_rows)) for n in names)
    rows = tuple(
        ExportRow(id_, out, inp, {c.name: _cast(values.get(c.name), c.kind) for c in columns})
        for id_, out, inp, values in raw_rows
    )
    return ExportTable(columns, rows, url_rows, missing_inputs, missing_outputs)


def _wanted(record: Record, status: Status) -> bool:
    return status == "all" or record.get("status") == (OK if status == "ok" else FAILED)


def _image_field(record: Record, body: Mapping[str, Any]) -> str | None:
    """The input field that holds the input image (the endpoint's first file field)."""
    endpoint = get_endpoint(str(record.get("endpoint", "")))
    if endpoint is not None:
        fields = [k for k in body if k in endpoint.file_fields]
    else:
        fields = [k for k, v in body.items() if isinstance(v, str) and _is_file_value(v)]
    return fields[0] if fields else None


def _is_file_value(value: str) -> bool:
    return value.startswith(("sha256:", "data:"))


def _metadata(record: Record, renames: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """key, status, error, then every input field, then every variable that says more."""
    values: dict[str, Any] = {"key": record["key"], "status": record.get("status")}
    error = record.get("error")
    if error:
        values["error_type"] = error.get("type")
        values["error_message"] = error.get("message")
    for prefix, name, plain, value in _named_values(record):
        if prefix == "input" and isinstance(value, str) and value.startswith("data:"):
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
    decoded = _decode_data_uri(uri)
    return "sha256:" + hashlib.sha256(decoded[0]).hexdigest() if decoded else uri[:64]


def _decode_data_uri(uri: str) -> tuple[bytes, str] | None:
    """(bytes, extension) of a base64 data: URI of an image; None for anything else."""
    head, sep, payload = uri.partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    ctype = head[5:].split(";")[0].lower()
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    ext = _EXTENSIONS.get(ctype)
    return (data, ext) if ext else None


def _output_ref(out_dir: Path, key: str, index: int, output: Mapping[str, Any]) -> ImageRef | None:
    rel = str(output.get("file") or "")
    # a journal line is data: take only a plain relative path inside OUT
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or ":" in rel or "\\" in rel or ".." in parts:
        return None
    path = out_dir / rel
    if not path.is_file() or not _intact(path, output):
        return None
    ext = path.suffix.lstrip(".").lower() or _EXTENSIONS.get(str(output.get("content_type")), "")
    return ImageRef(f"{key}-{index}", ext or "png", path=path)


def _intact(path: Path, output: Mapping[str, Any]) -> bool:
    """The file is still the journaled result: an image edited or damaged since the run (even
    at the same size) would put a picture the model never made into the dataset."""
    size, digest = output.get("bytes"), output.get("sha256")
    if isinstance(size, int) and path.stat().st_size != size:
        return False
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        return True  # an old journal line without a digest: nothing to check against
    return _file_sha256(path) == digest


def _file_sha256(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class _InputFinder:
    """A record's input image: decoded from a data: URI, or the local file behind its
    "sha256:<hex>", found from the path the journal or the spec recorded and checked by hash."""

    def __init__(self, out_dir: Path) -> None:
        self._out = out_dir
        self._spec_dirs = _spec_dirs(out_dir)
        self._hashes: dict[Path, str | None] = {}

    def find(self, record: Record, field_name: str) -> ImageRef | None:
        value = (record.get("input") or {}).get(field_name)
        if not isinstance(value, str):
            return None
        if value.startswith("data:"):
            decoded = _decode_data_uri(value)
            if decoded is None:
                return None
            data, ext = decoded
            return ImageRef(hashlib.sha256(data).hexdigest(), ext, data=data)
        if not value.startswith("sha256:"):
            return None  # a remote URL stays a URL: export never fetches
        digest = value[len("sha256:") :]
        kept = sorted((self._out / "inputs").glob(f"{digest}.*"))  # inline data: URIs, kept once
        for path in [*kept, *self._candidates(record, field_name)]:
            if self._sha256(path) == digest:
                ext = path.suffix.lstrip(".").lower()
                if not ext:
                    ext = _EXTENSIONS.get(mimetypes.guess_type(path.name)[0] or "", "png")
                return ImageRef(digest, ext, path=path)
        return None

    def _candidates(self, record: Record, field_name: str) -> Iterable[Path]:
        recorded: Any = record.get("input_files")
        if isinstance(recorded, dict) and isinstance(recorded.get(field_name), str):
            yield from self._resolve(recorded[field_name])
        given = (record.get("vars") or {}).get(field_name)
        if isinstance(given, str) and not given.startswith(("sha256:", "data:", "http")):
            yield from self._resolve(given)

    def _resolve(self, text: str) -> Iterable[Path]:
        path = Path(text)
        if path.is_absolute():
            yield path
            return
        for base in self._spec_dirs:
            yield base / path

    def _sha256(self, path: Path) -> str | None:
        if path not in self._hashes:
            self._hashes[path] = _file_sha256(path)
        return self._hashes[path]


def _spec_dirs(out_dir: Path) -> list[Path]:
    """Folders a spec-relative path may be relative to: the recorded specs' folders (as
    recorded, and from here), and the run folder's parent (a spec's default `output`)."""
    found: dict[Path, None] = {}
    for run in reversed(read_runs(out_dir)):
        spec = run.get("spec")
        if isinstance(spec, str) and spec:
            found[Path(os.path.abspath(Path(spec).parent))] = None
    found[out_dir.parent] = None
    found[out_dir.parent.parent] = None
    return list(found)


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
