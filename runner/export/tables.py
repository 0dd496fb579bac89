"""`--format csv` and `--format jsonl`: one row per image in one file, image columns as file
paths (absolute, so the file works from any folder), for spreadsheets and `jq`."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..errors import ManifestError
from .rows import ExportTable, ImageRef


def write_csv(table: ExportTable, dest: Path) -> list[Path]:
    names = ["image", "input", *(c.name for c in table.columns)]
    with _open(dest) as fh:
        writer = csv.DictWriter(fh, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for row in _rows(table):
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return [dest]


def write_jsonl(table: ExportTable, dest: Path) -> list[Path]:
    with _open(dest) as fh:
        for row in _rows(table):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return [dest]


def _rows(table: ExportTable) -> Iterator[dict[str, Any]]:
    for row in table.rows:
        yield {"image": _path(row.output), "input": _path(row.input), **row.values}


def _path(image: ImageRef | None) -> str | None:
    # an input decoded from a data: URI has no file: the input column stays empty
    return os.path.abspath(image.path) if image and image.path else None


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


@contextlib.contextmanager
def _open(path: Path) -> Iterator[TextIO]:
    try:
        with path.open("w", encoding="utf-8", newline="") as fh:
            yield fh
    except OSError as exc:
        raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from None
