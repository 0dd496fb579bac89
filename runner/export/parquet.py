"""`--format parquet`: DEST/data/train-00000-of-000NN.parquet, images embedded as
struct<bytes, path> with the `huggingface` schema metadata that makes `datasets` (and the Hub's
viewer) read them as Image columns. Needs pyarrow: `pip install 'fal-batch-runner[export]'`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ManifestError, UsageError
from ..version import DISTRIBUTION
from .rows import Column, ExportRow, ExportTable, ImageRef

ROW_GROUP = 100  # rows per row group, as `datasets` writes image data
_ARROW = {"bool": "bool_", "int": "int64", "float": "float64", "string": "string", "null": "null"}
_DTYPE = {"bool": "bool", "int": "int64", "float": "float64", "string": "string", "null": "null"}


def write_parquet(table: ExportTable, dest: Path, shard_size: int) -> list[Path]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            f"--format parquet needs pyarrow: pip install '{DISTRIBUTION}[export]' (installed "
            f"with pipx: pipx inject {DISTRIBUTION} pyarrow)"
        ) from None
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [pa.field("image", image), pa.field("input", image)]
    fields += [pa.field(c.name, getattr(pa, _ARROW[c.kind])()) for c in table.columns]
    schema = pa.schema(fields, metadata={"huggingface": json.dumps(_hf_info(table.columns))})
    rows = table.rows
    total = max(1, -(-len(rows) // shard_size))
    shards: list[Path] = []
    for number in range(total):
        part = rows[number * shard_size : (number + 1) * shard_size]
        path = dest / "data" / f"train-{number:05d}-of-{total:05d}.parquet"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with pq.ParquetWriter(path, schema) as writer:
                for start in range(0, len(part), ROW_GROUP):
                    batch = [_record(r) for r in part[start : start + ROW_GROUP]]
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        except OSError as exc:
            raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from None
        shards.append(path)
    return shards


def _record(row: ExportRow) -> dict[str, Any]:
    return {"image": _embed(row.output), "input": _embed(row.input), **row.values}


def _embed(image: ImageRef | None) -> dict[str, Any] | None:
    return None if image is None else {"bytes": image.read(), "path": f"{image.name}.{image.ext}"}


def _hf_info(columns: tuple[Column, ...]) -> dict[str, Any]:
    """The `datasets` Features of the table, as its own writer records them."""
    features: dict[str, Any] = {"image": {"_type": "Image"}, "input": {"_type": "Image"}}
    for column in columns:
        features[column.name] = {"dtype": _DTYPE[column.kind], "_type": "Value"}
    return {"info": {"features": features}}
