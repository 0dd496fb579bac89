"""The state both emulator apps share: the server's record of each request (`QueuedRequest`),
hosted files, upload tokens, the fault RNG, the render thread pool and the counters. Reached
from handlers via `STATE`."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from ..emulatorsettings import EmulatorSettings
from ..endpoints import Endpoint
from ..urls import request_url
from .stats import Stats

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"


@dataclass(frozen=True)
class Outcome:
    """What the result GET answers once the request is COMPLETED."""

    status: int
    body: Any
    error: str | None = None
    error_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    content_type: str
    name: str


@dataclass(eq=False)
class QueuedRequest:
    """The server's record of one request (queued, or a sync run), from submit to its retained
    result."""

    id: str
    endpoint: Endpoint
    payload: Any  # the JSON body as sent (not validated yet)
    base_url: str  # scheme://host the client used: the URLs we hand back point there
    start_deadline: float | None = None  # monotonic time; X-Fal-Request-Timeout
    webhook: str | None = None
    keep: bool = True  # False: sync_mode or a sync run, dropped once its result is read
    state: str = IN_QUEUE
    logs: list[dict[str, Any]] = field(default_factory=list)
    outcome: Outcome | None = None
    inference_time: float | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    completed_at: float | None = None
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        """Wake everyone waiting for a change (status streams, sync runs)."""
        self.changed.set()
        self.changed = asyncio.Event()

    def log(self, message: str, level: str = "INFO") -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        self.logs.append({"message": message, "level": level, "source": "user", "timestamp": stamp})

    def urls(self) -> dict[str, str]:
        base = request_url(self.base_url, self.endpoint.id, self.id)
        return {
            "response_url": base,
            "status_url": base + "/status",
            "cancel_url": base + "/cancel",
        }


class EmulatorState:
    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.stats = Stats()
        self.by_id: dict[str, QueuedRequest] = {}  # every request the server still knows
        self.waiting: list[QueuedRequest] = []  # IN_QUEUE, in submission order
        self.files: dict[str, StoredFile] = {}
        self.tokens: set[str] = set()
        self.pending_uploads: dict[str, StoredFile] = {}  # id -> its type and name, no data yet
        self.rng = random.Random(settings.seed)
        self.executor = ThreadPoolExecutor(
            settings.render_threads, thread_name_prefix="emulator-render"
        )
        self.slots = asyncio.Semaphore(settings.concurrency)
        self.session: aiohttp.ClientSession | None = None
        self.own_ports: set[int] = set()  # a loopback URL on these ports is one of ours
        self.background: set[asyncio.Task[None]] = set()  # webhook deliveries

    def enqueue(self, endpoint: Endpoint, payload: Any, base_url: str, **kw: Any) -> QueuedRequest:
        queued = QueuedRequest(
            id=str(uuid.uuid4()), endpoint=endpoint, payload=payload, base_url=base_url, **kw
        )
        self.by_id[queued.id] = queued
        self.waiting.append(queued)
        return queued

    def find(self, request_id: str) -> QueuedRequest | None:
        queued = self.by_id.get(request_id)
        ttl = self.settings.result_ttl
        if (
            queued
            and ttl is not None
            and queued.completed_at is not None
            and time.monotonic() - queued.completed_at > ttl
        ):
            self.forget(queued)
            return None
        return queued

    def forget(self, queued: QueuedRequest) -> None:
        self.by_id.pop(queued.id, None)

    def queue_position(self, queued: QueuedRequest) -> int:
        try:
            return self.waiting.index(queued)
        except ValueError:
            return 0

    def add_file(self, data: bytes, content_type: str, name: str = "", ext: str = "") -> str:
        file_id = uuid.uuid4().hex + (f".{ext}" if ext else "")
        self.files[file_id] = StoredFile(data, content_type, name)
        return file_id

    def new_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return token

    def roll(self, probability: float) -> bool:
        """One seeded draw; a zero probability draws nothing, so it never shifts the sequence."""
        return probability > 0 and self.rng.random() < probability

    async def close(self) -> None:
        for queued in list(self.by_id.values()):
            if queued.task and not queued.task.done():
                queued.task.cancel()
        tasks = [q.task for q in self.by_id.values() if q.task] + list(self.background)
        for task in self.background:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.session:
            await self.session.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


STATE = web.AppKey("emulator_state", EmulatorState)
