"""The fal queue and sync API: submit, status (SSE stream or adaptive polling), result,
cancel, sync run, storage upload, output download. Gives small frozen replies; raises
CallError for a failed call and AuthError for refused credentials. The emulator is reached
through exactly this code, like fal.ai."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..errors import CallError
from ..models import Execution
from ..urls import request_url
from .http import GET_ATTEMPTS, Http, Reply, body_of, origin

# fal reroutes a request to an "equivalent alternative endpoint" after repeated failures unless
# the submission carries this (docs: reliability, platform headers): another model's image in
# a sweep or a dataset is a silent wrong result, so it is sent unless the spec allows them.
DISABLE_FALLBACKS = {"x-fal-disable-fallbacks": "true"}
STREAM_IDLE = 30.0  # a status stream silent this long is dropped and re-opened
POLL_FIRST, POLL_MAX = 0.25, 5.0  # adaptive polling: grows x1.6 per unchanged status


@dataclass(frozen=True)
class ServerConfig:
    queue_url: str
    run_url: str
    rest_url: str
    api_key: str = field(repr=False)  # never shown: not in repr, logs or error text


@dataclass(frozen=True)
class Handle:
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


@dataclass(frozen=True)
class Status:
    state: str  # IN_QUEUE | IN_PROGRESS | COMPLETED
    queue_position: int | None = None
    error: str | None = None
    error_type: str | None = None


def request_headers(execution: Execution) -> dict[str, str]:
    """fal's request headers for a submission (queue or sync), from the spec's `execution`
    block."""
    headers = {}
    if not execution.allow_fallbacks:
        headers.update(DISABLE_FALLBACKS)
    if execution.mode == "queue" and execution.queue_timeout is not None:
        # server-side deadline to start (queue wait included); whole seconds, at least 1
        headers["X-Fal-Request-Timeout"] = str(max(1, math.ceil(execution.queue_timeout)))
    if execution.mode == "queue" and execution.priority is not None:
        headers["X-Fal-Queue-Priority"] = execution.priority
    if not execution.store_io:
        headers["X-Fal-Store-IO"] = "0"
    return headers


def handle_for(queue_url: str, endpoint_id: str, request_id: str) -> Handle:
    """Rebuild a request's URLs from its id (when resuming from the journal)."""
    base = request_url(queue_url, endpoint_id, request_id)
    return Handle(request_id, base + "/status", base, base + "/cancel")


