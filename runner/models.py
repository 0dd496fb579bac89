"""Small frozen value types handed from one pipeline stage to the next.

spec/load.py builds a Spec; grid/expand.py turns it into Requests (a run's RunRows); the
executor turns each RunRow it sends into journal lines (folder/journal.py: their format).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from .endpoints import job_default
from .errors import SpecPath

Backend = Literal["local", "fal"]
Mode = Literal["queue", "sync"]


@dataclass(frozen=True)
class Location:
    """Where a YAML node starts (1-based, as editors count)."""

    line: int
    col: int


@dataclass(frozen=True)
class Execution:
    """How requests are run: the spec's `execution` block, with command-line overrides applied."""

    # The defaults are the job schema's (schemas/job.schema.json), written there only.
    concurrency: int = job_default("execution", "concurrency")
    rate: float | None = None  # submissions per second; None = unlimited
    retries: int = job_default("execution", "retries")
    timeout: float = float(job_default("execution", "timeout"))  # seconds from submit to result
    queue_timeout: float | None = None  # seconds a request may wait IN_QUEUE; None = timeout
    mode: Mode = job_default("execution", "mode")
    priority: Literal["normal", "low"] | None = None  # X-Fal-Queue-Priority
    # False sends X-Fal-Store-IO: 0 (fal keeps no payloads)
    store_io: bool = job_default("execution", "store_io")
    # False sends x-fal-disable-fallbacks: true (fal may not reroute to another model)
    allow_fallbacks: bool = job_default("execution", "allow_fallbacks")


@dataclass(frozen=True)
class Sample:
    n: int
    seed: int = job_default("sample", "seed")


@dataclass(frozen=True)
class Spec:
    """A loaded, schema-valid job spec. Raw values keep their YAML order."""

    path: Path  # the spec file
    base_dir: Path  # relative paths in the spec resolve here
    sha256: str  # of the spec file's bytes
    version: int
    name: str | None
    endpoint: str
    backend: Backend
    output: Path  # absolute
    defaults: Mapping[str, Any]
    matrix: Mapping[str, Any]  # axis name -> raw axis value (list or source mapping)
    exclude: tuple[Mapping[str, Any], ...] = ()
    include: tuple[Mapping[str, Any], ...] = ()
    sample: Sample | None = None
    max_requests: int = job_default("limits", "max_requests")
    max_usd: float | None = None  # a fal run estimated above this is refused
    execution: Execution = field(default_factory=Execution)
    report: Mapping[str, str] = field(default_factory=dict)  # `report: {x, y}`: the report's axes
    # Maps a path inside the YAML document to the node's location (nearest known ancestor).
    locate: Callable[[SpecPath], Location] = field(default=lambda path: Location(1, 1), repr=False)


@dataclass(frozen=True)
class Request:
    """One request to send: identity, body, the row it came from.

    `input` is the body as journaled: a local file stands as "sha256:<hex>" and `files` maps that
    field to the file's absolute path, inlined (data: URI or upload) only when it is sent. Inline
    data stands as "sha256:<hex>" of its content too; `inline` maps the field to the data: URI
    that is sent.
    """

    key: str
    input: Mapping[str, Any]
    vars: Mapping[str, Any]
    files: Mapping[str, Path] = field(default_factory=dict)
    # field or variable name -> the YAML path its value came from (for error locations)
    origins: Mapping[str, SpecPath] = field(default_factory=dict, repr=False)
    inline: Mapping[str, str] = field(default_factory=dict, repr=False)


class RunRow(Protocol):
    """A row of a run as the executor takes it: its key at once, its Request only when asked
    (a resume builds none for the rows its journal has settled)."""

    @property
    def key(self) -> str: ...

    def request(self) -> Request: ...


@dataclass(frozen=True, slots=True)
class GivenRow:
    """A Request already built, as a RunRow (a script's own list of requests)."""

    given: Request

    @property
    def key(self) -> str:
        return self.given.key

    def request(self) -> Request:
        return self.given
