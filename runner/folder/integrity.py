"""Whether what a run's journal recorded is still what is on disk, for `report` and `export`
alike: a request's input image (a local file checked by the `sha256:` in `input`, inline data
kept in OUT/inputs/<sha256>.<ext>, a remote URL, which is never fetched) and its output files
(checked by their recorded size and sha256). Each is intact, missing, changed or remote.

Hashes come from keys.file_sha256, cached by path, size and mtime: an image that a thousand
rows sent is read once. (outputcheck.py is the resume's presence-and-size check, not this.)"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ..datauri import is_data_uri, parse
from ..endpoints import get_endpoint
from ..keys import file_sha256, is_url
from .journal import Record, read_runs
from .names import INPUTS

State = Literal["intact", "missing", "changed", "remote"]
INTACT: State = "intact"
MISSING: State = "missing"
CHANGED: State = "changed"
REMOTE: State = "remote"  # an http(s) URL the server fetched: nothing here to check

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class HeldImage:
    """An image's bytes, held in a file (`path`) or in memory (`data`, an inline data: URI's
    bytes): what a report copies and an export writes, read one way."""

    path: Path | None
    data: bytes | None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


@dataclass(frozen=True)
class InputState(HeldImage):
    """One input image of a request, as the journal recorded it and as it is now."""

    state: State
    digest: str | None  # hex sha256 of the bytes sent (None for a remote URL)
    ext: str  # file extension for a copy: "png", "jpg", ...
    source: str | None  # the local path the run recorded (or found); a remote input's URL
    path: Path | None = None  # intact: a file holding exactly the bytes sent
    data: bytes | None = field(default=None, repr=False)  # intact: an inline data: URI's bytes

    @property
    def intact(self) -> bool:
        return self.state == INTACT


@dataclass(frozen=True)
class OutputState:
    """One output image of an ok request: its file as journaled, and whether it still is."""

    state: State  # intact, missing or changed
    file: str  # the path the journal recorded, relative to the run folder
    path: Path | None = None  # intact: the file

    @property
    def intact(self) -> bool:
        return self.state == INTACT


def output_path(out_dir: Path, rel: object) -> Path | None:
    """The file a journaled output names, if it is a plain relative path inside OUT: a journal
    line is data, and `../`, an absolute path or a scheme must never reach outside."""
    if not isinstance(rel, str) or not rel:
        return None
    if rel.startswith("/") or ":" in rel or "\\" in rel or ".." in PurePosixPath(rel).parts:
        return None
    return out_dir / rel


def check_output(out_dir: Path, output: Mapping[str, Any]) -> OutputState:
    """Intact when the file is there with the recorded size and sha256 (what is recorded: a
    journal line from before digests were recorded is checked by size alone)."""
    rel = str(output.get("file") or "")
    path = output_path(out_dir, rel)
    if path is None:
        return OutputState(MISSING, rel)
    try:
        size = os.stat(path).st_size
    except OSError:
        return OutputState(MISSING, rel)
    if not path.is_file():
        return OutputState(MISSING, rel)
    recorded, digest = output.get("bytes"), output.get("sha256")
    if isinstance(recorded, int) and size != recorded:
        return OutputState(CHANGED, rel)
    if isinstance(digest, str) and _HEX64.fullmatch(digest):
        try:
            if file_sha256(path) != digest:
                return OutputState(CHANGED, rel)
        except OSError:
            return OutputState(MISSING, rel)  # unreadable: as good as gone
    return OutputState(INTACT, rel, path)


def image_fields(record: Record) -> list[str]:
    """The input fields of a record that hold an image (the endpoint's file fields; for an
    endpoint this runner does not know, the fields holding a `sha256:` or `data:` value)."""
    body = record.get("input") or {}
    endpoint = get_endpoint(str(record.get("endpoint", "")))
    if endpoint is not None:
        return [k for k in body if k in endpoint.file_fields]
    return [
        k
        for k, v in body.items()
        if isinstance(v, str) and (v.startswith("sha256:") or is_data_uri(v))
    ]


def _inline_or_hashed(value: str) -> bool:
    """A file field's journaled value: a `sha256:` reference or (older journals) a data: URI."""
    return value.startswith("sha256:") or is_data_uri(value)


@dataclass(frozen=True)
class DecodedImage:
    """The bytes of an image given inline as a data: URI, and the extension of its type."""

    data: bytes = field(repr=False)
    ext: str  # "png", "jpg", ...


