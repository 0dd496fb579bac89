"""One run, as `runner run` does it and as a script calls it: `run(job, options)` checks the
spec (or takes a Checked), selects a shard's rows, checks the fal key and URLs (before any
folder is made), locks the output folder, reads its journal once (refusing another backend's
folder; the spending cap: what the folder has committed, and the refusal of a run whose rows
still to send would pass it; the outputs to fetch again), drives the executor over
validation's rows, and writes runs.jsonl's start and end lines and stats.json.
`run_requests(settings, requests)` runs a script's own Requests through the same steps (all
but the shard and the cap's check ahead, which need validation's rows)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import aiohttp

from ..endpoints import Endpoint, get_endpoint
from ..errors import UsageError, WriteFailed
from ..folder.journal import Journal, KeyState, Record, RunLine, append_run, utc_now
from ..folder.lock import locked
from ..folder.names import MANIFEST
from ..folder.statsfile import keep_writing, write_stats
from ..grid.expand import Replay
from ..grid.plan import Pricing, Tally
from ..grid.shards import Shard
from ..models import GivenRow, Request, RunRow
from ..spec.check import Checked, check
from ..urls import is_loopback
from ..version import __version__
from ..words import shown_path
from .backends import backend_server, fal_server
from .decision import decide
from .executor import Executor
from .falapi import FalClient
from .http import origin
from .repair import find_damaged
from .settings import RunOptions, RunSettings, with_overrides
from .spending import Billed, Budget, Paid, check_priced, paid_from
from .spendingcap import SpendingCap
from .stops import Stop, stop_for
from .tracking import RunStats, stats_document

OnEvent = Callable[[str, RunStats], None]


@dataclass(frozen=True)
class RunResult:
    """What a run did: its stats (RunStats.stop says why it stopped early, if it did), its
    folder, and what it was a part of."""

    stats: RunStats
    out: Path
    requests: int  # validation's request count: the whole job, every shard
    shard: Shard | None = None
    ran: bool = True  # False: the shard selects none of the requests (nothing was started)

    @property
    def rows(self) -> int:
        """This run's rows: the requests, or the shard's part of them."""
        return self.stats.rows or 0

    @property
    def stop(self) -> Stop | None:
        return self.stats.stop

    @property
    def over_cap(self) -> bool:
        """The folder's commitments end past its spending cap: outputs came back larger than
        their estimate (the cap holds at each submission by estimates)."""
        stats = self.stats
        cap, price, committed = stats.max_usd, stats.usd_per_megapixel, stats.committed_megapixels
        if cap is None or price is None or committed is None:
            return False
        return not Budget(cap, price).fits(committed)


async def run(
    job: Checked | str | Path,
    options: RunOptions | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
    on_event: OnEvent | None = None,
) -> RunResult:
    """Run (or resume) a spec into its output folder, as `runner run` does. `job`: a spec's
    path (checked here: SpecErrors) or check()'s Checked; `options`: what `runner run`'s flags
    say (None fields: the spec's). `env`: where FAL_KEY and FAL_*_URL are read (os.environ);
    setting `stop` ends new submissions while the requests in flight finish (the first
    Ctrl-C); `on_event(event, stats)` is told "starting" (the rows are chosen, nothing is
    touched yet), "started", then each row's "ok", "failed", "skipped" (batched) and
    "retrying", with the live RunStats. Raises UsageError (nothing sent) and ManifestError;
    any other stop is in the result."""
    options = options or RunOptions()
    checked = job if isinstance(job, Checked) else check(job, out=options.out)
    assert checked.rows is not None  # a valid spec's requests
    rows = Replay(checked.rows, options.shard)
    settings = _run_settings(checked, options, len(rows))
    if options.shard is not None and len(rows) == 0:  # nothing to send: no backend, no folder
        return RunResult(RunStats(rows=0), settings.out, checked.count, options.shard, ran=False)
    stats = await _run(settings, rows, env, stop, on_event, ahead=rows)
    return RunResult(stats, settings.out, checked.count, options.shard)


async def run_requests(
    settings: RunSettings,
    requests: Iterable[Request],
    *,
    env: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
    on_event: OnEvent | None = None,
) -> RunStats:
    """Run (or resume) a script's own requests into settings.out, through the steps `run`
    takes; returns the stats (RunStats.stop: why it stopped early). The spending cap
    (settings.max_usd) holds at each submission; the check ahead of the run needs
    validation's rows, so only `run` makes it."""
    return await _run(settings, (GivenRow(r) for r in requests), env, stop, on_event)


def _run_settings(checked: Checked, options: RunOptions, rows: int) -> RunSettings:
    """The run's configuration: the spec's, with the options over it; `rows`: how many it
    makes (validation's count, or a shard's part), all it may take."""
    spec = checked.spec
    backend = options.backend_for(spec)
    cap = options.max_usd if options.max_usd is not None else spec.max_usd
    return RunSettings(
        endpoint=spec.endpoint,
        backend=backend,
        out=spec.output if options.out is None else Path(options.out).resolve(),
        execution=with_overrides(spec.execution, options.concurrency, options.mode),
        spec_path=str(spec.path),
        spec_sha256=spec.sha256,
        name=spec.name,
        retry_failed=options.retry_failed,
        resubmit_ambiguous=options.resubmit_ambiguous,
        validated_requests=rows,
        inputs=checked.inputs,
        shard=None if options.shard is None else str(options.shard),
        report=spec.report or None,
        allow_remote_fetch=options.allow_remote_fetch,
        max_usd=cap if backend == "fal" else None,  # a local run is free
    )


async def _run(
    settings: RunSettings,
    rows: Iterable[RunRow],
    env: Mapping[str, str] | None,
    stop: asyncio.Event | None,
    on_event: OnEvent | None,
    ahead: Replay | None = None,
) -> RunStats:
    """Everything around the loop; `ahead`: validation's rows, to check the cap against
    before anything is sent."""
    if on_event is not None:
        on_event("starting", RunStats(rows=settings.validated_requests))
    env = os.environ if env is None else env
    # A missing key or a bad URL is refused before the output folder is made or touched.
    server_id = origin(fal_server(env).queue_url) if settings.backend == "fal" else None
    cap_pricing = _cap_pricing(settings)
    fresh = not (settings.out / MANIFEST).exists()
    if cap_pricing is not None and ahead is not None and fresh:
        # a folder with no journal has committed nothing: refused before it is made
        _check_ahead(
            SpendingCap(cap_pricing.budget, Paid()), cap_pricing.endpoint, ahead, {}, settings
        )
    with locked(settings.out):
        billed = Billed()  # the ok rows' billed megapixels, seen in the journal's one read
        journal = Journal(settings.out, check_outputs=True, also=billed if cap_pricing else None)
        ran = False
        try:
            _refuse_other_backends(settings, journal, server_id)
            cap = None
            if cap_pricing is not None:
                states, pricing = journal.states, Pricing(cap_pricing.endpoint)
                backend = settings.backend
                paid = paid_from(settings.out, states, billed, pricing, backend, server_id)
                cap = SpendingCap(cap_pricing.budget, paid)
                if ahead is not None and (states or not fresh):
                    _check_ahead(cap, cap_pricing.endpoint, ahead, states, settings, server_id)
            damaged = find_damaged(settings.out, journal.damaged)
            stats = await _run_locked(
                settings, rows, journal, damaged, server_id, env, stop, on_event, cap
            )
            stats.flagged_before = journal.flagged()  # the resume repeats them (kill -9...)
            ran = True
            return stats
        finally:
            journal.close(keep_empty=ran)  # a run refused or broken off before its first line


class _CapPricing(NamedTuple):
    """The spending cap that applies to a run, and the endpoint whose price estimates it."""

    budget: Budget
    endpoint: Endpoint  # whose pricing estimates the rows


def _cap_pricing(settings: RunSettings) -> _CapPricing | None:
    """The spending cap, when one applies: a fal run with limits.max_usd or --max-usd
    (UsageError: the endpoint states no price, so the cap cannot be checked)."""
    endpoint = get_endpoint(settings.endpoint)
    if settings.max_usd is None or settings.backend != "fal" or endpoint is None:
        return None
    price = check_priced(endpoint.usd_per_megapixel, settings.max_usd)
    return _CapPricing(Budget(settings.max_usd, price), endpoint)


def _check_ahead(
    cap: SpendingCap,
    endpoint: Endpoint,
    rows: Replay,
    states: Mapping[bytes, KeyState],
    settings: RunSettings,
    server: str | None = None,
) -> None:
    """Before anything is sent: UsageError when what the folder has committed and the
    estimate of the rows this run will send (decision.decide, the executor's rule) pass the
    cap. The rows are priced as validation priced them."""
    tally = Tally(endpoint, preview=0)
    backend, retry = settings.backend, settings.retry_failed
    for key, cost in rows.costs():
        state = states.get(key.encode())
        ours = state is not None and state.made_by(backend, server)
        if decide(state, ours=ours, damaged=False, retry_failed=retry).sends:
            tally.count(key, cost)
    to_send = tally.plan(())
    cap.check_start(to_send, to_send.unsized_inputs)


def _refuse_other_backends(settings: RunSettings, journal: Journal, server: str | None) -> None:
    """A row counts as done only for the backend (and fal server) that made it: rather than
    mixing two backends' results in one folder (where `report` and `export` could not tell
    them apart), a run refuses a folder that holds another backend's or server's rows."""
    for (backend, other), rows in journal.origins().items():
        same_server = other == server or None in (other, server)  # unrecorded: trusted
        if backend is None or (backend == settings.backend and same_server):
            continue
        theirs = _label(backend, other)
        ours = _label(settings.backend, server)
        if backend == settings.backend:  # the same backend, another fal server
            clash = "another server's results never count as this one's"
            suffix = _server_name(server)
        else:
            clash = "another backend's results never count as this one's"
            suffix = settings.backend
        suggestion = shown_path(settings.out.with_name(f"{settings.out.name}-{suffix}"))
        raise UsageError(
            f"{settings.out} holds {rows} rows made by {theirs}; this run uses {ours}, and "
            f"{clash}. HINT: give it its own folder: --out {suggestion}"
        )


def _server_name(server: str | None) -> str:
    """A server's origin as a folder name says it: `queue.fal.run`, `127.0.0.1-8080`."""
    parts = urlsplit(server or "")
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"https": 443, "http": 80}.get(parts.scheme)
    name = (parts.hostname or "server").replace(":", "-")  # an IPv6 address
    return name if port in (None, default) else f"{name}-{port}"


