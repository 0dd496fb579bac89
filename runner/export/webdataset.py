"""`--format webdataset`: DEST/00000.tar, 00001.tar, ... with, per row, the adjacent members
`<id>.output.<ext>`, `<id>.input.<ext>` (when the input is local) and `<id>.json` (the row's
metadata). Keys have no dots, as WebDataset splits a member name at its first dot."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from ..errors import ManifestError
from .rows import ExportRow, ExportTable

_MTIME = 0  # fixed, so the same run exports to the same bytes


def write_webdataset(table: ExportTable, dest: Path, shard_size: int) -> list[Path]:
    shards: list[Path] = []
    rows = table.rows
    for start in range(0, len(rows), shard_size):
        path = dest / f"{len(shards):05d}.tar"
        try:
            dest.mkdir(parents=True, exist_ok=True)
            with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
                for row in rows[start : start + shard_size]:
                    _add_sample(tar, row)
        except OSError as exc:
            raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from None
        shards.append(path)
    return shards


def _add_sample(tar: tarfile.TarFile, row: ExportRow) -> None:
    if row.output is not None:
        _add(tar, f"{row.id}.output.{row.output.ext}", row.output.read())
    if row.input is not None:
        _add(tar, f"{row.id}.input.{row.input.ext}", row.input.read())
    _add(tar, f"{row.id}.json", json.dumps(dict(row.values), ensure_ascii=False).encode())


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), _MTIME, 0o644
    tar.addfile(info, io.BytesIO(data))
