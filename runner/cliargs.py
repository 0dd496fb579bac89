"""The command line's grammar: subcommands, options, help texts with examples (argparse)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__
from .limits import MAX_CONCURRENCY

EXAMPLES = """examples:
  runner validate specs/*.yaml
  runner plan specs/sweep.yaml            # count, axes, first rows, cost; nothing sent
  runner plan specs/sweep.yaml --jsonl    # every request in run order
  runner run specs/quickstart.yaml        # offline, with the embedded emulator
  FAL_KEY=... runner run specs/sweep.yaml --backend fal --concurrency 4
  runner report specs/runs/quickstart     # OUT/report.html, images laid out by axes
  runner serve --port 8080                # the fal-compatible emulator on its own
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

    p = sub.add_parser(
        "report",
        help="write OUT/report.html: the images laid out by the swept axes",
        epilog="example: runner report specs/runs/sweep",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="a run's output folder")

    from .emulator import add_serve_arguments

    p = sub.add_parser(
        "serve",
        help="run the fal-compatible emulator as a server",
        epilog="example: runner serve --port 8080 --latency 1 --p-429 0.1",
    )
    add_serve_arguments(p)
    return parser


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
