"""Missing outputs: finds the `ok` rows whose image file is gone or has the wrong size (one pass
over the journal, a stat per file), and fetches them again from the URL each output records.
Gives the record to journal: `ok` again when every file is back, else `failed` (type
`output_lost`) so the row is never silently "done"."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from .errors import CallError, ManifestError
from .falapi import FalClient
from .manifest import FAILED, MANIFEST, OutputFile, Record, merge, read_records
from .outputs import MAX_OUTPUT_BYTES, NotAnImage, save_image
from .tracking import error_info

# A file fetched again is worth a retry, not the long patience of a fresh result: the URL may
# be gone for good (past the server's retention, or a stopped emulator's port).
REPAIR_ATTEMPTS = 2
_KEY = re.compile(rb'"key":"([^"\\]+)"')
_STATUS = re.compile(rb'"status":"([a-z]+)"')
_OUTPUT = re.compile(rb'\{"file":"([^"\\]+)"[^{}]*\}')
_BYTES = re.compile(rb'"bytes":(\d+)')


def outputs_intact(out_dir: Path) -> Callable[[bytes], bool]:
    """A check of one `ok` journal line (its bytes): every output file it names is there, at
    its recorded size. No JSON parse, a stat per file: for the journal's own read pass."""
    folder = os.fsdecode(out_dir) + os.sep

    def intact(raw: bytes) -> bool:
        for entry in _OUTPUT.finditer(raw):
            try:
                size = os.stat(folder + entry.group(1).decode()).st_size
            except (OSError, ValueError):
                return False
            want = _BYTES.search(entry.group(0))
            if want is not None and size != int(want.group(1)):
                return False
        return True

    return intact


def find_damaged(out_dir: Path, keys: set[str] | None = None) -> dict[str, Record]:
    """The current record of each row whose last line is `ok` with a file missing or of the
    wrong size. One pass over the journal's bytes (no JSON parse of a healthy line) and a
    stat per output file; the few damaged rows are then read in full. `keys`: those rows,
    found already (Journal(out, outputs_intact(out)).damaged), so no pass is needed."""
    damaged: set[str] = set()
    path = out_dir / MANIFEST
    if not path.exists():
        return {}
    if keys is not None:
        return {k: r for k, r in merge(read_records(out_dir)).items() if k in keys} if keys else {}
    try:
        with path.open("rb", buffering=1 << 20) as fh:
            for raw in fh:
                key, status = _KEY.search(raw), _STATUS.search(raw)
                if key is None or status is None or not raw.endswith(b"\n"):
                    continue
                name = key.group(1).decode()
                if status.group(1) == b"ok" and any(
                    not _intact_raw(out_dir, m.group(0), m.group(1)) for m in _OUTPUT.finditer(raw)
                ):
                    damaged.add(name)
                else:
                    damaged.discard(name)
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not damaged:
        return {}
    return {k: r for k, r in merge(read_records(out_dir)).items() if k in damaged}


def _intact_raw(out: Path, entry: bytes, file: bytes) -> bool:
    size = _BYTES.search(entry)
    return _intact(out, {"file": file.decode(), "bytes": int(size.group(1)) if size else None})


def _intact(out: Path, output: Any) -> bool:
    if not isinstance(output, dict) or not isinstance(output.get("file"), str):
        return True  # nothing this runner wrote: nothing to check
    try:
        size = os.stat(out / output["file"]).st_size
    except OSError:
        return False
    want = output.get("bytes")
    return not isinstance(want, int) or size == want


async def repair(client: FalClient, out: Path, record: Record, run_id: str) -> Record:
    """Fetch a damaged row's outputs again; the line to journal (ok, or failed when lost)."""
    outputs: list[OutputFile] = []
    key = record["key"]
    for index, output in enumerate(record.get("outputs", [])):
        if _intact(out, output):
            outputs.append(output)
            continue
        url = output.get("url")
        problem = "" if url else "no URL was recorded for it (an inline output)"
        if url:
            try:
                data = await client.download(url, MAX_OUTPUT_BYTES, REPAIR_ATTEMPTS)
                if hashlib.sha256(data).hexdigest() != output.get("sha256"):
                    raise NotAnImage("the URL now serves other bytes")
                saved = await asyncio.to_thread(save_image, out, key, index, data)
            except (CallError, NotAnImage) as exc:
                problem = f"fetching it again failed: {exc}"
            else:
                outputs.append(OutputFile(**saved, url=url))
                continue
        lost = f"output {output.get('file')} is missing or damaged and {problem}"
        failed: dict[str, Any] = {k: v for k, v in record.items() if k not in ("outputs", "time")}
        failed.update(status=FAILED, run_id=run_id, error=error_info("output_lost", lost))
        return cast(Record, failed)
    fixed: dict[str, Any] = {**record, "outputs": outputs, "run_id": run_id}
    return cast(Record, fixed)
