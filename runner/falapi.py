"""The fal queue and sync HTTP API over one aiohttp session: submit, status (SSE stream or
adaptive polling), result, cancel, sync run, upload, download. Gives small frozen replies;
raises CallError for a failed call and AuthError for refused credentials. The emulator is
reached through exactly this code, like fal.ai."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp

from .errors import AuthError, CallError
from .retry import Verdict, decide, parse_retry_after

CALL_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
STREAM_IDLE = 30.0  # a status stream silent this long is dropped and re-opened
GET_ATTEMPTS = 8
POLL_FIRST, POLL_MAX = 0.25, 5.0  # adaptive polling: grows x1.6 per unchanged status


@dataclass(frozen=True)
class ServerConfig:
    queue_url: str
    run_url: str
    rest_url: str
    key: str = field(repr=False)


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


@dataclass(frozen=True)
class Reply:
    """A model's answer: its own HTTP status and body (JSON, or text when not JSON)."""

    http_status: int
    body: Any
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.http_status < 300


def app_base(endpoint_id: str) -> str:
    """owner/alias of an endpoint id (status/result/cancel drop the path), namespaces kept."""
    parts = endpoint_id.strip("/").split("/")
    if parts[0] in ("workflows", "comfy"):
        return "/".join(parts[:3])
    return "/".join(parts[:2])


def handle_for(queue_url: str, endpoint_id: str, request_id: str) -> Handle:
    """Rebuild a request's URLs from its id (when resuming from the journal)."""
    base = f"{queue_url.rstrip('/')}/{app_base(endpoint_id)}/requests/{request_id}"
    return Handle(request_id, base + "/status", base, base + "/cancel")