def _label(backend: str, server: str | None) -> str:
    if backend == "local":
        return "backend local (the embedded emulator)"
    return f"backend {backend}" + (f" at {server}" if server else "")


async def _run_locked(
    settings: RunSettings,
    rows: Iterable[RunRow],
    journal: Journal,
    damaged: Mapping[str, Record],
    server_id: str | None,
    env: Mapping[str, str],
    stop: asyncio.Event | None,
    on_event: OnEvent | None,
    cap: SpendingCap | None,
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
        try:
            append_run(settings.out, {**info, "event": "start"})
        except WriteFailed as error:  # a full disk: the run stops before it starts
            return RunStats(rows=settings.validated_requests, stop=stop_for(error))
        concurrency = settings.execution.concurrency
        if settings.validated_requests is not None:  # never more connections (or workers) than rows
            concurrency = max(1, min(concurrency, settings.validated_requests))
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
                    cap=cap,
                )
                client, stats_now = executor.client, executor.stats
                writer = asyncio.create_task(
                    keep_writing(
                        settings.out,
                        lambda: stats_document(
                            stats_now, info, time.monotonic() - started, False, client.rate_limited
                        ),
                        lambda error: executor.halt(stop_for(error)) if executor else None,
                    )
                )
                try:
                    return await executor.run(rows)
                finally:
                    writer.cancel()
        finally:
            stats = executor.stats if executor else RunStats()
            seen_429 = executor.client.rate_limited if executor else 0
            elapsed = time.monotonic() - started
            document = stats_document(stats, info, elapsed, True, seen_429)
            _write_last(stats, lambda: write_stats(settings.out, document))
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
            _write_last(stats, lambda: append_run(settings.out, {**info, **end}))


def _write_last(stats: RunStats, write: Callable[[], None]) -> None:
    """One of the run's last writes (stats.json, runs.jsonl's end line): best effort, never
    raised over what ended the run. One that fails is the run's stop when it had none: the
    folder no longer says what the run did, and the same command writes it again."""
    try:
        write()
    except WriteFailed as error:
        if stats.stop is None:
            stats.stop = stop_for(error)


def _price(settings: RunSettings) -> float | None:
    """USD per billed megapixel, for the spend shown during a fal run (local runs are free)."""
    endpoint = get_endpoint(settings.endpoint)
    return endpoint.usd_per_megapixel if endpoint and settings.backend == "fal" else None
