"""What the executor keeps track of: the run's counters and why it stopped early (RunStats),
and each request in flight (InFlight: its progress through submit → wait → result and the
manifest records it writes); and the counters as stats.json's document (stats_document)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..folder.journal import OK, RESUME_FIELDS, SUBMITTING, ErrorInfo, Record, utc_now
from ..grid.plan import billed_megapixels
from ..models import Request
from .falapi import Handle
from .spending import row_megapixels
from .stops import Stop, StopKind


@dataclass
class RunStats:
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # already ok in the journal
    failed_before: int = 0  # failed in an earlier run, not retried (no --retry-failed)
    # failed rows (of this run or before) whose request the server took and whose result
    # --retry-failed fetches by request id, without paying again (executor.fetchable)
    fetchable: int = 0
    submitted: int = 0  # submissions in this run that may have reached the model (attempts)
    refused: Counter[str] = field(default_factory=Counter)  # refused submissions, by reason
    resumed: int = 0  # requests picked up by their stored request id
    retrying: int = 0  # retries of calls and resubmissions made
    possible_duplicates: int = 0  # resubmissions that may have been charged twice
    flagged_before: int = 0  # submissions earlier runs flagged as possibly charged twice
    repaired: int = 0  # ok rows whose missing or damaged output was fetched again
    lost: int = 0  # ok rows whose output is gone and could not be fetched (now failed)
    # ok rows whose missing output could not be fetched now (no connection or answer, 5xx,
    # 429): left ok in the journal, fetched by the next run; and the first one's reason
    unfetched: int = 0
    unfetched_reason: str | None = None
    in_flight: int = 0
    # why the run stopped before its last row (the first stop wins), else None
    stop: Stop | None = None
    in_flight_at_stop: int = 0  # requests submitted and unfinished when the stop came
    unfinished: int = 0  # of those, still journaled as submitted at the end (resumable)
    # ... and those whose last submission got no answer (journaled as submitting): the next
    # run sends them again, counted as possibly charged twice
    unanswered: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # failed rows by error type
    megapixels: int = 0  # billed output megapixels received in this run
    # what the rows this run worked on may have cost at most (spending.row_megapixels): their
    # outputs, and an estimate for each submission that may have been charged without one
    worst_megapixels: int = 0
    # with a spending cap: what the whole output folder has committed (spending.read_paid,
    # then kept up to date by this run), checked against max_usd before each submission
    committed_megapixels: int | None = None
    max_usd: float | None = None
    # rows the folder holds that this run does not make (an earlier version of the spec,
    # another shard); known only when the run went through all its rows
    elsewhere: int | None = None
    usd_per_megapixel: float | None = None
    # the rows this run makes (validation's count, a shard's part); None: not known ahead
    rows: int | None = None

    @property
    def interrupted(self) -> bool:
        """Stopped by its stop event (the first Ctrl-C or SIGTERM), as stats.json says."""
        return self.stop is not None and self.stop.kind is StopKind.INTERRUPTED

    @property
    def stop_reason(self) -> str | None:
        """Why a run stopped that was not interrupted (a cap, a changed input, a refused key,
        an unreachable server), as runs.jsonl and stats.json say; else None."""
        return None if self.stop is None or self.interrupted else self.stop.reason

    @property
    def usd(self) -> float | None:
        """Estimated spend of this run so far (None when not priced, e.g. backend local)."""
        price = self.usd_per_megapixel
        return None if price is None else round(self.megapixels * price, 4)

    @property
    def worst_usd(self) -> float | None:
        """The most this run's rows may have cost (None when not priced)."""
        price = self.usd_per_megapixel
        return None if price is None else round(self.worst_megapixels * price, 4)

    @property
    def committed_usd(self) -> float | None:
        """What the output folder has committed against the cap (None without a cap)."""
        price, committed = self.usd_per_megapixel, self.committed_megapixels
        return None if price is None or committed is None else round(committed * price, 4)

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped + self.failed_before

    @property
    def submissions(self) -> int:
        """Every submission call made, refused ones included."""
        return self.submitted + sum(self.refused.values())


