"""The results journal: OUT/manifest.jsonl, append-only, one JSON object a line. Defines the
line format; reads a journal back (ignoring a torn last line), into full records or into the
compact per-key state a resume needs, and appends to it.

Line format. A line that carries `input` is a full record and starts the key's record afresh;
the first line a run writes for a key is always one. Later lines of that run are lean: the key,
the status, the resume fields (backend, attempts, possible_duplicates, request_id) and what
changed (a `submitted` line adds submitted_at; an `ok` line outputs and result); readers merge
them onto the key's current record. So a key's last line alone gives its resume state. On
disk key, status and the resume fields come first and `time` and the bulky fields (input,
input_files, vars, outputs, result) last, so the resume reads a line's state without parsing
its payload.
Journals written before lean lines (every line full, input first) read the same way.

Durability: every line is written and flushed to the OS before the runner takes the next step,
so a crash or kill -9 loses nothing. fsync runs at most once a second and at close: a power cut
can lose the last second of lines; a lost `submitted` line means that request is sent again.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from io import FileIO
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, NotRequired, Protocol, TypedDict

from ..errors import ManifestError, cannot_write
from ..keys import KEY_HEX
from .names import MANIFEST, RUNS
from .outputcheck import HELPER_FROM, HelperFailed, OutputCheck

FSYNC_INTERVAL = 1.0
_CHUNK = 1 << 22  # bytes of lines read at a time

# Line statuses. `submitting` is written just before a submit goes out, so a crash in that
# window is known on resume (the new submit is counted as a possible duplicate). `refused`
# follows a submission the server definitely turned away (401/403, 422, 429, connection
# refused): nothing was charged, so on resume the row is sent as if never submitted.
SUBMITTING, SUBMITTED, OK, FAILED = "submitting", "submitted", "ok", "failed"
REFUSED = "refused"

# On disk a line starts with the key, its status and the fields a resume needs, in this order
# (every line carries them), and ends with `time` and the bulky fields.
# `server` (fal backend only) is the fal queue's origin: a row is done only for the backend and
# server that made it.
RESUME_FIELDS = ("backend", "server", "attempts", "possible_duplicates", "request_id")
_HEAD = ("key", "status", *RESUME_FIELDS)
_TAIL = ("time", "input", "input_files", "vars", "outputs", "result")


class OutputFile(TypedDict):
    file: str  # relative to the output folder
    sha256: str
    width: int
    height: int
    content_type: str
    bytes: NotRequired[int]  # the file's size, checked on every run (a missing or short file
    url: NotRequired[str | None]  # is fetched again from `url`; None for a data: URI output)


class ErrorInfo(TypedDict):
    # validation | timeout | queue_timeout | http | transport | download | output | input |
    # upload (a large local input could not be put on storage) | ambiguous | refused (a
    # submission turned away, nothing charged) | output_lost (an ok row's file is gone and
    # could not be fetched again) | fal's own error type of a completed request
    # (runner_disconnected, ...)
    type: str
    message: str
    http_status: int | None


class Record(TypedDict, total=False):
    key: str
    status: str
    endpoint: str
    backend: str
    server: str  # the fal queue's origin (scheme://host:port), fal backend only
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


class RunLine(TypedDict, total=False):
    """One line of OUT/runs.jsonl: an invocation's `start` and `end`, or a `merge`."""

    event: str  # start | end | merge
    run_id: str
    name: str | None  # the spec's label
    spec: str  # the spec file's path, as given
    spec_sha256: str
    runner_version: str
    endpoint: str
    backend: str
    server: str | None  # the fal server's origin (backend fal)
    shard: str | None  # "I/N" of --shard
    report: dict[str, Any] | None  # the spec's `report:` block (axes for `runner report`)
    host: str
    started: str  # UTC, ISO 8601 (start and end lines)
    finished: str  # end lines: UTC, ISO 8601
    # end lines: this invocation's counts
    ok: int
    failed: int
    skipped: int
    submitted: int
    refused: int
    repaired: int
    possible_duplicates: int
    interrupted: bool
    stop_reason: str | None
    # merge lines
    time: str
    sources: list[str]
    pending: int
    conflicts: int


def never_reached(status: object, attempts: object, duplicates: object) -> bool:
    """Whether a row's record says that no submission of it ever reached a server: refused
    every time (a wrong URL, key or port) and none that may have been taken. Such a row is
    made by no one: sent as new by any backend, it never ties its folder to one."""
    return status == REFUSED and not attempts and not duplicates


