"""runner: a declarative batch runner for fal's image-to-image endpoints.

The public surface (`__all__`; the rest of the package is internal, and cli.py imports these
names from here like any script):

    check(path) -> Checked            load a spec and check it all: schema, grid, endpoint inputs
    expand(spec, endpoint)            the spec's Requests, lazily, in run order
    make_plan(requests, axes, ep)     count, first rows and cost, without sending anything
    run_requests(settings, requests)  run or resume them into settings.out (async) -> RunStats
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
    Interrupted,
    ManifestError,
    RunnerError,
    ServerUnreachable,
    SpecError,
    SpecErrors,
    UsageError,
)
from .grid import axes, expand
from .keys import request_key
from .manifest import Record, latest, read_records
from .models import Execution, Request, Spec
from .plan import Plan, make_plan
from .run import run_requests
from .settings import RunSettings
from .tracking import RunStats
from .validate import Checked, check
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
    "Interrupted",
    "ManifestError",
    "Plan",
    "Record",
    "Request",
    "RunSettings",
    "RunStats",
    "RunnerError",
    "ServerUnreachable",
    "Spec",
    "SpecError",
    "SpecErrors",
    "UsageError",
    "__version__",
    "axes",
    "check",
    "expand",
    "latest",
    "make_plan",
    "read_records",
    "request_key",
    "run_requests",
]
