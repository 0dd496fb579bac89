"""One run's configuration: RunOptions, what `runner run`'s flags say (a script passes the same
to runner.run), and RunSettings, the spec's values with those options over them, the single
value the run and the executor share; the spec's `execution` block with overrides applied."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UsageError
from ..grid.shards import Shard
from ..grid.snapshot import InputSnapshot
from ..models import Execution, Spec
from .limits import MAX_CONCURRENCY


@dataclass(frozen=True)
class RunSettings:
    """One run's configuration: everything it needs besides the requests themselves."""

    endpoint: str
    backend: str  # "local" | "fal"
    out: Path
    execution: Execution
    spec_path: str = ""
    spec_sha256: str = ""
    name: str | None = None  # the spec's label, for reports
    retry_failed: bool = False
    resubmit_ambiguous: bool = True
    shard: str | None = None  # "I/N" of `--shard`, recorded in runs.jsonl
    report: Mapping[str, str] | None = None  # the spec's `report: {x, y}`, for `runner report`
    # backend local only: let the emulator fetch http(s) image URLs (network access)
    allow_remote_fetch: bool = False
    # How many requests validation found: the run never takes more rows.
    validated_requests: int | None = None
    inputs: InputSnapshot | None = None  # the source files as validated, re-checked
    # fal only: the output folder's spending cap in US dollars, across its runs: no
    # submission that would take what the folder has committed past it (spending.Budget)
    max_usd: float | None = None


@dataclass(frozen=True)
class RunOptions:
    """What `runner run`'s flags say; None: the spec's value."""

    out: Path | None = None  # --out: the output folder (the spec's `output`)
    backend: str | None = None  # --backend: "local" | "fal" (the spec's `backend`)
    concurrency: int | None = None  # --concurrency (execution.concurrency)
    mode: str | None = None  # --mode: "queue" | "sync" (execution.mode)
    retry_failed: bool = False  # --retry-failed: send the rows that failed before again
    # False: --no-resubmit-ambiguous (a submission that may have been accepted fails its row)
    resubmit_ambiguous: bool = True
    allow_remote_fetch: bool = False  # --allow-remote-fetch: the emulator fetches http(s)
    shard: Shard | None = None  # --shard I/N: only that part of the requests, chosen by key
    max_usd: float | None = None  # --max-usd: the folder's spending cap (limits.max_usd)

    def __post_init__(self) -> None:
        """A script's RunOptions meets the rules `runner run`'s grammar enforces."""
        wrong = [
            f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}"
            for name, value, allowed in (
                ("backend", self.backend, ("local", "fal")),
                ("mode", self.mode, ("queue", "sync")),
            )
            if value is not None and value not in allowed
        ]
        concurrency = self.concurrency
        if concurrency is not None and not (
            type(concurrency) is int and 1 <= concurrency <= MAX_CONCURRENCY
        ):
            wrong.append(f"concurrency must be 1 to {MAX_CONCURRENCY}, not {concurrency!r}")
        usd = self.max_usd
        if usd is not None and not (type(usd) in (int, float) and 0 < usd < math.inf):
            wrong.append(f"max_usd must be a number of US dollars more than 0, not {usd!r}")
        if self.shard is not None and not isinstance(self.shard, Shard):
            wrong.append(f"shard must be a runner.Shard(I, N), not {self.shard!r}")
        if wrong:
            raise UsageError(f"RunOptions: {'; '.join(wrong)}")

    def backend_for(self, spec: Spec) -> str:
        return self.backend or spec.backend


def with_overrides(
    execution: Execution, concurrency: int | None = None, mode: str | None = None
) -> Execution:
    if concurrency is not None:
        execution = replace(execution, concurrency=concurrency)
    if mode is not None:
        execution = replace(execution, mode=mode)  # type: ignore[arg-type]
    return execution
