"""Missing outputs: the `ok` rows whose image file is gone or has the wrong size (found as the
journal is read: outputcheck.py) are fetched again from the URL each output records.
Gives the record to journal: `ok` again when every file is back, `failed` (type
`output_lost`) when the server says a file is gone (404, 410, other bytes, no URL kept), so
the row is never silently "done"; or NotNow when the server or the network failed (no
connection, no answer, 5xx, 429): nothing is journaled, the row keeps its URL, and the next
run fetches it."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..errors import CallError
from ..folder.journal import FAILED, OutputFile, Record, current_records, read_records
from ..folder.outputcheck import output_intact
from .falapi import FalClient
from .outputs import MAX_OUTPUT_BYTES, NotAnImage, save_image
from .retry import is_passing
from .tracking import error_info

# A file fetched again is worth a retry, not the long patience of a fresh result: the URL may
# be gone for good (past the server's retention, or a stopped emulator's port).
REPAIR_ATTEMPTS = 2


def find_damaged(out_dir: Path, keys: set[str]) -> dict[str, Record]:
    """The current record of each of `keys`: the rows whose outputs the journal's read found
    missing or resized (Journal(out, check_outputs=True).damaged)."""
    if not keys:
        return {}
    return {k: r for k, r in current_records(read_records(out_dir)).items() if k in keys}


@dataclass(frozen=True)
class NotNow:
    """A missing output that could not be fetched for a passing reason (the server or the
    network, not the file): the row stays `ok` in the journal, its URL kept."""

    reason: str


async def repair(
    client: FalClient, out: Path, record: Record, run_id: str, *, ended: bool = False
) -> Record | NotNow:
    """Fetch a damaged row's outputs again: the line to journal (ok, or failed when lost), or
    NotNow. `ended`: the server that made the URLs ended with its run (backend local's
    emulator), so none is fetched: each is gone."""
    outputs: list[OutputFile] = []
    key = record["key"]
    for index, output in enumerate(record.get("outputs", [])):
        if output_intact(out, output):
            outputs.append(output)
            continue
        url = output.get("url")
        problem = "no URL was recorded for it (an inline output)"
        if url and ended:
            problem = "the emulator that served it ended with its run (backend local)"
        elif url:
            try:
                data = await client.download(url, MAX_OUTPUT_BYTES, REPAIR_ATTEMPTS)
                if hashlib.sha256(data).hexdigest() != output.get("sha256"):
                    raise NotAnImage("the URL now serves other bytes")
                saved = await asyncio.to_thread(save_image, out, key, index, data)
            except CallError as exc:
                if is_passing(exc):  # the server or the network, not the file: try next run
                    return NotNow(exc.message)
                problem = f"fetching it again failed: {exc}"
            except NotAnImage as exc:
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
