"""One run per output folder: an OS lock (flock) on OUT/.runner.lock, held while a run or a merge
writes the folder (`locked`), and shared by the merges that read it (`reading`), so no run
starts on a folder a merge is reading and no merge reads a folder a run is writing. A taker
that cannot have it gets UsageError naming the holder.

The kernel drops the lock when the holding process dies (even by kill -9), so a crash needs no
cleanup; the file itself stays, and its text (pid, host, start time, command) is only a
description of the last holder, never the lock. The lock belongs to the file, not its name:
`hand_over` moves the file into a folder about to replace OUT, and the lock stays held.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import ManifestError, UsageError
from .journal import utc_now
from .names import LOCK_FILE

RUN = "runner run"
MERGE = "runner merge"


def check_out_dir(out: Path) -> None:
    """An output folder must be a folder (or not exist yet): a file there is a usage error."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} is a file, not a folder: choose another --out")


@contextlib.contextmanager
def locked(
    out: Path,
    command: str = RUN,
    hint: str = "wait for it to finish, or give this run another folder with --out",
) -> Iterator[None]:
    """Hold the folder's lock alone for the duration of the block (making the folder if it is
    missing), or raise UsageError at once: "OUT is in use by HOLDER; HINT"."""
    check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot use the output folder {out}: {exc.strerror or exc}") from None
    with _held(fd, out, command, fcntl.LOCK_EX, hint):
        yield


@contextlib.contextmanager
def reading(folder: Path, command: str, hint: str) -> Iterator[None]:
    """Share the lock of an existing run folder while reading it: other readers may share it,
    a run (which takes it alone) is refused meanwhile, and a folder a run holds is refused
    here. A folder that cannot have a lock file (read-only, never run in) is read unlocked:
    no run can start there either, since a run must create the file."""
    fd = _open_to_read(folder)
    if fd is None:
        yield
        return
    with _held(fd, folder, command, fcntl.LOCK_SH, hint):
        yield


def _open_to_read(folder: Path) -> int | None:
    path = folder / LOCK_FILE
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UsageError(f"cannot lock {folder}: {exc.strerror or exc}") from None
    try:
        return os.open(path, os.O_RDONLY)  # flock needs no write access
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot lock {folder}: {exc.strerror or exc}") from None


def hand_over(out: Path, into: Path) -> None:
    """Move OUT's lock file, held by this process, into `into`, a folder about to be renamed
    onto OUT: the lock stays held (it is on the file), and OUT is left empty for the rename.
    Until the rename OUT has no lock file: a run that makes one then makes OUT non-empty, so
    the rename fails rather than mixing the two."""
    try:
        os.rename(out / LOCK_FILE, into / LOCK_FILE)
    except OSError as exc:
        raise ManifestError(f"cannot move the lock of {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _held(fd: int, folder: Path, command: str, mode: int, hint: str) -> Iterator[None]:
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{folder} is in use by {_holder(fd)}; {hint}") from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": utc_now(),
            "command": command,
        }
        with contextlib.suppress(OSError):  # the description is a courtesy, the lock is not
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another run (holder unknown)"
    command = info.get("command") or RUN
    who = "another run" if command == RUN else f"`{command}`"
    started = info.get("started", "?")
    return f"{who} (pid {info.get('pid')} on {info.get('host', '?')}, started {started})"
