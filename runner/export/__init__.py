"""`runner export`: a run folder (finished or still running) as a dataset that people's
loaders read: imagefolder, parquet or webdataset folders, or one csv or jsonl file.
Reads the journal only (never takes the run's lock, never touches the network). DEST is built
under a hidden sibling name and renamed when complete (staging.py): it is absent or whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ManifestError, UsageError
from ..folder.names import MANIFEST
from ..folder.staging import check_replaceable, staged
from .files import FOLDER_FILES
from .imagefolder import write_imagefolder
from .parquet import write_parquet
from .rows import ExportTable, Status, build_table
from .tables import write_csv, write_jsonl
from .webdataset import write_webdataset

__all__ = ["FORMATS", "ExportSummary", "export"]

FORMATS = ("imagefolder", "parquet", "webdataset", "csv", "jsonl")
FILE_FORMATS = ("csv", "jsonl")  # DEST is a file; for the others a folder
DEFAULT_SHARD_SIZE = 1000  # rows per parquet file or tar


@dataclass(frozen=True)
class ExportSummary:
    dest: Path
    format: str
    rows: int
    images: int  # rows with an output image
    inputs: int  # rows with an input image exported
    input_urls: int  # rows whose input is a remote URL (a column, not an image)
    missing_inputs: int  # local inputs not found: their input column is empty
    missing_outputs: int  # ok rows whose image file is gone from the run folder
    files: tuple[Path, ...]  # what was written: metadata file, shards, or the file


def export(
    out_dir: Path,
    fmt: str,
    dest: Path,
    *,
    status: Status = "ok",
    shard_size: int = DEFAULT_SHARD_SIZE,
    folder_files: int = FOLDER_FILES,
) -> ExportSummary:
    """Write the run in `out_dir` as `fmt` to `dest`; the rows of `status` only."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    if shard_size < 1:
        raise UsageError("--shard-size must be at least 1")
    if not (out_dir / MANIFEST).is_file():
        raise ManifestError(f"no {MANIFEST} in {out_dir}: run `runner run SPEC` first")
    _check_dest(dest, fmt, out_dir)
    table = build_table(out_dir, status)
    if not table.rows:
        which = "" if status == "all" else f" {status}"
        raise UsageError(f"nothing to export: no{which} requests in {out_dir} yet")
    if fmt == "imagefolder" and not any(row.output for row in table.rows):
        # `datasets` reads an imagefolder only when some row has an image
        raise UsageError(
            "--format imagefolder needs rows with an output image; "
            "for failed requests use --format jsonl or csv"
        )
    folder = fmt not in FILE_FORMATS
    with staged(dest, folder=folder, shown=dest) as partial:
        if fmt == "imagefolder":
            files = write_imagefolder(table, partial, folder_files)
        elif fmt == "parquet":
            files = write_parquet(table, partial, shard_size)
        elif fmt == "webdataset":
            files = write_webdataset(table, partial, shard_size)
        elif fmt == "csv":
            files = write_csv(table, partial)
        else:
            files = write_jsonl(table, partial)
    written = [dest / f.relative_to(partial) for f in files] if folder else [dest]
    return _summary(table, dest, fmt, written)


def _check_dest(dest: Path, fmt: str, out_dir: Path) -> None:
    # csv/jsonl replace DEST: inside the run folder that could be its journal (every paid
    # result's record), and anything else there mixes with what runs, merges and reports read
    if dest.resolve().is_relative_to(out_dir.resolve()):
        raise UsageError(
            f"--to {dest} is inside the run folder {out_dir}; write the export outside it"
        )
    if fmt in FILE_FORMATS:
        if dest.is_dir():
            raise UsageError(
                f"--to {dest} is a folder; --format {fmt} writes one file: name a file"
            )
        return
    if dest.exists() and not dest.is_dir():
        raise UsageError(
            f"--to {dest} is a file; --format {fmt} writes a folder: name a new folder"
        )
    if dest.is_dir() and any(dest.iterdir()):
        raise UsageError(
            f"--to {dest} exists and is not an empty folder; name a new folder "
            f"(an export never mixes with older files)"
        )
    check_replaceable(dest, dest)


def _summary(table: ExportTable, dest: Path, fmt: str, files: list[Path]) -> ExportSummary:
    rows = table.rows
    return ExportSummary(
        dest=dest,
        format=fmt,
        rows=len(rows),
        images=sum(r.output is not None for r in rows),
        inputs=sum(r.input is not None for r in rows),
        input_urls=table.input_url_rows,
        missing_inputs=table.missing_inputs,
        missing_outputs=table.missing_outputs,
        files=tuple(files),
    )
