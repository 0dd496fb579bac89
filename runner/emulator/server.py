"""Runs the two emulator apps (queue and run) on loopback ports over one shared state:
`Emulator` for tests and embedding, `serve_forever` for the `runner serve` command."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp import web

from ..emulatorsettings import EmulatorSettings
from .middleware import auth_middleware, faults_middleware
from .queue_routes import add_queue_routes
from .run_routes import add_run_routes
from .state import STATE, EmulatorState
from .stats import Stats
from .storage_routes import add_storage_routes

MAX_BODY = 64 * 1024 * 1024  # data: URIs make big JSON bodies
SHUTDOWN_TIMEOUT = 1.0  # open status streams are cut after this on stop()


def build_apps(state: EmulatorState) -> tuple[web.Application, web.Application]:
    """The queue app and the run app, both reading `state` under STATE."""
    apps = []
    for add_routes in (add_queue_routes, add_run_routes):
        app = web.Application(
            middlewares=[faults_middleware, auth_middleware], client_max_size=MAX_BODY
        )
        app[STATE] = state
        add_storage_routes(app)  # both hosts serve files and take uploads
        add_routes(app)
        apps.append(app)
    return apps[0], apps[1]


@dataclass(frozen=True)
class _Urls:
    queue: str
    run: str


class Emulator:
    """A fal-compatible queue + run service on loopback. Use `async with Emulator(...) as emu`
    (ports picked by the OS) or `await emu.start(...)` / `await emu.stop()`."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self._state: EmulatorState | None = None
        self._runners: list[web.AppRunner] = []
        self._urls: _Urls | None = None

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        run_port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Emulator:
        if self._state is not None:
            raise RuntimeError("Emulator already started; HINT: stop() it first")
        state = self._state = EmulatorState(self.settings)
        state.session = aiohttp.ClientSession()
        scheme = "https" if ssl_context else "http"
        urls = []
        try:
            for app, wanted in zip(build_apps(state), (port, run_port), strict=True):
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
                await runner.setup()
                self._runners.append(runner)
                await web.TCPSite(runner, host, wanted, ssl_context=ssl_context).start()
                bound = runner.addresses[0][1]
                state.own_ports.add(bound)
                shown = f"[{host}]" if ":" in host else host
                urls.append(f"{scheme}://{shown}:{bound}")
        except BaseException:
            await self.stop()
            raise
        self._urls = _Urls(*urls)
        return self

    @property
    def queue_url(self) -> str:
        return self._started().queue

    @property
    def run_url(self) -> str:
        return self._started().run

    @property
    def stats(self) -> Stats:
        if self._state is None:
            raise RuntimeError("Emulator not started; HINT: await emulator.start() first")
        return self._state.stats

    @property
    def state(self) -> EmulatorState:
        """The shared state (requests, files); for tests that need to look inside."""
        if self._state is None:
            raise RuntimeError("Emulator not started; HINT: await emulator.start() first")
        return self._state

    def _started(self) -> _Urls:
        if self._urls is None:
            raise RuntimeError("Emulator not started; HINT: await emulator.start() first")
        return self._urls

    async def stop(self) -> None:
        state, self._state, self._urls = self._state, None, None
        if state is not None:
            await state.close()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_forever(
    settings: EmulatorSettings,
    host: str = "127.0.0.1",
    port: int = 0,
    run_port: int = 0,
    certfile: str | None = None,
    keyfile: str | None = None,
    on_ready: Callable[[str, str], None] | None = None,
    on_stop: Callable[[Stats], None] | None = None,
) -> None:
    """Serve both apps (HTTPS when certfile is given) until cancelled; on_ready(queue, run),
    then on_stop(stats) with what was served."""
    context = None
    if certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
    emulator = Emulator(settings)
    await emulator.start(host, port, run_port, ssl_context=context)
    try:
        if on_ready is not None:
            on_ready(emulator.queue_url, emulator.run_url)
        await asyncio.Event().wait()
    finally:
        stats = emulator.stats  # stop() lets go of the state that holds them
        await emulator.stop()
        if on_stop is not None:
            on_stop(stats)


def served_line(stats: Stats) -> str:
    """What a standalone emulator served, to count against a run's rows (and the requests
    it ended with an injected infrastructure error, which fal does not bill and a run
    submits again without counting a possible double charge)."""
    infra = stats.faults_of("infra_error")
    unbilled = f"; {infra} ended by an infrastructure error (not billed)" if infra else ""
    return (
        f"served: {stats.submissions} queue submissions accepted "
        f"({stats.duplicate_submissions} repeating an earlier body), {stats.run_calls} sync "
        f"runs, {stats.uploads} uploads{unbilled}"
    )
