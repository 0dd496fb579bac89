"""The results journal: OUT/manifest.jsonl, append-only, one JSON object a line, the last line
for a key is its state. Defines the line format; reads a journal back (ignoring a torn last
line) and appends to it.

Durability: every line is written and flushed to the OS before the runner takes the next step,
so a crash or kill -9 loses nothing. fsync runs at most once a second and at close: a power cut
can lose the last second of lines; a lost `submitted` line means that request is sent again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

from .errors import ManifestError

MANIFEST = "manifest.jsonl"
RUNS = "runs.jsonl"
FSYNC_INTERVAL = 1.0

# Line statuses. `submitting` is written just before a submit goes out, so a crash in that
# window is known on resume (the new submit is counted as a possible duplicate).
SUBMITTING, SUBMITTED, OK, FAILED = "submitting", "submitted", "ok", "failed"


class OutputFile(TypedDict):
    file: str  # relative to the output folder
    sha256: str
    width: int
    height: int
    content_type: str


class ErrorInfo(TypedDict):
    # validation | timeout | queue_timeout | http | transport | download | output | input |
    # ambiguous | fal's own error type of a completed request (runner_disconnected, ...)
    type: str
    message: str
    http_status: int | None


class Record(TypedDict, total=False):
    key: str
    status: str
    endpoint: str
    backend: str
    run_id: str
    input: dict[str, Any]  # the body sent, local files as "sha256:<hex>"
    input_files: dict[str, str]  # field -> absolute path of the local file behind its sha256
    vars: dict[str, Any]
    request_id: str | None
    outputs: list[OutputFile]
    result: dict[str, Any]  # the answer's other fields: seed, has_nsfw_concepts, timings
    error: ErrorInfo
    attempts: int  # submissions made for this key, all runs together
    possible_duplicates: int  # submissions that may have been charged twice
    resubmitted: list[str]  # why a submission was repeated (lost result, infra error...)
    submitted_at: str  # when the server accepted the submission (UTC, ISO 8601), this run
    time: str  # when this line was written (UTC, ISO 8601)


@dataclass(frozen=True)
class KeyState:
    status: str
    request_id: str | None
    attempts: int
    possible_duplicates: int
    error_type: str | None = None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_records(out_dir: Path) -> Iterator[Record]:
    """Every complete line of the journal, in order (a torn or corrupt line is skipped)."""
    path = out_dir / MANIFEST
    if not path.exists():
        return
    try:
        with path.open("rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    return  # torn tail of a crash
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("key"), str):
                    yield record  # type: ignore[misc]
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None


def latest(out_dir: Path) -> dict[str, Record]:
    """The last record of each key (the journal's meaning), in first-seen order."""
    state: dict[str, Record] = {}
    for record in read_records(out_dir):
        state[record["key"]] = record
    return state


class Journal:
    """Append side of the manifest, with the per-key state needed to resume."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / MANIFEST
        self._state: dict[str, KeyState] = {}
        for record in read_records(out_dir):
            self._state[record["key"]] = KeyState(
                record.get("status", FAILED),
                record.get("request_id"),
                int(record.get("attempts", 0)),
                int(record.get("possible_duplicates", 0)),
                _error_type(record),
            )
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._drop_torn_tail()
            self._fh: BinaryIO = self.path.open("ab")
        except OSError as exc:
            raise ManifestError(
                f"cannot write to the output folder {out_dir}: {exc.strerror or exc}"
            ) from None
        self._last_sync = time.monotonic()

    def state(self, key: str) -> KeyState | None:
        return self._state.get(key)

    def append(self, record: Record) -> None:
        record["time"] = utc_now()
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            self._fh.write(line.encode())
            self._fh.flush()
            if time.monotonic() - self._last_sync > FSYNC_INTERVAL:
                os.fsync(self._fh.fileno())
                self._last_sync = time.monotonic()
        except OSError as exc:
            raise ManifestError(
                f"cannot write the journal {self.path}: {exc.strerror or exc}"
            ) from None
        self._state[record["key"]] = KeyState(
            record["status"],
            record.get("request_id"),
            record.get("attempts", 0),
            record.get("possible_duplicates", 0),
            _error_type(record),
        )

    def close(self) -> None:
        # Failures here were already reported by append; the journal stays resumable.
        with contextlib.suppress(OSError, ValueError):
            self._fh.flush()
            os.fsync(self._fh.fileno())
        with contextlib.suppress(OSError):
            self._fh.close()

    def _drop_torn_tail(self) -> None:
        """A crash can leave half a line: cut it so the next line starts clean."""
        if not self.path.exists():
            return
        with self.path.open("rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            # walk back to the last newline
            pos = size
            while pos > 0:
                step = min(65536, pos)
                fh.seek(pos - step)
                chunk = fh.read(step)
                idx = chunk.rfind(b"\n")
                if idx >= 0:
                    fh.truncate(pos - step + idx + 1)
                    return
                pos -= step
            fh.truncate(0)


def _error_type(record: Record) -> str | None:
    error = record.get("error")
    return error["type"] if error else None


def append_run(out_dir: Path, info: dict[str, Any]) -> None:
    """One line per invocation in OUT/runs.jsonl: spec hash, tool version, counts."""
    try:
        with (out_dir / RUNS).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(info, ensure_ascii=False, separators=(",", ":")) + "\n")
    except OSError as exc:
        raise ManifestError(f"cannot write {out_dir / RUNS}: {exc.strerror or exc}") from None
