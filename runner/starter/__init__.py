"""`runner init`: a starter spec (`runner.yaml`, commented, for the offline emulator) and the
sample picture it reads (`images/sample.png`), both shipped in this package, written into a
folder. Never overwrites: if any of its files exists, nothing is written."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..endpoints import job_schema
from ..errors import UsageError

SPEC = "runner.yaml"
IMAGE = "images/sample.png"
OUTPUT = "runs/starter"  # the spec's `output`
_HINT = "HINT: runner init DIR writes into another folder"


@dataclass(frozen=True)
class Started:
    """What `write_starter` wrote, as paths under the folder it was given (as given)."""

    spec: Path
    image: Path
    output: Path  # where `runner run` on the spec puts its results


def starter_spec() -> str:
    """The starter spec's text: an editor modeline naming the installed job schema (so the
    spec is checked as it is typed, wherever it is), then the shipped spec."""
    body = resources.files(__name__).joinpath("spec.yaml").read_text(encoding="utf-8")
    return f"# yaml-language-server: $schema={job_schema()}\n{body}"


def sample_image() -> bytes:
    return resources.files(__name__).joinpath("sample.png").read_bytes()


def write_starter(folder: Path) -> Started:
    """Write the starter spec and its sample image into `folder` (made if missing). UsageError,
    with nothing written, if either file (or anything at its name) is already there, or if
    they cannot be written."""
    started = Started(folder / SPEC, folder / IMAGE, folder / OUTPUT)
    # the image first: the spec, the file a user acts on, appears only once what it reads is there
    files = ((started.image, sample_image()), (started.spec, starter_spec().encode()))
    _check_free(folder, [started.spec, started.image])
    made: list[Path] = []  # what this call created, removed again if it cannot finish
    path = folder
    try:
        for path, data in files:
            _make_folders(path.parent, made)
            _create(path, data, made)
    except BaseException as error:
        _remove(made)
        if isinstance(error, FileExistsError):  # made by someone else since the check
            raise UsageError(f"{error.filename} exists; nothing was written. {_HINT}") from None
        if isinstance(error, OSError):
            where = error.filename or path
            raise UsageError(
                f"cannot write {where}: {error.strerror}; nothing was written. {_HINT}"
            ) from None
        raise
    return started


def _check_free(folder: Path, paths: list[Path]) -> None:
    for path in [folder, *(p.parent for p in paths)]:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path} is not a folder; nothing was written. {_HINT}")
    taken = [str(p) for p in paths if os.path.lexists(p)]  # a dangling link counts: never replaced
    if taken:
        verb = "exists" if len(taken) == 1 else "exist"
        raise UsageError(f"{' and '.join(taken)} {verb}; nothing was written. {_HINT}")


def _make_folders(folder: Path, made: list[Path]) -> None:
    """mkdir -p, noting each folder it creates (outermost first) in `made`."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise
            continue
        made.append(path)


def _create(path: Path, data: bytes, made: list[Path]) -> None:
    # O_EXCL: a file that appeared since the check (another `runner init` at once) is never
    # replaced, nor is a link at that name followed
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    made.append(path)  # from here on it is ours: a failed write (disk full) takes it back
    with open(fd, "wb") as out:
        out.write(data)


def _remove(made: list[Path]) -> None:
    """Undo a write that could not finish: the files, then the (now empty) folders it made."""
    for path in reversed(made):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
