"""Emulator configuration: `EmulatorSettings` (service timing, auth, limits) and `Faults`
(seeded fault-injection probabilities). Both are frozen; build a new one with `replace`.
Outside the emulator package so that `runner serve`'s argument defaults are read from here
without importing the emulator (aiohttp.web, Pillow's filters) for every command."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

QUEUE_ROUTES = frozenset({"submit", "status", "stream", "result", "cancel"})
ALL_ROUTES = QUEUE_ROUTES | {"run", "file"}  # "file": GET /files/…, where outputs are fetched
FAULT_KINDS = ("drop", "503_ingress", "429", "500", "stall")  # tried in this order per request


@dataclass(frozen=True)
class Faults:
    """Per-request fault probabilities, each in [0, 1], drawn from the settings' seeded RNG."""

    p_429: float = 0.0
    p_500: float = 0.0
    p_503_ingress: float = 0.0
    p_drop: float = 0.0  # close the connection before the request is accepted
    p_drop_after_accept: float = 0.0  # submit only: enqueue, then close the connection
    p_stall: float = 0.0  # sleep `settings.stall` seconds, then answer normally
    p_infra_error: float = 0.0  # the request completes with error_type runner_disconnected
    routes: frozenset[str] = QUEUE_ROUTES

    def __post_init__(self) -> None:
        for name in (
            "p_429",
            "p_500",
            "p_503_ingress",
            "p_drop",
            "p_drop_after_accept",
            "p_stall",
            "p_infra_error",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} must be within [0, 1], got {value!r}")
        routes = frozenset(self.routes)
        if unknown := routes - ALL_ROUTES:
            raise ValueError(
                f"unknown fault routes {sorted(unknown)}; HINT: pick from {sorted(ALL_ROUTES)}"
            )
        object.__setattr__(self, "routes", routes)

    def probability(self, kind: str) -> float:
        """The probability of one of FAULT_KINDS."""
        return float(getattr(self, f"p_{kind}"))


@dataclass(frozen=True)
class EmulatorSettings:
    """How the emulated service behaves. `keys=None` accepts any (or no) key."""

    latency: float = 0.05  # processing seconds at 40 inference steps (scales with steps)
    queue_wait: float = 0.0  # seconds each request stays IN_QUEUE before it may start
    concurrency: int = 16  # at most this many requests IN_PROGRESS at once
    keys: frozenset[str] | None = None
    faults: Faults = field(default_factory=Faults)
    retry_after: float = 1.0  # Retry-After seconds sent with injected 429s
    stall: float = 5.0  # seconds an injected stall lasts
    seed: int = 0  # seeds the fault RNG, so a run's faults are reproducible
    allow_remote_fetch: bool = False  # fetch non-emulator image URLs and call remote webhooks
    result_ttl: float | None = None  # seconds a completed result is kept (None: forever)
    max_side: int = 512  # output images are capped to this long side
    stream_interval: float = 1.0  # a status stream repeats the status at least this often
    render_threads: int = 4

    def __post_init__(self) -> None:
        if self.keys is not None:
            keys: Iterable[str] = self.keys
            object.__setattr__(self, "keys", frozenset(keys))
        if self.concurrency < 1:
            raise ValueError("EmulatorSettings.concurrency must be at least 1")
        for name in ("latency", "queue_wait", "retry_after", "stall", "stream_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"EmulatorSettings.{name} must not be negative")
        if self.max_side < 8:
            raise ValueError("EmulatorSettings.max_side must be at least 8")
