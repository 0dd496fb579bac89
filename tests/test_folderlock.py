"""One run per output folder: two real `runner run` processes on one folder, and the lock's
release when its holder dies."""

from __future__ import annotations

import json
import os

import pytest

from runner.errors import UsageError
from runner.folder.lock import MERGE, locked, reading
from runner.folder.names import LOCK_FILE

from .test_crash import start_run, wait_for


def test_a_second_run_on_the_same_folder_is_refused_at_once(
    write_spec, tmp_path, threaded_emulator
):
    # The first run must still hold the folder when the second reaches its lock: 3 s a request
    # (at 10 steps) leaves the second process that long to start, a few times what it needs
    server = threaded_emulator(latency=12.0)
    spec = write_spec(matrix={"seed": {"range": [0, 7]}}, backend="fal")
    out = tmp_path / "out"
    first = start_run(spec, out, server.env())
    wait_for(lambda: server.stats.submissions >= 1)  # it holds the lock by then
    second = start_run(spec, out, server.env())
    _, err2 = second.communicate(timeout=30)
    assert second.returncode == 2, err2
    assert err2.count("\n") == 1 and "Traceback" not in err2
    assert f"pid {first.pid}" in err2 and "in use by another run" in err2
    _, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert server.stats.submissions == 8 and server.stats.duplicate_submissions == 0


def test_kill_9_releases_the_lock(write_spec, tmp_path, threaded_emulator):
    server = threaded_emulator(latency=8.0)
    spec = write_spec(matrix={"seed": {"range": [0, 3]}}, backend="fal")
    out = tmp_path / "out"
    first = start_run(spec, out, server.env())
    wait_for(lambda: server.stats.submissions >= 1)
    holder = json.loads((out / LOCK_FILE).read_text())
    assert holder["pid"] == first.pid and holder["host"] and holder["started"]
    first.kill()
    first.communicate(timeout=10)
    again = start_run(spec, out, server.env())  # no cleanup needed: the kernel dropped it
    _, err = again.communicate(timeout=60)
    assert again.returncode == 0, err


def test_lock_in_process_names_the_holder(tmp_path):
    # flock locks belong to the open file: a second open in this process conflicts too
    with (
        locked(tmp_path / "o"),
        pytest.raises(UsageError, match=rf"pid {os.getpid()} on .*--out"),
        locked(tmp_path / "o"),
    ):
        pass
    with locked(tmp_path / "o"):  # released on exit
        pass


def test_merges_share_a_folder_and_a_run_is_refused_while_one_reads(tmp_path):
    folder = tmp_path / "o"
    folder.mkdir()
    with (
        reading(folder, MERGE, "then merge it"),
        reading(folder, MERGE, "then merge it"),  # two merges may read one folder at once
        pytest.raises(UsageError, match=rf"in use by `runner merge` \(pid {os.getpid()} on "),
        locked(folder),
    ):
        pass
    with (
        locked(folder),
        pytest.raises(UsageError, match=r"in use by another run \(pid .*, started .*; then merge"),
        reading(folder, MERGE, "then merge it"),
    ):
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_read_without_a_lock_file(tmp_path):
    folder = tmp_path / "o"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with reading(folder, MERGE, "then merge it"):
            pass
        assert not (folder / LOCK_FILE).exists()
    finally:
        folder.chmod(0o755)
