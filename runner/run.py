"""One `runner run`: locks the output folder, picks the backend (fal.ai from the environment, or
the embedded emulator started on a loopback port), opens the journal and one HTTP session, and
drives the executor over the lazily expanded requests. Both backends go through the same fal
client code. A folder holding another backend's results is refused (a row is done only for the
backend that made it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from .endpoints import get_endpoint
from .errors import UsageError
from .executor import Executor
from .falapi import FalClient, ServerConfig
from .folderlock import locked
from .http import origin
from .manifest import Journal, Record, RunLine, append_run, utc_now
from .models import Request
from .repair import find_damaged
from .settings import RunSettings
from .statsfile import keep_writing, stats_document, write_stats
from .tracking import RunStats
from .urls import base_url_problem, is_loopback
from .version import __version__

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_RUN_URL = "https://fal.run"
DEFAULT_REST_URL = "https://rest.fal.ai"


def fal_key(env: Mapping[str, str]) -> str:
    """FAL_KEY, else FAL_KEY_ID:FAL_KEY_SECRET (as the official clients read them)."""
    key = env.get("FAL_KEY", "").strip()
    name = "FAL_KEY"
    if not key:
        key_id, secret = env.get("FAL_KEY_ID", "").strip(), env.get("FAL_KEY_SECRET", "").strip()
        key, name = (f"{key_id}:{secret}" if key_id and secret else ""), "FAL_KEY_ID/SECRET"
    if not key:
        raise UsageError(
            "backend 'fal' needs an API key: set FAL_KEY (or FAL_KEY_ID and "
            "FAL_KEY_SECRET), or run offline with --backend local"
        )
    if not (key.isascii() and key.isprintable()):  # an HTTP header cannot carry it
        raise UsageError(
            f"{name} holds a control character or a non-ASCII letter, which no key has "
            "(a paste gone wrong?). HINT: copy the key again from fal.ai's dashboard"
        )
    return key


def server_url(env: Mapping[str, str], name: str, default: str) -> str:
    """A base URL from the environment (`default` when the variable is unset): https, or plain
    http on a loopback host only (urls.base_url_problem has the rules). An empty variable
    is a mistake, not the default. The UsageError names the variable and never repeats the
    URL's password or query."""
    if name not in env:
        return default
    url = env[name].strip()
    if not url:
        raise UsageError(
            f"{name} is set but empty. HINT: unset it to use {default}, or give the server's URL"
        )
    problem = base_url_problem(url)
    if problem is not None:
        raise UsageError(f"{name}={_shown_url(url)} {problem}")
    return url.rstrip("/")


def _shown_url(url: str) -> str:
    """A URL as an error repeats it: scheme, host, port and path only (no user name, password,
    query or fragment, where a secret may sit)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(not a URL)"
    if "://" not in url:  # no scheme: anything may be a password (`user:secret@host`)
        return repr(url[:200]) if not any(c in url for c in "@?#") else "(not shown)"
    host = parts.netloc.rpartition("@")[2]
    return repr(f"{parts.scheme}://{host}{parts.path}"[:200])


def fal_server(env: Mapping[str, str]) -> ServerConfig:
    """fal.ai (or the FAL_*_URL servers) and the key, from the environment; UsageError when
    the key is missing or a URL is not allowed."""
    return ServerConfig(
        queue_url=server_url(env, "FAL_QUEUE_URL", DEFAULT_QUEUE_URL),
        run_url=server_url(env, "FAL_RUN_URL", DEFAULT_RUN_URL),
        rest_url=server_url(env, "FAL_REST_URL", DEFAULT_REST_URL),
        key=fal_key(env),
    )


@contextlib.asynccontextmanager
async def backend_server(
    backend: str, env: Mapping[str, str], allow_remote_fetch: bool = False
) -> AsyncIterator[ServerConfig]:
    """The server to talk to: fal.ai (or FAL_*_URL), or a fresh embedded emulator that
    requires a one-time key, so the local run authenticates exactly like a fal run. The
    emulator fetches http(s) inputs only with `allow_remote_fetch` (offline by default)."""
    if backend == "fal":
        yield fal_server(env)
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
    stop: asyncio.Event | None = None,
    on_event: Callable[[str, RunStats], None] | None = None,
) -> RunStats:
    """Run (or resume) every request into settings.out; returns the stats. Setting `stop`
    ends new submissions while the requests in flight go on (a graceful stop)."""
    env = os.environ if env is None else env
    # A missing key or a bad URL is refused before the output folder is made or touched.
    server_id = origin(fal_server(env).queue_url) if settings.backend == "fal" else None
    with locked(settings.out):
        journal = Journal(settings.out, check_outputs=True)
        ran = False
        try:
            _refuse_other_backends(settings, journal, server_id)
            damaged = find_damaged(settings.out, journal.damaged)
            stats = await _run_locked(
                settings, requests, journal, damaged, server_id, env, stop, on_event
            )
            stats.flagged_before = journal.flagged()  # the resume repeats them (kill -9...)
            ran = True
            return stats
        finally:
            journal.close(keep_empty=ran)  # a run refused or broken off before its first line


def _refuse_other_backends(settings: RunSettings, journal: Journal, server: str | None) -> None:
    """A row counts as done only for the backend that made it: rather than mixing two
    backends' results in one folder (where `report` and `export` could not tell them apart),
    a run refuses a folder that holds another backend's rows."""
    for (backend, other), rows in journal.origins().items():
        same_server = other == server or None in (other, server)  # unrecorded: trusted
        if backend is None or (backend == settings.backend and same_server):
            continue
        theirs = _label(backend, other)
        ours = _label(settings.backend, server)
        suggestion = _shown(settings.out.with_name(f"{settings.out.name}-{settings.backend}"))
        raise UsageError(
            f"{settings.out} holds {rows} rows made by {theirs}; this run uses {ours}, and "
            f"another backend's results never count as this one's. HINT: give it its own "
            f"folder: --out {suggestion}"
        )