def error_detail(body: Any) -> str:
    """fal's error body as one line: a string detail, or `loc: msg` items of a 422 list."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        items = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc", []) if p != "body"]
                items.append(
                    f"{'.'.join(loc)}: {item.get('msg', '')}" if loc else item.get("msg", "")
                )
            else:
                items.append(str(item))
        return "; ".join(items)
    text = detail if isinstance(detail, str) else json.dumps(detail)
    return " ".join(text.split())[:500]


class FalClient:
    def __init__(self, session: aiohttp.ClientSession, config: ServerConfig) -> None:
        self._session = session
        self._config = config
        self._auth = {"Authorization": f"Key {config.key}"}
        self._sse = True  # cleared for good when the server has no status stream

    def redact(self, text: str) -> str:
        return text.replace(self._config.key, "***") if self._config.key else text

    # -- submitting -----------------------------------------------------------------------
    async def submit(
        self, endpoint_id: str, body: Mapping[str, Any], start_timeout: float | None = None
    ) -> Handle:
        """POST to the queue. Not retried here: a submit's retry is the executor's decision."""
        headers = dict(self._auth)
        if start_timeout is not None:
            headers["X-Fal-Request-Timeout"] = str(max(1, int(start_timeout)))
        url = f"{self._config.queue_url.rstrip('/')}/{endpoint_id}"
        reply = await self._call("POST", url, headers=headers, json_body=body, op="submit")
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

    async def run_sync(self, endpoint_id: str, body: Mapping[str, Any]) -> Reply:
        """POST to the sync host; the model's answer comes back directly (any status)."""
        url = f"{self._config.run_url.rstrip('/')}/{endpoint_id}"
        return await self._call(
            "POST", url, headers=dict(self._auth), json_body=body, op="submit", accept_error=True
        )

    # -- waiting --------------------------------------------------------------------------
    async def watch(self, handle: Handle) -> AsyncGenerator[Status, None]:
        """Statuses until COMPLETED: the SSE status stream when the server has one (one call
        per request), else polling that backs off while nothing changes."""
        interval = POLL_FIRST
        last: Status | None = None
        while True:
            if self._sse:
                async with aclosing(self._stream(handle)) as events:
                    async for status in events:
                        yield status
                        if status.state == "COMPLETED":
                            return
            status = await self.status(handle)
            yield status
            if status.state == "COMPLETED":
                return
            interval = POLL_FIRST if status != last and self._sse else min(interval * 1.6, POLL_MAX)
            last = status
            await asyncio.sleep(interval)

    async def status(self, handle: Handle) -> Status:
        reply = await self._get(handle.status_url, op="status", params={"logs": "0"})
        return _status(reply.body)

    async def _stream(self, handle: Handle) -> AsyncGenerator[Status, None]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=STREAM_IDLE)
        try:
            async with self._session.get(
                handle.status_url + "/stream",
                params={"logs": "0"},
                headers=self._auth,
                timeout=timeout,
            ) as resp:
                ctype = resp.headers.get("Content-Type", "")
                if resp.status in (404, 405, 501) or (
                    resp.status < 300 and not ctype.startswith("text/event-stream")
                ):
                    self._sse = False
                    return
                if resp.status >= 300:
                    self._raise_for(resp, await _body(resp), op="status")
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
        return await self._get(handle.response_url, op="result", accept_error=True)

    async def cancel(self, handle: Handle) -> None:
        # Best effort: the request's deadline is already being recorded either way.
        with contextlib.suppress(CallError):
            await self._call(
                "PUT", handle.cancel_url, headers=dict(self._auth), op="cancel", accept_error=True
            )

    async def download(self, url: str, max_bytes: int) -> bytes:
        """Bytes of an output: a data: URI, or an http(s) URL fetched WITHOUT credentials."""
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            if len(payload) > max_bytes * 4 // 3 + 4:
                raise CallError(f"output larger than {max_bytes} bytes", http_status=413)
            if header.endswith(";base64"):
                return base64.b64decode(payload, validate=False)
            raise CallError("data: URI output is not base64")
        if urlsplit(url).scheme not in ("http", "https"):
            raise CallError(f"refusing to follow output URL with scheme {urlsplit(url).scheme!r}")
        for attempt in range(GET_ATTEMPTS):
            try:
                async with self._session.get(url, timeout=CALL_TIMEOUT) as resp:
                    if resp.status >= 300:
                        self._raise_for(resp, await _body(resp), op="download")
                    chunks, size = [], 0
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        size += len(chunk)
                        if size > max_bytes:
                            raise CallError(
                                f"output larger than {max_bytes} bytes", http_status=413
                            )
                        chunks.append(chunk)
                    return b"".join(chunks)
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = CallError(f"download failed: {type(exc).__name__}", sent="maybe")
            except CallError as exc:
                error = exc
            decision = decide(error, "download", attempt)
            if decision.verdict is not Verdict.RETRY or attempt == GET_ATTEMPTS - 1:
                raise error
            await asyncio.sleep(decision.wait)
        raise AssertionError("unreachable")

    async def upload(self, data: bytes, content_type: str, file_name: str) -> str:
        """Put a local file on fal's storage (CDN v3 token flow, then the GCS fallback)."""
        rest = self._config.rest_url.rstrip("/")
        try:
            token = (
                await self._call(
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
            reply = await self._call(
                "POST",
                f"{token['base_url'].rstrip('/')}/files/upload",
                headers=headers,
                raw_body=data,
                op="upload",
            )
            return str(reply.body["access_url"])
        except (CallError, KeyError, TypeError):
            init = (
                await self._call(
                    "POST",
                    f"{rest}/storage/upload/initiate?storage_type=gcs",
                    headers=dict(self._auth),
                    json_body={"file_name": file_name, "content_type": content_type},
                    op="upload",
                )
            ).body
            await self._call(
                "PUT",
                init["upload_url"],
                headers={"Content-Type": content_type},
                raw_body=data,
                op="upload",
            )
            return str(init["file_url"])

    # -- plumbing -------------------------------------------------------------------------
    async def _get(
        self,
        url: str,
        *,
        op: str,
        params: Mapping[str, str] | None = None,
        accept_error: bool = False,
    ) -> Reply:
        """A GET retried per the policy (retry.py); gives up after GET_ATTEMPTS."""
        for attempt in range(GET_ATTEMPTS):
            try:
                return await self._call(
                    "GET",
                    url,
                    headers=dict(self._auth),
                    params=params,
                    op=op,
                    accept_error=accept_error,
                )
            except CallError as error:
                decision = decide(error, op, attempt)
                if decision.verdict is not Verdict.RETRY or attempt == GET_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(decision.wait)
        raise AssertionError("unreachable")

    async def _call(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        op: str,
        json_body: Any = None,
        raw_body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        accept_error: bool = False,
    ) -> Reply:
        data = raw_body
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, params=params, timeout=CALL_TIMEOUT
            ) as resp:
                body = await _body(resp)
                error_type = _error_type(resp, body)
                if resp.status >= 300 and not (accept_error and _is_model_error(resp, error_type)):
                    self._raise_for(resp, body, op=op)
                return Reply(resp.status, body, error_type)
        except aiohttp.ClientConnectorError as exc:
            raise CallError(
                f"cannot connect to {_origin(url)}: {exc.os_error or exc}", sent="no"
            ) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            raise CallError(f"{op} to {_origin(url)} failed: {what}", sent="maybe") from None

    def _raise_for(self, resp: aiohttp.ClientResponse, body: Any, *, op: str) -> NoReturn:
        if resp.status in (401, 403):
            raise AuthError(
                f"the server refused the API key (HTTP {resp.status}): "
                + self.redact(error_detail(body))
            )
        ingress = resp.status in (502, 503, 504) and "x-fal-request-id" not in resp.headers
        has_error_body = isinstance(body, dict) and "detail" in body
        sure_not_accepted = ingress or has_error_body or resp.status in (408, 429)
        raise CallError(
            f"{op} answered HTTP {resp.status}: {self.redact(error_detail(body))}",
            http_status=resp.status,
            error_type=_error_type(resp, body),
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            sent="no" if sure_not_accepted else "maybe",
            ingress=ingress,
        )


def _is_model_error(resp: aiohttp.ClientResponse, error_type: str | None) -> bool:
    """The model's own error answer (422, 404 lost, 504 request_timeout...), as opposed to a
    passing failure of the call, which is retried with the same request id."""
    if resp.status in (401, 403, 408, 409, 429):
        return False
    return resp.status < 500 or error_type is not None


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


def _error_type(resp: aiohttp.ClientResponse, body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error_type"), str):
        return str(body["error_type"])
    return resp.headers.get("X-Fal-Error-Type")


async def _body(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:2000]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
