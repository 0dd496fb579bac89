"""One run's configuration (RunSettings), the single value the command line, a script and the
executor share; the spec's `execution` block with command-line overrides applied."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .models import Execution
from .snapshot import InputSnapshot


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
    count: int | None = None  # the validated request count: the run never takes more rows
    inputs: InputSnapshot | None = None  # the source files as validated, re-checked
    # fal only: the output folder's spending cap in US dollars, across its runs: no
    # submission that would take what the folder has committed past it (spending.Budget)
    max_usd: float | None = None


def with_overrides(
    execution: Execution, concurrency: int | None = None, mode: str | None = None
) -> Execution:
    if concurrency is not None:
        execution = replace(execution, concurrency=concurrency)
    if mode is not None:
        execution = replace(execution, mode=mode)  # type: ignore[arg-type]
    return execution
