"""One run per output folder: an OS lock (flock) on OUT/.runner.lock, held while a run uses the
folder. Gives a context manager; a second taker gets UsageError naming the holder.

The kernel drops the lock when the holding process dies (even by kill -9), so a crash needs no
cleanup; the file itself stays, and its text (pid, host, start time) is only a description of
the last holder, never the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from .errors import UsageError
from .manifest import utc_now

LOCK_FILE = ".runner.lock"


def check_out_dir(out: Path) -> None:
    """An output folder must be a folder (or not exist yet): a file there is a usage error."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} is a file, not a folder: choose another --out")


@contextlib.contextmanager
def locked(out: Path, command: str = "runner run") -> Iterator[None]:
    """Hold the folder's lock for the duration of the block, or raise UsageError at once."""
    check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot use the output folder {out}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{out} is in use by another run ({_holder(fd)}); wait for it to finish, "
                "or give this run another folder with --out"
            ) from None
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
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host', '?')}, started {info.get('started', '?')}"
