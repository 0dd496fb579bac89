"""A destination written whole or not at all, for `merge` and `export`. `staged(dest)` gives a
hidden sibling, `.<name>.partial-<pid>`, to build the folder or file in; when the block ends
normally it is renamed onto `dest` (one rename: a reader, another command or a kill -9 finds
`dest` absent, as empty as it was, or complete), otherwise it is removed.

While its writer lives a partial holds an flock (the kernel drops it when the process dies,
even by kill -9). The next writer of the same destination removes the partials its dead
predecessors left: a name of exactly that form, a plain file or folder (never a link), whose
pid is not running here and whose lock is free. Nothing else is ever removed."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from ..errors import ManifestError, UsageError

_MARK = ".partial-"


def real(path: Path) -> Path:
    """The path with every symlink, `.` and `..` resolved (as far as it exists): where a
    rename must happen, and what two spellings of one folder share."""
    return Path(os.path.realpath(path))


def check_replaceable(dest: Path, shown: Path) -> None:
    """An existing (empty) destination folder is replaced by the finished one, by a rename: it
    must not be the working folder (a shell there would be left in a deleted folder) nor a
    mount point (no rename replaces one)."""
    if not dest.is_dir():
        return
    where = real(dest)
    if where == real(Path.cwd()):
        raise UsageError(
            f"{shown} is the working folder, which the finished folder would replace; "
            "name a new folder"
        )
    if os.path.ismount(where) or os.stat(where).st_dev != os.stat(where.parent).st_dev:
        raise UsageError(f"{shown} is a mount point; name a new folder inside it")


@contextlib.contextmanager
def staged(dest: Path, *, folder: bool, shown: Path | None = None) -> Iterator[Path]:
    """The partial to write (a new empty folder, or an empty file), renamed onto `dest` when
    the block ends normally. A folder replaces `dest` only if `dest` is missing or an empty
    folder by then; a file replaces a file. `shown` is `dest` as the user wrote it."""
    shown = shown or dest
    if folder:
        check_replaceable(dest, shown)
    dest = real(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        above = next((p for p in dest.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise UsageError(f"cannot write {shown}: {above} is a file, not a folder") from None
        raise UsageError(f"cannot write {shown}: {exc.strerror or exc}") from None
    sweep(dest)
    partial = dest.with_name(f".{dest.name}{_MARK}{os.getpid()}")
    try:
        if folder:
            partial.mkdir()
            fd = os.open(partial, os.O_RDONLY)
        else:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write to {shown.parent}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield partial
        _commit(partial, dest, folder, shown)
    except BaseException:
        _remove(partial)
        raise
    finally:
        os.close(fd)


def _commit(partial: Path, dest: Path, folder: bool, shown: Path) -> None:
    try:
        if folder:
            os.rename(partial, dest)  # onto a missing or empty folder only
        else:
            os.replace(partial, dest)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            what = "a file" if not dest.is_dir() else "a non-empty folder" if folder else "a folder"
            raise UsageError(
                f"{shown} became {what} while this command wrote it (another process?); "
                "nothing was written there"
            ) from None
        raise ManifestError(f"cannot write {shown}: {exc.strerror or exc}") from None


def sweep(dest: Path) -> None:
    """Remove the partials of `dest` that dead writers left behind."""
    pattern = re.compile(re.escape(f".{dest.name}{_MARK}") + r"([0-9]+)")
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return
    for name in names:
        found = pattern.fullmatch(name)
        if found and _stale(dest.parent / name, int(found.group(1))):
            _remove(dest.parent / name)


def _stale(path: Path, pid: int) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        return False  # a link or anything else of that name was not made here
    if pid != os.getpid() and _running(pid):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # its writer lives (on another host, or this pid's other open)
    finally:
        os.close(fd)
    return True


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def link_or_copy(source: Path, target: Path) -> None:
    """A hardlink (instant, no extra space), or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
