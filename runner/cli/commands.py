"""The command line: `runner init | validate | plan | run | report | export | merge | fields |
schema | serve` (grammar in args.py). The one place that prints and the one place where errors
become exit codes:

    0  every request ok          2  bad spec or usage, nothing sent
    1  some requests failed      3  stopped early (bad credentials, server unreachable,
                                    Ctrl-C or SIGTERM, a changed input, the spending
                                    cap, disk): resumable

`runner run` is the library's run (runner.run): this module builds its RunOptions from the
flags, turns signals into its stop, and prints what its RunResult says.
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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# The library's own names, as a script would import them (runner/__init__.py); the rest are
# the commands' helpers (grammar, progress bar and its words), which the library does not offer.
from .. import (
    BackendError,
    Checked,
    InputChanged,
    ManifestError,
    RunnerError,
    RunOptions,
    RunResult,
    RunStats,
    SpecError,
    Stop,
    StopKind,
    UsageError,
    check,
    run,
)
from ..execution.spending import usd_text
from ..folder.lock import check_out_dir
from ..folder.names import MANIFEST
from ..grid.expand import Collapsed, Replay
from ..grid.plan import Tally, explain_cost
from ..words import counted
from .args import build_parser, serve_settings
from .progress import Progress, stop_lines, summary_line

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
    except (ManifestError, BackendError, InputChanged) as error:
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
    from ..starter import write_starter

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
        assert checked.rows is not None  # a valid spec's requests
        for request in (row.request() for row in Replay(checked.rows)):
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
    with _sigterm_interrupts():
        checked = check(args.spec, out=args.out)
        _warn_spec(checked)
        options = RunOptions(
            out=args.out,
            backend=args.backend,
            concurrency=args.concurrency,
            mode=args.mode,
            retry_failed=args.retry_failed,
            resubmit_ambiguous=not args.no_resubmit_ambiguous,
            allow_remote_fetch=args.allow_remote_fetch,
            shard=args.shard,
            max_usd=args.max_usd,
        )
        progress: Progress | None = None

        def on_event(event: str, stats: RunStats) -> None:
            nonlocal progress
            if event == "starting":  # this run's rows are chosen; nothing is touched yet
                if not args.allow_remote_fetch:
                    _warn_remote(checked, options.backend_for(checked.spec))
                progress = Progress(stats.rows, not args.no_progress and sys.stderr.isatty())
            elif progress is not None:
                progress.update(event, stats)

        started = time.monotonic()
        try:
            result = asyncio.run(_run_interruptible(checked, options, on_event))
        finally:
            if progress is not None:
                progress.close()
    if not result.ran:
        print(
            f"--shard {args.shard} selects none of the {counted(result.requests, 'request')}; "
            "nothing to run"
        )
        return EXIT_OK
    stats, out = result.stats, result.out
    free = options.backend_for(checked.spec) == "local"
    print(summary_line(stats, out, time.monotonic() - started, result.rows, free=free))
    if result.over_cap:  # the cap holds at each submission by estimates
        _err(
            f"runner: note: {out} has committed {usd_text(stats.committed_usd or 0)}, over its "
            f"spending cap {usd_text(stats.max_usd or 0)}: outputs came back larger than their "
            "estimate (an input given as a URL is estimated at 1 MP)"
        )
    if stats.elsewhere:
        _err(
            f"runner: note: {out} also holds {counted(stats.elsewhere, 'row')} this "
            "run does not make (from an earlier version of the spec, or another shard); report "
            "and export include them. HINT: a new --out keeps versions apart"
        )
    failed = stats.failed + stats.failed_before
    if failed and result.stop is None:
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
            f"runner: {counted(failed, 'failed row')} {remain}{taken}; to submit "
            f"{'it' if failed == 1 else 'them'} again: "
            f"{again} --retry-failed"
        )
    if n := stats.unfetched:
        # like an unreachable server: nothing is lost or marked failed, the same command goes on
        one = n == 1
        _err(
            f"runner: {counted(n, 'missing output')} could not be fetched now "
            f"({stats.unfetched_reason}); {'its row stays' if one else 'their rows stay'} ok "
            f"with {'its URL' if one else 'their URLs'}: run the same command again to fetch "
            f"{'it' if one else 'them'}"
        )
    if result.stop is not None:
        for line in stop_lines(stats, free=free):
            _err(line)
        return EXIT_STOPPED
    if stats.unfetched:
        return EXIT_STOPPED
    return EXIT_FAILED if failed else EXIT_OK


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Until the run's own handlers take over, SIGTERM is a Ctrl-C: while validating, nothing
    is sent, and the command says "interrupted" and exits 3 rather than dying with 143."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread has signals
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _run_interruptible(
    checked: Checked, options: RunOptions, on_event: Callable[[str, RunStats], None]
) -> RunResult:
    """First Ctrl-C or SIGTERM (what `timeout`, process managers, CI cancellation and `docker
    stop` send): no new submissions, a bounded wait for what is in flight, then the summary
    and exit 3. A second signal of either kind: now."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    stop = asyncio.Event()
    stats = RunStats()  # the run's live counters, as its events last showed them
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

    def seen(event: str, live: RunStats) -> None:
        nonlocal stats
        stats = live
        on_event(event, live)

    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum.name)
    try:
        return await run(checked, options, stop=stop, on_event=seen)
    except asyncio.CancelledError:  # a second signal, or the grace period ran out
        if stats.stop is None:
            stats.stop = Stop(StopKind.INTERRUPTED, "cancelled")
        return RunResult(stats, checked.spec.output, checked.count, options.shard)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report

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
    from ..export import export

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
    from ..folder.merge import merge

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
    from ..endpoints import all_endpoints, get_endpoint
    from .describe import field_docs, price_basis, time_basis

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
    from ..endpoints import job_schema

    print(job_schema())
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from ..emulator import Stats, serve_forever, served_line

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
