"""Fault injection: each kind is observable on the wire and counted; rejected and dropped
submits are not enqueued, drop-after-accept is; the seeded RNG makes faults reproducible."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from runner.emulator import Emulator, EmulatorSettings, Faults, serve_forever, served_line

from .conftest import png_data_uri

ENDPOINT = "fal-ai/flux-1/dev/image-to-image"
MakeEmu = Callable[..., Awaitable[Emulator]]


def inputs(seed: int = 1) -> dict[str, Any]:
    return {"image_url": png_data_uri(64, 48, "navy"), "prompt": "a lighthouse", "seed": seed}


@pytest.fixture
def make_emu(emulator_factory: MakeEmu) -> MakeEmu:
    async def make(faults: Faults, **settings: Any) -> Emulator:
        return await emulator_factory(faults=faults, latency=0.01, **settings)

    return make


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, emu: Emulator, seed: int = 1
) -> tuple[int, dict[str, str], str]:
    async with http.post(f"{emu.queue_url}/{ENDPOINT}", json=inputs(seed)) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_429_with_retry_after_is_not_enqueued(
    make_emu: MakeEmu, http: aiohttp.ClientSession
) -> None:
    emu = await make_emu(Faults(p_429=1.0), retry_after=2.5)
    status, headers, text = await post(http, emu)
    assert (status, headers["Retry-After"]) == (429, "2.5")
    assert '"Too many requests"' in text
    assert emu.stats.submissions == 0 and emu.stats.faults["submit", "429"] == 1


async def test_500_carries_request_id(make_emu: MakeEmu, http: aiohttp.ClientSession) -> None:
    emu = await make_emu(Faults(p_500=1.0))
    status, headers, text = await post(http, emu)
    assert status == 500 and "x-fal-request-id" in headers
    assert "Internal server error" in text and emu.stats.submissions == 0


async def test_503_ingress_looks_like_nginx(make_emu: MakeEmu, http: aiohttp.ClientSession) -> None:
    emu = await make_emu(Faults(p_503_ingress=1.0))
    status, headers, text = await post(http, emu)
    assert status == 503 and "nginx" in text
    assert "x-fal-request-id" not in {k.lower() for k in headers}
    assert emu.stats.submissions == 0 and emu.stats.faults_of("503_ingress") == 1


async def test_drop_before_accept_is_not_counted(
    make_emu: MakeEmu, http: aiohttp.ClientSession
) -> None:
    emu = await make_emu(Faults(p_drop=1.0))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, emu)
    assert emu.stats.submissions == 0 and emu.state.by_id == {}
    assert emu.stats.faults["submit", "drop"] == 1


async def test_drop_after_accept_enqueues_the_request(
    make_emu: MakeEmu, http: aiohttp.ClientSession
) -> None:
    emu = await make_emu(Faults(p_drop_after_accept=1.0))
    for _ in range(2):  # the classic retry after an ambiguous failure: a duplicate
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(http, emu)
    assert emu.stats.submissions == 2 and emu.stats.duplicate_submissions == 1
    assert emu.stats.faults["submit", "drop_after_accept"] == 2
    for _ in range(100):
        if emu.stats.completed == 2:
            break
        await asyncio.sleep(0.02)
    assert emu.stats.completed == 2 and emu.stats.failed == 0


async def test_stall_delays_the_answer(make_emu: MakeEmu, http: aiohttp.ClientSession) -> None:
    emu = await make_emu(Faults(p_stall=1.0), stall=0.3)
    started = time.monotonic()
    status, _, _ = await post(http, emu)
    assert status == 200 and time.monotonic() - started >= 0.3
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            f"{emu.queue_url}/{ENDPOINT}", json=inputs(), timeout=aiohttp.ClientTimeout(total=0.1)
        ):
            pass
    assert emu.stats.faults_of("stall") == 2


async def test_infra_error_completes_with_503(
    make_emu: MakeEmu, http: aiohttp.ClientSession
) -> None:
    emu = await make_emu(Faults(p_infra_error=1.0))
    status, _, text = await post(http, emu)
    assert status == 200
    urls = json.loads(text)
    for _ in range(100):
        async with http.get(urls["status_url"]) as resp:
            body = await resp.json()
        if body["status"] == "COMPLETED":
            break
        await asyncio.sleep(0.02)
    assert body["error_type"] == "runner_disconnected" and body["error"]
    async with http.get(urls["response_url"]) as resp:
        assert resp.status == 503 and resp.headers["x-fal-request-id"] == urls["request_id"]
        assert resp.headers["X-Fal-Error-Type"] == "runner_disconnected"
        assert (await resp.json())["error_type"] == "runner_disconnected"


async def test_faults_only_on_chosen_routes(make_emu: MakeEmu, http: aiohttp.ClientSession) -> None:
    emu = await make_emu(Faults(p_500=1.0, routes=frozenset({"status"})))
    status, _, text = await post(http, emu)
    assert status == 200
    sub = json.loads(text)
    async with http.get(sub["status_url"]) as resp:
        assert resp.status == 500 and resp.headers["x-fal-request-id"] == sub["request_id"]
    async with http.post(f"{emu.run_url}/{ENDPOINT}", json=inputs()) as resp:
        assert resp.status == 200  # the run app is not faulted unless "run" is chosen
    assert emu.stats.faults == {("status", "500"): 1}
    assert emu.stats.status_calls == 0  # a faulted call never reaches the handler


async def test_same_seed_same_faults(make_emu: MakeEmu, http: aiohttp.ClientSession) -> None:
    faults = Faults(p_429=0.3, p_500=0.3)
    runs = []
    for _ in range(2):
        emu = await make_emu(faults, seed=42)
        runs.append([(await post(http, emu, i))[0] for i in range(20)])
    assert runs[0] == runs[1] and {429, 500, 200} <= set(runs[0])
    other = await make_emu(faults, seed=43)
    assert [(await post(http, other, i))[0] for i in range(20)] != runs[0]


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="p_429"):
        Faults(p_429=1.5)
    with pytest.raises(ValueError, match="HINT"):
        Faults(routes=frozenset({"sumbit"}))


async def test_serve_forever_reports_urls_until_cancelled(http: aiohttp.ClientSession) -> None:
    ready: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    task = asyncio.create_task(
        serve_forever(
            EmulatorSettings(latency=0.01), on_ready=lambda q, r: ready.put_nowait((q, r))
        )
    )
    queue_url, run_url = await asyncio.wait_for(ready.get(), 5)
    async with http.post(f"{run_url}/{ENDPOINT}", json=inputs()) as resp:
        assert resp.status == 200
    assert queue_url != run_url
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_the_served_line_counts_the_requests_it_ended_unbilled() -> None:
    # a run resubmits a request that ended in an infrastructure error without flagging a
    # possible double charge: the repeats the server counts are then more than the run's
    from runner.emulator import Stats

    stats = Stats(submissions=5)
    stats.faults["model", "infra_error"] = 2
    assert served_line(stats).endswith("0 uploads; 2 ended by an infrastructure error (not billed)")


async def test_serve_forever_says_what_it_served_when_stopped(http: aiohttp.ClientSession) -> None:
    """`runner serve` is how a person rehearses failures: on Ctrl-C it must say how many
    submissions it accepted (and how many repeated a body), to count against the rows."""
    ready: asyncio.Queue[str] = asyncio.Queue()
    served: list[str] = []
    task = asyncio.create_task(
        serve_forever(
            EmulatorSettings(latency=0.01),
            on_ready=lambda q, r: ready.put_nowait(q),
            on_stop=lambda stats: served.append(served_line(stats)),
        )
    )
    queue_url = await asyncio.wait_for(ready.get(), 5)
    for _ in range(2):  # the same body twice: one duplicate
        async with http.post(f"{queue_url}/{ENDPOINT}", json=inputs()) as resp:
            assert resp.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert served == [
        "served: 2 queue submissions accepted (1 repeating an earlier body), 0 sync runs, 0 uploads"
    ]
