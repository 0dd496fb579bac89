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
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NotRequired, TypedDict

from .errors import ManifestError

MANIFEST = "manifest.jsonl"
RUNS = "runs.jsonl"
FSYNC_INTERVAL = 1.0

# Line statuses. `submitting` is written just before a submit goes out, so a crash in that
# window is known on resume (the new submit is counted as a possible duplicate). `refused`
# follows a submission the server definitely turned away (401/403, 422, 429, connection
# refused): nothing was charged, so on resume the row is sent as if never submitted.
SUBMITTING, SUBMITTED, OK, FAILED = "submitting", "submitted", "ok", "failed"
REFUSED = "refused"

# Who made a record: (backend, endpoint, server). `server` is the fal queue's origin
# (scheme://host:port) for the fal backend, None for the embedded emulator (a new port each run).
Origin = tuple[str | None, str | None, str | None]


class OutputFile(TypedDict):
    file: str  # relative to the output folder
    sha256: str
    width: int
    height: int
    content_type: str
    bytes: NotRequired[int]  # the file's size, checked on every run (a missing or short file
    url: NotRequired[str | None]  # is fetched again from `url`; None for a data: URI output)


class ErrorInfo(TypedDict):
    type: str  # validation | timeout | queue_timeout | http | transport | lost | ambiguous | ...
    message: str
    http_status: int | None


class Record(TypedDict, total=False):
    key: str
    status: str
    endpoint: str
    backend: str
    server: str  # the fal queue's origin (fal backend only): results of another server differ
    run_id: str
    input: dict[str, Any]  # the body sent, local files as "sha256:<hex>"
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
    origin: Origin = (None, None, None)  # who made it: a row is done only for its own backend


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

    def __init__(self, out_dir: Path, on_record: Callable[[Record], None] | None = None) -> None:
        """`on_record` sees every record read back, in order (one pass for all checks)."""
        self.out_dir = out_dir
        self.path = out_dir / MANIFEST
        self._state: dict[str, KeyState] = {}
        self._origins: dict[Origin, Origin] = {}  # one shared tuple per distinct origin
        for record in read_records(out_dir):
            if on_record is not None:
                on_record(record)
            self._state[record["key"]] = self._key_state(record)
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

    def origins(self) -> Counter[Origin]:
        """How many rows each (backend, endpoint, server) made, by their last line."""
        return Counter(state.origin for state in self._state.values())

    def _key_state(self, record: Record) -> KeyState:
        origin = (record.get("backend"), record.get("endpoint"), record.get("server"))
        return KeyState(
            record.get("status", FAILED),
            record.get("request_id"),
            int(record.get("attempts", 0)),
            int(record.get("possible_duplicates", 0)),
            _error_type(record),
            self._origins.setdefault(origin, origin),
        )

    def __len__(self) -> int:
        return len(self._state)

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
        self._state[record["key"]] = self._key_state(record)

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
