"""The command line's grammar: subcommands, options, help texts with examples (argparse), and
`runner serve`'s options turned into the emulator's settings."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

# the emulator's settings alone: the emulator itself (aiohttp.web, Pillow's filters) is imported
# only when `serve` runs
from ..emulatorsettings import EmulatorSettings, Faults
from ..errors import UsageError
from ..execution.limits import MAX_CONCURRENCY
from ..grid.shards import Shard, parse_shard
from ..version import DISTRIBUTION, __version__

EXAMPLES = """examples:
  runner init                             # a starter spec and a sample image, here
  runner validate specs/*.yaml
  runner plan specs/sweep.yaml            # count, axes, first rows, cost; nothing sent
  runner plan specs/sweep.yaml --jsonl    # every request in run order
  runner run specs/quickstart.yaml        # offline, with the embedded emulator
  FAL_KEY=... runner run specs/sweep.yaml --backend fal --concurrency 4
  runner report specs/runs/quickstart     # OUT/report.html, images laid out by axes
  runner export specs/runs/quickstart --format imagefolder --to quickstart-ds
  runner run specs/sweep.yaml --shard 1/3 --out runs/part1   # one third of the rows, by key
  runner merge runs/part1 runs/part2 runs/part3 --out runs/all
  runner serve --port 8080                # the fal-compatible emulator on its own
  runner fields                           # what each endpoint field accepts, and the price
  runner schema                           # the job schema's path, for your editor
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner",
        description="Declarative batch runner for fal image-to-image endpoints.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "init",
        help="write a starter spec (runner.yaml) and a sample image; never overwrites",
        epilog="examples:\n  runner init\n  runner init my-job    # made if missing",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dir",
        nargs="?",
        type=_folder,
        default=Path("."),
        metavar="DIR",
        help="the folder to write into, made if missing (default: the current one)",
    )

    p = sub.add_parser(
        "validate",
        help="check specs; errors as file:line:col: message",
        epilog="example: runner validate specs/*.yaml",
    )
    p.add_argument("specs", nargs="+", metavar="SPEC")

    p = sub.add_parser(
        "plan",
        help="show what a spec would send, without sending it",
        epilog="examples:\n  runner plan specs/sweep.yaml\n"
        "  runner plan specs/sweep.yaml --json | jq .count",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", metavar="SPEC")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object (with `count`)")
    fmt.add_argument("--jsonl", action="store_true", help="every request, one JSON line each")
    p.add_argument("--rows", type=_positive_int, default=5, help="rows to preview (default 5)")

    p = sub.add_parser(
        "run",
        help="run or resume a spec",
        epilog="examples:\n  runner run specs/quickstart.yaml\n"
        "  runner run specs/sweep.yaml --backend fal --retry-failed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument(
        "--out",
        type=_folder,
        help="output folder (default: the spec's `output`); one run at a time",
    )
    p.add_argument("--backend", choices=["local", "fal"], help="override the spec's backend")
    p.add_argument(
        "--concurrency",
        type=_concurrency,
        help=f"requests in flight at once (1 to {MAX_CONCURRENCY}; never more than the rows)",
    )
    p.add_argument("--mode", choices=["queue", "sync"], help="fal queue (default) or sync host")
    p.add_argument("--retry-failed", action="store_true", help="run failed rows again")
    p.add_argument(
        "--no-resubmit-ambiguous",
        action="store_true",
        help="fail a row instead of resubmitting after an ambiguous submit error",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="run only part I of N (chosen by key; the N parts together are the whole job)",
    )
    p.add_argument(
        "--max-usd",
        type=_usd,
        metavar="USD",
        help="the spending cap of the output folder on fal, across its runs: refuse a run, or "
        "stop sending, once what the folder has paid for and what is still to send would "
        "pass it (overrides limits.max_usd)",
    )
    p.add_argument(
        "--allow-remote-fetch",
        action="store_true",
        help="backend local: let the emulator download http(s) image URLs (network access; "
        "off by default, so an offline run never touches the network)",
    )

    p = sub.add_parser(
        "report",
        help="write OUT/report.html: the images laid out by the swept axes",
        epilog="examples:\n  runner report specs/runs/sweep\n"
        "  runner report specs/runs/sweep --x strength --y guidance_scale --png\n"
        "  runner report /archive/sweep --to sweep-report    # a read-only run folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, metavar="OUT", help="a run's output folder")
    p.add_argument("--x", metavar="AXIS", help="the axis across (default: the spec's report.x)")
    p.add_argument("--y", metavar="AXIS", help="the axis down (default: the spec's report.y)")
    p.add_argument(
        "--png",
        action="store_true",
        help="also write each table as a labelled PNG grid (OUT/report.png or report-NNN.png)",
    )
    p.add_argument(
        "--to",
        type=_folder,
        metavar="DIR",
        help="write the report (HTML, PNGs, input copies) into DIR instead of OUT, e.g. for a "
        "read-only run folder; its links reach the images in OUT by relative path",
    )

    p = sub.add_parser(
        "export",
        help="write a run as a dataset: imagefolder, parquet, webdataset, csv or jsonl",
        epilog="examples:\n  runner export specs/runs/sweep --format imagefolder --to sweep-ds\n"
        "  runner export specs/runs/sweep --format csv --to sweep.csv --status all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, metavar="OUT", help="a run's output folder")
    p.add_argument(
        "--format",
        required=True,
        choices=["imagefolder", "parquet", "webdataset", "csv", "jsonl"],
        help=f"dataset layout (parquet needs: pip install '{DISTRIBUTION}[export]')",
    )
    p.add_argument(
        "--to",
        required=True,
        type=Path,
        metavar="DEST",
        help="a new (or empty) folder; for csv and jsonl, the file to write",
    )
    p.add_argument(
        "--status",
        choices=["ok", "failed", "all"],
        default="ok",
        help="which requests: ok (default), failed, or all (pending ones too)",
    )
    p.add_argument(
        "--shard-size",
        type=_positive_int,
        default=1000,
        metavar="ROWS",
        help="rows per parquet file or tar shard (default 1000)",
    )

    p = sub.add_parser(
        "merge",
        help="one run folder from several (e.g. the shards of one job)",
        epilog="example: runner merge runs/part1 runs/part2 runs/part3 --out runs/all",
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="OUT", help="run folders to merge")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="a new (or empty) folder")

    p = sub.add_parser(
        "fields",
        help="an endpoint's input fields (type, range, default, meaning) and its price",
        epilog="example: runner fields fal-ai/flux-1/dev/image-to-image",
    )
    p.add_argument(
        "endpoint",
        nargs="?",
        default="fal-ai/flux-1/dev/image-to-image",
        metavar="ENDPOINT",
        help="endpoint id (default: fal-ai/flux-1/dev/image-to-image)",
    )

    sub.add_parser(
        "schema",
        help="print the path of the installed job schema (for editor settings)",
        epilog="example: runner schema",
    )

    p = sub.add_parser(
        "serve",
        help="run the fal-compatible emulator as a server",
        epilog="example: runner serve --port 8080 --latency 1 --p-429 0.1",
    )
    _add_serve_arguments(p)
    return parser


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    # argparse prefixes "argument --name: "; the message says what is wanted, not the type's name
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _concurrency(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CONCURRENCY}, got {text}")
    return value


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder (an empty name would mean here)")
    return Path(text)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return value


def _usd(text: str) -> float:
    value = _number(text, "a number of US dollars more than 0, e.g. 5 or 0.5")
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(
            f"must be a number of US dollars more than 0, e.g. 5 or 0.5, got {text!r}"
        )
    return value


def _number(text: str, wanted: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def _probability(text: str) -> float:
    value = _number(text, "a probability within [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability within [0, 1], got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text, "a number of seconds, 0 or more")
    if value < 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text!r}")
    return value


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """`runner serve`'s options (the emulator's settings and fault injection)."""
    d = EmulatorSettings()
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    add("--port", type=_port, default=0, help="queue app port (default 0: any free port)")
    add("--run-port", type=_port, default=0, help="run (sync) app port (default 0: any free port)")
    add("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    add("--tls-key", metavar="PEM", help="private key for --tls-cert")
    add(
        "--key",
        action="append",
        dest="keys",
        metavar="K",
        help="accepted API key (repeatable; default: accept any key)",
    )
    add(
        "--latency",
        type=_non_negative,
        default=d.latency,
        help=f"processing seconds at 40 steps (default {d.latency})",
    )
    add(
        "--queue-wait",
        type=_non_negative,
        default=d.queue_wait,
        help="seconds each request stays IN_QUEUE",
    )
    add(
        "--concurrency",
        type=int,
        default=d.concurrency,
        help=f"max requests IN_PROGRESS at once (default {d.concurrency})",
    )
    # what each probability is drawn per: the emulator rolls most on every queue call, one
    # on each submission it accepts (queue_routes), one on each request it runs (scheduler)
    per_call = "probability per queue call to"
    for flag, what in (
        ("429", f"{per_call} answer 429 with Retry-After"),
        ("500", f"{per_call} answer 500"),
        ("503", f"{per_call} answer an nginx 503 (ingress error)"),
        ("drop", f"{per_call} close the connection before accepting"),
        (
            "drop-after-accept",
            "probability per queue submission accepted to close the connection instead of "
            "answering (an ambiguous submit)",
        ),
        ("stall", f"{per_call} stall --stall seconds before answering"),
        (
            "infra-error",
            "probability per request run (queued or sync) to complete it with runner_disconnected",
        ),
    ):
        add(f"--p-{flag}", type=_probability, default=0.0, metavar="P", help=what)
    add("--stall", type=_non_negative, default=d.stall, help="seconds a stall lasts")
    add(
        "--retry-after",
        type=_non_negative,
        default=d.retry_after,
        help="Retry-After seconds sent with 429",
    )
    add("--seed", type=int, default=d.seed, help="seed of the fault RNG")
    add(
        "--allow-remote-fetch",
        action="store_true",
        help="fetch image URLs (and call webhooks) outside this emulator",
    )


def serve_settings(args: argparse.Namespace) -> EmulatorSettings:
    """`runner serve`'s options as EmulatorSettings; UsageError for inconsistent options (e.g.
    --tls-cert without --tls-key)."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    faults = Faults(
        p_429=args.p_429,
        p_500=args.p_500,
        p_503_ingress=args.p_503,
        p_drop=args.p_drop,
        p_drop_after_accept=args.p_drop_after_accept,
        p_stall=args.p_stall,
        p_infra_error=args.p_infra_error,
    )
    return EmulatorSettings(
        latency=args.latency,
        queue_wait=args.queue_wait,
        concurrency=args.concurrency,
        keys=frozenset(args.keys) if args.keys else None,
        faults=faults,
        retry_after=args.retry_after,
        stall=args.stall,
        seed=args.seed,
        allow_remote_fetch=args.allow_remote_fetch,
    )