class FalClient:
    def __init__(
        self, session: aiohttp.ClientSession, config: ServerConfig, attempts: int = GET_ATTEMPTS
    ) -> None:
        """`attempts`: the calls a status, result or download call may take, retries included."""
        self._session = session
        self._http = Http(session, self.redact, attempts)
        self._config = config
        self._auth = {"Authorization": f"Key {config.api_key}"}
        # The key goes only to the configured hosts, whatever URLs a server hands back.
        self._trusted = {origin(u) for u in (config.queue_url, config.run_url, config.rest_url)}
        self._trusted_prefixes = tuple(
            f"{p.scheme}://{p.netloc}/"
            for p in map(urlsplit, (config.queue_url, config.run_url, config.rest_url))
            if "@" not in p.netloc
        )
        self._sse = True  # cleared for good when the server has no status stream

    def handle(self, endpoint_id: str, request_id: str) -> Handle:
        """A queued request's handle from its id (when resuming from the journal)."""
        return handle_for(self._config.queue_url, endpoint_id, request_id)

    def _auth_for(self, url: str) -> dict[str, str]:
        # A URL spelled as a trusted origin plus a path is that origin: skip parsing it.
        if url.startswith(self._trusted_prefixes) or origin(url) in self._trusted:
            return dict(self._auth)
        return {}

    @property
    def answered(self) -> bool:
        """Whether any call of this client has had an HTTP answer (any status) so far."""
        return self._http.answered

    @property
    def rate_limited(self) -> int:
        """429 answers seen so far, on every route."""
        return self._http.rate_limited

    def redact(self, text: str) -> str:
        key = self._config.api_key
        return text.replace(key, "***") if key else text

    # -- submitting -----------------------------------------------------------------------
    async def submit(
        self, endpoint_id: str, body: Mapping[str, Any], options: Mapping[str, str] = {}
    ) -> Handle:
        """POST to the queue (with `request_headers`). Not retried here: a submit's retry is
        the executor's decision."""
        headers = {**options, **self._auth}
        url = f"{self._config.queue_url.rstrip('/')}/{endpoint_id}"
        reply = await self._http.call("POST", url, headers=headers, json_body=body, op="submit")
        data = reply.body if isinstance(reply.body, dict) else {}
        request_id = data.get("request_id")
        if not isinstance(request_id, str):
            raise CallError("submit answer has no request_id", http_status=reply.http_status)
        rebuilt = handle_for(self._config.queue_url, endpoint_id, request_id)
        return Handle(
            request_id,
            data.get("status_url") or rebuilt.status_url,
            data.get("response_url") or rebuilt.response_url,
            data.get("cancel_url") or rebuilt.cancel_url,
        )

    async def run_sync(
        self, endpoint_id: str, body: Mapping[str, Any], options: Mapping[str, str] = {}
    ) -> Reply:
        """POST to the sync host; the model's answer comes back directly (any status)."""
        url = f"{self._config.run_url.rstrip('/')}/{endpoint_id}"
        headers = {**options, **self._auth}
        return await self._http.call(
            "POST", url, headers=headers, json_body=body, op="submit", accept_error=True
        )

    # -- waiting --------------------------------------------------------------------------
    async def watch(self, handle: Handle) -> AsyncGenerator[Status, None]:
        """Statuses until COMPLETED: the SSE status stream when the server has one (one call
        per request), else polling that backs off while nothing changes."""
        interval = POLL_FIRST
        last: Status | None = None
        while True:
            stream_missing: list[bool] = []
            if self._sse:
                async with aclosing(self._stream(handle, stream_missing)) as events:
                    async for status in events:
                        yield status
                        if status.state == "COMPLETED":
                            return
            status = await self.status(handle)  # a 404 here means the request itself is gone
            if stream_missing:
                self._sse = False  # the request exists, the stream route does not: poll from now
            yield status
            if status.state == "COMPLETED":
                return
            interval = POLL_FIRST if status != last and self._sse else min(interval * 1.6, POLL_MAX)
            last = status
            await asyncio.sleep(interval)

    async def status(self, handle: Handle) -> Status:
        reply = await self._http.get(
            handle.status_url,
            headers=self._auth_for(handle.status_url),
            op="status",
            params={"logs": "0"},
        )
        return _status(reply.body)

    async def _stream(self, handle: Handle, missing: list[bool]) -> AsyncGenerator[Status, None]:
        """Statuses from the SSE stream; appends to `missing` when the server answers that
        there is no such stream (a 404 may also mean an unknown request: watch tells apart)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=STREAM_IDLE)
        try:
            async with self._session.get(
                handle.status_url + "/stream",
                params={"logs": "0"},
                headers=self._auth_for(handle.status_url),
                timeout=timeout,
            ) as resp:
                self._http.answered = True
                ctype = resp.headers.get("Content-Type", "")
                if resp.status in (404, 405, 501) or (
                    resp.status < 300 and not ctype.startswith("text/event-stream")
                ):
                    missing.append(True)
                    return
                if resp.status >= 300:
                    # Raises AuthError for refused credentials (and counts a 429); any other
                    # failure falls back to the plain status call, retried where it is made.
                    self._http.error(resp, await body_of(resp), op="status")
                    return
                data: list[str] = []
                async for raw in resp.content:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield _status(json.loads("\n".join(data)))
                        data = []
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return  # the caller falls back to a plain status call, then re-opens the stream

    # -- results --------------------------------------------------------------------------
    async def result(self, handle: Handle) -> Reply:
        """The model's own status code and body; 4xx answers come back as replies."""
        return await self._http.get(
            handle.response_url,
            headers=self._auth_for(handle.response_url),
            op="result",
            accept_error=True,
        )

    async def cancel(self, handle: Handle) -> None:
        # Best effort: the request's deadline is already being recorded either way.
        with contextlib.suppress(CallError):
            await self._http.call(
                "PUT",
                handle.cancel_url,
                headers=self._auth_for(handle.cancel_url),
                op="cancel",
                accept_error=True,
            )

    async def download(self, url: str, max_bytes: int, attempts: int | None = None) -> bytes:
        """An output's bytes (data: URI or http(s) URL), fetched without credentials;
        `attempts` caps the tries (default: the usual GET policy)."""
        return await self._http.fetch(url, max_bytes, attempts)

    async def upload(self, data: bytes, content_type: str, file_name: str) -> str:
        """Put a local file on fal's storage (CDN v3 token flow, then the GCS fallback)."""
        rest = self._config.rest_url.rstrip("/")
        try:
            token = (
                await self._http.call(
                    "POST",
                    f"{rest}/storage/auth/token?storage_type=fal-cdn-v3",
                    headers=dict(self._auth),
                    json_body={},
                    op="upload",
                )
            ).body
            headers = {
                "Authorization": f"{token['token_type']} {token['token']}",
                "Content-Type": content_type,
                "X-Fal-File-Name": file_name,
            }
            reply = await self._http.call(
                "POST",
                f"{token['base_url'].rstrip('/')}/files/upload",
                headers=headers,
                raw_body=data,
                op="upload",
            )
            return str(reply.body["access_url"])
        except (CallError, KeyError, TypeError):
            init = (
                await self._http.call(
                    "POST",
                    f"{rest}/storage/upload/initiate?storage_type=gcs",
                    headers=dict(self._auth),
                    json_body={"file_name": file_name, "content_type": content_type},
                    op="upload",
                )
            ).body
            await self._http.call(
                "PUT",
                init["upload_url"],
                headers={"Content-Type": content_type},
                raw_body=data,
                op="upload",
            )
            return str(init["file_url"])


def _status(body: Any) -> Status:
    if not isinstance(body, dict) or body.get("status") not in (
        "IN_QUEUE",
        "IN_PROGRESS",
        "COMPLETED",
    ):
        raise CallError(f"unexpected status answer: {str(body)[:200]}")
    return Status(
        body["status"], body.get("queue_position"), body.get("error"), body.get("error_type")
    )
