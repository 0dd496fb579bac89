"""The emulator's routes, status codes and bodies, and its deterministic renderer."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image, ImageChops, ImageStat

from runner.emulator import Emulator
from runner.emulator.render import RenderParams, output_size, render

from .conftest import png_data_uri

ENDPOINT = "fal-ai/flux-1/dev/image-to-image"
MakeEmu = Callable[..., Awaitable[Emulator]]


def image_uri(width: int = 64, height: int = 48, color: str = "teal") -> str:
    return png_data_uri(width, height, color, patch="orange")


def inputs(**overrides: Any) -> dict[str, Any]:
    return {"image_url": image_uri(), "prompt": "a red fox in snow", "seed": 7, **overrides}


@pytest.fixture
def make_emu(emulator_factory: MakeEmu) -> MakeEmu:
    return emulator_factory  # conftest starts emulators on loopback ports and stops them


@pytest.fixture
async def emu(make_emu: MakeEmu) -> Emulator:
    return await make_emu(latency=0.01)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": "Key test"}) as session:
        yield session


async def submit(
    http: aiohttp.ClientSession, emu: Emulator, body: Any, **kw: Any
) -> dict[str, Any]:
    async with http.post(f"{emu.queue_url}/{ENDPOINT}", json=body, **kw) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["x-fal-request-id"]
        data: dict[str, Any] = await resp.json()
        return data


async def wait_done(http: aiohttp.ClientSession, status_url: str) -> dict[str, Any]:
    for _ in range(500):
        async with http.get(status_url, params={"logs": "1"}) as resp:
            body: dict[str, Any] = await resp.json()
            if body["status"] == "COMPLETED":
                assert resp.status == 200
                return body
            assert resp.status == 202
        await asyncio.sleep(0.01)
    raise AssertionError("request never completed")


async def run_queued(
    http: aiohttp.ClientSession, emu: Emulator, body: Any
) -> tuple[int, dict[str, Any]]:
    sub = await submit(http, emu, body)
    await wait_done(http, sub["status_url"])
    async with http.get(sub["response_url"]) as resp:
        return resp.status, await resp.json()


async def fetch(http: aiohttp.ClientSession, url: str) -> bytes:
    if url.startswith("data:"):
        return base64.b64decode(url.partition(",")[2])
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_submit_status_result_roundtrip(emu: Emulator, http: aiohttp.ClientSession) -> None:
    sub = await submit(http, emu, inputs())
    assert sub["status"] == "IN_QUEUE" and sub["queue_position"] == 0
    base = f"{emu.queue_url}/fal-ai/flux-1/requests/{sub['request_id']}"
    assert sub["response_url"] == base
    assert sub["status_url"] == base + "/status" and sub["cancel_url"] == base + "/cancel"
    done = await wait_done(http, sub["status_url"])
    assert "error" not in done and done["metrics"]["inference_time"] >= 0
    assert isinstance(done["logs"], list) and done["logs"][0].keys() >= {
        "message",
        "level",
        "source",
        "timestamp",
    }
    async with http.get(sub["status_url"], params={"logs": "false"}) as resp:
        assert (await resp.json())["logs"] is None
    async with http.get(sub["response_url"]) as resp:
        assert resp.status == 200
        result = await resp.json()
    assert result["seed"] == 7 and result["prompt"] == "a red fox in snow"
    assert result["has_nsfw_concepts"] == [False]
    assert result["timings"]["inference"] >= 0
    (image,) = result["images"]
    assert (image["width"], image["height"], image["content_type"]) == (64, 48, "image/jpeg")
    decoded = Image.open(io.BytesIO(await fetch(http, image["url"])))
    assert decoded.format == "JPEG" and decoded.size == (64, 48)
    assert emu.stats.submissions == 1 and emu.stats.result_calls == 1
    assert (
        emu.stats.render_threads and threading.current_thread().name not in emu.stats.render_threads
    )


async def test_in_queue_then_in_progress_positions(
    make_emu: MakeEmu, http: aiohttp.ClientSession
) -> None:
    # seconds per request, one slot: all the checks below happen while the first still runs
    emu = await make_emu(latency=10.0, concurrency=1)
    subs = [await submit(http, emu, inputs(seed=i)) for i in range(3)]
    async with asyncio.timeout(5):  # the first starts at once
        while emu.stats.in_progress == 0:
            await asyncio.sleep(0.01)
    seen = []
    for sub in subs:
        async with http.get(sub["status_url"], params={"logs": "1"}) as resp:
            assert resp.status == 202
            seen.append(await resp.json())
    assert seen[0]["status"] == "IN_PROGRESS" and isinstance(seen[0]["logs"], list)
    assert [s.get("queue_position") for s in seen[1:]] == [0, 1]
    async with http.get(subs[2]["response_url"]) as resp:
        assert resp.status == 400
        assert await resp.json() == {"detail": "Request is still in progress"}
    assert emu.stats.in_progress == 1  # (the fixture stops the emulator, cancelling the rest)


async def test_concurrency_limit_holds(make_emu: MakeEmu, http: aiohttp.ClientSession) -> None:
    emu = await make_emu(latency=0.1, concurrency=3)
    subs = await asyncio.gather(*(submit(http, emu, inputs(seed=i)) for i in range(8)))
    await asyncio.gather(*(wait_done(http, s["status_url"]) for s in subs))
    assert emu.stats.max_in_progress == 3 and emu.stats.completed == 8


async def test_queue_wait_keeps_requests_in_queue(
    make_emu: MakeEmu, http: aiohttp.ClientSession
) -> None:
    emu = await make_emu(queue_wait=0.3, latency=0.01)
    sub = await submit(http, emu, inputs())
    async with http.get(sub["status_url"]) as resp:
        assert (await resp.json())["status"] == "IN_QUEUE"
    await wait_done(http, sub["status_url"])


async def test_invalid_input_is_accepted_then_completes_with_422(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    sub = await submit(http, emu, inputs(strength=1.5, extra=1, prompt=None))
    done = await wait_done(http, sub["status_url"])
    assert done["error"] and done["error_type"]
    async with http.get(sub["response_url"]) as resp:
        assert resp.status == 422
        detail = (await resp.json())["detail"]
    by_loc = {tuple(d["loc"]): d for d in detail}
    assert by_loc["body", "strength"]["type"] == "less_than_equal"
    assert by_loc["body", "extra"]["type"] == "extra_forbidden"
    assert by_loc["body", "prompt"]["type"] == "string_type"
    missing = (await run_queued(http, emu, {"prompt": "x"}))[1]["detail"]
    assert missing == [{"loc": ["body", "image_url"], "msg": "Field required", "type": "missing"}]


async def test_duplicate_bodies_are_counted_whatever_the_key_order(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    body = inputs()
    await submit(http, emu, body)
    await submit(http, emu, dict(reversed(body.items())))
    # NaN is not JSON, but Python clients send it: accepted like any body, never a duplicate
    nan = json.dumps({**body, "strength": float("nan")}).encode()
    for _ in range(2):
        headers = {"Content-Type": "application/json"}
        await submit(http, emu, None, data=nan, headers=headers)
    assert emu.stats.submissions == 4 and emu.stats.duplicate_submissions == 1


async def test_unknown_endpoint_and_request_are_404(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{emu.queue_url}/fal-ai/nope", json=inputs()) as resp:
        assert resp.status == 404
    async with http.post(f"{emu.run_url}/fal-ai/flux-1/dev/other", json=inputs()) as resp:
        assert resp.status == 404
    base = f"{emu.queue_url}/fal-ai/flux-1/requests/not-a-request"
    for url in (base, base + "/status"):
        async with http.get(url) as resp:
            assert resp.status == 404
    assert emu.stats.submissions == 0


async def test_result_ttl_expires(make_emu: MakeEmu, http: aiohttp.ClientSession) -> None:
    emu = await make_emu(latency=0.01, result_ttl=0.2)
    sub = await submit(http, emu, inputs())
    await wait_done(http, sub["status_url"])
    async with http.get(sub["response_url"]) as resp:
        assert resp.status == 200
    await asyncio.sleep(0.3)
    async with http.get(sub["response_url"]) as resp:
        assert resp.status == 404


async def test_cancel(make_emu: MakeEmu, http: aiohttp.ClientSession) -> None:
    emu = await make_emu(latency=0.5, concurrency=1)
    running = await submit(http, emu, inputs())
    queued = await submit(http, emu, inputs(seed=1))
    async with http.put(queued["cancel_url"]) as resp:
        assert resp.status == 202 and await resp.json() == {"status": "CANCELLATION_REQUESTED"}
    done = await wait_done(http, queued["status_url"])
    assert done["error_type"] == "request_cancelled"
    async with http.put(queued["cancel_url"]) as resp:
        assert resp.status == 400 and await resp.json() == {"status": "ALREADY_COMPLETED"}
    async with http.put(running["cancel_url"]) as resp:
        assert resp.status == 202
    await wait_done(http, running["status_url"])
    assert emu.stats.cancels == 3 and emu.stats.in_progress == 0


async def test_request_timeout_while_queued(make_emu: MakeEmu, http: aiohttp.ClientSession) -> None:
    emu = await make_emu(queue_wait=2.0)
    sub = await submit(http, emu, inputs(), headers={"X-Fal-Request-Timeout": "0.1"})
    done = await wait_done(http, sub["status_url"])
    assert done["error_type"] == "request_timeout"
    async with http.get(sub["response_url"]) as resp:
        assert resp.status == 504
        assert resp.headers["X-Fal-Error-Type"] == "request_timeout"
        assert (await resp.json())["error_type"] == "request_timeout"


async def test_status_stream_sends_events_until_completed(
    make_emu: MakeEmu, http: aiohttp.ClientSession
) -> None:
    emu = await make_emu(latency=0.2, queue_wait=0.1, stream_interval=0.05)
    sub = await submit(http, emu, inputs())
    events = []
    async with http.get(sub["status_url"] + "/stream", params={"logs": "1"}) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for line in resp.content:
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
    states = [e["status"] for e in events]
    assert states[0] == "IN_QUEUE" and states[-1] == "COMPLETED"
    assert "IN_PROGRESS" in states and states.count("COMPLETED") == 1
    assert len(states) > 3  # periodic repeats while waiting
    assert emu.stats.stream_calls == 1


async def test_stop_is_prompt_with_open_streams(
    make_emu: MakeEmu, http: aiohttp.ClientSession
) -> None:
    emu = await make_emu(queue_wait=60)
    sub = await submit(http, emu, inputs())
    async with http.get(sub["status_url"] + "/stream") as resp:
        await resp.content.readline()
        # A stop that waited for the open stream would take the whole minute of queue_wait:
        # a bound this far from both outcomes is not a timing assumption.
        async with asyncio.timeout(15):
            await emu.stop()
            # the stream ended itself (a clean end of the body), it was not cut at the timeout
            rest = await resp.content.read()
    assert b"data: " in rest  # its last event, then a proper end


def test_public_names() -> None:
    import runner.emulator as package

    public = {n for n in vars(package) if not n.startswith("_")} - {
        "server",
        "settings",
        "stats",
        "state",
        "middleware",
        "queue_routes",
        "run_routes",
        "storage_routes",
        "scheduler",
        "model",
        "images",
        "render",
        "validation",
    }
    assert public == set(package.__all__)


async def test_auth(make_emu: MakeEmu) -> None:
    emu = await make_emu(keys=frozenset({"s3cret"}))
    url = f"{emu.queue_url}/{ENDPOINT}"
    async with aiohttp.ClientSession() as anon:
        async with anon.post(url, json=inputs()) as resp:
            assert resp.status == 401 and "detail" in await resp.json()
        async with anon.post(
            url, json=inputs(), headers={"Authorization": "Key wrong-key"}
        ) as resp:
            assert resp.status == 401
            assert "wrong-key" not in await resp.text()
        async with anon.post(f"{emu.run_url}/{ENDPOINT}", json=inputs()) as resp:
            assert resp.status == 401
        async with anon.post(url, json=inputs(), headers={"Authorization": "Key s3cret"}) as resp:
            assert resp.status == 200
    assert emu.stats.submissions == 1


async def test_sync_run_and_sync_mode(emu: Emulator, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{emu.run_url}/{ENDPOINT}", json=inputs(num_images=2)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [i["url"].startswith(emu.run_url + "/files/") for i in body["images"]] == [True] * 2
    async with http.post(f"{emu.run_url}/{ENDPOINT}", json=inputs(strength=0)) as resp:
        assert resp.status == 422
    status, body = await run_queued(http, emu, inputs(sync_mode=True, output_format="png"))
    assert status == 200
    (image,) = body["images"]
    assert image["url"].startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(await fetch(http, image["url"]))).format == "PNG"
    assert emu.state.by_id == {}  # sync runs and sync_mode leave no history
    assert emu.stats.run_calls == 2


async def test_uploads_then_use_as_input(emu: Emulator, http: aiohttp.ClientSession) -> None:
    png = base64.b64decode(image_uri().partition(",")[2])
    async with http.post(
        f"{emu.queue_url}/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={}
    ) as resp:
        token = await resp.json()
    assert token["token_type"] == "Bearer" and token["base_url"] == emu.queue_url
    async with http.post(
        f"{token['base_url']}/files/upload",
        data=png,
        headers={
            "Authorization": f"Bearer {token['token']}",
            "Content-Type": "image/png",
            "X-Fal-File-Name": "in.png",
        },
    ) as resp:
        access_url = (await resp.json())["access_url"]
    assert await fetch(http, access_url) == png
    async with http.post(
        f"{emu.queue_url}/storage/upload/initiate",
        params={"storage_type": "gcs"},
        json={"file_name": "b.png", "content_type": "image/png"},
    ) as resp:
        init = await resp.json()
    async with http.get(init["file_url"]) as resp:
        assert resp.status == 404
    async with http.put(init["upload_url"], data=png) as resp:
        assert resp.status == 200
    assert await fetch(http, init["file_url"]) == png
    for url in (access_url, init["file_url"]):
        status, body = await run_queued(http, emu, inputs(image_url=url))
        assert status == 200 and body["images"][0]["width"] == 64
    assert emu.stats.uploads == 2


async def test_remote_image_urls_need_permission(
    make_emu: MakeEmu, aiohttp_server: Any, http: aiohttp.ClientSession
) -> None:
    png = base64.b64decode(image_uri().partition(",")[2])

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    app = web.Application()
    app.router.add_get("/img.png", serve)
    other = await aiohttp_server(app)
    url = str(other.make_url("/img.png"))
    closed = await make_emu(latency=0.01)
    status, body = await run_queued(http, closed, inputs(image_url=url))
    assert status == 422 and body["detail"][0]["type"] == "file_download_error"
    opened = await make_emu(latency=0.01, allow_remote_fetch=True)
    assert (await run_queued(http, opened, inputs(image_url=url)))[0] == 200
    status, body = await run_queued(http, opened, inputs(image_url="data:image/png;base64,AAAA"))
    assert status == 422 and body["detail"][0]["type"] == "image_load_error"


async def test_webhook_delivery(
    emu: Emulator, aiohttp_server: Any, http: aiohttp.ClientSession
) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    hook_url = str(server.make_url("/hook"))
    ok = await submit(http, emu, inputs(), params={"fal_webhook": hook_url})
    bad = await submit(http, emu, inputs(num_images=9), params={"fal_webhook": hook_url})
    calls = {c["request_id"]: c for c in [await received.get(), await received.get()]}
    assert calls[ok["request_id"]]["status"] == "OK"
    assert calls[ok["request_id"]]["payload"]["images"]
    assert calls[bad["request_id"]]["status"] == "ERROR"
    assert calls[bad["request_id"]]["payload"]["detail"][0]["loc"] == ["body", "num_images"]


async def test_nsfw_prompt_is_flagged_and_blacked_out(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    status, body = await run_queued(http, emu, inputs(prompt="nsfw scene", output_format="png"))
    assert status == 200 and body["has_nsfw_concepts"] == [True]
    image = Image.open(io.BytesIO(await fetch(http, body["images"][0]["url"])))
    assert image.getextrema() == ((0, 0), (0, 0), (0, 0))
    off = inputs(prompt="nsfw scene", enable_safety_checker=False)
    assert (await run_queued(http, emu, off))[1]["has_nsfw_concepts"] == [False]


async def test_random_seed_is_returned(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, body = await run_queued(http, emu, inputs(seed=None))
    assert isinstance(body["seed"], int)
    _, again = await run_queued(http, emu, inputs(seed=body["seed"]))
    assert await fetch(http, again["images"][0]["url"]) == await fetch(
        http, body["images"][0]["url"]
    )


# The renderer on its own: deterministic, and every input moves the output.


def _source() -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(image_uri().partition(",")[2])))


BASE = RenderParams(prompt="a red fox", seed=1)


def test_same_inputs_same_bytes() -> None:
    assert render(_source(), BASE) == render(_source(), BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 2},
        {"prompt": "a blue whale"},
        {"strength": 0.5},
        {"num_inference_steps": 41},
        {"guidance_scale": 3.6},
        {"output_format": "png"},
    ],
)
def test_each_input_changes_the_output(change: dict[str, Any]) -> None:
    changed = RenderParams(**{**BASE.__dict__, **change})
    assert render(_source(), changed) != render(_source(), BASE)


def test_strength_is_how_far_from_the_input() -> None:
    def distance(strength: float) -> float:
        params = RenderParams(**{**BASE.__dict__, "strength": strength, "output_format": "png"})
        out = Image.open(io.BytesIO(render(_source(), params))).convert("RGB")
        diff = ImageChops.difference(out, _source().convert("RGB"))
        return sum(ImageStat.Stat(diff).mean)

    assert distance(0.01) < distance(0.5) < distance(1.0)


def test_output_size_keeps_aspect_and_multiples_of_8() -> None:
    assert output_size(64, 48, 512) == (64, 48)
    assert output_size(2000, 1000, 512) == (512, 256)
    assert output_size(1001, 333, 512) == (512, 168)
    assert output_size(3, 3, 512) == (8, 8)


async def test_num_images_are_distinct(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, body = await run_queued(http, emu, inputs(num_images=3))
    blobs = [await fetch(http, i["url"]) for i in body["images"]]
    assert len(set(blobs)) == 3 and body["has_nsfw_concepts"] == [False] * 3
