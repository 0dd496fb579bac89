"""The one exception tree of the runner; the CLI turns these into messages and exit codes.

    RunnerError
     ├── SpecError            one problem in a job spec, located as file:line:col
     │    └── SpecErrors      several of them, reported together
     ├── GridError            expansion problem at a spec path; spec/check.py locates it
     │    └── GridErrors      several independent ones, found together
     ├── UsageError           bad command line or environment (no key, bad URL); nothing sent
     ├── BackendError         the server or the network failed in a way that stops the run
     │    ├── AuthError       401/403: bad or missing credentials (never retried)
     │    └── ServerUnreachable  no connection to the server could be made at all: resumable
     ├── CallError            one HTTP call failed; retry.py decides, the executor records
     ├── ManifestError        the output folder or its journal cannot be read or written
     │    └── WriteFailed     a run could not write its folder (a full disk, a quota, EIO...)
     └── InputChanged         a file the run was validated with changed: no more submissions

Per-request failures (a 422, a timeout, retries exhausted) are not exceptions: the executor
records them in the manifest and the run goes on. BackendError, InputChanged and WriteFailed do
not leave a run either: they become the run's stop (stops.Stop, in RunStats.stop), as a stop
event or the spending cap does; a run raises only UsageError and SpecError (before anything is
sent) and ManifestError (a folder it cannot read or open).
"""

from __future__ import annotations

from collections.abc import Sequence

SpecPath = tuple[str | int, ...]


class RunnerError(Exception):
    """Base of every error the library raises on purpose."""


class SpecError(RunnerError):
    """A problem in a spec, pointing at the YAML node it comes from."""

    def __init__(self, message: str, file: str, line: int = 1, col: int = 1) -> None:
        super().__init__(f"{file}:{line}:{col}: {message}")
        self.message = message
        self.file = file
        self.line = line
        self.col = col


class SpecErrors(SpecError):
    """Every problem found in one spec (validate reports them all, not just the first)."""

    def __init__(self, errors: Sequence[SpecError], hidden: int = 0) -> None:
        first = errors[0]
        super().__init__(first.message, first.file, first.line, first.col)
        self.errors = list(errors)
        self.hidden = hidden  # more problems found than shown
        lines = [str(e) for e in self.errors]
        if hidden:
            lines.append(
                f"{first.file}: {hidden} more {'error' if hidden == 1 else 'errors'} not shown"
            )
        self.args = ("\n".join(lines),)


class GridError(RunnerError):
    """An expansion problem at `path` in the spec (e.g. ("matrix", "seed", "range"))."""

    def __init__(self, message: str, path: SpecPath = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class GridErrors(GridError):
    """Several independent grid problems, all found in one pass (the first stands for them)."""

    def __init__(self, errors: Sequence[GridError]) -> None:
        super().__init__(errors[0].message, errors[0].path)
        self.errors = list(errors)


class UsageError(RunnerError):
    """The command line or the environment cannot work (missing FAL_KEY, a bad URL...)."""


class BackendError(RunnerError):
    """The backend cannot be used at all (not a single request's failure)."""


class AuthError(BackendError):
    """The server refused the credentials (401/403): the whole run stops, nothing is retried."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class ServerUnreachable(BackendError):
    """No request of this run has reached the server and several submissions in a row could
    not connect (name not resolved, connection refused, TLS, timeout): the run stops, its
    rows as they were, and the same command resumes once the server is back."""


class ManifestError(RunnerError):
    """The output folder or its journal cannot be used."""


class WriteFailed(ManifestError):
    """A write into a run's folder failed (an output image, a journal line, runs.jsonl,
    stats.json): a full disk or quota, an I/O error, a folder made read-only. The run stops
    (resumable): what its journal holds is kept, and nothing more is sent that could not be
    saved."""


class InputChanged(RunnerError):
    """A source file or local input differs from what was validated; the run stops sending."""


class CallError(RunnerError):
    """One HTTP call to the backend failed. The retry policy (retry.py) decides what follows;
    the executor records the outcome. Never carries the API key.

    `sent` says whether the server may have received the request: "no" (refused, or an error
    answer that proves it was not accepted), "maybe" (dropped or timed out after sending), "yes".
    `connect` is why no connection could be made ("connection refused", "name not resolved",
    ...; nothing was sent); `client` marks a request that could not even be built here (an
    invalid URL or header: nothing was sent, and sending it again fails the same way).
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
        sent: str = "yes",
        connect: str | None = None,
        client: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.error_type = error_type
        self.retry_after = retry_after
        self.sent = "no" if connect is not None or client else sent
        self.connect = connect
        self.client = client


def cannot_write(what: object, error: OSError) -> WriteFailed:
    """The WriteFailed for an OSError writing `what` (a path, or words naming it)."""
    return WriteFailed(f"cannot write {what}: {error.strerror or error}")
