"""One HTTP call as the retry policy sees it: what was surely not sent, and why a connection
could not be made, against real sockets on loopback (no network)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import runner.execution.http as http
from runner.errors import CallError
from runner.execution.http import Http, connect_cause, origin
from runner.execution.retry import Verdict, decide

from .conftest import closed_port


async def call(url: str, headers: dict[str, str] | None = None, **session: Any) -> CallError:
    async with aiohttp.ClientSession(**session) as client:
        with pytest.raises(CallError) as failed:
            await Http(client, lambda text: text).call(
                "POST", url, headers=headers or {}, json_body={"prompt": "x"}, op="submit"
            )
    return failed.value


async def test_a_refused_connection_is_named_and_surely_not_sent():
    url = f"http://127.0.0.1:{closed_port()}"
    error = await call(url)
    assert (error.sent, error.connect) == ("no", "connection refused")
    assert error.message == f"cannot connect to {url}: connection refused"


async def test_a_name_that_does_not_resolve_is_not_called_a_refused_connection(no_dns):
    error = await call("https://queue.fal.invalid/fal-ai/x")
    assert (error.sent, error.connect) == ("no", "name not resolved")
    assert error.message == "cannot connect to https://queue.fal.invalid:443: name not resolved"


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connection is never made (the kernel
    drops its SYN), as with a host that does not answer."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    waiting = []
    for _ in range(4):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        waiting.append(client)
    yield port
    for client in waiting:
        client.close()
    server.close()


async def test_a_connect_timeout_is_surely_not_sent(monkeypatch, stalled_port):
    # nothing went out before the connection was made: no possible double charge
    monkeypatch.setattr(http, "CALL_TIMEOUT", aiohttp.ClientTimeout(sock_connect=0.2))
    error = await call(f"http://127.0.0.1:{stalled_port}/x")
    assert (error.sent, error.connect) == ("no", "connect timed out")
    assert decide(error, "submit", 1).verdict is Verdict.RETRY  # not AMBIGUOUS


async def test_a_request_that_cannot_be_built_is_not_sent_nor_retried():
    # credentials in the URL clash with the Authorization header: aiohttp refuses to build it
    error = await call("http://user:hunter2@127.0.0.1:9/x", {"Authorization": "Key k"})
    assert error.sent == "no" and error.client and error.connect is None
    assert "hunter2" not in error.message and "not sent" in error.message
    assert decide(error, "submit", 1).verdict is Verdict.FAIL


@pytest.mark.parametrize(
    "url", ["https://h.example:99999/x", "https://[::1/x", "https://user:pw@h.example:0/"]
)
def test_origin_of_a_broken_url_never_raises_nor_shows_a_password(url):
    shown = origin(url)
    assert "pw" not in shown and "user" not in shown


async def test_a_tls_handshake_that_fails_is_surely_not_sent(aiohttp_server):
    # https to a plain-http server: the handshake fails before any byte of the request
    server = await aiohttp_server(web.Application())
    error = await call(f"https://127.0.0.1:{server.port}/x")
    assert (error.sent, error.connect) == ("no", "TLS failure (wrong version number)")


async def test_a_proxy_that_refuses_is_named_as_the_proxy(monkeypatch):
    proxy = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HTTPS_PROXY", f"http://{proxy}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    error = await call("https://queue.fal.invalid/x", trust_env=True)
    assert error.sent == "no" and error.connect == f"proxy {proxy}: connection refused"


def test_connect_causes_by_kind():
    refused = ConnectionRefusedError(111, "Connection refused")
    assert connect_cause(refused) == "connection refused"
    assert connect_cause(socket.gaierror(-2, "Name or service not known")) == "name not resolved"
    assert connect_cause(aiohttp.ConnectionTimeoutError("t")) == "connect timed out"
    assert connect_cause(OSError(101, "Network is unreachable")) == "network unreachable"
    assert connect_cause(OSError(None, "Multiple exceptions: ...")).startswith("cannot connect")
