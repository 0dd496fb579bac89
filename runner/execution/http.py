"""One HTTP call as the retry policy sees it: gives a Reply (status and parsed body) or raises
CallError (AuthError for refused credentials). A failure before any byte could reach the
server (no connection: its cause in words; a request that could not be built) is a definite
"not sent"; only a failure after that may have been received. GETs are retried per retry.py;
downloads are capped, follow only http(s) and data: URIs, and never carry credentials."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..datauri import is_data_uri, parse
from ..errors import AuthError, CallError
from .retry import parse_retry_after, retried

CALL_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
GET_ATTEMPTS = 8


@dataclass(frozen=True)
class Reply:
    """A model's answer: its own HTTP status and body (JSON, or text when not JSON)."""

    http_status: int
    body: Any
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.http_status < 300


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


class Http:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        redact: Callable[[str], str],
        attempts: int = GET_ATTEMPTS,
    ) -> None:
        self.session = session
        self._redact = redact
        self.attempts = attempts  # calls a GET or a download may take, retries included
        self.rate_limited = 0  # 429 answers seen, every call (for OUT/stats.json)
        self.answered = False  # some call of this client got an HTTP answer (any status)

    async def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        op: str,
        params: Mapping[str, str] | None = None,
        accept_error: bool = False,
    ) -> Reply:
        """A GET retried per the policy (retry.py), `attempts` calls at most."""
        return await retried(
            lambda: self.call(
                "GET", url, headers=dict(headers), params=params, op=op, accept_error=accept_error
            ),
            op,
            self.attempts,
        )

    async def call(
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
        try:
            data = raw_body
            if json_body is not None:
                data = json.dumps(json_body, separators=(",", ":")).encode()
                headers["Content-Type"] = "application/json"
            async with self.session.request(
                method, url, data=data, headers=headers, params=params, timeout=CALL_TIMEOUT
            ) as resp:
                self.answered = True
                body = await body_of(resp)
                error_type = _error_type(resp, body)
                if resp.status >= 300 and not (accept_error and _is_model_error(resp, error_type)):
                    raise self.error(resp, body, op=op)
                return Reply(resp.status, body, error_type)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            cause = connect_cause(exc)
            raise CallError(f"cannot connect to {origin(url)}: {cause}", connect=cause) from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError, TypeError) as exc:
            # Raised while the request is built, before a connection is asked for (an
            # invalid URL or header, credentials in the URL): nothing went out. Never echo
            # the exception's text: it can hold the URL, or part of a header.
            raise CallError(
                f"{op} to {origin(url)} not sent: the request could not be built "
                f"({type(exc).__name__}: an invalid URL or header)",
                client=True,
            ) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            raise CallError(f"{op} to {origin(url)} failed: {what}", sent="maybe") from None

    def error(self, resp: aiohttp.ClientResponse, body: Any, *, op: str) -> CallError:
        """The error a failed answer stands for; AuthError (401/403) stops the whole run."""
        if resp.status in (401, 403):
            raise AuthError(
                f"the server refused the API key (HTTP {resp.status}): "
                + self._redact(error_detail(body)),
                resp.status,
            )
        self.rate_limited += resp.status == 429
        ingress = resp.status in (502, 503, 504) and "x-fal-request-id" not in resp.headers
        has_error_body = isinstance(body, dict) and "detail" in body
        sure_not_accepted = ingress or has_error_body or resp.status in (408, 429)
        return CallError(
            f"{op} answered HTTP {resp.status}: {self._redact(error_detail(body))}",
            http_status=resp.status,
            error_type=_error_type(resp, body),
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            sent="no" if sure_not_accepted else "maybe",
        )

    async def fetch(self, url: str, max_bytes: int, attempts: int | None = None) -> bytes:
        """Bytes of an output: a data: URI, or an http(s) URL fetched WITHOUT credentials."""
        if is_data_uri(url):
            inline = parse(url)
            if inline is not None and len(inline.payload) > max_bytes * 4 // 3 + 4:
                raise CallError(f"output larger than {max_bytes} bytes", http_status=413)
            if inline is not None and inline.is_base64:
                return inline.content(strict=False)  # paid for: decoded even with line breaks
            raise CallError("data: URI output is not base64")
        if urlsplit(url).scheme not in ("http", "https"):
            raise CallError(f"refusing to follow output URL with scheme {urlsplit(url).scheme!r}")
        return await retried(
            lambda: self._download(url, max_bytes), "download", attempts or self.attempts
        )

    async def _download(self, url: str, max_bytes: int) -> bytes:
        try:
            async with self.session.get(url, timeout=CALL_TIMEOUT) as resp:
                self.answered = True
                if resp.status >= 300:  # never AuthError: a CDN's 403 is this file's problem
                    raise CallError(
                        f"download answered HTTP {resp.status}", http_status=resp.status
                    )
                chunks, size = [], 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise CallError(f"output larger than {max_bytes} bytes", http_status=413)
                    chunks.append(chunk)
                return b"".join(chunks)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            cause = connect_cause(exc)
            raise CallError(f"download from {origin(url)} failed: {cause}", connect=cause) from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise CallError(f"download failed: {type(exc).__name__}", sent="maybe") from None


def _is_model_error(resp: aiohttp.ClientResponse, error_type: str | None) -> bool:
    """The model's own error answer (422, 404 lost, 504 request_timeout...), as opposed to a
    passing failure of the call, which is retried with the same request id."""
    if resp.status in (401, 403, 408, 409, 429):
        return False
    return resp.status < 500 or error_type is not None


def _error_type(resp: aiohttp.ClientResponse, body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error_type"), str):
        return str(body["error_type"])
    return resp.headers.get("X-Fal-Error-Type")


async def body_of(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:2000]


def origin(url: str) -> str:
    """scheme://host:port (default port filled in); never the path, query or any userinfo.
    Never raises: a URL too broken to parse (a bad port, a bad IPv6 literal) keeps what can
    be read of it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an invalid URL)"
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"https": 443, "http": 80}.get(parts.scheme, 0)
    return f"{parts.scheme}://{parts.hostname or ''}:{port}"


# errno of a failed connect -> the cause in words (the rest say their own strerror)
_CONNECT_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "connect timed out",
    errno.ECONNRESET: "connection reset while connecting",
}


def connect_cause(exc: BaseException) -> str:
    """Why no connection could be made, in words a user can act on: name not resolved,
    connection refused, a TLS certificate not trusted or another TLS failure, connect timed
    out, or the system's own reason; said of the proxy when it was the proxy's."""
    if isinstance(exc, aiohttp.ClientProxyConnectionError):  # the proxy, not the server
        return f"proxy {exc.host}:{exc.port}: {connect_cause(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", "") or "verification failed"
        return f"TLS certificate not trusted ({reason})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS failure ({_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ConnectionTimeoutError | TimeoutError):
        return "connect timed out"
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(os_error, socket.gaierror):
        return "name not resolved"
    number = getattr(os_error, "errno", None)
    if number in _CONNECT_ERRNOS:
        return _CONNECT_ERRNOS[number]
    return f"cannot connect ({_reason(os_error)})"


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:  # "WRONG_VERSION_NUMBER"
        return str(error.reason).replace("_", " ").lower()
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return getattr(error, "reason", None) or type(error).__name__
