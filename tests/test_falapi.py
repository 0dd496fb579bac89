"""The fal client's own rules, against small fake servers where the emulator cannot show them."""

from __future__ import annotations

import time

import aiohttp
import pytest
from aiohttp import web

from runner.errors import AuthError, CallError
from runner.execution.falapi import FalClient, ServerConfig, handle_for
from runner.execution.http import error_detail
from runner.urls import app_base


def test_urls_drop_the_path_and_keep_namespaces():
    assert app_base("fal-ai/flux-1/dev/image-to-image") == "fal-ai/flux-1"
    assert app_base("workflows/me/my-flow/run") == "workflows/me/my-flow"
    handle = handle_for("https://queue.fal.run/", "fal-ai/flux-1/dev/image-to-image", "r1")
    assert handle.status_url == "https://queue.fal.run/fal-ai/flux-1/requests/r1/status"
    assert handle.response_url == "https://queue.fal.run/fal-ai/flux-1/requests/r1"
    assert handle.cancel_url == "https://queue.fal.run/fal-ai/flux-1/requests/r1/cancel"


def test_error_detail_shapes():
    body = {"detail": [{"loc": ["body", "strength"], "msg": "too big", "type": "x"}]}
    assert error_detail(body) == "strength: too big"
    assert error_detail({"detail": "plain"}) == "plain"
    assert error_detail("<html>\n nginx </html>") == "<html> nginx </html>"


async def fake_client(aiohttp_server, routes, key="k"):
    app = web.Application()
    app.add_routes(routes)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    session = aiohttp.ClientSession()
    return FalClient(session, ServerConfig(url, url, url, key)), session, url


async def test_polls_adaptively_when_the_server_has_no_stream(aiohttp_server):
    started, calls = time.monotonic(), []

    async def status(request):
        calls.append(time.monotonic() - started)
        done = time.monotonic() - started > 1.0  # the request takes a second
        return web.json_response(
            {"status": "COMPLETED" if done else "IN_PROGRESS", "logs": None},
            status=200 if done else 202,
        )

    streams = []

    async def no_stream(request):
        streams.append(request.path)
        return web.json_response({"detail": "Not Found"}, status=404)

    routes = [
        web.get("/fal-ai/flux-1/requests/r1/status", status),
        web.get("/fal-ai/flux-1/requests/r1/status/stream", no_stream),
    ]
    client, session, url = await fake_client(aiohttp_server, routes)
    async with session:
        handle = handle_for(url, "fal-ai/flux-1/dev/image-to-image", "r1")
        states = [s.state async for s in client.watch(handle)]
        assert states[-1] == "COMPLETED"
        assert len(calls) <= 4  # backs off: never a fixed 0.1 s beat
        states = [s.state async for s in client.watch(handle)]
        assert states == ["COMPLETED"]
    assert len(streams) == 1  # the stream is not tried again once known missing


async def test_401_on_status_is_an_auth_error_without_the_key(aiohttp_server):
    async def status(request):
        return web.json_response(
            {"detail": f"bad key {request.headers['Authorization']}"}, status=401
        )

    routes = [
        web.get("/fal-ai/flux-1/requests/r1/status", status),
        web.get("/fal-ai/flux-1/requests/r1/status/stream", status),
    ]
    client, session, url = await fake_client(aiohttp_server, routes, key="sk-secret-42")
    async with session:
        handle = handle_for(url, "fal-ai/flux-1/dev/image-to-image", "r1")
        with pytest.raises(AuthError) as caught:
            [s async for s in client.watch(handle)]
        assert "sk-secret-42" not in str(caught.value)


async def test_download_rules(aiohttp_server):
    async def big(request):
        return web.Response(body=b"x" * 5000)

    async def forbidden(request):
        assert "Authorization" not in request.headers  # outputs never get the key
        return web.Response(status=403)

    client, session, url = await fake_client(
        aiohttp_server, [web.get("/big", big), web.get("/no", forbidden)]
    )
    async with session:
        with pytest.raises(CallError, match="larger than"):
            await client.download(f"{url}/big", max_bytes=1000)
        with pytest.raises(CallError, match="403"):  # a CDN's 403 is not a bad API key
            await client.download(f"{url}/no", max_bytes=1000)
        with pytest.raises(CallError, match="scheme"):
            await client.download("file:///etc/passwd", max_bytes=1000)
        assert await client.download("data:image/png;base64,aGk=", max_bytes=1000) == b"hi"


async def test_the_key_goes_only_to_the_configured_hosts(aiohttp_server):
    seen = {}

    async def elsewhere(request):
        seen["auth"] = request.headers.get("Authorization")
        return web.json_response({"status": "COMPLETED", "logs": None})

    other = web.Application()
    other.add_routes([web.get("/r1/status", elsewhere), web.get("/r1/status/stream", elsewhere)])
    other_server = await aiohttp_server(other)
    other_url = str(other_server.make_url("")).rstrip("/")

    async def submit(request):
        assert request.headers["Authorization"] == "Key sk-only-here"
        return web.json_response(
            {
                "request_id": "r1",
                "status_url": f"{other_url}/r1/status",
                "response_url": f"{other_url}/r1",
                "cancel_url": f"{other_url}/r1/cancel",
            }
        )

    client, session, url = await fake_client(
        aiohttp_server, [web.post("/fal-ai/flux-1/dev/image-to-image", submit)], key="sk-only-here"
    )
    async with session:
        handle = await client.submit("fal-ai/flux-1/dev/image-to-image", {"prompt": "x"})
        assert handle.status_url.startswith(other_url)
        [s async for s in client.watch(handle)]
        assert "auth" in seen and seen["auth"] is None


def test_request_headers_from_the_execution_block():
    from runner.execution.falapi import request_headers
    from runner.models import Execution

    # fal may not reroute a request to another model unless the spec allows it
    assert request_headers(Execution()) == {"x-fal-disable-fallbacks": "true"}
    assert request_headers(Execution(allow_fallbacks=True)) == {}
    both = Execution(queue_timeout=0.5, priority="low", store_io=False, allow_fallbacks=True)
    assert request_headers(both) == {
        "X-Fal-Request-Timeout": "1",
        "X-Fal-Queue-Priority": "low",
        "X-Fal-Store-IO": "0",
    }
    sync = Execution(mode="sync", queue_timeout=3, priority="low")
    assert request_headers(sync) == {"x-fal-disable-fallbacks": "true"}


async def test_submit_sends_the_options_and_the_key(aiohttp_server):
    seen = {}

    async def submit(request):
        seen.update(request.headers)
        return web.json_response({"request_id": "r1"})

    client, session, url = await fake_client(
        aiohttp_server, [web.post("/fal-ai/flux-1/dev/image-to-image", submit)]
    )
    async with session:
        handle = await client.submit(
            "fal-ai/flux-1/dev/image-to-image",
            {"prompt": "x"},
            {"X-Fal-Queue-Priority": "low", "Authorization": "nope"},
        )
    assert seen["X-Fal-Queue-Priority"] == "low" and seen["Authorization"] == "Key k"
    assert handle.status_url == f"{url}/fal-ai/flux-1/requests/r1/status"  # rebuilt