def decode_data_uri(uri: str) -> DecodedImage | None:
    """The image a base64 data: URI holds; None for anything else."""
    parsed = parse(uri)
    if parsed is None or not parsed.is_base64:
        return None
    ext = EXTENSIONS.get(parsed.media_type)
    if ext is None:
        return None
    try:
        return DecodedImage(parsed.content(), ext)
    except ValueError:
        return None


class InputChecker:
    """Checks the input images of a run's records: the bytes a `sha256:<hex>` stands for are
    looked for in OUT/inputs/ (inline data the run kept), at the path the journal recorded
    (`input_files`), and, for journals from before that, at the path the row named, relative
    to the recorded specs' folders. Results are cached per recorded value and path."""

    def __init__(self, out_dir: Path) -> None:
        self._out = out_dir
        self._spec_dirs: list[Path] | None = None
        self._kept: dict[str, list[Path]] = {}
        self._done: dict[tuple[str, str | None, str | None], InputState] = {}

    def check(self, record: Record, name: str) -> InputState | None:
        """The state of field `name`'s image; None when the field holds no image reference."""
        value = (record.get("input") or {}).get(name)
        if not isinstance(value, str):
            return None
        if is_url(value):
            return InputState(REMOTE, None, _ext_of(value), value)
        if is_data_uri(value):  # a journal from before inline data was kept by hash
            decoded = decode_data_uri(value)
            if decoded is None:
                return InputState(MISSING, None, "png", None)
            digest = hashlib.sha256(decoded.data).hexdigest()
            return InputState(INTACT, digest, decoded.ext, None, data=decoded.data)
        if not value.startswith("sha256:"):
            return None
        recorded = _path_text((record.get("input_files") or {}).get(name))
        given = _path_text((record.get("vars") or {}).get(name))
        cache_key = (value, recorded, given)
        if cache_key not in self._done:
            self._done[cache_key] = self._check(value[len("sha256:") :], recorded, given)
        return self._done[cache_key]

    def _check(self, digest: str, recorded: str | None, given: str | None) -> InputState:
        candidates = [*self._kept_files(digest)]
        if recorded:
            candidates.append(Path(recorded))
        if given and not is_url(given):
            candidates.extend(self._resolve(given))
        first: Path | None = None  # the first candidate that is there, if none is intact
        for path in candidates:
            if not path.is_file():  # a device or a FIFO in a journal would never end a read
                continue
            try:
                digest_now = file_sha256(path)
            except OSError:
                continue
            if digest_now == digest:
                return InputState(INTACT, digest, _ext_of(path.name), str(recorded or path), path)
            first = first or path
        source = recorded or (str(first) if first else given)
        ext = _ext_of(source or "")
        return InputState(CHANGED if first else MISSING, digest, ext, source)

    def _kept_files(self, digest: str) -> list[Path]:
        if digest not in self._kept:
            if not _HEX64.fullmatch(digest):
                self._kept[digest] = []  # never a glob pattern made of journal text
            else:
                self._kept[digest] = sorted((self._out / INPUTS).glob(f"{digest}.*"))
        return self._kept[digest]

    def _resolve(self, text: str) -> Iterable[Path]:
        path = Path(text)
        if path.is_absolute():
            return [path]
        if self._spec_dirs is None:
            self._spec_dirs = _spec_dirs(self._out)
        return [base / path for base in self._spec_dirs]


def _path_text(value: object) -> str | None:
    if isinstance(value, str) and value and not _inline_or_hashed(value):
        return value
    return None


def _ext_of(name: str) -> str:
    suffix = PurePosixPath(name.split("?")[0]).suffix.lstrip(".").lower()
    if suffix and suffix.isalnum():
        return suffix
    return EXTENSIONS.get(mimetypes.guess_type(name)[0] or "", "png")


def _spec_dirs(out_dir: Path) -> list[Path]:
    """Folders a spec-relative path may be relative to: the recorded specs' folders, and the
    run folder's parent and grandparent (a spec's default `output` is runs/<name>)."""
    found: dict[Path, None] = {}
    for run in reversed(read_runs(out_dir)):
        spec = run.get("spec")
        if isinstance(spec, str) and spec:
            found[Path(os.path.abspath(Path(spec).parent))] = None
    found[out_dir.parent] = None
    found[out_dir.parent.parent] = None
    return list(found)