class Failed(Exception):
    """Internal: this request ends as failed with `info`."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info["message"])
        self.info = info


def error_info(kind: str, message: str, http_status: int | None = None) -> ErrorInfo:
    return ErrorInfo(type=kind, message=message, http_status=http_status)


# Fields every lean line repeats (with the key and backend): a key's last line is its state.
_ALWAYS = frozenset({"status", "request_id", "attempts", "possible_duplicates"})
_MISSING = object()


class InFlight:
    """One request in flight through the loop, resumed or new (mutable, private to the
    executor): its handle, its attempts, what its journal lines have said so far and what
    its row counts against the spending cap."""

    def __init__(
        self,
        request: Request,
        fixed: Record,
        estimate: int = 0,
        counted: int = 0,
        on_spend: Callable[[int, int], None] | None = None,
    ) -> None:
        """`fixed`: what every record of the run says (endpoint, backend, run_id, server);
        `estimate`: the request's estimated billed megapixels; `counted`: what its row
        counted before this flight; `on_spend(change, received)` is told, at each journal
        line, how much what the row counts changed and the megapixels of outputs received."""
        self.request = request
        self.estimate = estimate
        self.counted = counted
        self._on_spend = on_spend
        self.base: Record = {
            "key": request.key,
            **fixed,
            "input": dict(request.input),
            "vars": dict(request.vars),
        }
        if request.files:  # where each sha256: input came from, so a row traces to its image
            self.base["input_files"] = {k: str(path) for k, path in request.files.items()}
        self.handle: Handle | None = None
        self.resumed = False  # its handle is a request id an earlier run journaled
        self.attempts = 0
        self.duplicates = 0
        # why the next submission may duplicate one that was charged (None: it may not); it
        # is counted as a possible double charge when, and only if, it goes out
        self.uncertain: str | None = None
        self.counted_duplicate: str | None = None  # the submission under way was, and why
        self.resubmitted: list[str] = []
        self.submitted_at: str | None = None  # wall clock of the last accepted submission
        self.status: str | None = None  # the row's status in the journal (its last line)
        self._journaled: dict[str, Any] | None = None  # the last line's changing fields
        # what record() changed, for take_back: status, counted, _journaled before it
        self._undo: tuple[str | None, int, dict[str, Any] | None] = (None, counted, None)

    def record(self, status: str, **extra: Any) -> Record:
        """The journal line for `status`: the full record the first time, afterwards the key,
        the status, the resume fields and what changed (readers fold them: folder/journal.py)."""
        changing: dict[str, Any] = {
            "status": status,
            "request_id": self.handle.request_id if self.handle else None,
            "attempts": self.attempts,
            "possible_duplicates": self.duplicates,
        }
        if self.submitted_at is not None:
            changing["submitted_at"] = self.submitted_at
        if self.resubmitted:
            changing["resubmitted"] = list(self.resubmitted)
        changing.update(extra)
        self._undo = (self.status, self.counted, self._journaled)
        self._count(status, extra)
        self.status = status
        before, self._journaled = self._journaled, changing
        if before is None or before.keys() - changing.keys():  # a field gone: say it all
            return {**self.base, **changing}  # type: ignore[typeddict-item]
        line: dict[str, Any] = {"key": self.base["key"]}
        for name in RESUME_FIELDS:  # backend and server: fixed for the flight, said on every line
            if name in self.base:
                line[name] = self.base[name]  # type: ignore[literal-required]
        for name, value in changing.items():
            if name in _ALWAYS or before.get(name, _MISSING) != value:
                line[name] = value
        return line  # type: ignore[return-value]

    def take_back(self) -> None:
        """The line the last record() made was not written (WriteFailed): the row is as its
        journal says, and counts what it counted before."""
        self.status, counted, self._journaled = self._undo
        change, self.counted = counted - self.counted, counted
        if self._on_spend is not None:
            self._on_spend(change, 0)  # an output received was paid for all the same

    def will_count(self, duplicates: int) -> int:
        """What the row would count once a submission goes out with `duplicates`."""
        return row_megapixels(SUBMITTING, duplicates, self.estimate)

    def _count(self, status: str, extra: dict[str, Any]) -> None:
        """Every state the row is journaled in is counted by the one rule the cap uses."""
        outputs = extra.get("outputs", ()) if status == OK else ()
        received = sum(billed_megapixels(o["width"], o["height"]) for o in outputs)
        error = extra.get("error")
        kind = error["type"] if isinstance(error, dict) else None
        now = row_megapixels(
            status,
            self.duplicates,
            self.estimate,
            billed=received,
            error_type=kind,
            attempts=self.attempts,
        )
        change, self.counted = now - self.counted, now
        if self._on_spend is not None:
            self._on_spend(change, received)


def stats_document(
    stats: RunStats, info: Mapping[str, Any], elapsed: float, finished: bool, http_429: int
) -> dict[str, Any]:
    """The run's counters as OUT/stats.json holds them (folder/statsfile.py writes it)."""
    worked = stats.ok + stats.failed  # rows this run finished (skipped ones cost nothing)
    return {
        **info,
        "updated": utc_now(),
        "finished": finished,
        "interrupted": stats.interrupted,
        # why the run stopped sending before its last row (a cap, a changed input, a refused
        # key, an unreachable server), else null
        "stop_reason": stats.stop_reason,
        "elapsed_s": round(elapsed, 3),
        "counts": {
            "ok": stats.ok,
            "failed": stats.failed,
            "already_ok": stats.skipped,
            "failed_before": stats.failed_before,
            "in_flight": stats.in_flight,
            # a stopped run's rows left sent and unfinished: polled, or sent again, next time
            "awaiting_result": stats.unfinished,
            "unanswered": stats.unanswered,
            # ok rows whose missing output could not be fetched now: the next run fetches them
            "outputs_not_fetched": stats.unfetched,
        },
        "errors": dict(sorted(stats.errors.items())),
        "submitted": stats.submitted,
        "resumed": stats.resumed,
        "retries": stats.retrying,
        "http_429": http_429,
        "possible_duplicates": stats.possible_duplicates,
        "requests_per_s": round(worked / elapsed, 3) if elapsed > 0 else None,
        "megapixels": stats.megapixels,
        "usd_per_megapixel": stats.usd_per_megapixel,
        "estimated_usd": stats.usd,
        # what this run's rows may have cost at most: outputs, possible duplicates, unanswered
        "estimated_usd_up_to": stats.worst_usd,
        "max_usd": stats.max_usd,
        "committed_usd": stats.committed_usd,  # the output folder's, against max_usd
    }