class KeyState(NamedTuple):
    """A key's resume state, from its last journal line: a tuple, since a million of them
    are held at once (an ok row's is shared with every row whose line says the same)."""

    status: str
    request_id: str | None
    attempts: int
    possible_duplicates: int
    error_type: str | None = None
    backend: str | None = None  # the endpoint is part of the key
    server: str | None = None  # the fal queue's origin, for the fal backend
    http_status: int | None = None  # a failed row's error.http_status

    def made_by(self, backend: str, server: str | None) -> bool:
        """Whether this row was made by `backend` at fal server `server` (the endpoint is
        part of the key; a field the row lacks is not held against it)."""
        return self.backend in (None, backend) and (
            None in (self.server, server) or self.server == server
        )


class LineSeer(Protocol):
    """What read_state shows each ok line to (an output check, a spend count)."""

    def see(self, key: bytes, raw: bytes) -> None: ...


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the millisecond: 2026-11-25T13:45:00.123Z."""
    now = time.time()
    seconds = int(now)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{int((now - seconds) * 1000):03d}Z"
    )


def encode(record: Record) -> bytes:
    """One journal line: key, status and resume fields first, `time` and bulky fields last."""
    ordered: dict[str, Any] = {}
    for name in _HEAD:
        if name in record:
            ordered[name] = record[name]  # type: ignore[literal-required]
    for name, value in record.items():
        if name not in ordered and name not in _TAIL:
            ordered[name] = value
    for name in _TAIL:
        if name in record:
            ordered[name] = record[name]  # type: ignore[literal-required]
    return (json.dumps(ordered, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _chunks(out_dir: Path) -> Iterator[list[bytes]]:
    """The journal's complete lines, a few MB of them at a time (a list loops faster than a
    generator a line); a torn last line, the trace of a crash, is left out."""
    path = out_dir / MANIFEST
    if not path.exists():
        return
    try:
        with path.open("rb", buffering=1 << 20) as fh:
            while lines := fh.readlines(_CHUNK):
                if not lines[-1].endswith(b"\n"):  # only the file's last line can lack it
                    lines.pop()
                yield lines
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None


def _lines(out_dir: Path) -> Iterator[bytes]:
    """The journal's complete lines, one at a time."""
    for lines in _chunks(out_dir):
        yield from lines


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None  # a corrupt line is skipped
    if isinstance(record, dict) and isinstance(record.get("key"), str):
        return record
    return None


def read_records(out_dir: str | os.PathLike[str]) -> Iterator[Record]:
    """Every complete line of the journal as written, in order (lean lines stay lean)."""
    for raw in _lines(Path(out_dir)):
        record = _parse(raw)
        if record is not None:
            yield record  # type: ignore[misc]


def latest(out_dir: str | os.PathLike[str]) -> dict[str, Record]:
    """The full current record of each key (lean lines merged), in first-seen order."""
    return current_records(read_records(out_dir))


def current_records(records: Iterable[Record]) -> dict[str, Record]:
    """Journal lines in order -> each key's current record: a line with `input` replaces it,
    any other line updates it."""
    state: dict[str, Record] = {}
    for record in records:
        current = state.get(record["key"])
        if current is None or "input" in record:
            state[record["key"]] = record
        else:
            current.update(record)
    return state


# A line in the current layout starts `{"key":"<KEY_HEX hex digits>","status":"ok",...`: the
# key, the status and an ok line's state fields are found at these offsets, without a parse.
_PREFIX, _STATUS_AT, _OK_AT = b'{"key":"', b'","status":"', b'ok",'
_KEY_AT = len(_PREFIX)
_KEY_END = _KEY_AT + KEY_HEX
_STATUS = _KEY_END + len(_STATUS_AT)
_OK_FIELDS = _STATUS + len(_OK_AT)


