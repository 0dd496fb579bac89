"""The output files that `ok` journal lines name, checked against the size each line records:
the journal's reader shows each ok line (`see`), and `damaged` then gives the keys whose last
ok line names a file that is missing or of another size.

A stat costs microseconds of kernel time, and a million-row journal names a million files: so
for a large journal a helper process does the checks while the reader goes on parsing (this
file, run as a script: it imports only the standard library). Each ok line goes to it as a
record, `key NUL size NUL file ...` and a newline (a journal's names hold neither), found
here, so both processes have about as much to do; it writes back the damaged keys when its
input ends. If the helper cannot
start, the check is done here; if it fails later, `damaged` raises HelperFailed and the
reader starts again without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

HELPER_FROM = 16 << 20  # journal bytes from which a helper is worth its start (~20 ms)
_BATCH = 1 << 16  # record bytes sent at a time
_PIPE_BYTES = 1 << 20  # asked of the kernel for the pipe to the helper, so writes rarely wait
_FILE = b'{"file":"'  # an output's first field, as the journal writes it
_OUTPUTS = b'"outputs":[' + _FILE  # the outputs as this runner writes them
_DIGITS = re.compile(rb"\d+")


class HelperFailed(Exception):
    """The helper process died or answered nonsense: check again without it."""


def _outputs(raw: bytes) -> list[tuple[bytes, int]]:
    """(file, recorded size or -1) of each output an ok journal line names. Found with
    bytes.find, not a regex or a JSON parse: a million-row journal has a million such lines.
    A line spelt otherwise (another tool's spaces or key order) is parsed."""
    found = []
    at = raw.find(_OUTPUTS)
    if at < 0:
        return _parsed(raw) if b'"outputs"' in raw else []
    at += len(_OUTPUTS) - len(_FILE)
    while at >= 0:
        start = at + len(_FILE)
        end = raw.find(b'"', start)
        close = raw.find(b"}", end)  # the end of this output's object
        name = raw[start:end]
        if end > start and b"\\" not in name:  # an escaped name is none this runner wrote
            size = raw.find(b'"bytes":', end, close)
            digits = _DIGITS.match(raw, size + 8) if size >= 0 else None
            found.append((name, int(digits[0]) if digits else -1))
        at = raw.find(_FILE, close) if close >= 0 else -1
    return found


def _parsed(raw: bytes) -> list[tuple[bytes, int]]:
    """_outputs of a line not in this runner's spelling, by a JSON parse."""
    try:
        outputs = json.loads(raw).get("outputs")
    except (ValueError, AttributeError):
        return []
    found = []
    for output in outputs if isinstance(outputs, list) else ():
        name = output.get("file") if isinstance(output, dict) else None
        if isinstance(name, str) and name and not {"\0", "\n"} & set(name):
            size = output.get("bytes")
            found.append((os.fsencode(name), size if type(size) is int else -1))
    return found


def _intact(folder: bytes, files: Iterable[tuple[bytes, int]]) -> bool:
    """Whether every file is there (in `folder`), at its recorded size where one is."""
    for name, size in files:
        try:
            found = os.stat(folder + name).st_size
        except (OSError, ValueError):
            return False
        if size >= 0 and found != size:
            return False
    return True


def output_intact(out_dir: Path, output: object) -> bool:
    """One journaled output (its `file` and recorded `bytes`) by the rule the journal's read
    applies to every ok line (_intact). An output that names no file is nothing this runner
    wrote: nothing to check."""
    if not isinstance(output, dict) or not isinstance(output.get("file"), str):
        return True
    size = output.get("bytes")
    folder = os.fsencode(out_dir) + os.sep.encode()
    return _intact(folder, [(os.fsencode(output["file"]), size if type(size) is int else -1)])


class OutputCheck:
    """Checks the outputs of the ok lines shown to it, in journal order."""

    def __init__(self, out_dir: Path, helper: bool = False) -> None:
        self._folder = os.fsencode(out_dir) + os.sep.encode()
        self._damaged: set[bytes] = set()
        self._batch: list[bytes] = []
        self._size = 0
        # The helper reads a newline-ended folder name: a name with a newline is checked here.
        helper = helper and b"\n" not in self._folder
        self._helper = _start(self._folder) if helper else None

    def see(self, key: bytes, raw: bytes) -> None:
        """An ok line of `key` (its bytes, as in the journal): a later line of a key replaces
        the verdict on an earlier one."""
        files = _outputs(raw)
        if self._helper is None:
            if _intact(self._folder, files):
                self._damaged.discard(key)
            else:
                self._damaged.add(key)
            return
        if len(files) == 1:  # most lines: one output
            [(name, size)] = files
            record = b"%s\0%d\0%s\n" % (key, size, name)
        else:
            record = key + b"".join(b"\0%d\0%s" % (size, name) for name, size in files) + b"\n"
        self._batch.append(record)
        self._size += len(record)
        if self._size >= _BATCH:
            self._send()

    def damaged(self) -> set[bytes]:
        """The keys whose last ok line names a missing or resized file."""
        helper = self._helper
        if helper is None:
            return self._damaged
        self._send()
        self._helper = None
        try:
            answer, _ = helper.communicate()  # closes its input: it answers, then exits
        except OSError:
            _stop(helper)
            raise HelperFailed from None
        if helper.returncode != 0 or not answer.startswith(b"\0"):
            raise HelperFailed
        return set(answer.split(b"\0")[1:-1])

    def _send(self) -> None:
        helper = self._helper
        if helper is None or not self._batch:
            return
        assert helper.stdin is not None
        with contextlib.suppress(OSError):  # it died: damaged() says so
            helper.stdin.write(b"".join(self._batch))
        self._batch.clear()
        self._size = 0

    def close(self) -> None:
        """Stop the helper, if one is still running (the reader failed)."""
        if self._helper is not None:
            _stop(self._helper)
            self._helper = None


def _stop(helper: subprocess.Popen[bytes]) -> None:
    helper.kill()
    helper.communicate()  # reaps it and closes the pipes


def _start(folder: bytes) -> subprocess.Popen[bytes] | None:
    try:
        helper = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={},  # it needs nothing from the environment (the API key stays out of it)
        )
    except OSError:
        return None  # no interpreter to start: the reader checks the files itself
    assert helper.stdin is not None
    if sys.platform == "linux":
        try:
            import fcntl

            fcntl.fcntl(helper.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        except (OSError, AttributeError):
            pass  # the default pipe (64 KB) only makes the reader wait more often
    try:
        helper.stdin.write(folder + b"\n")  # the output folder (a path holds no newline)
    except OSError:
        _stop(helper)
        return None
    return helper


def _serve() -> None:
    """The helper: the folder, then records, on stdin; "\\0" and then each damaged key
    followed by "\\0" on stdout (the leading "\\0" tells an empty answer from a dead helper)."""
    damaged: set[bytes] = set()
    folder, rest = b"", b""
    while chunk := os.read(0, 1 << 20):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        if not folder:
            folder = lines.pop(0)
        for line in lines:
            key, *fields = line.split(b"\0")  # key, then size and file of each output
            if _intact(folder, zip(fields[1::2], map(int, fields[::2]), strict=True)):
                damaged.discard(key)
            else:
                damaged.add(key)
    if rest:
        sys.exit(1)  # a torn record: the reader died mid-write
    sys.stdout.buffer.write(b"\0" + b"".join(key + b"\0" for key in damaged))
    sys.stdout.flush()


if __name__ == "__main__":
    _serve()
