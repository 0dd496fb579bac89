"""The command line: `runner validate | plan | run | report | export | merge | fields | schema |
serve` (grammar in cliargs.py). The one place that prints and the one place where errors
become exit codes:

    0  every request ok          2  bad spec or usage, nothing sent
    1  some requests failed      3  stopped early (bad credentials, interrupted, disk): resumable
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
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
from .manifest import FAILED, MANIFEST, OK, SUBMITTED, read_state
from .plan import Cost, Tally, explain_cost
from .progress import Progress, in_flight_note, summary_line
from .settings import with_overrides
from .shards import Shard
from .spec import read_spec
from .spending import check_cap

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
GRACE_SECONDS = 10.0  # after a first Ctrl-C, requests in flight get this long to finish


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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


def cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for spec in args.specs:
        try:
            checked = check(spec)
        except SpecError as error:
            _err(str(error))
            status = EXIT_USAGE
        else:
            print(f"{spec}: ok, {checked.count} requests")
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
        f"{spec.name or spec.path.stem}: {plan.count} requests to {spec.endpoint} "
        f"(backend {spec.backend})"
    )
    print("axes:")
    for name, size in plan.axes:
        print(f"  {name:<24} {size}")
    if collapsed.rows:
        causes = ", ".join(f"{cause}: {n}" for cause, n in collapsed.by.items())
        print(f"collapsed: {collapsed.rows} rows repeated an earlier request ({causes})")
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

    rows = 0  # this run's rows: a shard's are counted in the same pass, chosen by key

    def each(key: str, cost: Cost) -> None:
        nonlocal rows
        mine = shard is None or shard.holds(key)
        rows += mine
        if (
            capped is not None and mine and key.encode() not in capped[2]  # paid for already
        ):
            capped[1].count(key, cost)

    by_key = shard is not None or capped is not None  # else every request is this run's
    checked = check(args.spec, out=args.out, each=each if by_key else None)
    rows = rows if by_key else checked.count
    assert checked.rows is not None  # a valid spec's requests
    # The run replays validation's rows: a settled row is counted by its key, and a Request
    # is built again only for a row that is sent.
    replay = Replay(checked.rows, shard.holds if shard else None)
    _warn_spec(checked)
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
        max_usd=capped[0] if capped is not None else None,
    )
    if not args.allow_remote_fetch:
        _warn_remote(checked, settings.backend)
    if capped is not None:  # before anything is sent
        plan = capped[1].plan(())
        check_cap(plan.usd, plan.megapixels, capped[0], plan.unsized_inputs)
    requests = replay
    total = rows  # the summary's "N requests:" head, a shard's part alike
    progress = Progress(total, enabled=not args.no_progress and sys.stderr.isatty())
    started = time.monotonic()
    stats = asyncio.run(_run_interruptible(settings, requests, progress))
    progress.close()
    print(summary_line(stats, settings.out, time.monotonic() - started, total))
    if stats.elsewhere:
        _err(
            f"runner: note: {settings.out} also holds {stats.elsewhere} rows this run does not "
            "make (from an earlier version of the spec, or another shard); report and export "
            "include them. HINT: a new --out keeps versions apart"
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
        _err(f"runner: {failed} failed rows remain; to submit them again: {again} --retry-failed")
    if stats.stop_reason is not None:
        _err(
            f"runner: stopped: {stats.stop_reason}; no more submissions "
            f"(what was sent is journaled). Once that is dealt with, run again to go on."
        )
        return EXIT_STOPPED
    if stats.interrupted:
        _err(f"runner: interrupted; {in_flight_note(stats)}. Run the same command again to resume.")
        return EXIT_STOPPED
    return EXIT_FAILED if failed else EXIT_OK


def _capped(args: argparse.Namespace) -> tuple[float, Tally, set[bytes]] | None:
    """(cap, empty plan, keys already paid for) when a spending cap applies: a fal run with
    limits.max_usd or --max-usd; None otherwise (a local run is free). The cap is on what
    this run may still spend: rows the folder already holds as ok or accepted (and failed
    ones, unless --retry-failed) cost nothing more, so resuming a grown job is not refused
    for the part already paid."""
    spec = read_spec(args.spec, out=args.out).spec
    if spec is None:
        return None  # check reports why
    cap = args.max_usd if args.max_usd is not None else spec.max_usd
    endpoint = get_endpoint(spec.endpoint)
    if cap is None or (args.backend or spec.backend) != "fal" or endpoint is None:
        return None
    settled = {OK, SUBMITTED} if args.retry_failed else {OK, SUBMITTED, FAILED}
    paid = {key for key, state in read_state(spec.output).items() if state[0] in settled}
    return cap, Tally(endpoint, preview=0), paid


async def _run_interruptible(settings: RunSettings, requests: Any, progress: Progress) -> RunStats:
    """First Ctrl-C: no new submissions, a bounded wait for what is in flight. Second: now."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    stop = asyncio.Event()
    stats = RunStats()  # the run's live counters once it reports them (its "started" event)
    presses = 0

    def on_sigint() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            stop.set()
            _err(
                "\nrunner: stopping: no new submissions; waiting for requests in flight "
                f"(at most {GRACE_SECONDS:g} s; Ctrl-C again to stop now)"
            )
            loop.call_later(GRACE_SECONDS, main_task.cancel)
        else:
            main_task.cancel()

    def on_event(event: str, live: RunStats) -> None:
        nonlocal stats
        stats = live
        progress.update(event, live)

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return await run_requests(settings, requests, stop=stop, on_event=on_event)
    except asyncio.CancelledError:  # a second Ctrl-C, or the grace period ran out
        stats.interrupted = True
        return stats
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    try:
        summary = write_report(args.out, args.x, args.y, png=args.png)
    except ManifestError as error:  # a folder with no run in it is a usage mistake here
        if (args.out / MANIFEST).is_file():
            raise
        raise UsageError(str(error)) from None
    layout = " × ".join(a for a in (summary.rows, summary.columns) if a) or "a gallery"
    if summary.pages:
        layout += f", {summary.tables} tables by {' × '.join(summary.pages)}"
    if summary.captions:
        layout += f", {' · '.join(summary.captions)} under each image"
    missing = (
        f", {summary.missing} image{'' if summary.missing == 1 else 's'} missing"
        if summary.missing
        else ""
    )
    print(
        f"{summary.path}: {summary.ok} ok, {summary.failed} failed, {summary.pending} pending"
        f"{missing} (laid out by {layout})"
    )
    if summary.missing:
        _err("runner: images are missing: `runner run` on the spec fetches them again")
    for png in summary.pngs:
        print(png)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    if not (args.out / MANIFEST).is_file():  # no run in that folder: a usage mistake
        raise UsageError(f"no {MANIFEST} in {args.out}: run `runner run SPEC` first")
    done = export(args.out, args.format, args.to, status=args.status, shard_size=args.shard_size)
    where = done.files[0] if len(done.files) == 1 else f"{len(done.files)} files in {done.dest}"
    print(
        f"{where}: {done.rows} rows ({done.images} output images, {done.inputs} input images, "
        f"{done.input_urls} remote input URLs) as {done.format}"
    )
    if done.missing_inputs:
        _err(
            f"runner: {done.missing_inputs} rows have a local input whose file was not found "
            "(moved or edited since the run): their input column is empty"
        )
    if done.missing_outputs:
        _err(
            f"runner: {done.missing_outputs} ok rows have no intact image file in {args.out} "
            "(missing, or changed since the run): their image column is empty"
        )
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import merge

    done = merge(args.sources, args.out)
    print(
        f"{done.out}: {done.ok} ok, {done.failed} failed, {done.pending} pending from "
        f"{len(done.sources)} folders ({done.images} images)"
    )
    if done.conflicts:
        shown = ", ".join(done.conflicts[:5]) + (" …" if len(done.conflicts) > 5 else "")
        _err(
            f"runner: {len(done.conflicts)} keys were ok in more than one folder; "
            f"kept the first folder's result: {shown}"
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
    from .endpoints import schemas_dir

    print(schemas_dir() / "job.schema.json")
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
