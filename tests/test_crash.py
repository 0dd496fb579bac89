"""Crash and interrupt safety, with real processes: kill -9 at random moments, Ctrl-C once and
twice. The server (an emulator in this process) counts every submission."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from .conftest import last_records


def start_run(spec: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(spec), "--out", str(out), "--no-progress"],
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.mark.slow  # ~20 s: ten runs killed at random moments, then one to the end
def test_kill_9_loop_loses_nothing(write_spec, tmp_path, threaded_emulator):
    server = threaded_emulator(latency=4.0, concurrency=32)  # 1 s at 10 steps
    spec = write_spec(
        matrix={"seed": {"range": [0, 99]}}, backend="fal", execution={"concurrency": 6}
    )
    out = tmp_path / "out"
    rng = random.Random(1234)
    kills = tries = 0
    while kills < 10 and tries < 30:
        tries += 1
        proc = start_run(spec, out, server.env())
        time.sleep(rng.uniform(0.5, 1.8))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate(timeout=30)
    final = start_run(spec, out, server.env())
    stdout, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr
    records = last_records(out)
    assert len(records) == 100 and all(r["status"] == "ok" for r in records.values())
    for record in records.values():
        assert (out / record["outputs"][0]["file"]).exists()
    assert kills == 10
    # only a submit caught between the server's answer and the journal line can repeat
    assert server.stats.duplicate_submissions <= kills
    assert server.stats.submissions == 100 + server.stats.duplicate_submissions


def test_first_ctrl_c_finishes_in_flight_and_exits_3(write_spec, tmp_path, threaded_emulator):
    server = threaded_emulator(latency=6.0)  # 1.5 s at 10 steps
    spec = write_spec(
        matrix={"seed": {"range": [0, 19]}}, backend="fal", execution={"concurrency": 4}
    )
    out = tmp_path / "out"
    proc = start_run(spec, out, server.env())
    wait_for(lambda: server.stats.submissions >= 4)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "resume" in stderr and "Traceback" not in stderr
    assert re.search(r"the [1-4] requests in flight finished and are journaled", stderr), stderr
    records = last_records(out)
    assert 4 <= len(records) < 20
    assert all(r["status"] == "ok" for r in records.values())  # in-flight ones finished
    state = server.emulator.state  # the resume need not wait 1.5 s a request
    state.settings = replace(state.settings, latency=0.05)
    again = start_run(spec, out, server.env())
    again.communicate(timeout=60)
    assert again.returncode == 0
    assert server.stats.submissions == 20 and server.stats.duplicate_submissions == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_stops_at_once_and_the_resume_polls(
    sig, write_spec, tmp_path, threaded_emulator
):
    server = threaded_emulator(latency=12.0)  # 3 s at 10 steps
    spec = write_spec(
        matrix={"seed": {"range": [0, 3]}}, backend="fal", execution={"concurrency": 4}
    )
    out = tmp_path / "out"
    proc = start_run(spec, out, server.env())
    wait_for(lambda: server.stats.submissions >= 4)
    time.sleep(0.2)
    proc.send_signal(sig)
    time.sleep(0.5)  # a second signal, not the first delivered again
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "Traceback" not in stderr
    # It exited at once: had it waited for the requests in flight (3 s each), they would be ok.
    assert {r["status"] for r in last_records(out).values()} == {"submitted"}
    assert json.loads((out / "stats.json").read_text())["interrupted"] is True
    again = start_run(spec, out, server.env())
    stdout, _ = again.communicate(timeout=60)
    assert again.returncode == 0 and "4 resumed" in stdout
    assert server.stats.submissions == 4


def test_sigterm_is_a_first_ctrl_c(write_spec, tmp_path, threaded_emulator):
    # what `timeout`, process managers, CI cancellation and `docker stop` send
    server = threaded_emulator(latency=6.0)  # 1.5 s at 10 steps
    spec = write_spec(
        matrix={"seed": {"range": [0, 19]}}, backend="fal", execution={"concurrency": 4}
    )
    out = tmp_path / "out"
    proc = start_run(spec, out, server.env())
    wait_for(lambda: server.stats.submissions >= 4)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr
    assert "SIGTERM" in stderr and "Traceback" not in stderr
    assert re.search(r"the [1-4] requests in flight finished and are journaled", stderr), stderr
    assert "20 requests:" in stdout  # the summary
    records = last_records(out)
    assert 4 <= len(records) < 20 and all(r["status"] == "ok" for r in records.values())
    end = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert end["event"] == "end" and end["interrupted"] is True and end["ok"] == len(records)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["finished"] is True and stats["interrupted"] is True
    assert stats["counts"]["ok"] == len(records) and stats["counts"]["in_flight"] == 0


def test_a_stop_signalled_twice_at_once_is_one_first_signal(
    write_spec, tmp_path, threaded_emulator
):
    # GNU `timeout` sends SIGTERM to the command and then to its process group: the command
    # gets it twice, microseconds apart, and must still wait for its requests in flight
    server = threaded_emulator(latency=6.0)  # 1.5 s at 10 steps
    spec = write_spec(
        matrix={"seed": {"range": [0, 19]}}, backend="fal", execution={"concurrency": 4}
    )
    out = tmp_path / "out"
    proc = start_run(spec, out, server.env())
    wait_for(lambda: server.stats.submissions >= 4)
    assert proc.stderr is not None
    proc.send_signal(signal.SIGTERM)
    assert "stopping (SIGTERM)" in proc.stderr.readline() + proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)  # the same stop, delivered again
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr
    assert re.search(r"the [1-4] requests in flight finished and are journaled", stderr), stderr
    assert {r["status"] for r in last_records(out).values()} == {"ok"}


def test_sigterm_while_the_spec_is_checked_is_a_ctrl_c_then(write_spec, tmp_path):
    # a source file that is a pipe: checking the spec waits on it, so the signal comes while
    # the run has not started; nothing is sent and no folder is made
    os.mkfifo(tmp_path / "prompts.txt")
    spec = write_spec(matrix={"prompt": {"lines": "prompts.txt"}})
    out = tmp_path / "out"
    proc = start_run(spec, out, {})
    with open(tmp_path / "prompts.txt", "w"):  # returns once the run opens it to read
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr
    assert stderr == "runner: interrupted\n" and stdout == ""
    assert not out.exists()
