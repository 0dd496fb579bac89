"""The queue app's routes: submit, status (JSON and SSE stream), result and cancel, answering
with fal's status codes and bodies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from ..endpoints import Endpoint, get_endpoint
from ..urls import app_base
from . import scheduler
from .middleware import drop, json_response
from .state import COMPLETED, IN_PROGRESS, IN_QUEUE, STATE, EmulatorState, QueuedRequest

ENDPOINT_PATH = "/{owner}/{alias}{path:(?:/.*)?}"
REQUEST_PATH = "/{owner}/{alias}/requests/{request_id}"


def add_queue_routes(app: web.Application) -> None:
    app.router.add_get(REQUEST_PATH + "/status", status, name="status")
    app.router.add_get(REQUEST_PATH + "/status/stream", stream, name="stream")
    app.router.add_get(REQUEST_PATH, result, name="result")
    app.router.add_put(REQUEST_PATH + "/cancel", cancel, name="cancel")
    app.router.add_post(ENDPOINT_PATH, submit, name="submit")


def base_url(request: web.Request) -> str:
    """scheme://host as the client addressed us, so the URLs we return work for it."""
    return f"{request.scheme}://{request.host}"


def resolve_endpoint(request: web.Request) -> Endpoint | web.Response:
    info = request.match_info
    endpoint_id = f"{info['owner']}/{info['alias']}{info['path']}".rstrip("/")
    endpoint = get_endpoint(endpoint_id)
    if endpoint is None:
        return json_response(404, {"detail": f"Application '{endpoint_id}' not found"})
    return endpoint


async def read_payload(request: web.Request) -> Any:
    """The JSON body; a body that is not JSON is kept as text, so the model rejects it (422)."""
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def start_deadline(request: web.Request) -> float | None:
    try:
        seconds = float(request.headers["X-Fal-Request-Timeout"])
    except (KeyError, ValueError):
        return None
    return time.monotonic() + seconds


def new_request(
    request: web.Request, state: EmulatorState, endpoint: Endpoint, payload: Any, *, history: bool
) -> QueuedRequest:
    sync_mode = isinstance(payload, dict) and payload.get("sync_mode") is True
    for name, value in request.headers.items():
        if name.lower().startswith("x-fal-"):
            state.stats.platform_headers[name.lower(), value] += 1
    queued = state.enqueue(
        endpoint,
        payload,
        base_url(request),
        start_deadline=start_deadline(request),
        webhook=request.query.get("fal_webhook"),
        keep=history and not sync_mode,
    )
    scheduler.start(state, queued)
    return queued


async def submit(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    endpoint = resolve_endpoint(request)
    if isinstance(endpoint, web.Response):
        return endpoint
    payload = await read_payload(request)
    queued = new_request(request, state, endpoint, payload, history=True)
    state.stats.count_submission(payload)
    body = {
        "status": IN_QUEUE,
        "request_id": queued.id,
        **queued.urls(),
        "queue_position": state.queue_position(queued),
    }
    faults = state.settings.faults
    if "submit" in faults.routes and state.roll(faults.p_drop_after_accept):
        state.stats.faults["submit", "drop_after_accept"] += 1
        return drop(request)
    return json_response(200, body, {"x-fal-request-id": queued.id})


def find_queued(request: web.Request) -> QueuedRequest | web.Response:
    info = request.match_info
    queued = request.app[STATE].find(info["request_id"])
    if queued is None or app_base(queued.endpoint.id) != f"{info['owner']}/{info['alias']}":
        return json_response(404, {"detail": "Request not found"})
    return queued


def wants_logs(request: web.Request) -> bool:
    return request.query.get("logs", "0").lower() in ("1", "true", "yes")


def status_body(state: EmulatorState, queued: QueuedRequest, with_logs: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"status": queued.state, "request_id": queued.id, **queued.urls()}
    if queued.state == IN_QUEUE:
        body["queue_position"] = state.queue_position(queued)
    elif queued.state == IN_PROGRESS:
        body["logs"] = list(queued.logs) if with_logs else None
    else:
        body["logs"] = list(queued.logs) if with_logs else None
        body["metrics"] = (
            {} if queued.inference_time is None else {"inference_time": queued.inference_time}
        )
        if queued.outcome is not None and queued.outcome.error is not None:
            body["error"] = queued.outcome.error
            body["error_type"] = queued.outcome.error_type
    return body


async def status(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.stats.status_calls += 1
    queued = find_queued(request)
    if isinstance(queued, web.Response):
        return queued
    code = 200 if queued.state == COMPLETED else 202
    return json_response(
        code, status_body(state, queued, wants_logs(request)), {"x-fal-request-id": queued.id}
    )


async def stream(request: web.Request) -> web.StreamResponse:
    """One SSE event per state change (and every stream_interval), ending after COMPLETED."""
    state = request.app[STATE]
    state.stats.stream_calls += 1
    queued = find_queued(request)
    if isinstance(queued, web.Response):
        return queued
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "x-fal-request-id": queued.id,
        }
    )
    await response.prepare(request)
    with_logs = wants_logs(request)
    try:
        while True:
            changed = queued.changed
            event = json.dumps(status_body(state, queued, with_logs))
            await response.write(f"data: {event}\n\n".encode())
            if queued.state == COMPLETED or (queued.task is not None and queued.task.done()):
                break  # done, or the emulator is stopping
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), state.settings.stream_interval)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away; nothing to tell it
    return response


async def result(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.stats.result_calls += 1
    queued = find_queued(request)
    if isinstance(queued, web.Response):
        return queued
    if queued.state != COMPLETED or queued.outcome is None:
        return json_response(
            400, {"detail": "Request is still in progress"}, {"x-fal-request-id": queued.id}
        )
    outcome = queued.outcome
    if not queued.keep:
        state.forget(queued)  # sync_mode: the output is handed over once, not kept in history
    return json_response(
        outcome.status, outcome.body, {"x-fal-request-id": queued.id, **dict(outcome.headers)}
    )


async def cancel(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.stats.cancels += 1
    queued = find_queued(request)
    if isinstance(queued, web.Response):
        return queued
    if queued.state == COMPLETED:
        return json_response(400, {"status": "ALREADY_COMPLETED"}, {"x-fal-request-id": queued.id})
    if queued.state == IN_QUEUE and queued.task is not None:
        # as on fal, a cancel takes a request out of the queue but does not stop one already
        # running: that one completes (and would be billed)
        queued.cancel_requested = True
        queued.task.cancel()
    return json_response(202, {"status": "CANCELLATION_REQUESTED"}, {"x-fal-request-id": queued.id})
