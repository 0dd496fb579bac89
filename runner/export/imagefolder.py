"""`--format imagefolder`: DEST/train/metadata.jsonl beside the images, the layout that
`load_dataset("imagefolder", data_dir=DEST)` reads: `file_name` becomes the `image` column and
`input_file_name` a second image column, `input`."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ManifestError
from .files import FOLDER_FILES, Placer
from .rows import ExportTable

SPLIT = "train"
METADATA = "metadata.jsonl"


def write_imagefolder(
    table: ExportTable, dest: Path, folder_files: int = FOLDER_FILES
) -> list[Path]:
    split = dest / SPLIT
    outputs = Placer(split, "images", folder_files)
    inputs = Placer(split, "inputs", folder_files)
    path = split / METADATA
    try:
        split.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for row in table.rows:
                line = {
                    "file_name": outputs.place(row.output) if row.output else None,
                    "input_file_name": inputs.place(row.input) if row.input else None,
                    **row.values,
                }
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from None
    return [path]