def read_state(out_dir: Path, check: LineSeer | None = None) -> dict[bytes, KeyState]:
    """The resume state of every key in the journal: its last line says it all.

    Most lines are taken without a JSON parse: a line in the current layout gives its key and
    status by slicing, and an `ok` line's state fields (backend, attempts, duplicates: the
    same on most lines) are parsed once per distinct value. Any other line is kept as it is
    until the end, and parsed only if it is still its key's last line (a request in flight
    or failed). Lines in the older layout, or with odd keys, are parsed as they come.
    `check` is shown every ok line, in order, to check its output files in the same pass.
    """
    last: dict[bytes, KeyState | bytes] = {}
    ok_states: dict[bytes, KeyState | None] = {}
    see = check.see if check is not None else None
    for raw in itertools.chain.from_iterable(_chunks(out_dir)):
        # startswith at an offset, not a slice: no bytes object made (3 lines a request)
        if raw.startswith(_STATUS_AT, _KEY_END) and raw.startswith(_PREFIX):
            if raw.startswith(_OK_AT, _STATUS):
                cut = raw.find(b',"request_id":', _OK_FIELDS)
                fields = raw[_OK_FIELDS:cut] if cut > 0 else b"?"
                state = ok_states.get(fields)
                if state is None:
                    if len(ok_states) > 4096:  # unexpected variety: do not pile it up
                        ok_states.clear()
                    state = ok_states[fields] = _ok_state(fields)
                key = raw[_KEY_AT:_KEY_END]
                last[key] = raw if state is None else state
                if see is not None:
                    see(key, raw)
            else:
                last[raw[_KEY_AT:_KEY_END]] = raw
            continue
        record = _parse(raw)
        if record is not None:
            key = record["key"].encode()
            last[key] = _state_of(record)
            if check is not None and record.get("status") == OK:
                check.see(key, raw)
    for key, value in last.items():
        if isinstance(value, bytes):
            record = _parse(value)
            last[key] = _state_of(record) if record is not None else _state_of({})
    return last  # type: ignore[return-value]


def last_full_records(out_dir: Path, keys: Collection[bytes]) -> dict[bytes, dict[str, Any]]:
    """The last full line (one with `input`: what was sent) of each of `keys`, parsed. Other
    keys' lines are passed over by their key alone, so a few keys cost one quick pass."""
    found: dict[bytes, dict[str, Any]] = {}
    if not keys:
        return found
    for raw in _lines(out_dir):
        current = raw.startswith(_STATUS_AT, _KEY_END) and raw.startswith(_PREFIX)
        if current and (raw[_KEY_AT:_KEY_END] not in keys or b'"input":' not in raw):
            continue
        record = _parse(raw)
        if record is not None and isinstance(record.get("input"), dict):
            key = record["key"].encode()
            if key in keys:
                found[key] = record
    return found


def _read_checked(
    out_dir: Path, also: LineSeer | None = None
) -> tuple[dict[bytes, KeyState], set[str]]:
    """read_state with every ok row's output files checked: (state, the ok rows whose last
    line names a missing or resized file); `also` is shown each ok line too. A large
    journal's files are checked by a helper process; if it dies, the journal is read again
    and checked here (`also` sees the lines again: what it keeps per key is replaced)."""
    try:
        big = (out_dir / MANIFEST).stat().st_size >= HELPER_FROM
    except OSError:
        big = False
    if big:
        try:
            return _read_checked_by(OutputCheck(out_dir, helper=True), out_dir, also)
        except HelperFailed:
            pass
    return _read_checked_by(OutputCheck(out_dir), out_dir, also)


def _read_checked_by(
    check: OutputCheck, out_dir: Path, also: LineSeer | None
) -> tuple[dict[bytes, KeyState], set[str]]:
    try:
        states = read_state(out_dir, check if also is None else _Both(check, also))
        found = check.damaged()
    finally:
        check.close()
    return states, {key.decode() for key in found if key in states and states[key].status == OK}


class _Both:
    """Two LineSeers shown each line in turn."""

    def __init__(self, first: LineSeer, second: LineSeer) -> None:
        self._first, self._second = first, second

    def see(self, key: bytes, raw: bytes) -> None:
        self._first.see(key, raw)
        self._second.see(key, raw)


def _ok_state(fields: bytes) -> KeyState | None:
    try:
        values = json.loads(b"{" + fields + b"}")
    except ValueError:
        return None
    return _state_of({**values, "status": OK}) if isinstance(values, dict) else None


