"""The scheduling loop: takes Requests lazily, runs each through submit → wait → result →
download with `concurrency` workers, journals every state change before the next step, and
gives RunStats. Per-request failures become `failed` records; only AuthError (401/403),
ManifestError and cancellation stop the run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from typing import Any, TypeVar

from .attachments import INPUTS, Attachments
from .errors import AuthError, CallError
from .falapi import FalClient, Handle, handle_for, request_headers
from .http import Reply, error_detail
from .jobs import Failed, Job, RunOptions, RunStats, Stopped, error_info
from .limits import SubmitGate
from .manifest import FAILED, OK, SUBMITTED, SUBMITTING, Journal, utc_now
from .models import Request
from .outputs import MAX_OUTPUT_BYTES, NotAnImage, save_image
from .retry import Verdict, backoff, decide, is_retryable_result
from .spending import billed_megapixels

T = TypeVar("T")

# Outputs up to this size are checked and written on the event loop (well under a millisecond).
INLINE_SAVE_BYTES = 64 * 1024

# Failures after which the request id is still worth polling (the server may have the result).
_POLLABLE_ERRORS = frozenset({"download", "transport"})


class Executor:
    def __init__(
        self,
        client: FalClient,
        journal: Journal,
        options: RunOptions,
        on_event: Callable[[str, RunStats], None] | None = None,
    ) -> None:
        self._client = self.client = client
        self._journal = journal
        self._opt = options
        self._exe = options.execution
        self._gate = SubmitGate(self._exe.rate)
        self._headers = request_headers(self._exe)
        self._attachments = Attachments(client, journal.out_dir / INPUTS)
        self._notify = on_event or (lambda event, stats: None)
        self._stopping = False
        # Until one submission is accepted, submissions go one at a time: a wrong key or URL
        # costs one refused call, not `concurrency` of them.
        self._probe = asyncio.Lock()
        self._proven = False
        self.stats = RunStats(usd_per_megapixel=options.usd_per_megapixel)

    def stop(self) -> None:
        """Graceful stop: no new submissions; requests in flight go on."""
        self._stopping = True
        self.stats.interrupted = True

    async def run(self, requests: Iterable[Request]) -> RunStats:
        rows = iter(requests)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self._exe.concurrency):
                    group.create_task(self._worker(rows))
        except BaseExceptionGroup as eg:  # surface the run-stopping error itself
            raise eg.exceptions[0] from None
        return self.stats

    async def _worker(self, rows: Iterator[Request]) -> None:
        # All workers share one lazy iterator: a row is taken only when a worker is free.
        for request in rows:
            if self._stopping:
                return
            await self._process(request)

    async def _process(self, request: Request) -> None:
        state = self._journal.state(request.key)
        if state is not None and state.status == OK:
            self.stats.skipped += 1
            self._notify("skipped", self.stats)
            return
        if state is not None and state.status == FAILED and not self._opt.retry_failed:
            self.stats.failed_before += 1
            self._notify("skipped", self.stats)
            return
        job = Job(request, self._opt)
        if state is not None:
            job.attempts, job.duplicates = state.attempts, state.possible_duplicates
            if (
                state.request_id
                and self._exe.mode == "queue"
                and (state.status == SUBMITTED or state.error_type in _POLLABLE_ERRORS)
            ):
                job.handle = handle_for(self._opt.queue_url, self._opt.endpoint, state.request_id)
                self.stats.resumed += 1
            elif state.status == SUBMITTING:
                job.uncertain = True  # a crash hit between sending and journaling: may be paid
        self.stats.in_flight += 1
        try:
            reply = await self._until_result(job)
            outputs, extras = await self._save(request.key, reply)
            self._journal.append(job.record(OK, outputs=outputs, result=extras))
            self.stats.megapixels += sum(
                billed_megapixels(o["width"], o["height"]) for o in outputs
            )
            self.stats.ok += 1
            self._notify("ok", self.stats)
        except Failed as failure:
            self._journal.append(job.record(FAILED, error=failure.info))
            self.stats.failed += 1
            kind = failure.info["type"]
            self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
            self._notify("failed", self.stats)
        except Stopped:
            pass
        finally:
            self.stats.in_flight -= 1

    async def _until_result(self, job: Job) -> Reply:
        """Submit (or resume) and wait, resubmitting only what is safe, until a final reply."""
        tries = 0
        while True:
            if job.handle is None and self._exe.mode == "queue":
                await self._submit(job)
            reply = await self._wait(job)
            if reply.ok:
                return reply
            detail, status = self._client.redact(error_detail(reply.body)), reply.http_status
            if reply.error_type == "request_timeout" and self._exe.queue_timeout is not None:
                # the server enforced our own X-Fal-Request-Timeout: honour it, no retry
                raise Failed(error_info("queue_timeout", detail, status))
            if status == 404 and self._exe.mode == "queue":
                reason = "result no longer on the server (404): submitted again"
            elif is_retryable_result(status, reply.error_type):
                reason = f"server failure {reply.error_type or status}: submitted again"
            else:
                kind = "validation" if status == 422 else reply.error_type or "http"
                raise Failed(error_info(kind, detail, status))
            tries += 1
            if tries > self._exe.retries:
                kind = reply.error_type or "http"
                raise Failed(error_info(kind, f"gave up after {tries} tries: {detail}", status))
            job.resubmitted.append(reason)
            job.handle = None
            self.stats.retrying += 1
            self._notify("retrying", self.stats)
            await asyncio.sleep(backoff(tries))

    async def _submit(self, job: Job) -> None:
        endpoint, headers = self._opt.endpoint, self._headers
        job.handle = await self._send(job, lambda b: self._client.submit(endpoint, b, headers))
        job.submitted_at = utc_now()
        self._journal.append(job.record(SUBMITTED))

    async def _run_sync(self, job: Job) -> Reply:
        endpoint, headers = self._opt.endpoint, self._headers
        return await self._send(job, lambda b: self._client.run_sync(endpoint, b, headers))

    async def _send(self, job: Job, send: Callable[[Mapping[str, Any]], Awaitable[T]]) -> T:
        """One submission (queue submit or sync run), retried per the policy."""
        tries = 0
        while True:
            if self._stopping:
                raise Stopped  # never start a submission after Ctrl-C
            await self._gate.admit()
            try:
                body = await self._attachments.body(job.request)
            except OSError as exc:  # the file changed since validation: this row cannot go
                raise Failed(error_info("input", f"cannot read a local input: {exc}")) from None
            self._begin_submission(job)
            try:
                async with self._probe if not self._proven else contextlib.nullcontext():
                    result = await send(body)
                    self._proven = True
                    return result
            except CallError as error:
                tries += 1
                await self._after_failed_send(job, error, tries)

    def _begin_submission(self, job: Job) -> None:
        if job.uncertain:
            job.duplicates += 1
            self.stats.possible_duplicates += 1
            job.uncertain = False
            job.resubmitted.append("the previous submission may have been accepted: sent again")
        job.attempts += 1
        self.stats.submitted += 1
        self._journal.append(job.record(SUBMITTING))

    async def _after_failed_send(self, job: Job, error: CallError, tries: int) -> None:
        """A submit (or sync run) call failed: retry, count a possible duplicate, or fail."""
        decision = decide(error, "submit", tries)
        if decision.verdict is Verdict.AUTH:
            raise AuthError(str(error))
        if error.http_status == 429:
            self._gate.pause(decision.wait)  # the limit is the account's: everyone waits
        if decision.verdict is Verdict.FAIL or tries > self._exe.retries:
            kind = (
                "validation"
                if error.http_status == 422
                else ("transport" if error.http_status is None else "http")
            )
            raise Failed(error_info(kind, error.message, error.http_status))
        if decision.verdict is Verdict.AMBIGUOUS:
            if not self._opt.resubmit_ambiguous:
                raise Failed(
                    error_info(
                        "ambiguous",
                        f"{error.message}; the server may have "
                        "accepted it, not resubmitted (--no-resubmit-ambiguous)",
                    )
                )
            job.uncertain = True
        self.stats.retrying += 1
        self._notify("retrying", self.stats)
        await asyncio.sleep(decision.wait)

    async def _wait(self, job: Job) -> Reply:
        """Wait for the request to complete, within its deadline, and fetch the reply."""
        try:
            async with asyncio.timeout(self._exe.timeout):
                if self._exe.mode == "sync":
                    return await self._run_sync(job)
                return await self._poll(job)
        except TimeoutError:
            if job.handle is not None:
                await self._client.cancel(job.handle)
            raise Failed(
                error_info(
                    "timeout", f"no result within {self._exe.timeout:g} s (cancelled on the server)"
                )
            ) from None

    async def _poll(self, job: Job) -> Reply:
        assert job.handle is not None
        # The IN_QUEUE cap is a timer, not a check on status events: a stream may be silent.
        queue_cap = asyncio.timeout(self._exe.queue_timeout)
        try:
            async with queue_cap:
                return await self._poll_until_done(job.handle, queue_cap)
        except TimeoutError:
            if not queue_cap.expired():
                raise  # the request's own deadline: handled by _wait
        await self._client.cancel(job.handle)
        raise Failed(
            error_info(
                "queue_timeout", f"still queued after {self._exe.queue_timeout:g} s (cancelled)"
            )
        )

    async def _poll_until_done(self, handle: Handle, queue_cap: asyncio.Timeout) -> Reply:
        tries = 0
        while True:
            try:
                async with aclosing(self._client.watch(handle)) as statuses:
                    async for status in statuses:
                        if status.state != "IN_QUEUE":
                            queue_cap.reschedule(None)
                queue_cap.reschedule(None)
                return await self._client.result(handle)
            except CallError as error:
                if error.http_status == 404:
                    return Reply(404, {"detail": error.message})
                tries += 1
                decision = decide(error, "status", tries)
                if decision.verdict is Verdict.AUTH:
                    raise AuthError(str(error)) from None
                if decision.verdict is not Verdict.RETRY:
                    raise Failed(error_info("http", error.message, error.http_status)) from None
                self.stats.retrying += 1
                await asyncio.sleep(decision.wait)  # the deadline in _wait bounds this loop

    async def _save(self, key: str, reply: Reply) -> tuple[list[Any], dict[str, Any]]:
        body = reply.body if isinstance(reply.body, dict) else {}
        images = body.get("images")
        if not isinstance(images, list) or not images:
            raise Failed(error_info("output", "the answer has no images"))
        outputs = []
        for index, image in enumerate(images):
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str):
                raise Failed(error_info("output", f"image {index} has no url"))
            try:
                data = await self._client.download(url, MAX_OUTPUT_BYTES)
                if len(data) <= INLINE_SAVE_BYTES:  # cheaper than a thread hand-off
                    outputs.append(save_image(self._journal.out_dir, key, index, data))
                else:  # checking, hashing and writing a big image: off the event loop
                    outputs.append(
                        await asyncio.to_thread(save_image, self._journal.out_dir, key, index, data)
                    )
            except CallError as error:
                raise Failed(error_info("download", error.message, error.http_status)) from None
            except NotAnImage as error:
                raise Failed(error_info("output", str(error))) from None
        extras = {k: v for k, v in body.items() if k not in ("images", "prompt")}
        return outputs, extras
