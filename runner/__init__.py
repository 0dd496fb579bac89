"""runner: a declarative batch runner for fal's image-to-image endpoints.

The public surface (`__all__`; the rest of the package is internal, and the command line
imports these names from here like any script):

    check(path) -> Checked            load a spec and check it all: schema, grid, endpoint inputs
    run(checked, RunOptions(...))     what `runner run` does (async) -> RunResult: the shard,
                                      the fal key, the folder's lock, the spending cap, resume,
                                      runs.jsonl and stats.json; RunResult.stop if it stopped early
    expand(spec, endpoint)            the spec's Requests, lazily, in run order
    make_plan(requests, axes, ep)     count, first rows and cost, without sending anything
    run_requests(settings, requests)  run or resume a script's own Requests (async) -> RunStats
    read_records(out), latest(out)    the manifest's lines, or the last line of each key
    RunnerError and its subclasses    the one exception tree (see runner/errors.py)
"""

from .errors import (
    AuthError,
    BackendError,
    CallError,
    GridError,
    GridErrors,
    InputChanged,
    ManifestError,
    RunnerError,
    ServerUnreachable,
    SpecError,
    SpecErrors,
    UsageError,
    WriteFailed,
)
from .execution.run import RunResult, run, run_requests
from .execution.settings import RunOptions, RunSettings
from .execution.stops import Stop, StopKind
from .execution.tracking import RunStats
from .folder.journal import Record, latest, read_records
from .grid.expand import axes, expand
from .grid.plan import Plan, make_plan
from .grid.shards import Shard
from .keys import request_key
from .models import Execution, Request, Spec
from .spec.check import Checked, check
from .version import __version__

__all__ = [
    "AuthError",
    "BackendError",
    "CallError",
    "Checked",
    "Execution",
    "GridError",
    "GridErrors",
    "InputChanged",
    "ManifestError",
    "Plan",
    "Record",
    "Request",
    "RunOptions",
    "RunResult",
    "RunSettings",
    "RunStats",
    "RunnerError",
    "ServerUnreachable",
    "Shard",
    "Spec",
    "SpecError",
    "SpecErrors",
    "Stop",
    "StopKind",
    "UsageError",
    "WriteFailed",
    "__version__",
    "axes",
    "check",
    "expand",
    "latest",
    "make_plan",
    "read_records",
    "request_key",
    "run",
    "run_requests",
]
