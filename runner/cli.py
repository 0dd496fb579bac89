"""The command line: `runner init | validate | plan | run | report | export | merge | fields |
schema | serve` (grammar in cliargs.py). The one place that prints and the one place where errors
become exit codes:

    0  every request ok          2  bad spec or usage, nothing sent
    1  some requests failed      3  stopped early (bad credentials, server unreachable,
                                    Ctrl-C or SIGTERM, disk): resumable
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The library's own names, as a script would import them (runner/__init__.py); the rest are
# the commands' helpers (grammar, progress bar, caps, shards), which the library does not offer.
from . import (
    AuthError,
    BackendError,
    Checked,
    InputChanged,
    Interrupted,
    ManifestError,
    RunnerError,
    RunSettings,
    RunStats,
    SpecError,
    UsageError,
    check,
    expand,
    run_requests,
)
from .cliargs import build_parser, serve_settings
from .endpoints import get_endpoint
from .folderlock import check_out_dir
from .grid import Collapsed, Replay
from .http import origin
from .manifest import MANIFEST
from .plan import Cost, Tally, explain_cost
from .progress import Progress, in_flight_note, summary_line
from .run import DEFAULT_QUEUE_URL, server_url
from .settings import with_overrides
from .shards import Shard
from .spec import read_spec
from .spending import Budget, Paid, check_priced, read_paid, usd_text
from .words import counted

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
GRACE_SECONDS = 10.0  # after a first Ctrl-C, requests in flight get this long to finish
# A signal this soon after the first is the same stop delivered twice, not a second request:
# GNU `timeout` sends SIGTERM to the command and then to its whole process group.
ONE_STOP_SECONDS = 0.25


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            return cmd_init(args)
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "plan":
            return cmd_plan(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "merge":
            return cmd_merge(args)
        if args.command == "fields":
            return cmd_fields(args)
        if args.command == "schema":
            return cmd_schema(args)
        return cmd_serve(args)
    except SpecError as error:
        _err(str(error))
        return EXIT_USAGE
    except UsageError as error:
        _err(f"runner: {error}")
        return EXIT_USAGE
    except AuthError as error:
        _err(f"runner: stopped: {error}. Fix the key and run the same command again.")
        return EXIT_STOPPED
    except (Interrupted, ManifestError, BackendError, InputChanged) as error:
        _err(f"runner: stopped: {error}")
        return EXIT_STOPPED
    except RunnerError as error:
        _err(f"runner: {error}")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK  # `runner plan --jsonl | head` is fine
    except KeyboardInterrupt:  # before a run started (validating, planning): nothing was sent
        _err("runner: interrupted")
        return EXIT_STOPPED


def cmd_init(args: argparse.Namespace) -> int:
    from .starter import write_starter

    started = write_starter(args.dir)
    print(f"wrote {started.spec}: a starter spec for the offline emulator (backend local)")
    print(f"wrote {started.image}: the picture it sends")
    spec, out = (
        shlex.quote(f"./{path}" if str(path).startswith("-") else str(path))  # not an option
        for path in (started.spec, started.output)
    )
    print("next:")
    for command in (f"validate {spec}", f"run {spec}", f"report {out}"):
        print(f"  runner {command}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for spec in args.specs:
        try:
            checked = check(spec)
        except SpecError as error:
            _err(str(error))
            status = EXIT_USAGE
        else:
            print(f"{spec}: ok, {counted(checked.count, 'request')}")
            _warn_spec(checked)
            _warn_remote(checked, checked.spec.backend)
    return status


def cmd_plan(args: argparse.Namespace) -> int:
    collapsed = Collapsed()
    checked = check(args.spec, collapsed=collapsed, preview=0 if args.jsonl else args.rows)
    spec, endpoint = checked.spec, checked.endpoint
    _warn_spec(checked)
    _warn_remote(checked, spec.backend)
    if args.jsonl:
        out = sys.stdout
        for request in expand(spec, endpoint):
            out.write(
                json.dumps(
                    {"key": request.key, "input": dict(request.input), "vars": dict(request.vars)},
                    ensure_ascii=False,
                )
                + "\n"
            )
        return EXIT_OK
    tally = Tally(endpoint, args.rows)  # from the costs the check counted in its one pass
    tally.first = list(checked.first)
    tally.count_all(checked.costs)
    plan = tally.plan(checked.axes)
    if args.json:
        print(
            json.dumps(
                {
                    "spec": args.spec,
                    "endpoint": spec.endpoint,
                    "backend": spec.backend,
                    "output": str(spec.output),
                    **plan.to_dict(),
                    "collapsed": {"rows": collapsed.rows, "by": collapsed.by},
                },
                ensure_ascii=False,
            )
        )
        return EXIT_OK
    print(
        f"{spec.name or spec.path.stem}: {counted(plan.count, 'request')} to {spec.endpoint} "
        f"(backend {spec.backend})"
    )
    print("axes:")
    for name, size in plan.axes:
        print(f"  {name:<24} {size}")
    if collapsed.rows:
        causes = ", ".join(f"{cause}: {n}" for cause, n in collapsed.by.items())
        print(f"collapsed: {counted(collapsed.rows, 'row')} repeated an earlier request ({causes})")
    print("first rows:")
    for request in plan.first:
        shown = " ".join(f"{k}={_short(v)}" for k, v in request.vars.items())
        print(f"  {request.key}  {shown or _short(dict(request.input))}")
    for line in explain_cost(plan, endpoint, spec.backend, spec.execution.concurrency):
        print(line)
    print(f"output: {spec.output}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_out_dir(args.out)  # a file named as --out is a usage mistake, before validating
    capped = _capped(args)  # a spending cap is tallied during the check's pass over the grid
    shard: Shard | None = args.shard
    retry = args.retry_failed

    rows = 0  # this run's rows: a shard's are counted in the same pass, chosen by key

    def each(key: str, cost: Cost) -> None:
        nonlocal rows
        mine = shard is None or shard.holds(key)
        rows += mine
        if capped is not None and mine and capped.paid.still_to_send(key.encode(), retry):
            capped.tally.count(key, cost)

    by_key = shard is not None or capped is not None  # else every request is this run's
    checked = check(args.spec, out=args.out, each=each if by_key else None)
    rows = rows if by_key else checked.count
    assert checked.rows is not None  # a valid spec's requests
    # The run replays validation's rows: a settled row is counted by its key, and a Request
    # is built again only for a row that is sent.
    replay = Replay(checked.rows, shard.holds if shard else None)
    _warn_spec(checked)
    if shard is not None and rows == 0:  # nothing to send: no backend, no folder
        print(
            f"--shard {shard} selects none of the {counted(checked.count, 'request')}; "
            "nothing to run"
        )
        return EXIT_OK
    spec = checked.spec
    check_out_dir(spec.output)
    execution = with_overrides(spec.execution, args.concurrency, args.mode)
    settings = RunSettings(
        endpoint=spec.endpoint,
        backend=args.backend or spec.backend,
        out=spec.output,
        execution=execution,
        spec_path=str(spec.path),
        spec_sha256=spec.sha256,
        name=spec.name,
        retry_failed=args.retry_failed,
        resubmit_ambiguous=not args.no_resubmit_ambiguous,
        count=rows,  # what was validated (for a shard: its part) is all that is sent
        inputs=checked.inputs,
        shard=str(args.shard) if args.shard else None,
        report=spec.report or None,
        allow_remote_fetch=args.allow_remote_fetch,
        max_usd=capped.budget.cap if capped is not None else None,
    )
    if not args.allow_remote_fetch:
        _warn_remote(checked, settings.backend)
    if capped is not None:  # before anything is sent
        to_send = capped.tally.plan(())
        capped.budget.check_start(capped.paid, to_send, to_send.unsized_inputs)
        del capped  # the folder's state: the run reads its own, under the folder's lock
    requests = replay
    total = rows  # the summary's "N requests:" head, a shard's part alike
    progress = Progress(total, enabled=not args.no_progress and sys.stderr.isatty())
    started = time.monotonic()
    stats = asyncio.run(_run_interruptible(settings, requests, progress))
    progress.close()
    print(summary_line(stats, settings.out, time.monotonic() - started, total))
    _say_if_over_the_cap(stats, settings.out)
    if stats.elsewhere:
        _err(
            f"runner: note: {settings.out} also holds {counted(stats.elsewhere, 'row')} this "
            "run does not make (from an earlier version of the spec, or another shard); report "
            "and export include them. HINT: a new --out keeps versions apart"
        )
    failed = stats.failed + stats.failed_before
    if failed and not stats.interrupted and stats.stop_reason is None:
        # the same part of the same job on the same backend: the rest of the command as given
        again = " ".join(
            [f"runner run {args.spec}"]
            + ([f"--out {args.out}"] if args.out else [])
            + ([f"--backend {args.backend}"] if args.backend else [])
            + ([f"--shard {args.shard}"] if args.shard else [])
            + (["--allow-remote-fetch"] if args.allow_remote_fetch else [])
        )
        remain = "remains" if failed == 1 else "remain"
        taken = ""
        if n := stats.fetchable:
            one = n == 1
            taken = (
                f" ({n} of them accepted by the server, {'its' if one else 'their'} result not "
                f"fetched: --retry-failed fetches {'it' if one else 'them'} by request id, "
                "without paying again)"
            )
        _err(
            f"runner: {counted(failed, 'failed row')} {remain}{taken}; to submit them again: "
            f"{again} --retry-failed"
        )
    if stats.stop_reason is not None:
        _err(
            f"runner: stopped: {stats.stop_reason}; no more submissions "
            f"(what was sent is journaled). Once that is dealt with, run again to go on."
        )
        if stats.unfinished or stats.unanswered:
            _err(f"runner: {in_flight_note(stats)}")
        return EXIT_STOPPED
    if stats.interrupted:
        _err(f"runner: interrupted; {in_flight_note(stats)}. Run the same command again to resume.")
        return EXIT_STOPPED
    return EXIT_FAILED if failed else EXIT_OK


def _say_if_over_the_cap(stats: RunStats, out: Path) -> None:
    """The cap holds at each submission by estimates; outputs larger than their estimate
    (an input given as a URL counts as 1 MP) can take the folder past it: say so."""
    cap, price, committed = stats.max_usd, stats.usd_per_megapixel, stats.committed_megapixels
    if cap is None or price is None or committed is None:
        return
    budget = Budget(cap, price)
    if not budget.fits(committed):
        _err(
            f"runner: note: {out} has committed {usd_text(budget.usd(committed))}, over its "
            f"spending cap {usd_text(cap)}: outputs came back larger than their estimate (an "
            "input given as a URL is estimated at 1 MP)"
        )


@dataclass(frozen=True)
class _Capped:
    """A spending cap's check before a run: the cap, what the output folder has paid for,
    and the plan of the rows still to send (tallied during the check's pass over the grid)."""

    budget: Budget
    paid: Paid
    tally: Tally


def _capped(args: argparse.Namespace) -> _Capped | None:
    """The cap's check when one applies: a fal run with limits.max_usd or --max-usd; None
    otherwise (a local run is free). The cap is the budget of the output folder across its
    runs: what it has already paid for counts, so a resume gets no fresh budget."""
    spec = read_spec(args.spec, out=args.out).spec
    if spec is None:
        return None  # check reports why
    cap = args.max_usd if args.max_usd is not None else spec.max_usd
    endpoint = get_endpoint(spec.endpoint)
    if cap is None or (args.backend or spec.backend) != "fal" or endpoint is None:
        return None
    price = check_priced(endpoint.usd_per_megapixel, cap)
    tally = Tally(endpoint, preview=0)
    server = origin(server_url(os.environ, "FAL_QUEUE_URL", DEFAULT_QUEUE_URL))
    paid = read_paid(spec.output, tally.pricing, "fal", server)
    return _Capped(Budget(cap, price), paid, tally)


async def _run_interruptible(settings: RunSettings, requests: Any, progress: Progress) -> RunStats:
    """First Ctrl-C or SIGTERM (what `timeout`, process managers, CI cancellation and `docker
    stop` send): no new submissions, a bounded wait for what is in flight, then the summary
    and exit 3. A second signal of either kind: now."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    stop = asyncio.Event()
    stats = RunStats()  # the run's live counters once it reports them (its "started" event)
    signals = 0
    first_at = 0.0

    def on_signal(name: str) -> None:
        nonlocal signals, first_at
        if signals and loop.time() - first_at < ONE_STOP_SECONDS:
            return  # the first signal again (`timeout` signals the command and its group)
        signals += 1
        if signals == 1:
            first_at = loop.time()
            stop.set()
            again = "Ctrl-C again" if name == "SIGINT" else "a second signal"
            _err(
                f"\nrunner: stopping ({name}): no new submissions; waiting for requests in "
                f"flight (at most {GRACE_SECONDS:g} s; {again} to stop now)"
            )
            loop.call_later(GRACE_SECONDS, main_task.cancel)
        else:
            main_task.cancel()

    def on_event(event: str, live: RunStats) -> None:
        nonlocal stats
        stats = live
        progress.update(event, live)

    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum.name)
    try:
        return await run_requests(settings, requests, stop=stop, on_event=on_event)
    except asyncio.CancelledError:  # a second signal, or the grace period ran out
        stats.interrupted = True
        return stats
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    if not (args.out / MANIFEST).is_file():  # no run in that folder: a usage mistake
        raise UsageError(f"no {MANIFEST} in {args.out}: run `runner run SPEC` first")
    hint = f"write the report into a folder you can write: runner report {args.out} --to DIR"
    with _reads_the_run(args.to or args.out, hint):
        summary = write_report(args.out, args.x, args.y, png=args.png, to=args.to)
    layout = " × ".join(a for a in (summary.rows, summary.columns) if a) or "a gallery"
    if summary.pages:
        layout += f", {summary.tables} tables by {' × '.join(summary.pages)}"
    if summary.captions:
        layout += f", {' · '.join(summary.captions)} under each image"
    notes = [
        f", {n} image{'' if n == 1 else 's'} {what}"
        for n, what in ((summary.missing, "missing"), (summary.changed, "changed since the run"))
        if n
    ]
    notes.extend(
        f", input {note.source} {note.what} ({note.requests} request"
        f"{'' if note.requests == 1 else 's'})"
        for note in summary.inputs[:3]
    )
    if len(summary.inputs) > 3:  # a moved photo folder: the page lists them
        notes.append(f", and {len(summary.inputs) - 3} more inputs missing or changed")
    print(
        f"{summary.path}: {summary.ok} ok, {summary.failed} failed, {summary.pending} pending"
        f"{''.join(notes)} (laid out by {layout})"
    )
    if summary.missing:
        _err("runner: images are missing: `runner run` on the spec fetches them again")
    if summary.changed:
        _err(
            "runner: images changed since the run are not shown: they are not what was "
            "returned. HINT: delete those files (the page marks them), and `runner run` on the "
            "spec fetches them again"
        )
    for png in summary.pngs:
        print(png)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    if not (args.out / MANIFEST).is_file():  # no run in that folder: a usage mistake
        raise UsageError(f"no {MANIFEST} in {args.out}: run `runner run SPEC` first")
    with _reads_the_run(args.to, "name a folder you can write: --to DEST"):
        done = export(
            args.out, args.format, args.to, status=args.status, shard_size=args.shard_size
        )
    where = done.files[0] if len(done.files) == 1 else f"{len(done.files)} files in {done.dest}"
    print(
        f"{where}: {counted(done.rows, 'row')} ({counted(done.images, 'output image')}, "
        f"{counted(done.inputs, 'input image')}, {counted(done.input_urls, 'remote input URL')}) "
        f"as {done.format}"
    )
    if n := done.missing_inputs:
        _err(
            f"runner: {counted(n, 'row has', 'rows have')} a local input whose file was not "
            f"found (moved or edited since the run): {'its' if n == 1 else 'their'} input "
            "column is empty"
        )
    if n := done.missing_outputs:
        _err(
            f"runner: {counted(n, 'ok row has', 'ok rows have')} no intact image file in "
            f"{args.out} (missing, or changed since the run): {'its' if n == 1 else 'their'} "
            "image column is empty"
        )
    return EXIT_OK


@contextlib.contextmanager
def _reads_the_run(dest: Path, hint: str) -> Iterator[None]:
    """report and export only read the run, so what stops them (a destination they cannot
    write) is exit 2 and one line, never 3 ("stopped: run again to resume") or a traceback;
    the hint when the destination is read-only."""
    try:
        yield
    except ManifestError as error:
        raise UsageError(_hinted(str(error), dest, hint)) from None
    except OSError as error:
        where = error.filename or dest
        raise UsageError(_hinted(f"cannot write {where}: {error.strerror}", dest, hint)) from None


def _hinted(message: str, dest: Path, hint: str) -> str:
    existing = dest
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_file():
        existing = existing.parent
    return message if os.access(existing, os.W_OK) else f"{message}; HINT: {hint}"


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import merge

    done = merge(args.sources, args.out)
    print(
        f"{done.out}: {done.ok} ok, {done.failed} failed, {done.pending} pending from "
        f"{counted(len(done.sources), 'folder')} ({counted(done.images, 'image')})"
    )
    if len(done.specs) > 1:
        made = "; ".join(
            f"{use.spec} (sha256 {use.sha256[:12]}): {', '.join(map(str, use.folders))}"
            for use in done.specs
        )
        _err(
            f"runner: note: the folders hold runs of different specs ({made}); merged all the "
            "same: a row's key is its request, whatever the spec"
        )
    if done.pending or done.unfinished:
        why = []
        if done.unfinished:
            why.append(
                f"the last run of {', '.join(map(str, done.unfinished))} stopped early (rows it "
                "did not reach are in no journal yet)"
            )
        if done.pending:
            n = done.pending
            why.append(f"{counted(n, 'row')} {'is' if n == 1 else 'are'} not finished")
        _err(
            f"runner: note: {' and '.join(why)}: go on in {done.out} (runner run SPEC --out "
            f"{done.out}), not in the folders merged: a row run in both is paid twice"
        )
    if done.conflicts:
        shown = ", ".join(done.conflicts[:5]) + (" …" if len(done.conflicts) > 5 else "")
        _err(
            f"runner: {counted(len(done.conflicts), 'key was', 'keys were')} ok in more than one "
            f"folder; kept the first folder's result: {shown}"
        )
    return EXIT_OK


def cmd_fields(args: argparse.Namespace) -> int:
    from .describe import field_docs, price_basis, time_basis
    from .endpoints import all_endpoints, get_endpoint

    endpoint = get_endpoint(args.endpoint)
    if endpoint is None:
        known = ", ".join(sorted(all_endpoints()))
        raise UsageError(f"unknown endpoint {args.endpoint!r} (known: {known})")
    print(f"{endpoint.id}: {endpoint.title}")
    for doc in field_docs(endpoint):
        facts = [doc.type]
        if doc.required:
            facts.append("required")
        if doc.range:
            facts.append(doc.range)
        if doc.default:
            facts.append(f"default {doc.default}")
        print(f"\n{doc.name}: {', '.join(facts)}")
        if doc.description:
            print(f"  {doc.description}")
    print()
    print(price_basis(endpoint))
    if rounding := endpoint.pricing.get("rounding"):
        print(f"rounding: {rounding}")
    if timing := time_basis(endpoint):
        print(timing)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .endpoints import job_schema

    print(job_schema())
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .emulator import Stats, serve_forever, served_line

    def ready(queue_url: str, run_url: str) -> None:
        print(f"queue: {queue_url}", flush=True)
        print(f"run: {run_url}", flush=True)
        print(
            f"to use it: FAL_QUEUE_URL={queue_url} FAL_RUN_URL={run_url} "
            f"FAL_REST_URL={queue_url} FAL_KEY=... runner run SPEC --backend fal",
            flush=True,
        )

    settings = serve_settings(args)
    for flag, pem in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if pem and not os.path.isfile(pem):
            raise UsageError(f"{flag}: no such file: {pem}")

    def stopped(stats: Stats) -> None:
        print(served_line(stats), flush=True)  # to count against a run's rows

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # `kill`
        await serve_forever(
            settings,
            args.host,
            args.port,
            args.run_port,
            args.tls_cert,
            args.tls_key,
            ready,
            stopped,
        )

    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(serve())
    except OSError as error:  # port in use, address not here, unreadable or bad certificate
        raise UsageError(
            f"cannot serve on {args.host} (--port {args.port}, --run-port {args.run_port}): "
            f"{error.strerror or error}"
        ) from None
    return EXIT_OK


def _warn_spec(checked: Checked) -> None:
    for line in checked.warnings:  # `file:line:col: warning: ...`, like errors
        _err(line)


def _warn_remote(checked: Checked, backend: str) -> None:
    """The offline emulator refuses to fetch http(s) inputs: say so before anything runs."""
    n = checked.remote_inputs
    if backend == "local" and n:
        _err(
            f"runner: warning: {n} {'request has' if n == 1 else 'requests have'} an http(s) "
            "image URL, which the offline emulator (backend local) does not fetch: they will "
            "fail with 422 (remote fetch is off). Use `runner run --allow-remote-fetch` "
            "(network access) or `--backend fal`."
        )


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
