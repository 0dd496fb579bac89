"""What was validated is what is sent: fingerprints (size, mtime, sha256) of the files a spec's
sources read ({lines}, {csv}, {jsonl}) and the list of each {files} glob's matches, taken at
validation. `changed()` names the first file that differs now, or gives None.

Local images are not fingerprinted here: their sha256 is in every request (`sha256:<hex>`), and
execution/attachments.py checks the bytes it sends against it.
"""

from __future__ import annotations

import glob
import itertools
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..keys import file_sha256
from ..models import Spec
from ..words import shown_path

_TEXT_SOURCES = ("lines", "csv", "jsonl")


@dataclass(frozen=True)
class _Print:
    size: int
    mtime_ns: int
    sha256: str | None  # None: the file could not be read at validation (validate says so)


class InputSnapshot:
    """The spec's source files as validated; cheap to re-check (a stat per file)."""

    def __init__(
        self,
        files: Mapping[Path, _Print],
        globs: Mapping[tuple[Path, str], tuple[str, ...]],
        taken_ns: int = 0,
    ) -> None:
        self._files = dict(files)
        self._globs = dict(globs)
        self._taken_ns = taken_ns  # wall clock when taken, before the grid read anything

    @classmethod
    def take(cls, spec: Spec) -> InputSnapshot:
        taken_ns = time.time_ns()
        files: dict[Path, _Print] = {}
        globs: dict[tuple[Path, str], tuple[str, ...]] = {}
        for raw in spec.matrix.values():
            if not isinstance(raw, Mapping):
                continue
            for kind in _TEXT_SOURCES:
                name = raw.get(kind)
                if isinstance(name, str) and name:
                    path = spec.base_dir / name
                    files[path] = _fingerprint(path)
            pattern = raw.get("files")
            if isinstance(pattern, str) and pattern:
                globs[(spec.base_dir, pattern)] = _matches(spec.base_dir, pattern)
        return cls(files, globs, taken_ns)

    def __bool__(self) -> bool:
        return bool(self._files or self._globs)

    def changed(self, *, globs: bool = False) -> str | None:
        """A one-line description of the first change, or None. A stat per source file;
        `globs` also lists each glob again (costlier: once per run is enough)."""
        for path, before in self._files.items():
            now = _stat(path)
            if now is None:
                return f"{shown_path(path)} was removed or became unreadable during the run"
            if (now.st_size, now.st_mtime_ns) == (before.size, before.mtime_ns):
                continue
            again = _fingerprint(path)
            if again.sha256 != before.sha256 or again.size != before.size:
                return f"{shown_path(path)} changed during the run"
            self._files[path] = again  # touched, same bytes: remember the new stat
        if globs:
            for (base, pattern), before_matches in self._globs.items():
                now_matches = _matches(base, pattern)
                if now_matches != before_matches:
                    diff = sorted(set(now_matches) ^ set(before_matches))
                    which = f" ({diff[0]})" if diff else ""
                    return f"the files matching {pattern!r} changed during the run{which}"
        return None

    def edited(self, also: Iterable[Path] = ()) -> str | None:
        """The first file written after validation began, in words, or None: of `also` (the
        local files a row read, such as a fixed image in `defaults`), then of what the {files}
        globs match. Where to look once the grid no longer makes what was validated (an
        image's new bytes make a new request). A stat per file: only for that case."""
        matched = (base / name for (base, _), names in self._globs.items() for name in names)
        for path in itertools.chain(also, matched):
            now = _stat(path)
            if now is not None and now.st_mtime_ns > self._taken_ns:
                return f"{shown_path(path)} changed during the run"
        return None


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _fingerprint(path: Path) -> _Print:
    stat = _stat(path)
    if stat is None:
        return _Print(-1, -1, None)
    try:
        digest = file_sha256(path)
    except OSError:
        return _Print(-1, -1, None)
    return _Print(stat.st_size, stat.st_mtime_ns, digest)


def _matches(base: Path, pattern: str) -> tuple[str, ...]:
    # The same listing as the {files} source makes (sources.FilesSource).
    found = glob.glob(pattern, root_dir=base, recursive=True)
    return tuple(sorted(p for p in found if os.path.isfile(os.path.join(base, p))))
