"""Counters the emulator keeps for tests: calls per route, accepted submissions (and duplicate
bodies), fal's platform headers they carried, faults injected per route, peak concurrency."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..keys import canonical_json


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)  # every request received, by route
    submissions: int = 0  # accepted (enqueued) submits
    submissions_by_body: Counter[str] = field(default_factory=Counter)  # canonical body -> count
    # (lower-case name, value) of each `x-fal-*` header on the submissions and sync runs
    # taken, e.g. ("x-fal-disable-fallbacks", "true") -> count
    platform_headers: Counter[tuple[str, str]] = field(default_factory=Counter)
    status_calls: int = 0
    stream_calls: int = 0
    result_calls: int = 0
    cancels: int = 0
    run_calls: int = 0  # sync runs that reached the model
    uploads: int = 0
    completed: int = 0  # requests that reached COMPLETED (with or without error)
    failed: int = 0  # ... of which with an error
    webhooks_sent: int = 0
    webhooks_failed: int = 0
    in_progress: int = 0
    max_in_progress: int = 0
    faults: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, kind) -> count
    render_threads: set[str] = field(default_factory=set)  # names of threads that rendered

    @property
    def duplicate_submissions(self) -> int:
        """Accepted submits whose body had been accepted before."""
        return sum(n - 1 for n in self.submissions_by_body.values() if n > 1)

    def faults_of(self, kind: str) -> int:
        """Faults of one kind ("429", "500", "503_ingress", "drop", "drop_after_accept",
        "stall", "infra_error") over all routes."""
        return sum(n for (_, k), n in self.faults.items() if k == kind)

    def count_submission(self, body: Any) -> None:
        self.submissions += 1
        # NaN is not JSON (and never equals itself): such a body is no one's duplicate
        with contextlib.suppress(ValueError):
            self.submissions_by_body[canonical_json(body)] += 1