def _shown(path: Path) -> str:
    """A folder as the user would type it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _label(backend: str, server: str | None) -> str:
    if backend == "local":
        return "backend local (the embedded emulator)"
    return f"backend {backend}" + (f" at {server}" if server else "")


async def _run_locked(
    settings: RunSettings,
    requests: Iterable[Request],
    journal: Journal,
    damaged: Mapping[str, Record],
    server_id: str | None,
    env: Mapping[str, str],
    stop: asyncio.Event | None,
    on_event: Callable[[str, RunStats], None] | None,
) -> RunStats:
    started = time.monotonic()
    run_id = utc_now().replace(":", "").replace("-", "")[:15] + "-" + secrets.token_hex(3)
    async with backend_server(settings.backend, env, settings.allow_remote_fetch) as server:
        info = RunLine(
            run_id=run_id,
            name=settings.name,
            spec=settings.spec_path,
            spec_sha256=settings.spec_sha256,
            runner_version=__version__,
            endpoint=settings.endpoint,
            backend=settings.backend,
            server=server_id,
            started=utc_now(),
            host=socket.gethostname(),
            shard=settings.shard,
            report=dict(settings.report) if settings.report else None,
        )
        append_run(settings.out, {**info, "event": "start"})
        concurrency = settings.execution.concurrency
        if settings.count is not None:  # never more connections (or workers) than rows
            concurrency = max(1, min(concurrency, settings.count))
        connector = aiohttp.TCPConnector(limit=concurrency * 2 + 4, limit_per_host=0)
        trust_env = not is_loopback(urlsplit(server.queue_url).hostname)
        executor: Executor | None = None
        try:
            async with aiohttp.ClientSession(connector=connector, trust_env=trust_env) as session:
                executor = Executor(
                    FalClient(session, server, settings.execution.retries + 1),
                    journal,
                    settings,
                    run_id,
                    on_event,
                    server=server_id,
                    price=_price(settings),
                    damaged=damaged,
                    stop=stop,
                )
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
            stats = executor.stats if executor else RunStats()
            seen_429 = executor.client.rate_limited if executor else 0
            elapsed = time.monotonic() - started
            write_stats(settings.out, stats_document(stats, info, elapsed, True, seen_429))
            end = RunLine(
                event="end",
                finished=utc_now(),
                ok=stats.ok,
                failed=stats.failed,
                skipped=stats.skipped,
                submitted=stats.submitted,
                refused=sum(stats.refused.values()),
                repaired=stats.repaired,
                possible_duplicates=stats.possible_duplicates,
                interrupted=stats.interrupted,
                stop_reason=stats.stop_reason,
            )
            append_run(settings.out, {**info, **end})


def _price(settings: RunSettings) -> float | None:
    """USD per billed megapixel, for the spend shown during a fal run (local runs are free)."""
    endpoint = get_endpoint(settings.endpoint)
    return endpoint.usd_per_megapixel if endpoint and settings.backend == "fal" else None
