"""Shared fixtures: a spec writer with a real sample image, and emulators on loopback ports."""

from __future__ import annotations

import base64
import io
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings
from PIL import Image

from runner.emulator import Emulator, EmulatorSettings

# Timing on a shared 2-core CI machine varies: a slow example is not a failure.
settings.register_profile("runner", deadline=None)
settings.load_profile("runner")


Color = str | tuple[int, int, int]


def png_bytes(
    width: int = 48, height: int = 32, color: Color = (200, 40, 40), patch: Color | None = None
) -> bytes:
    """A small PNG of one colour, with a `patch` square in its top-left quarter if given (so
    a blur or a crop shows)."""
    image = Image.new("RGB", (width, height), color)
    if patch is not None:
        image.paste(Image.new("RGB", (width // 2, height // 2), patch), (4, 4))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def png_data_uri(*args: Any, **kwargs: Any) -> str:
    """png_bytes(...) as a data: URI."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(*args, **kwargs)).decode()


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """write_spec(matrix=..., defaults=..., **top) -> path of a spec with images/a.png."""
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "a.png").write_bytes(png_bytes())

    def write(name: str = "job.yaml", **top: Any) -> Path:
        doc: dict[str, Any] = {"version": 1, "endpoint": "fal-ai/flux-1/dev/image-to-image"}
        doc["defaults"] = {
            "image_url": "images/a.png",
            "prompt": "a red square",
            "num_inference_steps": 10,
            **top.pop("defaults", {}),
        }
        doc.update(top)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return write


@pytest.fixture
async def emulator_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[Emulator] = []

    async def start(**settings: Any) -> Emulator:
        emulator = Emulator(EmulatorSettings(**settings))
        await emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        await emulator.stop()


def fal_env(emulator: Emulator, key: str = "test-key") -> dict[str, str]:
    return {
        "FAL_KEY": key,
        "FAL_QUEUE_URL": emulator.queue_url,
        "FAL_RUN_URL": emulator.run_url,
        "FAL_REST_URL": emulator.queue_url,
    }


def last_records(out: Path) -> dict[str, dict[str, Any]]:
    """Each key's current record, by the journal's documented rule (not runner's reader): a
    line with `input` starts the record, any other line updates it."""
    state: dict[str, dict[str, Any]] = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "input" in record or record["key"] not in state:
            state[record["key"]] = record
        else:
            state[record["key"]].update(record)
    return state


class ThreadedEmulator:
    """An emulator on its own event loop in a thread, for tests that run the CLI (which owns
    the main thread's loop) or a runner subprocess. Stats are read across threads (counters)."""

    def __init__(self, **settings: Any) -> None:
        import asyncio
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.emulator = Emulator(EmulatorSettings(**settings))
        asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result(10)

    @property
    def stats(self) -> Any:
        return self.emulator.stats

    def env(self, key: str = "test-key") -> dict[str, str]:
        return fal_env(self.emulator, key)

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def threaded_emulator() -> Any:
    made: list[ThreadedEmulator] = []

    def make(**settings: Any) -> ThreadedEmulator:
        made.append(ThreadedEmulator(**settings))
        return made[-1]

    yield make
    for emulator in made:
        emulator.close()


@pytest.fixture
def fal_server(threaded_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A threaded emulator that `runner run --backend fal` reaches as it would reach fal.ai:
    FAL_KEY and the FAL_*_URL variables point at it, for this test only. `key` is the key the
    environment holds (the server takes `keys`, by default test-key); the rest are its
    EmulatorSettings."""

    def start(key: str = "test-key", **settings: Any) -> ThreadedEmulator:
        server: ThreadedEmulator = threaded_emulator(**settings)
        for name, value in server.env(key).items():
            monkeypatch.setenv(name, value)
        return server

    return start


def closed_port() -> int:
    """A loopback port with nobody listening (connecting to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """`.invalid` names (RFC 2606: they never resolve) fail at once, as a resolver would say,
    without asking one: the tests stay offline and fast. Proxies from the environment are
    dropped, so the name is looked up here."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.rstrip(".").endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
