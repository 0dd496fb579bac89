"""The one exception tree of the runner; the CLI turns these into messages and exit codes.

    RunnerError
     ├── SpecError            one problem in a job spec, located as file:line:col
     │    └── SpecErrors      several of them, reported together
     ├── GridError            expansion problem at a spec path; spec.py locates it as a SpecError
     ├── BackendError         the server or the network failed in a way that stops the run
     │    └── AuthError       401/403: bad or missing credentials (never retried)
     ├── ManifestError        the output folder or its journal cannot be read or written
     └── Interrupted          the user stopped the run; it can be resumed

Per-request failures (a 422, a timeout, retries exhausted) are not exceptions: the executor
records them in the manifest and the run goes on.
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

    def __init__(self, errors: Sequence[SpecError]) -> None:
        first = errors[0]
        super().__init__(first.message, first.file, first.line, first.col)
        self.errors = list(errors)
        self.args = ("\n".join(str(e) for e in self.errors),)


class GridError(RunnerError):
    """An expansion problem at `path` in the spec (e.g. ("matrix", "seed", "range"))."""

    def __init__(self, message: str, path: SpecPath = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class BackendError(RunnerError):
    """The backend cannot be used at all (not a single request's failure)."""


class AuthError(BackendError):
    """The server refused the credentials (401/403): the whole run stops, nothing is retried."""


class ManifestError(RunnerError):
    """The output folder or its journal cannot be used."""


class Interrupted(RunnerError):
    """The run was stopped by the user; what was submitted is journaled and resumes next time."""