def _state_of(record: Mapping[str, Any]) -> KeyState:
    error, status = record.get("error"), str(record.get("status", FAILED))
    attempts, dups = record.get("attempts", 0), record.get("possible_duplicates", 0)
    return KeyState(
        status,
        None if status == OK else record.get("request_id"),  # an ok row is never polled again
        attempts if isinstance(attempts, int) else 0,
        dups if isinstance(dups, int) else 0,
        error.get("type") if isinstance(error, dict) else None,
        record.get("backend"),
        record.get("server"),
        _int_or_none(error.get("http_status")) if isinstance(error, dict) else None,
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Journal:
    """Append side of the manifest, with the per-key state needed to resume.

    state() answers from the journal as it was opened: a run handles each key once, so the
    lines it appends are not kept in memory (a million-request run stays small).
    """

    def __init__(
        self, out_dir: Path, check_outputs: bool = False, also: LineSeer | None = None
    ) -> None:
        """`also` is shown every ok line of the journal's one read (what a run's spending
        cap counts), beside the output check."""
        self.out_dir = out_dir
        self.path = out_dir / MANIFEST
        # With check_outputs, the ok rows whose output files are missing or resized.
        self.damaged: set[str] = set()
        if check_outputs:
            self._state, self.damaged = _read_checked(out_dir, also)
        else:
            self._state = read_state(out_dir, also)
        self._made = not self.path.exists()  # so a journal left empty is not left behind
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._drop_torn_tail()
            # unbuffered: each line is one write of its own, so a failed one can be taken back
            self._fh: FileIO = self.path.open("ab", buffering=0)
            self._size = os.fstat(self._fh.fileno()).st_size
        except OSError as exc:
            raise ManifestError(
                f"cannot write to the output folder {out_dir}: {exc.strerror or exc}"
            ) from None
        self._last_sync = time.monotonic()

    @property
    def rows(self) -> int:
        """How many keys the journal held when it was opened."""
        return len(self._state)

    @property
    def states(self) -> Mapping[bytes, KeyState]:
        """Each key's resume state as the journal was opened (keys as bytes)."""
        return self._state

    def state(self, key: str) -> KeyState | None:
        return self._state.get(key.encode())

    def flagged(self) -> int:
        """How many submissions the journal held, when opened, flagged as possibly charged
        twice: the unit of a run's own "possibly charged twice" (a row sent again twice
        counts two)."""
        return sum(map(attrgetter("possible_duplicates"), self._state.values()))

    def origins(self) -> Counter[tuple[str | None, str | None]]:
        """How many rows each (backend, server) made, by their last line (a row no
        submission of which reached a server was made by none)."""
        # counted by C-level iteration (a resume reads a million of them); the rare rows
        # refused every time are then taken back out one by one
        states = self._state.values()
        made = Counter(map(attrgetter("backend", "server"), states))
        if REFUSED in set(map(attrgetter("status"), states)):
            for state in states:
                if never_reached(state.status, state.attempts, state.possible_duplicates):
                    made[state.backend, state.server] -= 1
        return +made

    def append(self, record: Record) -> None:
        """Write one line; WriteFailed (a full disk...) leaves the journal as it was."""
        record["time"] = utc_now()
        line = encode(record)
        try:
            _write_all(self._fh, line)
        except OSError as exc:
            # a line cut short would run into the next one written (space freed meanwhile)
            with contextlib.suppress(OSError):
                self._fh.truncate(self._size)
            raise cannot_write(f"the journal {self.path}", exc) from None
        self._size += len(line)
        if time.monotonic() - self._last_sync > FSYNC_INTERVAL:
            try:
                os.fsync(self._fh.fileno())
            except OSError as exc:  # the line is written; the device may not keep it
                raise cannot_write(f"the journal {self.path}", exc) from None
            self._last_sync = time.monotonic()

    def close(self, keep_empty: bool = True) -> None:
        """`keep_empty=False`: a journal this object created and nobody wrote to is removed
        (a run refused before its first line leaves no empty manifest.jsonl behind)."""
        # Failures here were already reported by append; the journal stays resumable.
        with contextlib.suppress(OSError, ValueError):
            self._fh.flush()
            os.fsync(self._fh.fileno())
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            if not keep_empty and self._made and self.path.stat().st_size == 0:
                self.path.unlink()

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


def read_runs(out_dir: Path) -> list[RunLine]:
    """OUT/runs.jsonl's lines, oldest first; none when it is missing or unreadable (it only
    describes the runs: the manifest is the results)."""
    try:
        text = (out_dir / RUNS).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    lines: list[RunLine] = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a torn line of a crash
        if isinstance(line, dict):
            lines.append(line)  # type: ignore[arg-type]
    return lines


def append_run(out_dir: Path, info: RunLine) -> None:
    """One line per invocation in OUT/runs.jsonl: spec hash, tool version, counts. A failed
    write (WriteFailed) leaves the file as it was."""
    line = (json.dumps(info, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    try:
        with (out_dir / RUNS).open("ab", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            try:
                _write_all(fh, line)
            except OSError:
                with contextlib.suppress(OSError):
                    fh.truncate(size)  # no torn line for the next run's to run into
                raise
    except OSError as exc:
        raise cannot_write(out_dir / RUNS, exc) from None


def _write_all(fh: BinaryIO | FileIO, data: bytes) -> None:
    """All of `data`, however many writes an unbuffered file takes (a nearly full disk
    takes part of it, then fails)."""
    view = memoryview(data)
    while view:
        written = fh.write(view)
        if not written:  # a regular file says why it takes nothing; be safe all the same
            raise OSError(errno.EIO, "the file took none of the line")
        view = view[written:]
    fh.flush()
