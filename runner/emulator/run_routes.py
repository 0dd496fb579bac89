"""The run (sync) app's route: POST the input, wait for the model, get its output directly
(200) or its error (422, 504, ...). Sync runs share the queue's concurrency slots."""

from __future__ import annotations

from aiohttp import web

from . import scheduler
from .middleware import json_response
from .queue_routes import ENDPOINT_PATH, new_request, read_payload, resolve_endpoint
from .state import STATE


def add_run_routes(app: web.Application) -> None:
    app.router.add_post(ENDPOINT_PATH, run, name="run")


async def run(request: web.Request) -> web.Response:
    state = request.app[STATE]
    endpoint = resolve_endpoint(request)
    if isinstance(endpoint, web.Response):
        return endpoint
    payload = await read_payload(request)
    state.stats.run_calls += 1
    queued = new_request(request, state, endpoint, payload, history=False)
    try:
        outcome = await scheduler.wait_completed(queued)
    finally:
        state.forget(queued)  # a sync run leaves no request history
        if queued.task is not None and not queued.task.done():
            queued.cancel_requested = True
            queued.task.cancel()
    return json_response(
        outcome.status, outcome.body, {"x-fal-request-id": queued.id, **dict(outcome.headers)}
    )
