"""A request's life in the emulated queue: IN_QUEUE (queue_wait, then a free concurrency slot,
or a request_timeout) -> IN_PROGRESS (the model, or an injected infra error) -> COMPLETED, then
the webhook. `start(state, queued)` launches it as a task."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import aiohttp

from ..urls import is_loopback
from .model import run_model
from .state import COMPLETED, IN_PROGRESS, EmulatorState, Outcome, QueuedRequest

WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=15)


def start(state: EmulatorState, queued: QueuedRequest) -> None:
    queued.task = asyncio.get_running_loop().create_task(
        _run(state, queued), name=f"queued-{queued.id}"
    )


async def wait_completed(queued: QueuedRequest) -> Outcome:
    while True:
        changed = queued.changed
        if queued.state == COMPLETED and queued.outcome is not None:
            return queued.outcome
        if queued.task is None or queued.task.done():  # stopped by a shutdown, never completed
            return runner_disconnected()
        await changed.wait()


def request_timeout() -> Outcome:
    detail = "Request timed out before it could start (X-Fal-Request-Timeout)"
    return _infra_error(504, "request_timeout", detail, ("X-Fal-Request-Timeout-Type", "user"))


def runner_disconnected() -> Outcome:
    detail = "The runner disconnected while processing the request"
    return _infra_error(503, "runner_disconnected", detail)


def _infra_error(status: int, error_type: str, detail: str, *headers: tuple[str, str]) -> Outcome:
    """fal's infrastructure failure: error body, error type in body and header, not billed."""
    return Outcome(
        status,
        {"detail": detail, "error_type": error_type},
        error=detail,
        error_type=error_type,
        headers=(("X-Fal-Error-Type", error_type), *headers),
    )


def cancelled() -> Outcome:
    detail = "Request was cancelled"
    return Outcome(400, {"detail": detail}, error=detail, error_type="request_cancelled")


async def _run(state: EmulatorState, queued: QueuedRequest) -> None:
    holding = [False]  # set the moment a slot is ours, so no exit path can leak it
    began = False
    try:
        wait = None if queued.start_deadline is None else queued.start_deadline - time.monotonic()
        try:
            await asyncio.wait_for(
                _acquire(state, queued, holding), max(wait, 0.0) if wait is not None else None
            )
        except TimeoutError:
            if not holding[0]:
                _finish(state, queued, request_timeout())
                return
        _begin(state, queued)
        began = True
        if state.roll(state.settings.faults.p_infra_error):
            state.stats.faults["model", "infra_error"] += 1
            await asyncio.sleep(state.settings.latency / 2)
            outcome = runner_disconnected()
        else:
            outcome = await run_model(state, queued)
        _finish(state, queued, outcome)
    except asyncio.CancelledError:
        if not queued.cancel_requested or queued.state == COMPLETED:
            raise
        _finish(state, queued, cancelled())
    finally:
        if holding[0]:
            state.slots.release()
        if began:
            state.stats.in_progress -= 1
        queued.touch()  # waiters re-check, even when a shutdown cancelled the queued


async def _acquire(state: EmulatorState, queued: QueuedRequest, holding: list[bool]) -> None:
    await asyncio.sleep(
        max(0.0, queued.submitted_at + state.settings.queue_wait - time.monotonic())
    )
    await state.slots.acquire()
    holding[0] = True


def _begin(state: EmulatorState, queued: QueuedRequest) -> None:
    _leave_queue(state, queued)
    queued.state = IN_PROGRESS
    state.stats.in_progress += 1
    state.stats.max_in_progress = max(state.stats.max_in_progress, state.stats.in_progress)
    queued.log("Request started")
    queued.touch()


def _leave_queue(state: EmulatorState, queued: QueuedRequest) -> None:
    if queued in state.waiting:
        state.waiting.remove(queued)
        for other in state.waiting:  # everyone behind it moved up: tell their status streams
            other.touch()


def _finish(state: EmulatorState, queued: QueuedRequest, outcome: Outcome) -> None:
    _leave_queue(state, queued)
    queued.outcome = outcome
    queued.state = COMPLETED
    queued.completed_at = time.monotonic()
    state.stats.completed += 1
    state.stats.failed += outcome.error is not None
    queued.touch()
    if queued.webhook:
        task = asyncio.get_running_loop().create_task(_deliver(state, queued, queued.webhook))
        state.background.add(task)
        task.add_done_callback(state.background.discard)


async def _deliver(state: EmulatorState, queued: QueuedRequest, url: str) -> None:
    assert queued.outcome is not None
    ok = queued.outcome.status == 200
    body = {
        "request_id": queued.id,
        "gateway_request_id": queued.id,
        "status": "OK" if ok else "ERROR",
        "payload": queued.outcome.body,
        "error": None if ok else f"Invalid status code: {queued.outcome.status}",
    }
    allowed = is_loopback(urlsplit(url).hostname) or state.settings.allow_remote_fetch
    if not allowed or state.session is None:
        state.stats.webhooks_failed += 1
        return
    try:
        async with state.session.post(url, json=body, timeout=WEBHOOK_TIMEOUT) as resp:
            await resp.read()
            delivered = resp.status < 300
    except (TimeoutError, aiohttp.ClientError):
        delivered = False
    if delivered:
        state.stats.webhooks_sent += 1
    else:
        state.stats.webhooks_failed += 1
