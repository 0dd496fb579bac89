"""One `runner run`: picks the backend (fal.ai from the environment, or the embedded emulator
started on a loopback port), opens the journal and one HTTP session, and drives the executor
over the lazily expanded requests. Both backends go through the same fal client code."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from .endpoints import get_endpoint
from .errors import UsageError
from .executor import Executor
from .falapi import FalClient, ServerConfig
from .jobs import RunOptions, RunStats
from .manifest import Journal, append_run, utc_now
from .models import Execution, Request
from .statsfile import keep_writing, stats_document, write_stats
from .urls import is_loopback
from .version import __version__

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_RUN_URL = "https://fal.run"
DEFAULT_REST_URL = "https://rest.fal.ai"


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs besides the requests themselves."""

    endpoint: str
    backend: str  # "local" | "fal"
    out: Path
    execution: Execution
    spec_path: str = ""
    spec_sha256: str = ""
    name: str | None = None  # the spec's label, for reports
    retry_failed: bool = False
    resubmit_ambiguous: bool = True
    shard: str | None = None  # "I/N" of `--shard`, recorded in runs.jsonl
    report: Mapping[str, str] | None = None  # the spec's `report: {x, y}`, for `runner report`
    # backend local only: let the emulator fetch http(s) image URLs (network access)
    allow_remote_fetch: bool = False


def fal_key(env: Mapping[str, str]) -> str:
    """FAL_KEY, else FAL_KEY_ID:FAL_KEY_SECRET (as the official clients read them)."""
    key = env.get("FAL_KEY", "").strip()
    if key:
        return key
    key_id, secret = env.get("FAL_KEY_ID", "").strip(), env.get("FAL_KEY_SECRET", "").strip()
    if key_id and secret:
        return f"{key_id}:{secret}"
    raise UsageError(
        "backend 'fal' needs an API key: set FAL_KEY (or FAL_KEY_ID and "
        "FAL_KEY_SECRET), or run offline with --backend local"
    )


def server_url(env: Mapping[str, str], name: str, default: str) -> str:
    """A base URL from the environment: https, or plain http on a loopback host only."""
    url = env.get(name, "").strip() or default
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname)):
        return url.rstrip("/")
    raise UsageError(f"{name}={url!r} must be an https:// URL (plain http only on loopback)")


@contextlib.asynccontextmanager
async def backend_server(
    backend: str, env: Mapping[str, str], allow_remote_fetch: bool = False
) -> AsyncIterator[ServerConfig]:
    """The server to talk to: fal.ai (or FAL_*_URL), or a fresh embedded emulator that
    requires a one-time key, so the local run authenticates exactly like a fal run. The
    emulator fetches http(s) inputs only with `allow_remote_fetch` (offline by default)."""
    if backend == "fal":
        yield ServerConfig(
            queue_url=server_url(env, "FAL_QUEUE_URL", DEFAULT_QUEUE_URL),
            run_url=server_url(env, "FAL_RUN_URL", DEFAULT_RUN_URL),
            rest_url=server_url(env, "FAL_REST_URL", DEFAULT_REST_URL),
            key=fal_key(env),
        )
        return
    from .emulator import Emulator, EmulatorSettings

    token = secrets.token_urlsafe(24)
    emulated = EmulatorSettings(keys=frozenset({token}), allow_remote_fetch=allow_remote_fetch)
    async with Emulator(emulated) as emulator:
        yield ServerConfig(emulator.queue_url, emulator.run_url, emulator.queue_url, token)


async def run_requests(
    settings: RunSettings,
    requests: Iterable[Request],
    *,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[Executor], None] | None = None,
    on_event: Callable[[str, RunStats], None] | None = None,
) -> RunStats:
    """Run (or resume) every request into settings.out; returns the stats."""
    env = os.environ if env is None else env
    started = time.monotonic()
    run_id = utc_now().replace(":", "").replace("-", "")[:15] + "-" + secrets.token_hex(3)
    async with backend_server(settings.backend, env, settings.allow_remote_fetch) as server:
        journal = Journal(settings.out)
        info = {
            "run_id": run_id,
            "name": settings.name,
            "spec": settings.spec_path,
            "spec_sha256": settings.spec_sha256,
            "runner_version": __version__,
            "endpoint": settings.endpoint,
            "backend": settings.backend,
            "started": utc_now(),
            "host": socket.gethostname(),
            "shard": settings.shard,
            "report": dict(settings.report) if settings.report else None,
        }
        append_run(settings.out, {**info, "event": "start"})
        connector = aiohttp.TCPConnector(
            limit=settings.execution.concurrency * 2 + 4, limit_per_host=0
        )
        trust_env = not is_loopback(urlsplit(server.queue_url).hostname)
        executor: Executor | None = None
        try:
            async with aiohttp.ClientSession(connector=connector, trust_env=trust_env) as session:
                options = RunOptions(
                    settings.endpoint,
                    settings.backend,
                    server.queue_url,
                    run_id,
                    settings.execution,
                    settings.retry_failed,
                    settings.resubmit_ambiguous,
                    _price(settings),
                )
                executor = Executor(FalClient(session, server), journal, options, on_event)
                if on_start is not None:
                    on_start(executor)
                client, stats_now = executor.client, executor.stats
                writer = asyncio.create_task(
                    keep_writing(
                        settings.out,
                        lambda: stats_document(
                            stats_now, info, time.monotonic() - started, False, client.rate_limited
                        ),
                    )
                )
                try:
                    return await executor.run(requests)
                finally:
                    writer.cancel()
        finally:
            journal.close()
            stats = executor.stats if executor else RunStats()
            seen_429 = executor.client.rate_limited if executor else 0
            elapsed = time.monotonic() - started
            write_stats(settings.out, stats_document(stats, info, elapsed, True, seen_429))
            append_run(
                settings.out,
                {
                    **info,
                    "event": "end",
                    "finished": utc_now(),
                    "ok": stats.ok,
                    "failed": stats.failed,
                    "skipped": stats.skipped,
                    "submitted": stats.submitted,
                    "possible_duplicates": stats.possible_duplicates,
                    "interrupted": stats.interrupted,
                },
            )


def _price(settings: RunSettings) -> float | None:
    """USD per billed megapixel, for the spend shown during a fal run (local runs are free)."""
    endpoint = get_endpoint(settings.endpoint)
    return endpoint.usd_per_megapixel if endpoint and settings.backend == "fal" else None


def with_overrides(
    execution: Execution, concurrency: int | None = None, mode: str | None = None
) -> Execution:
    if concurrency is not None:
        execution = replace(execution, concurrency=concurrency)
    if mode is not None:
        execution = replace(execution, mode=mode)  # type: ignore[arg-type]
    return execution
