"""Why a run stopped before its last row: one Stop, its kind and its reason in words. The first
stop of a run wins; after it no submission goes out, the requests in flight finish, and the
run returns normally with the stop in its stats (RunStats.stop), its runs.jsonl end line and
stats.json. The run's errors that mean "stop" (a refused key, an unreachable server, a local
input that changed, a write into the run folder that failed) become a Stop where they are
caught."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..errors import AuthError, BackendError, InputChanged, WriteFailed


class StopKind(Enum):
    INTERRUPTED = "interrupted"  # the stop event was set (the first Ctrl-C or SIGTERM)
    REFUSED_KEY = "refused key"  # the server refused the API key (401/403)
    UNREACHABLE = "unreachable server"  # no submission could connect; none ever reached it
    INPUT_CHANGED = "input changed"  # a file the run was validated with changed
    SPENDING_CAP = "spending cap"  # the next submission would pass the folder's cap
    CANNOT_WRITE = "cannot write"  # the run folder took no more (a full disk, a quota, EIO)


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    reason: str  # why, in words (a file's name, the cap's figures, the host and the cause)


class Stopped(Exception):
    """Internal to the executor: the run has stopped (RunStats.stop says why), so this
    request's next submission does not go out; the request stays as its journal says."""


def stop_for(error: BackendError | InputChanged | WriteFailed) -> Stop:
    """The Stop that a run-stopping error stands for."""
    if isinstance(error, WriteFailed):
        return Stop(StopKind.CANNOT_WRITE, str(error))
    if isinstance(error, InputChanged):
        return Stop(StopKind.INPUT_CHANGED, str(error))
    if isinstance(error, AuthError):
        return Stop(StopKind.REFUSED_KEY, str(error))
    return Stop(StopKind.UNREACHABLE, str(error))
