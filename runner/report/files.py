"""The run's files as a report shows them: every record's output images and input images
checked against the journal (integrity.py), the intact local inputs copied into the report's
folder (report-inputs/<sha256>.<ext>, so a zipped or served report carries them), and the
links from the report's folder to each. A file that is missing or changed since the run gets
no link: the report never shows a picture as what was sent or returned when it is not."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import ManifestError
from ..folder.integrity import (
    CHANGED,
    INTACT,
    MISSING,
    InputChecker,
    InputState,
    OutputState,
    State,
    check_output,
    image_fields,
)
from ..folder.journal import OK, Record
from ..folder.names import REPORT_INPUTS
from ..keys import file_sha256

_COPY_NAME = re.compile(r"[0-9a-f]{64}\.[0-9a-z]+")


@dataclass(frozen=True)
class RecordFiles:
    """One record's files: its outputs (ok records only, in journal order) and its inputs."""

    outputs: tuple[OutputState, ...]
    inputs: tuple[tuple[str, InputState], ...]  # (field, check) per image field

    def input_problems(self) -> list[InputState]:
        """Its local inputs that are missing or changed since the run."""
        return [c for _, c in self.inputs if c.state in (MISSING, CHANGED)]


@dataclass(frozen=True)
class InputNote:
    """A local input that is not what the run sent, and how many requests sent it."""

    source: str  # the file, as shown (see shown_path)
    state: State  # missing or changed
    requests: int

    @property
    def what(self) -> str:
        return "changed since the run" if self.state == CHANGED else "missing"


class Files:
    """Checks every record's files once; links them from `dest`, the report's folder."""

    def __init__(self, out_dir: Path, dest: Path, records: Sequence[Record]) -> None:
        self.out, self.dest = out_dir, dest
        inputs = InputChecker(out_dir)
        self._checked: dict[str, RecordFiles] = {}
        for record in records:
            outputs = record.get("outputs") or [] if record.get("status") == OK else []
            found = [(name, inputs.check(record, name)) for name in image_fields(record)]
            self._checked[str(record.get("key", ""))] = RecordFiles(
                tuple(check_output(out_dir, o) for o in outputs if isinstance(o, dict)),
                tuple((name, check) for name, check in found if check is not None),
            )
        self._inputs: dict[str, str] = {}  # sha256 -> link from dest, once placed
        try:
            self._prefix: str | None = os.path.relpath(
                os.path.abspath(out_dir), os.path.abspath(dest)
            )
        except ValueError:  # another drive (Windows): no relative path reaches it
            self._prefix = None

    def of(self, record: Record) -> RecordFiles:
        return self._checked.get(str(record.get("key", "")), RecordFiles((), ()))

    def count(self, state: State) -> int:
        """Output images in `state` (missing or changed) across the ok records."""
        return sum(o.state == state for c in self._checked.values() for o in c.outputs)

    def input_notes(self) -> tuple[InputNote, ...]:
        counts: dict[tuple[str, State], int] = {}
        for checked in self._checked.values():
            for problem in {(input_title(c), c.state) for c in checked.input_problems()}:
                counts[problem] = counts.get(problem, 0) + 1
        return tuple(InputNote(s, state, n) for (s, state), n in counts.items())

    def output_link(self, check: OutputState) -> str | None:
        """The href of an intact output, relative to the report's folder."""
        if check.state != INTACT or check.path is None:
            return None
        if self._prefix is None:
            return Path(os.path.abspath(check.path)).as_uri()
        rel = check.file if self._prefix == "." else f"{self._prefix}/{check.file}"
        return quote(rel.replace(os.sep, "/"))

    def input_link(self, check: InputState) -> str | None:
        """The href of an intact input's copy in the report's folder (place_inputs made it)."""
        if check.state != INTACT or check.digest is None:
            return None
        return self._inputs.get(check.digest)

    def place_inputs(self) -> None:
        """Copy each distinct intact input into dest/report-inputs/ (a file already inside the
        report's folder is linked where it is); older copies this report no longer shows go."""
        wanted: dict[str, InputState] = {}
        for checked in self._checked.values():
            for _, check in checked.inputs:
                if (
                    check.state == INTACT
                    and check.digest
                    and _COPY_NAME.fullmatch(f"{check.digest}.{check.ext}")
                ):
                    wanted.setdefault(check.digest, check)
        folder = self.dest / REPORT_INPUTS
        dest = os.path.abspath(self.dest)
        kept: set[str] = set()
        for digest, check in wanted.items():
            if check.path is not None and _inside(check.path, dest):
                rel = os.path.relpath(os.path.abspath(check.path), dest)
                self._inputs[digest] = quote(rel.replace(os.sep, "/"))
                continue
            name = f"{digest}.{check.ext}"
            if _copy(check, folder / name):
                kept.add(name)
                self._inputs[digest] = quote(f"{REPORT_INPUTS}/{name}")
        stale = [p for p in _listing(folder) if _COPY_NAME.fullmatch(p.name) and p.name not in kept]
        for path in stale:
            with contextlib.suppress(OSError):  # a stale copy left behind does no harm
                path.unlink(missing_ok=True)


def input_title(check: InputState) -> str:
    """An input image by its file as people read it, or by its sha256 when no file is known."""
    if check.source:
        return shown_path(check.source)
    return f"sha256:{(check.digest or '')[:12]}…"


def shown_path(source: str) -> str:
    """A recorded file as people read it: relative to the working folder when it is inside
    it (as they would type it), else as recorded."""
    here = os.getcwd()
    try:
        if os.path.commonpath([here, os.path.abspath(source)]) == here:
            return os.path.relpath(source, here)
    except ValueError:  # another drive
        pass
    return source


def _inside(path: Path, folder: str) -> bool:
    try:
        return os.path.commonpath([folder, os.path.abspath(path)]) == folder
    except ValueError:
        return False


def _listing(folder: Path) -> Iterable[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _copy(check: InputState, target: Path) -> bool:
    """Write the input's bytes to `target` unless it already holds them; False when the source
    no longer hashes to what was sent (it changed in the meantime: no copy, no link)."""
    assert check.digest is not None
    try:
        if file_sha256(target) == check.digest:
            return True
    except OSError:
        pass  # not there yet
    try:
        data = check.read()
    except OSError:
        return False  # gone since it was checked
    if hashlib.sha256(data).hexdigest() != check.digest:
        return False
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, target)  # a second report at once never sees half a file
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ManifestError(f"cannot write {target}: {exc.strerror or exc}") from None
    return True
