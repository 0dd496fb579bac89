"""The `runner serve` command line, as argparse helpers the CLI calls: `add_serve_arguments`
declares the options, `settings_from_args` turns them into `EmulatorSettings`."""

from __future__ import annotations

import argparse

from .settings import EmulatorSettings, Faults


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability must be within [0, 1], got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    d = EmulatorSettings()
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    add("--port", type=int, default=0, help="queue app port (default 0: any free port)")
    add("--run-port", type=int, default=0, help="run (sync) app port (default 0: any free port)")
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
    for flag, what in (
        ("429", "answer 429 with Retry-After"),
        ("500", "answer 500"),
        ("503", "answer an nginx 503 (ingress error)"),
        ("drop", "close the connection before accepting"),
        ("drop-after-accept", "enqueue a submit, then close the connection"),
        ("stall", "stall --stall seconds before answering"),
        ("infra-error", "complete a request with runner_disconnected"),
    ):
        add(
            f"--p-{flag}",
            type=_probability,
            default=0.0,
            metavar="P",
            help=f"probability per queue call to {what}",
        )
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


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    """Raises ValueError for inconsistent options (e.g. --tls-cert without --tls-key)."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
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
