"""aiohttp middlewares for the emulator: seeded fault injection (outermost, like fal's ingress)
and `Authorization: Key ...` checks. Also `drop()`, which closes a connection unanswered."""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from ..emulatorsettings import FAULT_KINDS
from .state import STATE

KEY_ROUTES = frozenset(
    {"submit", "status", "stream", "result", "cancel", "run", "token", "initiate"}
)
NGINX_503 = (
    "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>"
    "\r\n</body>\r\n</html>\r\n"
)


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def drop(request: web.Request) -> web.Response:
    """Abort the connection: the client sees it closed with no response at all."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)  # never reaches the client


def route_name(request: web.Request) -> str:
    return request.match_info.route.name or ""


@web.middleware
async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    route = route_name(request)
    state.stats.requests[route] += 1
    faults = state.settings.faults
    if route not in faults.routes:
        return await handler(request)
    for kind in FAULT_KINDS:
        if not state.roll(faults.probability(kind)):
            continue
        state.stats.faults[route, kind] += 1
        if kind == "stall":
            await asyncio.sleep(state.settings.stall)
            break
        if kind == "drop":
            return drop(request)
        if kind == "503_ingress":
            return web.Response(status=503, text=NGINX_503, content_type="text/html")
        if kind == "429":
            return json_response(
                429,
                {"detail": "Too many requests"},
                {"Retry-After": f"{state.settings.retry_after:g}"},
            )
        request_id = request.match_info.get("request_id") or str(uuid.uuid4())
        return json_response(
            500, {"detail": "Internal server error"}, {"x-fal-request-id": request_id}
        )
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    keys = request.app[STATE].settings.keys
    if keys is None or route_name(request) not in KEY_ROUTES:
        return await handler(request)
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if not key:
        return json_response(
            401, {"detail": "Missing authorization header: expected 'Authorization: Key <FAL_KEY>'"}
        )
    # Compare against every key, in constant time, so timing tells nothing about a key.
    good = any(hmac.compare_digest(key.strip().encode(), k.encode()) for k in keys)
    if scheme != "Key" or not good:
        return json_response(401, {"detail": "Invalid credentials"})
    return await handler(request)
