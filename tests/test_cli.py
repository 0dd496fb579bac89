"""The command line, called as main([...]) like a user would, and as a subprocess for signals."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from runner.cli.args import build_parser, serve_settings
from runner.cli.commands import main

from .conftest import closed_port, last_records, png_bytes


def test_validate_ok_and_bad(write_spec, capsys):
    good = write_spec(matrix={"seed": [1, 2]})
    bad = write_spec("bad.yaml", defaults={"strength": 1.5})
    assert main(["validate", str(good)]) == 0
    assert "ok, 2 requests" in capsys.readouterr().out
    assert main(["validate", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{bad}:") and "strength" in err[0]
    assert "Traceback" not in err[0]


def test_plan_outputs(write_spec, capsys):
    spec = write_spec(matrix={"seed": {"range": [0, 9]}, "strength": [0.3, 0.6]})
    assert main(["plan", str(spec), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["count"] == 20 and plan["axes"] == {"seed": 10, "strength": 2}
    assert main(["plan", str(spec), "--jsonl"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 20 and set(lines[0]) == {"key", "input", "vars"}
    assert [x["input"]["seed"] for x in lines[:3]] == [0, 0, 1]  # first axis slowest
    assert main(["plan", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "20 requests" in text and "seed" in text and "cost estimate" in text


def test_run_local_then_resume(write_spec, tmp_path, capsys):
    spec = write_spec(matrix={"seed": [1, 2, 3]})
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "3 ok" in capsys.readouterr().out
    records = last_records(out)
    assert len(records) == 3 and {r["status"] for r in records.values()} == {"ok"}
    assert main(["plan", str(spec), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == len(records)
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "3 requests: 3 ok, 0 failed, 3 already done; 0 submissions" in capsys.readouterr().out
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert runs[0]["spec_sha256"] and runs[0]["runner_version"]


def test_run_fal_backend_needs_a_key(write_spec, tmp_path, monkeypatch, capsys):
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    spec = write_spec()
    assert main(["run", str(spec), "--backend", "fal", "--out", str(tmp_path / "o")]) == 2
    assert "FAL_KEY" in capsys.readouterr().err
    # refused before the folder is touched: no folder, not even an empty manifest.jsonl
    assert not (tmp_path / "o").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    assert main(["run", str(spec), "--backend", "fal", "--out", str(tmp_path / "mine")]) == 2
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("name", ["FAL_QUEUE_URL", "FAL_RUN_URL", "FAL_REST_URL"])
def test_plain_http_only_on_loopback(write_spec, tmp_path, monkeypatch, capsys, name):
    monkeypatch.setenv("FAL_KEY", "k")
    monkeypatch.setenv(name, "http://example.com")
    assert main(["run", str(write_spec()), "--backend", "fal", "--out", str(tmp_path / "o")]) == 2
    assert "https" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing left behind by a refused run


@pytest.mark.parametrize("name", ["FAL_QUEUE_URL", "FAL_RUN_URL", "FAL_REST_URL"])
@pytest.mark.parametrize(
    "value, says",
    [
        ("https://me:s3cret-pw@queue.example", "user name or password"),
        ("https://queue.example:99999", "invalid port"),
        ("https://queue.example:0", "invalid port"),
        ("https://queue.example/?token=s3cret-pw", "query string"),
        ("https://queue.example/#frag", "query string or a fragment"),
        ("", "set but empty"),
        ("https://", "no host"),
        ("https:///fal", "no host"),
        ("https://[::1", "not a URL"),
        ("https://que ue.example", "space"),
        ("queue.example", "has no scheme: start it with https://"),
        ("127.0.0.1:8080", "has no scheme: start it with https:// (e.g. https://queue.fal.run)"),
        ("localhost:8080", "or http:// for a server on this machine (e.g. http://127.0.0.1:8080)"),
    ],
)
def test_a_bad_server_url_is_refused_before_anything(
    write_spec, tmp_path, monkeypatch, capsys, name, value, says
):
    monkeypatch.setenv("FAL_KEY", "k")
    monkeypatch.setenv(name, value)
    out = tmp_path / "o"
    assert main(["run", str(write_spec()), "--backend", "fal", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"runner: {name}") and says in line
    assert "s3cret-pw" not in captured.err + captured.out
    assert not out.exists()  # nothing made, nothing sent


def test_a_key_no_header_can_carry_is_refused_without_showing_it(
    write_spec, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FAL_KEY", "sk-line\x1bsecret")
    assert main(["run", str(write_spec()), "--backend", "fal", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "FAL_KEY" in err and "secret" not in err
    assert not (tmp_path / "o").exists()


def test_an_unresolvable_server_stops_with_exit_3_naming_host_and_cause(
    write_spec, tmp_path, monkeypatch, capsys, no_dns
):
    monkeypatch.setenv("FAL_KEY", "k")
    for name in ("FAL_QUEUE_URL", "FAL_RUN_URL", "FAL_REST_URL"):
        monkeypatch.setenv(name, "https://fal.invalid")
    spec = write_spec(matrix={"seed": {"range": [0, 49]}}, backend="fal")
    out = tmp_path / "o"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 3
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("runner: stopped: cannot connect to https://fal.invalid:443: ")
    assert "name not resolved" in line and "HINT:" in line
    assert {r["status"] for r in last_records(out).values()} == {"refused"}  # none failed
    end = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert end["event"] == "end" and end["failed"] == 0 and end["submitted"] == 0


def test_rows_no_server_ever_took_do_not_tie_the_folder_to_that_server(
    write_spec, tmp_path, fal_server, monkeypatch, capsys
):
    # A mistyped FAL_QUEUE_URL (nobody listening) leaves only refused rows: nothing reached a
    # server, so the corrected URL resumes the same folder instead of being refused.
    server = fal_server()
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal")
    out = tmp_path / "o"
    monkeypatch.setenv("FAL_QUEUE_URL", f"http://127.0.0.1:{closed_port()}")
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 3
    assert {r["status"] for r in last_records(out).values()} == {"refused"}
    monkeypatch.setenv("FAL_QUEUE_URL", server.env()["FAL_QUEUE_URL"])
    capsys.readouterr()
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr()
    assert server.stats.submissions == 2
    assert {r["server"] for r in last_records(out).values()} == {server.env()["FAL_QUEUE_URL"]}


def test_fal_backend_against_a_server(write_spec, tmp_path, fal_server):
    server = fal_server("k-1", keys=frozenset({"k-1"}))
    spec = write_spec(matrix={"seed": {"range": [0, 7]}}, backend="fal")
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert server.stats.submissions == 8 and server.stats.duplicate_submissions == 0
    assert len(last_records(tmp_path / "o")) == 8


def test_failed_rows_exit_1_and_retry_failed(write_spec, tmp_path, fal_server, capsys):
    from runner.emulator import Faults

    server = fal_server(faults=Faults(p_infra_error=1.0))
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal", execution={"retries": 0})
    out = str(tmp_path / "o")
    assert main(["run", spec.as_posix(), "--out", out, "--no-progress"]) == 1
    assert main(["run", spec.as_posix(), "--out", out, "--no-progress"]) == 1  # not retried
    assert server.stats.submissions == 2
    assert main(["run", spec.as_posix(), "--out", out, "--no-progress", "--retry-failed"]) == 1
    assert server.stats.submissions == 4
    capsys.readouterr()


def test_the_retry_hint_says_which_failed_rows_are_fetched_without_paying_again(
    write_spec, tmp_path, fal_server, capsys
):
    from dataclasses import replace

    from runner.emulator import Faults

    # the server takes the submission, then drops every status and result call: the row
    # fails with its request id, and --retry-failed fetches its result instead of paying again
    drops = Faults(p_drop=1.0, routes=frozenset({"status", "stream", "result"}))
    server = fal_server(faults=drops)
    spec = write_spec(matrix={"seed": [1]}, backend="fal", execution={"retries": 0})
    argv = ["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"]
    for _ in range(2):  # the run that failed it, and a plain resume
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "1 failed row remains (1 of them accepted by the server, its result not " in err
        assert "--retry-failed fetches it by request id, without paying again)" in err
        assert "; to submit it again: " in err
    server.emulator._state.settings = replace(server.emulator._state.settings, faults=Faults())
    assert main([*argv, "--retry-failed"]) == 0
    assert "1 resumed" in capsys.readouterr().out
    assert server.stats.submissions == 1


def test_retry_failed_fetches_rows_whose_status_and_result_calls_answered_5xx(
    write_spec, tmp_path, fal_server, capsys
):
    from dataclasses import replace

    from runner.emulator import Faults

    # the server takes each submission and completes it, but answers every status and result
    # call with a 500: the results are there, so --retry-failed fetches them, paying nothing
    errors = Faults(p_500=1.0, routes=frozenset({"status", "stream", "result"}))
    server = fal_server(faults=errors)
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal", execution={"retries": 0})
    out = tmp_path / "o"
    argv = ["run", str(spec), "--out", str(out), "--no-progress"]
    assert main(argv) == 1
    assert "2 failed rows remain (2 of them accepted by the server" in capsys.readouterr().err
    failed = last_records(out).values()
    assert {(r["error"]["type"], r["error"]["http_status"]) for r in failed} == {("http", 500)}
    server.emulator._state.settings = replace(server.emulator._state.settings, faults=Faults())
    assert main([*argv, "--retry-failed"]) == 0
    printed = capsys.readouterr().out
    assert "2 resumed" in printed and "possibly charged twice" not in printed
    assert server.stats.submissions == 2 and server.stats.duplicate_submissions == 0
    assert {r["possible_duplicates"] for r in last_records(out).values()} == {0}


def test_a_wrong_key_stops_the_run_at_its_first_refusal(write_spec, tmp_path, fal_server, capsys):
    server = fal_server("sk-wrong-0123456789", keys=frozenset({"right"}))
    spec = write_spec(matrix={"seed": {"range": [0, 99]}}, backend="fal")
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "refused the API key" in err and "sk-wrong-0123456789" not in err
    # "at once" by count, not by the clock: until one submission is accepted they go one at
    # a time, so of 100 rows only the first reached the server
    assert server.stats.submissions == 0
    assert dict(server.stats.requests) == {"submit": 1}, server.stats.requests


def test_a_run_stopped_by_its_key_or_its_server_says_why_in_runs_jsonl_and_stats_json(
    write_spec, tmp_path, fal_server, monkeypatch, capsys
):
    # a script reading the folder must not take a run that stopped early for a finished one
    fal_server("wrong", keys=frozenset({"right"}))
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal")
    for out, url in ((tmp_path / "key", None), (tmp_path / "gone", closed_port())):
        if url is not None:
            monkeypatch.setenv("FAL_QUEUE_URL", f"http://127.0.0.1:{url}")
        assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 3
        end = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
        stats = json.loads((out / "stats.json").read_text())
        said = "refused the API key" if url is None else "connection refused"
        assert end["event"] == "end" and said in (end["stop_reason"] or ""), end
        assert said in (stats["stop_reason"] or ""), stats
    capsys.readouterr()


class _Disk:
    """A disk under a folder that takes `left` more bytes of writes, then fails each with
    ENOSPC (a write that does not fit takes what fits first, as a file system does); `only`
    limits it to the files whose name passes."""

    def __init__(self, root: Path, left: float, only: Any = None) -> None:
        self.root, self.left, self.only = root, left, only or (lambda name: True)

    def opened(self, path: Path, fh: Any) -> Any:
        if self.root in path.parents and self.only(path.name):
            return _FullFile(fh, self)
        return fh


class _FullFile:
    def __init__(self, fh: Any, disk: _Disk) -> None:
        self._fh, self._disk = fh, disk

    def write(self, data: Any) -> int:
        fits = int(min(len(data), max(self._disk.left, 0)))
        if fits:
            self._disk.left -= fits
            if fits == len(data):
                return self._fh.write(data)
            self._fh.write(data[:fits])
            self._fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


@pytest.fixture
def full_disk(monkeypatch):
    """full_disk(root, left, only=None): writes under root fail once `left` bytes are
    written (journal and runs.jsonl lines, output images, stats.json)."""
    real_open = Path.open
    disks: list[_Disk] = []

    def opened(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(self, mode, *args, **kwargs)
        if set(mode) & set("wa+"):
            for disk in disks:
                fh = disk.opened(Path(os.path.abspath(self)), fh)
        return fh

    monkeypatch.setattr(Path, "open", opened)

    def make(root: Path, left: float, only: Any = None) -> _Disk:
        disk = _Disk(root, left, only)
        disks.append(disk)
        return disk

    return make


def _written(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def _whole_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a torn line was left behind"
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("backend", ["local", "fal"])
def test_a_full_disk_stops_the_run_with_its_summary_and_resumes(
    backend, write_spec, tmp_path, fal_server, full_disk, capsys
):
    server = fal_server()
    spec = write_spec(matrix={"seed": {"range": [0, 9]}}, backend=backend)
    argv = ["run", str(spec), "--no-progress", "--concurrency", "1"]
    room = tmp_path / "room"  # how much a whole run writes (offline: the server sees none)
    assert main([*argv, "--out", str(room), "--backend", "local"]) == 0
    out = tmp_path / "o"
    disk = full_disk(out, _written(room) // 2)
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 3
    said = capsys.readouterr()
    assert said.out.startswith("10 requests: ") and "not run" in said.out  # the summary
    stop = said.err.strip().splitlines()[0]
    assert stop.startswith("runner: stopped: cannot write ") and "No space left on device" in stop
    assert "HINT: free space" in stop
    assert "Traceback" not in said.err
    assert not [p.name for p in out.rglob("*") if ".tmp" in p.name]  # no temporary file left
    done = {k for k, r in last_records(out).items() if r["status"] == "ok"}
    _whole_lines(out / "manifest.jsonl")
    _whole_lines(out / "runs.jsonl")

    disk.left = float("inf")  # space freed: the same command goes on
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr()
    records = last_records(out)
    assert len(records) == 10 and {r["status"] for r in records.values()} == {"ok"}
    assert all((out / r["outputs"][0]["file"]).is_file() for r in records.values())
    assert done <= set(records)  # nothing journaled was lost
    if backend == "fal":  # one row in flight at most was sent and not journaled as taken
        assert server.stats.duplicate_submissions <= 1


def test_a_full_disk_s_stop_is_recorded_where_it_can_still_be_written(
    write_spec, tmp_path, full_disk, capsys
):
    # the journal and the images fill their disk; runs.jsonl and stats.json still take lines
    spec = write_spec(matrix={"seed": {"range": [0, 9]}})
    out = tmp_path / "o"
    full_disk(out, 2000, only=lambda name: not name.startswith(("runs.", "stats.")))
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 3
    capsys.readouterr()
    end = _whole_lines(out / "runs.jsonl")[-1]
    stats = json.loads((out / "stats.json").read_text())
    assert end["event"] == "end" and "No space left on device" in (end["stop_reason"] or "")
    assert end["interrupted"] is False
    assert stats["stop_reason"] == end["stop_reason"] and stats["finished"] is True


def test_a_disk_full_before_the_first_line_stops_with_nothing_sent(
    write_spec, tmp_path, full_disk, capsys
):
    spec = write_spec(matrix={"seed": [1, 2]})
    out = tmp_path / "o"
    full_disk(out, 0)
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 3
    said = capsys.readouterr()
    assert said.out.startswith("2 requests: 0 ok, 0 failed, 2 not run; 0 submissions")
    assert said.err.startswith(f"runner: stopped: cannot write {out / 'runs.jsonl'}: No space")
    assert not (out / "runs.jsonl").read_text() and not (out / "manifest.jsonl").read_text()


def test_stats_json_that_cannot_be_written_stops_the_run(write_spec, tmp_path, full_disk, capsys):
    # a script watching stats.json must not read a finished run as one still going
    spec = write_spec(matrix={"seed": [1, 2]})
    out = tmp_path / "o"
    full_disk(out, 0, only=lambda name: name.startswith("stats."))
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "runner: stopped: cannot write " in err and "stats.json" in err
    assert not (out / "stats.json.tmp").exists()
    assert "stats.json" in (_whole_lines(out / "runs.jsonl")[-1]["stop_reason"] or "")


def test_an_offline_resume_says_sent_again_not_charged(write_spec, tmp_path, capsys):
    # the offline emulator charges nothing: its summary never speaks of paying twice
    spec = write_spec(matrix={"seed": [1, 2]})
    out = tmp_path / "o"
    argv = ["run", str(spec), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    journal = out / "manifest.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    lines[-1]["possible_duplicates"] = 1  # a row sent twice by an earlier run
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    capsys.readouterr()
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "1 submission in the folder sent again" in said and "charged" not in said


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "runner run specs/quickstart.yaml" in capsys.readouterr().out


def test_report_command(write_spec, tmp_path, capsys):
    spec = write_spec(matrix={"strength": [0.5, 0.9], "seed": [1, 2]}, name="grid")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 ok" in printed and "strength" in printed and "seed" in printed
    html = (out / "report.html").read_text()
    assert "<h1>grid" in html or ">grid<" in html
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "run `runner run SPEC` first" in capsys.readouterr().err


def test_a_folder_another_fal_server_made_is_refused_naming_the_servers(
    write_spec, tmp_path, monkeypatch, fal_server, capsys
):
    # the suggested folder says which server it is for, not only "fal"
    first = fal_server()
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(spec), "--out", "f3-fal", "--no-progress"]) == 0
    second = fal_server()
    port = second.env()["FAL_QUEUE_URL"].rsplit(":", 1)[1]
    capsys.readouterr()
    assert main(["run", str(spec), "--out", "f3-fal", "--no-progress"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"made by backend fal at {first.env()['FAL_QUEUE_URL']}" in line
    assert f"this run uses backend fal at http://127.0.0.1:{port}" in line
    assert "another server's results never count as this one's" in line
    assert line.endswith(f"HINT: give it its own folder: --out f3-fal-127.0.0.1-{port}")
    assert second.stats.submissions == 0


def test_quickstart_then_fal_never_counts_the_emulators_pictures(
    tmp_path, monkeypatch, fal_server, capsys
):
    import shutil
    from pathlib import Path

    specs = Path(__file__).resolve().parent.parent / "specs"
    shutil.copytree(specs / "images", tmp_path / "specs" / "images")
    shutil.copy(specs / "quickstart.yaml", tmp_path / "specs" / "quickstart.yaml")
    monkeypatch.chdir(tmp_path)
    spec = "specs/quickstart.yaml"
    assert main(["run", spec, "--no-progress"]) == 0  # the quick start, offline
    server = fal_server()
    capsys.readouterr()
    assert main(["run", spec, "--backend", "fal", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds 2 rows made by backend local" in err and err.count("\n") == 1
    assert "HINT: give it its own folder: --out specs/runs/quickstart-fal" in err
    assert server.stats.submissions == 0
    fal_out = "specs/runs/quickstart-fal"
    assert main(["run", spec, "--backend", "fal", "--out", fal_out, "--no-progress"]) == 0
    assert server.stats.submissions == 2
    assert {r["backend"] for r in last_records(tmp_path / fal_out).values()} == {"fal"}
    # and back: the emulator does not take the fal rows as its own either
    assert main(["run", spec, "--out", fal_out, "--no-progress"]) == 2


def test_concurrency_is_bounded_and_argument_errors_read_plainly(write_spec, tmp_path, capsys):
    spec = write_spec(matrix={"seed": [1, 2]})
    for value, message in (
        ("x", "argument --concurrency: must be a positive integer"),
        ("0", "argument --concurrency: must be a positive integer"),
        ("100000000", "argument --concurrency: must be at most 1024"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["run", str(spec), "--concurrency", value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "_positive_int" not in err and "invalid" not in err
    too_many = write_spec("many.yaml", matrix={"seed": [1, 2]}, execution={"concurrency": 5000})
    assert main(["validate", str(too_many)]) == 2  # validate says so, not only run
    assert "many.yaml:" in (err := capsys.readouterr().err) and "at most 1024" in err
    assert main(["run", str(too_many), "--out", str(tmp_path / "o")]) == 2
    assert "at most 1024, got 5000" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_schema_and_the_command_line_share_the_concurrency_ceiling():
    import json

    from runner.endpoints import schemas_dir
    from runner.execution.limits import MAX_CONCURRENCY

    schema = json.loads((schemas_dir() / "job.schema.json").read_text())
    concurrency = schema["properties"]["execution"]["properties"]["concurrency"]
    assert concurrency["maximum"] == MAX_CONCURRENCY


def test_never_more_workers_than_rows(write_spec, tmp_path, monkeypatch):
    from runner.execution import executor as executor_module

    started = []
    real = executor_module.Executor._worker

    async def counting(self, rows):
        started.append(1)
        await real(self, rows)

    monkeypatch.setattr(executor_module.Executor, "_worker", counting)
    spec = write_spec(matrix={"seed": [1, 2]})
    args = ["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*args, "--concurrency", "1024"]) == 0
    assert len(started) == 2


def test_out_must_name_a_folder(write_spec, tmp_path, capsys):
    spec = write_spec()
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(spec), "--out", ""])
    assert exit_info.value.code == 2 and "--out: must name a folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["run", str(spec), "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tls-cert", "missing.pem", "--tls-key", "k.pem"], "--tls-cert: no such file"),
        (["--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
    ],
)
def test_serve_usage_errors_are_one_line(extra, message, capsys):
    assert main(["serve", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_serve_port_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", "99999"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port: must be a port number from 0 to 65535" in err
    assert "Traceback" not in err


def test_serve_on_a_port_in_use_is_one_line(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "cannot serve" in err and err.count("\n") == 1 and "Traceback" not in err


def test_summary_separates_rows_from_submissions_and_says_how_to_retry(
    write_spec, tmp_path, fal_server, capsys
):
    from runner.emulator import Faults

    fal_server(faults=Faults(p_infra_error=1.0))  # every request ends in an infra error
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal", execution={"retries": 0})
    out = str(tmp_path / "o")
    assert main(["run", str(spec), "--out", out, "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "2 requests: 0 ok, 2 failed; 2 submissions" in captured.out
    assert f"runner run {spec} --out {out} --retry-failed" in captured.err


def test_the_retry_hint_repeats_the_backend_and_the_shard(write_spec, tmp_path, capsys):
    """The hint is a command people paste: without `--shard` it would run every part of the
    job into this part's folder (paying again for rows other machines run), and without
    `--backend` it would meet the folder-of-another-backend refusal."""
    remote = "https://example.invalid/x.png"  # the offline emulator refuses it: failed rows
    spec = write_spec(matrix={"image_url": [remote], "seed": list(range(40))})
    out = str(tmp_path / "part1")
    args = ["run", str(spec), "--out", out, "--no-progress", "--backend", "local"]
    assert main([*args, "--shard", "1/2"]) == 1
    err = capsys.readouterr().err
    assert f"runner run {spec} --out {out} --backend local --shard 1/2 --retry-failed" in err


def test_serve_arguments_become_settings() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "serve",
            "--port",
            "0",
            "--key",
            "a",
            "--key",
            "b",
            "--latency",
            "0.2",
            "--p-429",
            "0.1",
            "--p-503",
            "0.2",
            "--p-drop-after-accept",
            "0.3",
            "--stall",
            "2",
            "--seed",
            "9",
            "--allow-remote-fetch",
        ]
    )
    settings = serve_settings(args)
    assert settings.keys == frozenset({"a", "b"}) and settings.latency == 0.2
    assert settings.faults.p_429 == 0.1 and settings.faults.p_503_ingress == 0.2
    assert settings.faults.p_drop_after_accept == 0.3 and settings.stall == 2
    assert settings.seed == 9 and settings.allow_remote_fetch
    assert serve_settings(parser.parse_args(["serve"])).keys is None
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--p-500", "2"])


@pytest.mark.parametrize("options", [["--tls-cert", "c.pem"], ["--concurrency", "0"]])
def test_bad_serve_options_are_a_usage_error(options, capsys):
    assert main(["serve", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("runner: ") and "Traceback" not in err


def test_spec_warnings_go_to_stderr_for_validate_plan_and_run(write_spec, tmp_path, capsys):
    spec = write_spec(defaults={"guidance": 3}, matrix={"seed": [1, 2]}, exclude=[{"seed": 5}])
    warnings = [
        f"{spec}:13:3: warning: this exclude entry matches no row, so it drops nothing",
        f"{spec}:7:3: warning: defaults key 'guidance' is not sent: it is no input of "
        "fal-ai/flux-1/dev/image-to-image and no template reads it (did you mean "
        "'guidance_scale'?); it is only kept in each row's vars",
    ]
    commands = [
        ["validate", str(spec)],
        ["plan", str(spec)],
        ["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"],
    ]
    for argv in commands:
        assert main(argv) == 0
        said = capsys.readouterr().err.splitlines()
        assert all(warning in said for warning in warnings), said


def test_plan_says_how_many_rows_collapsed_and_why(write_spec, capsys):
    spec = write_spec(matrix={"seed": [1, 2, 1.0]})
    assert main(["plan", str(spec), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["count"] == 2 and plan["collapsed"] == {"rows": 1, "by": {"seed": 1}}
    assert main(["plan", str(spec)]) == 0
    assert "collapsed: 1 row repeated an earlier request (seed: 1)" in capsys.readouterr().out


def test_counts_of_one_are_singular(write_spec, tmp_path, capsys):
    spec = write_spec()
    assert main(["validate", str(spec)]) == 0
    assert capsys.readouterr().out == f"{spec}: ok, 1 request\n"
    assert main(["plan", str(spec)]) == 0
    assert ": 1 request to " in capsys.readouterr().out.splitlines()[0]
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("1 request: 1 ok, 0 failed; 1 submission in ")


def test_a_data_uri_input_is_sent_whole_and_journaled_as_its_sha256(write_spec, tmp_path, capsys):
    picture = png_bytes(8, 8)
    uri = "data:image/png;base64," + base64.b64encode(picture).decode()
    spec = write_spec(matrix={"image_url": [uri, "images/a.png"]})
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0  # the emulator got it
    records = last_records(out).values()
    assert {r["status"] for r in records} == {"ok"} and len(records) == 2
    digest = hashlib.sha256(picture).hexdigest()
    inline = [r for r in records if r["input"]["image_url"] == f"sha256:{digest}"]
    assert inline and inline[0]["vars"]["image_url"] == f"sha256:{digest}"
    assert "base64" not in (out / "manifest.jsonl").read_text()
    assert (out / "inputs" / f"{digest}.png").read_bytes() == picture  # kept once, for export


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "--latency", "x"], "argument --latency: must be a number of seconds"),
        (["serve", "--latency", "-1"], "argument --latency: must be a number of seconds"),
        (["serve", "--p-429", "nan"], "argument --p-429: must be a probability within [0, 1]"),
        (["serve", "--p-429", "2"], "argument --p-429: must be a probability within [0, 1]"),
        (["plan", "x.yaml", "--rows", "0"], "argument --rows: must be a positive integer"),
        *(
            (["run", "x.yaml", "--max-usd", usd], "argument --max-usd: must be a number of US")
            for usd in ("$5", "inf", "nan", "-1", "0", "1e400")
        ),
    ],
)
def test_argument_errors_say_what_is_wanted(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "invalid" not in err


def test_the_module_docstring_names_every_command():
    import runner.cli

    commands = build_parser()._subparsers._group_actions[0].choices  # argparse has no public way
    named = runner.cli.__doc__.split("(grammar")[0].replace("`", " ").replace("|", " ").split()
    assert set(commands) <= set(named), named


def test_a_run_says_when_the_folder_holds_rows_its_spec_does_not_make(write_spec, tmp_path, capsys):
    out = tmp_path / "out"
    spec = write_spec(matrix={"seed": [1, 2]}, defaults={"strength": 0.8})
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "also holds" not in capsys.readouterr().err
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0  # a resume
    assert "also holds" not in capsys.readouterr().err
    spec = write_spec(matrix={"seed": [1, 2, 3]}, defaults={"strength": 0.5})  # edited
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "also holds 2 rows this run does not make" in capsys.readouterr().err


def test_a_resume_repeats_the_submissions_flagged_as_possibly_charged_twice(
    write_spec, tmp_path, capsys
):
    """kill -9 between sending and journaling leaves a `submitting` line: the next run sends
    that row again and flags it, and says so; a later resume, with nothing left to send,
    still says how many submissions in the folder are flagged, in the unit the runs used (a
    row sent again twice counts two), not only "already done"."""
    spec = write_spec(matrix={"seed": [1, 2, 3]})
    out = tmp_path / "o"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    key = next(iter(last_records(out)))
    for attempt in (1, 2):  # the same row, killed mid-send twice
        crash = {"key": key, "status": "submitting", "backend": "local", "attempts": attempt}
        with (out / "manifest.jsonl").open("a") as journal:
            journal.write(json.dumps({**crash, "possible_duplicates": attempt - 1}) + "\n")
        capsys.readouterr()
        assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
        assert "1 sent again" in capsys.readouterr().out  # offline: nothing is charged
        assert last_records(out)[key]["possible_duplicates"] == attempt
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    line = capsys.readouterr().out
    assert "3 already done, 2 submissions in the folder sent again; 0 submissions" in line


def test_a_refused_key_or_an_unreachable_server_prints_the_summary_then_why(
    write_spec, tmp_path, fal_server, monkeypatch, capsys
):
    fal_server("wrong", keys=frozenset({"right"}))
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal")
    assert main(["run", str(spec), "--out", str(tmp_path / "key"), "--no-progress"]) == 3
    captured = capsys.readouterr()
    assert captured.out.startswith("2 requests: 0 ok, 0 failed, 2 not run; 1 submission ("), (
        captured.out
    )
    [line] = captured.err.strip().splitlines()
    assert line.startswith("runner: stopped: ") and "refused the API key" in line
    assert line.endswith(". Fix the key and run the same command again.")
    monkeypatch.setenv("FAL_QUEUE_URL", f"http://127.0.0.1:{closed_port()}")
    assert main(["run", str(spec), "--out", str(tmp_path / "gone"), "--no-progress"]) == 3
    captured = capsys.readouterr()
    assert captured.out.startswith("2 requests: 0 ok, 0 failed, 2 not run; "), captured.out
    [line] = captured.err.strip().splitlines()
    assert line.startswith("runner: stopped: cannot connect to http://127.0.0.1:")


@pytest.fixture
def reads(monkeypatch):
    """What a command read: "spec" each time the spec file is parsed, "grid" each time its
    grid is built (its source files read)."""
    from runner.grid.rowgrid import RowGrid
    from runner.spec import load as spec_module

    read: list[str] = []
    real_yaml, real_grid = spec_module.load_yaml, RowGrid.__init__

    def load_yaml(text):
        read.append("spec")
        return real_yaml(text)

    def grid(self, *args, **kwargs):
        read.append("grid")
        real_grid(self, *args, **kwargs)

    monkeypatch.setattr(spec_module, "load_yaml", load_yaml)
    monkeypatch.setattr(RowGrid, "__init__", grid)
    return read


def test_a_sharded_capped_run_reads_the_spec_once(write_spec, tmp_path, fal_server, reads):
    fal_server()
    (tmp_path / "prompts.txt").write_text("a red square\na red circle\n")
    spec = write_spec(matrix={"prompt": {"lines": "prompts.txt"}, "seed": [1, 2]}, backend="fal")
    out = str(tmp_path / "o")
    argv = ["run", str(spec), "--out", out, "--no-progress", "--max-usd", "1", "--shard", "1/2"]
    assert main(argv) == 0
    assert reads == ["spec", "grid"]


def test_plan_jsonl_reads_the_spec_once(write_spec, tmp_path, reads, capsys):
    (tmp_path / "prompts.txt").write_text("a red square\na red circle\n")
    spec = write_spec(matrix={"prompt": {"lines": "prompts.txt"}, "seed": [1, 2]})
    assert main(["plan", str(spec), "--jsonl"]) == 0
    assert reads == ["spec", "grid"] and len(capsys.readouterr().out.splitlines()) == 4
