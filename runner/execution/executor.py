"""The scheduling loop: takes a run's RunRows lazily, decides each from its journal state
(decision.py: skip, repair, poll, send), and runs the ones it polls or sends through submit →
wait → result → download with `concurrency` workers, journaling every state change before the
next step; gives RunStats. Per-request failures become `failed` records. Before each submission
it asks the policies beside it: the input guard (what was validated is what is sent), the
spending cap and the gate (rate, 429 pause); each call is retried per retry.py.

A stop (stops.py: the stop event, a refused key, a server no submission could reach, a changed
input, the cap, a write into the run folder that failed) ends new submissions: the first one
wins, the calls under way end (so none is left "maybe sent"), the requests in flight finish, and
the run returns with RunStats.stop. Only another ManifestError and cancellation end the run at
once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import replace
from typing import Any, TypeVar

from ..datauri import is_data_uri
from ..endpoints import get_endpoint
from ..errors import (
    AuthError,
    BackendError,
    CallError,
    GridError,
    InputChanged,
    ServerUnreachable,
    WriteFailed,
)
from ..folder.journal import (
    FAILED,
    OK,
    REFUSED,
    SUBMITTED,
    SUBMITTING,
    Journal,
    KeyState,
    OutputFile,
    Record,
    utc_now,
)
from ..folder.names import INPUTS
from ..grid.plan import Pricing
from ..models import Request, RunRow
from .attachments import Attachments
from .decision import Action, decide
from .falapi import FalClient, Handle, request_headers
from .http import Reply, error_detail
from .inputguard import InputGuard
from .limits import SubmitGate
from .outputs import MAX_OUTPUT_BYTES, NotAnImage, save_image
from .repair import NotNow, repair
from .retry import Decision, Verdict, failure_kind, is_retryable_result, retried
from .settings import RunSettings
from .spending import fetchable, row_megapixels
from .spendingcap import SpendingCap
from .stops import Stop, StopKind, Stopped, stop_for
from .tracking import Failed, InFlight, RunStats, error_info

T = TypeVar("T")

# Outputs up to this size are checked and written on the event loop (well under a millisecond).
INLINE_SAVE_BYTES = 64 * 1024

# Submissions in a row that cannot connect, while no request of this run has reached the
# server, after which the run stops (exit 3, rows as they were) rather than fail every row.
UNREACHABLE_AFTER = 3


# Why a submission is sent again that may duplicate a charged one (journaled in `resubmitted`).
SENT_AGAIN = "the previous submission may have been accepted: sent again"
LOST_AGAIN = "result no longer on the server (404): submitted again"
# A polled request the server answers as cancelled (fal's error type): it never ran.
CANCELLED = "request_cancelled"
CANCELLED_AGAIN = "cancelled on the server before it ran (an earlier deadline): submitted again"

# Settled rows are announced to the progress display in batches of this many.
_ANNOUNCE_EVERY = 1024


class Executor:
    def __init__(
        self,
        client: FalClient,
        journal: Journal,
        settings: RunSettings,
        run_id: str,
        on_event: Callable[[str, RunStats], None] | None = None,
        *,
        server: str | None = None,
        price: float | None = None,
        damaged: Mapping[str, Record] | None = None,
        stop: asyncio.Event | None = None,
        cap: SpendingCap | None = None,
    ) -> None:
        """`server`: the fal queue's origin, recorded with each row; `price`: USD per billed
        megapixel (None: not counted); `damaged`: ok rows whose outputs must be fetched again;
        `stop`: once set, no new submissions (requests in flight go on); `cap`: the output
        folder's spending cap, read from the journal under the run's lock."""
        self._client = self.client = client
        self._journal = journal
        self._states = journal.states
        self._settings = settings
        self._exe = settings.execution
        self._run_id, self._server = run_id, server
        # What every record of this run says besides the request itself.
        self._fixed: Record = {
            "endpoint": settings.endpoint,
            "backend": settings.backend,
            "run_id": run_id,
        }
        if server is not None:
            self._fixed["server"] = server
        self._stop_event = stop
        self._gate = SubmitGate(self._exe.rate)
        self._guard = InputGuard(settings.inputs)
        self._cap = cap
        self._headers = request_headers(self._exe)
        self._attachments = Attachments(client, journal.out_dir / INPUTS)
        self._notify = on_event or (lambda event, stats: None)
        # Until one submission is accepted, submissions go one at a time: a wrong key or URL
        # costs one refused call, not `concurrency` of them.
        self._probe = asyncio.Lock()
        self._proven = False
        self._damaged = damaged or {}
        self._taken = 0
        self._known = 0  # rows of this run the journal already held
        self._unannounced = 0  # settled rows counted since the last "skipped" event
        # the last state decided (by identity) and its action, for the rows that share it
        self._last: tuple[KeyState | None, Action] = (None, Action.SEND)
        self._open: dict[str, InFlight] = {}  # rows submitted and not yet finished
        self._cannot_connect = 0  # submissions in a row that could not connect, none answered
        self.stats = RunStats(
            usd_per_megapixel=price,
            max_usd=settings.max_usd,
            rows=settings.validated_requests,
            committed_megapixels=None if cap is None else cap.committed,
        )
        # On a priced (fal) run each request counts at its estimate from when it is sent
        endpoint = get_endpoint(settings.endpoint) if price is not None else None
        self._pricing = Pricing(endpoint) if endpoint is not None else None

    def _spend(self, change: int, received: int) -> None:
        """A row's journal state changed what it counts (InFlight._count)."""
        self.stats.megapixels += received
        self.stats.worst_megapixels += change
        if self._cap is not None:
            self._cap.spend(change)
            self.stats.committed_megapixels = self._cap.committed

    async def _stop_when_set(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stop(Stop(StopKind.INTERRUPTED, "the run was asked to stop"))

    def halt(self, stop: Stop) -> None:
        """Stop the run from beside the loop (stats.json could not be written): as _stop."""
        self._stop(stop)

    def _stop(self, stop: Stop) -> None:
        """The run stops: no new submissions; requests in flight go on. The first stop wins."""
        if self.stats.stop is None:
            self.stats.stop = stop
            self.stats.in_flight_at_stop = len(self._open)

    async def run(self, rows: Iterable[RunRow]) -> RunStats:
        taken = iter(rows)
        workers = self._exe.concurrency
        if self._settings.validated_requests is not None:  # never more workers than rows
            workers = max(1, min(workers, self._settings.validated_requests))
        stop = self._stop_event
        watcher = asyncio.create_task(self._stop_when_set(stop)) if stop is not None else None
        self._notify("started", self.stats)  # the live counters, before any request ends
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._worker(taken))
        except BaseExceptionGroup as eg:  # surface the run-ending error itself
            raise eg.exceptions[0] from None
        finally:
            if watcher is not None:
                watcher.cancel()
            left = [flight.status for flight in self._open.values()]
            self.stats.unfinished = left.count(SUBMITTED)  # polled next time
            self.stats.unanswered = left.count(SUBMITTING)  # sent again next time
            if self._unannounced:
                self._notify("skipped", self.stats)
        if self.stats.stop is None:  # every row was taken: the journal's other keys are not ours
            self.stats.elsewhere = self._journal.rows - self._known
        return self.stats

    async def _worker(self, rows: Iterator[RunRow]) -> None:
        # All workers share one lazy iterator: a row is taken only when a worker is free. A
        # row the journal has settled is counted in this loop, without a Request or an await
        # (a resume of a million done rows is mostly this).
        count, stats, decide_row = self._settings.validated_requests, self.stats, self._decide
        while stats.stop is None:
            if count is not None and self._taken >= count:
                return  # what was validated is all that is sent, whatever the files say now
            try:
                row = next(rows, None)
            except GridError as error:  # a script's lazy expansion: a source file changed
                self._stop(self._guard.grid_changed(error))
                return
            if row is None:
                return
            self._taken += 1
            action = decide_row(row.key)
            if action is not None:
                await self._carry_out(row, action)

    def _decide(self, key: str) -> Action | None:
        """The row's action from its journal state, or None for a settled row (counted here)."""
        state = self._states.get(key.encode())
        if state is None:
            return Action.SEND
        self._known += 1
        damaged = key in self._damaged
        last, action = self._last
        if state is not last or damaged:
            # The rows a resume settles share a few state objects (manifest.read_state), so
            # most rows take the decision made for the row before.
            ours = state.made_by(self._settings.backend, self._server)
            retry = self._settings.retry_failed
            action = decide(state, ours=ours, damaged=damaged, retry_failed=retry)
            if not damaged:
                self._last = (state, action)
        if action is Action.DONE:
            self.stats.skipped += 1
        elif action is Action.FAILED_BEFORE:
            self.stats.failed_before += 1
            self.stats.fetchable += fetchable(
                state.status, state.error_type, state.http_status, state.request_id
            )
        else:
            return action
        self._unannounced += 1
        if self._unannounced >= _ANNOUNCE_EVERY:  # progress moves, without an event a row
            self._unannounced = 0
            self._notify("skipped", self.stats)
        return None

    async def _carry_out(self, row: RunRow, action: Action) -> None:
        """Repair, poll or send one row, until it is journaled ok or failed, or the run stops."""
        key = row.key
        if action is Action.REPAIR:
            try:
                await self._repair(key, self._damaged[key])
            except WriteFailed as error:  # the row stays as its journal says
                self._stop(stop_for(error))
            return
        try:
            request = row.request()
        except GridError as error:  # validation passed, so a source file changed since
            self._stop(self._guard.grid_changed(error))
            return
        changed = self._guard.row_changed(key, request)
        if changed is not None:
            self._stop(changed)
            return
        state = self._states.get(key.encode())
        if state is not None and not state.made_by(self._settings.backend, self._server):
            state = None  # another backend's (or server's) record is never this row's result
        flight = self._flight(request, state)
        if state is not None:
            flight.attempts, flight.duplicates = state.attempts, state.possible_duplicates
            flight.status = state.status
        if action is Action.POLL:
            assert state is not None and state.request_id is not None
            flight.handle = self._client.handle(self._settings.endpoint, state.request_id)
            flight.resumed = True
            self._open[key] = flight
            self.stats.resumed += 1
        elif action is Action.SEND_AGAIN:
            flight.uncertain = SENT_AGAIN
        self.stats.in_flight += 1
        try:
            await self._settle(flight)
        except Stopped:
            pass  # the run stopped before this request's next submission: it stays as it is
        except (BackendError, InputChanged, WriteFailed) as error:  # a refused key, a full disk...
            self._stop(stop_for(error))  # the row stays as its journal says: resumable
        finally:
            self.stats.in_flight -= 1

    async def _settle(self, flight: InFlight) -> None:
        """Send or poll a row until it is journaled ok or failed."""
        key = flight.request.key
        try:
            reply = await self._until_result(flight)
            outputs, extras = await self._save(key, reply)
            self._write(flight, OK, outputs=outputs, result=extras)
            self._open.pop(key, None)
            self.stats.ok += 1
            self._notify("ok", self.stats)
        except Failed as failure:
            self._write(flight, FAILED, error=failure.info)
            self._open.pop(key, None)
            self.stats.failed += 1
            kind, status = failure.info["type"], failure.info["http_status"]
            self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
            taken = flight.handle.request_id if flight.handle is not None else None
            self.stats.fetchable += fetchable(FAILED, kind, status, taken)
            self._notify("failed", self.stats)

    def _write(self, flight: InFlight, status: str, **extra: Any) -> None:
        """Journal the row's next line; when it cannot be written (WriteFailed), the row stays
        as its journal says (what a resume does with it, and what the stop's note tells)."""
        line = flight.record(status, **extra)
        try:
            self._journal.append(line)
        except WriteFailed:
            flight.take_back()
            raise

    def _flight(self, request: Request, state: KeyState | None) -> InFlight:
        """A new flight for a row, with what the row counts against the cap so far: for a
        row the journal holds, counted anew at this request's estimate (in place of what
        the folder's journal counted for it)."""
        estimate = self._pricing.of(request).megapixels if self._pricing is not None else 0
        counted = 0
        if state is not None:
            counted = row_megapixels(
                state.status,
                state.possible_duplicates,
                estimate,
                error_type=state.error_type,
                attempts=state.attempts,
            )
        self.stats.worst_megapixels += counted
        if self._cap is not None:
            self._cap.take_over(request.key, counted)
            self.stats.committed_megapixels = self._cap.committed
        return InFlight(request, self._fixed, estimate, counted, self._spend)

    async def _repair(self, key: str, record: Record) -> None:
        """An ok row whose file is gone: fetch it again, or mark the row failed (reported) when
        the file is gone from the server; when the server or the network failed, the row is
        left as journaled (counted: the next run fetches it)."""
        ended = self._settings.backend == "local"  # each run has an emulator of its own
        out, run_id = self._journal.out_dir, self._run_id
        fixed = await repair(self._client, out, record, run_id, ended=ended)
        if isinstance(fixed, NotNow):
            self.stats.unfetched += 1
            self.stats.unfetched_reason = self.stats.unfetched_reason or fixed.reason
            self.stats.skipped += 1  # still ok in the journal
            self._notify("skipped", self.stats)
            return
        self._journal.append(fixed)
        if fixed["status"] == OK:
            self.stats.repaired += 1
            self.stats.skipped += 1
            self._notify("skipped", self.stats)
        else:
            self.stats.lost += 1
            self.stats.failed += 1
            self.stats.errors["output_lost"] = self.stats.errors.get("output_lost", 0) + 1
            self._notify("failed", self.stats)

    async def _until_result(self, flight: InFlight) -> Reply:
        """Submit (or resume) and wait, resubmitting only what is safe, until a final reply."""

        async def attempt() -> Reply:
            if flight.handle is None and self._exe.mode == "queue":
                await self._submit(flight)
            reply = await self._wait(flight)
            if reply.ok:
                return reply
            detail, status = self._client.redact(error_detail(reply.body)), reply.http_status
            if reply.error_type == "request_timeout" and self._exe.queue_timeout is not None:
                # the server enforced our own X-Fal-Request-Timeout: honour it, no retry
                raise Failed(error_info("queue_timeout", detail, status))
            if reply.error_type == CANCELLED and flight.resumed:
                # an earlier run's deadline cancelled it before it ran (so never billed): sent
                # as new. A cancel made elsewhere during this run's wait is left to stand.
                raise CallError(detail, http_status=status, error_type=CANCELLED, sent="no")
            lost = status == 404 and flight.handle is not None
            if not lost and not is_retryable_result(status, reply.error_type):
                raise Failed(error_info(failure_kind(status, reply.error_type), detail, status))
            raise CallError(detail, http_status=status, error_type=reply.error_type, sent="no")

        def resubmit(error: CallError, decision: Decision, last: bool) -> None:
            if last:
                return
            if error.http_status == 404:
                # the lost result was most likely billed: the new submission, if it goes out
                # (a stop or the cap may keep it), pays again
                flight.uncertain = LOST_AGAIN
            elif error.error_type == CANCELLED:
                flight.resubmitted.append(CANCELLED_AGAIN)
            else:
                flight.resubmitted.append(
                    f"server failure {error.error_type or error.http_status}: submitted again"
                )
            flight.handle, flight.resumed = None, False
            self.stats.retrying += 1
            self._notify("retrying", self.stats)

        tries = self._exe.retries + 1
        try:
            return await retried(attempt, "resubmit", tries, resubmit)
        except CallError as error:
            kind, status = failure_kind(error.http_status, error.error_type), error.http_status
            raise Failed(
                error_info(kind, f"gave up after {tries} tries: {error}", status)
            ) from None

    async def _submit(self, flight: InFlight) -> None:
        endpoint, headers = self._settings.endpoint, self._headers
        flight.handle = await self._send(
            flight, lambda b: self._client.submit(endpoint, b, headers)
        )
        flight.submitted_at = utc_now()
        self._write(flight, SUBMITTED)
        self._open[flight.request.key] = flight

    async def _run_sync(self, flight: InFlight) -> Reply:
        endpoint, headers = self._settings.endpoint, self._headers
        return await self._send(flight, lambda b: self._client.run_sync(endpoint, b, headers))

    async def _send(self, flight: InFlight, send: Callable[[Mapping[str, Any]], Awaitable[T]]) -> T:
        """One submission (queue submit or sync run), retried per the policy."""

        async def attempt() -> T:
            if self.stats.stop is not None:
                raise Stopped  # never start a submission after a stop
            await self._gate.admit()
            try:
                body = await self._attachments.body(flight.request)
            except CallError as error:  # the upload of a large local input failed: this row
                if error.connect is not None and not self._client.answered:
                    raise  # no server reached yet: counted as one that cannot connect
                raise Failed(error_info("upload", error.message, error.http_status)) from None
            try:
                # Until one submission is accepted they go one at a time, and the
                # `submitting` line is written only when this one really goes out.
                async with self._probe if not self._proven else contextlib.nullcontext():
                    self._admit(flight)
                    try:
                        result = await send(body)
                    except AuthError as error:
                        self._refused(flight, str(error.http_status or "auth"), error)
                        self._stop(stop_for(error))  # a task waiting on the probe must not send
                        raise
                    self._proven = True
                    return result
            except CallError as error:
                if error.sent == "no":  # a definite refusal: nothing was charged
                    self._refused(flight, refusal_reason(error), error)
                raise

        def after_failure(error: CallError, decision: Decision, last: bool) -> None:
            self._after_failed_send(flight, error, decision, last)

        try:
            return await retried(attempt, "submit", self._exe.retries + 1, after_failure)
        except CallError as error:
            kind = failure_kind(error.http_status)
            raise Failed(error_info(kind, error.message, error.http_status)) from None

    def _admit(self, flight: InFlight) -> None:
        """Before a submission goes out, the policies: no stop yet, the inputs as validated,
        the spending cap allows it (else the stop, and Stopped). The submission is then
        counted and journaled as going out."""
        stop = self.stats.stop or self._guard.before_submission()
        if stop is None and self._cap is not None:
            again = flight.uncertain is not None
            more = flight.will_count(flight.duplicates + again) - flight.counted
            stop = self._cap.before_submission(more, flight.estimate)
        if stop is not None:
            self._stop(stop)
            raise Stopped
        flight.counted_duplicate = flight.uncertain
        if flight.uncertain is not None:
            flight.duplicates += 1
            self.stats.possible_duplicates += 1
            flight.resubmitted.append(flight.uncertain)
            flight.uncertain = None
        flight.attempts += 1
        self.stats.submitted += 1
        try:
            self._write(flight, SUBMITTING)
        except WriteFailed:  # not sent, and not to be counted
            self._uncount(flight)
            raise
        self._open[flight.request.key] = flight

    def _refused(self, flight: InFlight, reason: str, error: Exception) -> None:
        """Undo what _admit counted: a refused submission charged nothing. The
        journal goes back to the row's state before it (`submitting` when an earlier ambiguous
        send may still have been accepted, else `refused`: sent as new on resume)."""
        self._uncount(flight)
        self.stats.refused[reason] += 1
        status = error.http_status if isinstance(error, CallError | AuthError) else None
        info = error_info("refused", self._client.redact(str(error)), status)
        again = flight.uncertain is not None
        self._write(flight, SUBMITTING if again else REFUSED, error=info)
        if flight.handle is None:
            self._open.pop(flight.request.key, None)

    def _uncount(self, flight: InFlight) -> None:
        """Undo what _admit counted for a submission that did not go out."""
        if flight.counted_duplicate is not None:
            flight.duplicates -= 1
            self.stats.possible_duplicates -= 1
            flight.resubmitted.pop()  # its reason, said when it went out: it did not go
            flight.uncertain = flight.counted_duplicate
        flight.counted_duplicate = None
        flight.attempts -= 1
        self.stats.submitted -= 1

    def _after_failed_send(
        self, flight: InFlight, error: CallError, decision: Decision, last: bool
    ) -> None:
        """A submit (or sync run) call failed: stop the run when the server was never reached
        and several submissions in a row could not connect; pause everyone on a 429; before a
        retry, count a possible duplicate or refuse to resubmit an ambiguous one."""
        if error.connect is not None and not self._client.answered:
            self._cannot_connect += 1
            if last or self._cannot_connect >= UNREACHABLE_AFTER:
                raise self._unreachable(error, self._cannot_connect)
        if error.http_status == 429:
            self._gate.pause(decision.wait)  # the limit is the account's: everyone waits
        if last:
            return  # recorded as failed by _send
        if decision.verdict is Verdict.AMBIGUOUS:
            if not self._settings.resubmit_ambiguous:
                raise Failed(
                    error_info(
                        "ambiguous",
                        f"{error.message}; the server may have "
                        "accepted it, not resubmitted (--no-resubmit-ambiguous)",
                    )
                )
            flight.uncertain = SENT_AGAIN
        self.stats.retrying += 1
        self._notify("retrying", self.stats)

    @staticmethod
    def _unreachable(error: CallError, tries: int) -> ServerUnreachable:
        """The run-stopping error for calls that never reached the server; names the host and
        the cause (both in the CallError's message)."""
        calls = "1 call" if tries == 1 else f"{tries} calls in a row"
        return ServerUnreachable(
            f"{error.message} ({calls}; no request of this run has reached the server, and "
            "nothing is marked failed). HINT: check the network, a proxy (HTTPS_PROXY) and the "
            "server's address (FAL_QUEUE_URL, FAL_RUN_URL, FAL_REST_URL where set; "
            "SSL_CERT_FILE for a TLS certificate), then run the same command again to resume"
        )

    async def _wait(self, flight: InFlight) -> Reply:
        """Wait for the request to complete, within its deadline, and fetch the reply."""
        try:
            async with asyncio.timeout(self._exe.timeout):
                if flight.handle is None:  # only sync mode gets here without a request id
                    return await self._run_sync(flight)
                return await self._poll(flight)  # a queued request, whatever the mode now
        except TimeoutError:
            said = f"no result within {self._exe.timeout:g} s"
            if flight.handle is not None:  # a queued request; a sync call has none to cancel
                await self._client.cancel(flight.handle)
                said += " (cancelled on the server)"
            raise Failed(error_info("timeout", said)) from None

    async def _poll(self, flight: InFlight) -> Reply:
        assert flight.handle is not None
        # The IN_QUEUE cap is a timer, not a check on status events: a stream may be silent.
        queue_cap = asyncio.timeout(self._exe.queue_timeout)
        try:
            async with queue_cap:
                return await self._poll_until_done(flight.handle, queue_cap)
        except TimeoutError:
            if not queue_cap.expired():
                raise  # the request's own deadline: handled by _wait
        await self._client.cancel(flight.handle)
        raise Failed(
            error_info(
                "queue_timeout", f"still queued after {self._exe.queue_timeout:g} s (cancelled)"
            )
        )

    async def _poll_until_done(self, handle: Handle, queue_cap: asyncio.Timeout) -> Reply:
        """Statuses until COMPLETED, then the result. Each call is retried where it is made
        (Http.get): one that still fails fails the request, so a broken status endpoint costs
        a bounded number of calls. A 404 is a lost result, which _until_result resubmits."""
        try:
            said: str | None = None  # the failure's type, as the COMPLETED status gives it
            async with aclosing(self._client.watch(handle)) as statuses:
                async for status in statuses:
                    if status.state != "IN_QUEUE":
                        queue_cap.reschedule(None)
                    said = status.error_type
            queue_cap.reschedule(None)
            reply = await self._client.result(handle)
            if reply.ok or reply.error_type is not None or said is None:
                return reply
            return replace(reply, error_type=said)  # a result that does not repeat it
        except CallError as error:
            if error.http_status == 404:
                return Reply(404, {"detail": error.message})
            if error.connect is not None and not self._client.answered:
                # a resumed request whose status no call could ask: it stays submitted
                raise self._unreachable(error, self._exe.retries + 1) from None
            kind = failure_kind(error.http_status)
            raise Failed(error_info(kind, error.message, error.http_status)) from None

    async def _save(self, key: str, reply: Reply) -> tuple[list[OutputFile], dict[str, Any]]:
        body = reply.body if isinstance(reply.body, dict) else {}
        images = body.get("images")
        if not isinstance(images, list) or not images:
            raise Failed(error_info("output", "the answer has no images"))
        outputs: list[OutputFile] = []
        for index, image in enumerate(images):
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str):
                raise Failed(error_info("output", f"image {index} has no url"))
            try:
                data = await self._client.download(url, MAX_OUTPUT_BYTES)
                if len(data) <= INLINE_SAVE_BYTES:  # cheaper than a thread hand-off
                    saved = save_image(self._journal.out_dir, key, index, data)
                else:  # checking, hashing and writing a big image: off the event loop
                    saved = await asyncio.to_thread(
                        save_image, self._journal.out_dir, key, index, data
                    )
                # where to fetch it again if the file goes missing (a data: URI is not kept)
                outputs.append(OutputFile(**saved, url=None if is_data_uri(url) else url))
            except CallError as error:
                raise Failed(error_info("download", error.message, error.http_status)) from None
            except NotAnImage as error:
                raise Failed(error_info("output", str(error))) from None
        extras = {k: v for k, v in body.items() if k not in ("images", "prompt")}
        return outputs, extras


def refusal_reason(error: CallError) -> str:
    """What a refused submission is counted under: its HTTP status, why no connection could be
    made ("connection refused", "name not resolved", "TLS failure"...), or a request that could
    not be built."""
    if error.http_status is not None:
        return str(error.http_status)
    if error.connect is not None:
        return error.connect.split(" (")[0]
    return "an invalid request" if error.client else "connect"
