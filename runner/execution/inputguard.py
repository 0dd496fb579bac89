"""What was validated is what is sent: the policy the executor asks before each submission
whether the spec's inputs are still as validated (a stat per source file; the {files} globs
listed again once per run), and that names what changed when a replayed row no longer makes
the request validation saw. Gives a Stop (kind: input changed) or None; never prints."""

from __future__ import annotations

from ..errors import GridError
from ..grid.snapshot import InputSnapshot
from ..models import Request
from .stops import Stop, StopKind


class InputGuard:
    def __init__(self, snapshot: InputSnapshot | None) -> None:
        """`snapshot`: the source files as validated (None: nothing to watch, a plain list
        of requests)."""
        self._snapshot = snapshot
        self._listed = False  # the {files} globs are listed again once, at the first ask

    def before_submission(self) -> Stop | None:
        """Before each submission: a stat per source file, and the globs once per run."""
        if self._snapshot is None:
            return None
        changed = self._snapshot.changed(globs=not self._listed)
        self._listed = True
        return None if changed is None else Stop(StopKind.INPUT_CHANGED, changed)

    def row_changed(self, key: str, request: Request) -> Stop | None:
        """None when the row's Request, built again, makes the key validation saw; else what
        changed: a source file, a glob's match, or a local file the row read (a fixed image
        in `defaults` too), named; the key only when nothing can be named."""
        if request.key == key:
            return None
        return self._named(request, f"request {key} is no longer in the grid")

    def grid_changed(self, error: GridError) -> Stop:
        """A row that validation built no longer builds (an edit broke a template...): only a
        changed source file can do that after validation."""
        return self._named(None, str(error))

    def _named(self, request: Request | None, fallback: str) -> Stop:
        snapshot, named = self._snapshot, None
        if snapshot is not None:
            read = request.files.values() if request is not None else ()
            named = snapshot.changed(globs=True) or snapshot.edited(read)
        reason = named or f"the spec's inputs changed during the run: {fallback}"
        return Stop(StopKind.INPUT_CHANGED, reason)
