"""`runner merge`: shards of one job merged equal the unsharded run, and the merged folder is a
run folder that report, export and a further run (resume) accept."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner.cli.commands import main
from runner.export import export
from runner.folder.lock import locked
from runner.folder.merge import merge
from runner.report import write_report

from .conftest import last_records, png_bytes
from .test_crash import wait_for

REMOTE = "https://example.invalid/x.png"  # the offline emulator refuses it: failed rows


def run(spec: Path, out: Path, *extra: str) -> int:
    return main(["run", str(spec), "--out", str(out), "--no-progress", *extra])


def runs_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


@pytest.fixture
def spec(write_spec: Any) -> Path:
    return write_spec(
        name="merge-me",
        matrix={"image_url": ["images/a.png", REMOTE], "strength": [0.5, 0.7, 0.9], "seed": [1, 2]},
        report={"x": "seed", "y": "strength"},
    )


def test_three_shards_merged_equal_the_unsharded_run(spec, tmp_path, capsys):
    whole = tmp_path / "whole"
    assert run(spec, whole) == 1
    parts = [tmp_path / f"part{i}" for i in (1, 2, 3)]
    for i, part in enumerate(parts, 1):
        run(spec, part, "--shard", f"{i}/3")
    merged = tmp_path / "merged"
    assert main(["merge", *map(str, parts), "--out", str(merged)]) == 0
    assert "6 ok, 6 failed, 0 pending from 3 folders (6 images)" in capsys.readouterr().out
    expected, got = last_records(whole), last_records(merged)
    assert set(got) == set(expected)
    assert {k: r["status"] for k, r in got.items()} == {k: r["status"] for k, r in expected.items()}
    for key, record in got.items():
        assert record["input"] == expected[key]["input"] and record["vars"] == expected[key]["vars"]
        for output in record.get("outputs", []):
            assert (merged / output["file"]).is_file()
    assert runs_lines(merged)[-1]["event"] == "merge"
    assert {line.get("shard") for line in runs_lines(merged)} >= {"1/3", "2/3", "3/3"}


def test_a_merged_folder_is_a_run_folder(spec, tmp_path, capsys):
    parts = [tmp_path / "p1", tmp_path / "p2"]
    for i, part in enumerate(parts, 1):
        run(spec, part, "--shard", f"{i}/2")
    merged = tmp_path / "merged"
    merge(parts, merged)
    capsys.readouterr()
    assert write_report(merged).columns == "seed"  # the spec's report block, carried over
    assert run(spec, merged) == 1  # resume: the failed rows stay failed, nothing is sent
    assert runs_lines(merged)[-1]["submitted"] == 0 and runs_lines(merged)[-1]["skipped"] == 6
    assert main(["report", str(merged)]) == 0
    printed = capsys.readouterr().out
    assert "6 ok, 6 failed" in printed and "(laid out by strength × seed" in printed  # spec's axes
    assert "<h1>merge-me</h1>" in (merged / "report.html").read_text()
    assert (
        main(["export", str(merged), "--format", "jsonl", "--to", str(tmp_path / "m.jsonl")]) == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(Path(r["input"]).is_file() for r in rows)


def test_conflicts_keep_the_first_and_say_so_ok_beats_failed(write_spec, tmp_path, capsys):
    first = write_spec("one.yaml", matrix={"seed": [1, 2]})
    second = write_spec("two.yaml", matrix={"seed": [2, 3]})
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(first, a) == 0 and run(second, b) == 0
    failed = tmp_path / "f"
    assert run(write_spec("three.yaml", matrix={"image_url": [REMOTE]}), failed) == 1
    # a failed copy of a's first key, as if one machine failed where another succeeded
    key = next(iter(last_records(a)))
    line = {**last_records(a)[key], "status": "failed", "error": {"type": "http", "message": "x"}}
    line.pop("outputs")
    with (failed / "manifest.jsonl").open("a") as fh:
        fh.write(json.dumps(line) + "\n")
    merged = tmp_path / "m"
    assert main(["merge", str(failed), str(a), str(b), "--out", str(merged)]) == 0
    captured = capsys.readouterr()
    shared = (set(last_records(a)) & set(last_records(b))).pop()
    assert f"1 key was ok in more than one folder; kept the first folder's result: {shared}" in (
        captured.err
    )
    records = last_records(merged)
    assert len(records) == 4 and records[key]["status"] == "ok"
    assert records[shared]["run_id"] == last_records(a)[shared]["run_id"]


def test_merge_refuses_a_folder_in_use_or_not_a_run(spec, tmp_path, capsys):
    part = tmp_path / "p"
    run(spec, part)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert main(["merge", str(part), "--out", str(busy)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["merge", str(part), str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["merge", str(part), "--out", str(part)]) == 2


def test_inline_inputs_travel_with_the_merge(write_spec, tmp_path):
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(20, 10)).decode()
    spec = write_spec(matrix={"image_url": [uri], "seed": [1, 2, 3, 4]})
    parts = [tmp_path / "p1", tmp_path / "p2"]
    for i, part in enumerate(parts, 1):
        run(spec, part, "--shard", f"{i}/2")
    merged = tmp_path / "merged"
    merge([p for p in parts if p.exists()], merged)  # a part with no request makes no folder
    summary = export(merged, "jsonl", tmp_path / "rows.jsonl")
    assert (summary.rows, summary.inputs) == (4, 4)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert all(Path(r["input"]).is_relative_to(merged) for r in rows)


def test_merge_refuses_folders_made_by_different_backends(spec, tmp_path, capsys):
    """The emulator's pictures merged with fal's would make a folder that no run accepts and a
    dataset whose rows cannot be told apart: merge refuses it and names both."""
    local, remote = tmp_path / "local", tmp_path / "fal"
    run(spec, local, "--shard", "1/2")
    run(spec, remote, "--shard", "2/2")
    journal = remote / "manifest.jsonl"  # as if run with --backend fal against one server
    journal.write_text(
        journal.read_text().replace('"backend":"local"', '"backend":"fal","server":"https://q.x"')
    )
    merged = tmp_path / "merged"
    assert main(["merge", str(local), str(remote), "--out", str(merged)]) == 2
    err = capsys.readouterr().err
    assert "backend local" in err and "backend fal at https://q.x" in err
    assert not (merged / "manifest.jsonl").exists()


def test_rows_no_server_ever_took_do_not_count_as_another_backends(spec, tmp_path, capsys):
    # a part first tried against a mistyped server URL holds rows refused there: nothing of
    # them reached any server, so they do not stop the merge as rows of another backend
    tried, done = tmp_path / "tried", tmp_path / "done"
    run(spec, tried, "--shard", "1/2")
    run(spec, done, "--shard", "2/2")
    journal = tried / "manifest.jsonl"
    refused = {"status": "refused", "backend": "fal", "server": "https://typo.x", "attempts": 0}
    journal.write_text(
        "".join(json.dumps({**record, **refused}) + "\n" for record in last_records(tried).values())
    )
    merged = tmp_path / "merged"
    assert main(["merge", str(tried), str(done), "--out", str(merged)]) == 0, capsys.readouterr()
    assert run(spec, merged) == 1  # the refused rows are sent by the merged folder's backend
    assert {r["backend"] for r in last_records(merged).values()} == {"local"}


def test_merge_says_to_go_on_in_the_merged_folder_when_a_part_is_not_finished(
    spec, tmp_path, capsys
):
    # the merged folder and a part resumed both would each send the rows neither finished
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    run(spec, p1, "--shard", "1/2")
    run(spec, p2, "--shard", "2/2")
    capsys.readouterr()
    assert main(["merge", str(p1), str(p2), "--out", str(tmp_path / "m1")]) == 0
    assert "note" not in capsys.readouterr().err  # both parts finished
    # a later run of p2 killed mid-way: a start line with no end, one row left submitted
    start = {**runs_lines(p2)[0], "run_id": "killed"}
    with (p2 / "runs.jsonl").open("a") as fh:
        fh.write(json.dumps(start) + "\n")
    key = next(iter(last_records(p2)))
    pending = {"key": key, "status": "submitted", "backend": "local", "request_id": "r-1"}
    with (p2 / "manifest.jsonl").open("a") as fh:
        fh.write(json.dumps({**pending, "attempts": 1, "possible_duplicates": 0}) + "\n")
    merged = tmp_path / "m2"
    assert main(["merge", str(p1), str(p2), "--out", str(merged)]) == 0
    err = capsys.readouterr().err
    assert f"the last run of {p2} stopped early" in err and "1 row is not finished" in err
    assert f"go on in {merged} (runner run SPEC --out {merged}), not in the folders merged" in err


def test_merge_refuses_a_folder_a_run_is_using(spec, tmp_path):
    from runner.errors import UsageError
    from runner.folder.lock import locked

    assert run(spec, tmp_path / "a") == 1  # the remote input's rows fail offline
    with locked(tmp_path / "merged"), pytest.raises(UsageError, match="in use by another run"):
        merge([tmp_path / "a"], tmp_path / "merged")


# A real `runner` command in a subprocess, with one function ("module:attr" or
# "module:Class.method") delayed on every call, so that a test can act while it is mid-way.
SLOWED = """
import importlib, sys, time
module, name = sys.argv[1].split(":")
owner = importlib.import_module(module)
*path, attr = name.split(".")
for part in path:
    owner = getattr(owner, part)
real = getattr(owner, attr)
def slow(*args, **kwargs):
    time.sleep(float(sys.argv[2]))
    return real(*args, **kwargs)
setattr(owner, attr, slow)
from runner.cli.commands import main
sys.exit(main(sys.argv[3:]))
"""


def start_slowed(target: str, delay: float, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SLOWED, target, str(delay), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


def kill_mid_way(proc: subprocess.Popen[str], parent: Path) -> None:
    """kill -9 once the command has started writing under `parent` (and is still going)."""
    wait_for(lambda: any(parent.iterdir()))
    time.sleep(0.3)
    assert proc.poll() is None, "the command finished before it could be killed"
    proc.kill()
    proc.communicate(timeout=10)


def fake_run(out: Path, rows: int) -> None:
    """A run folder of `rows` ok rows, each with its image, written without a run."""
    (out / "images").mkdir(parents=True)
    with (out / "manifest.jsonl").open("w") as journal:
        for i in range(rows):
            key = f"{i:016x}"
            (out / "images" / f"{key}-0.png").write_bytes(png_bytes(8, 6))
            output = {"file": f"images/{key}-0.png", "width": 8, "height": 6}
            record = {"key": key, "status": "ok", "backend": "local", "outputs": [output]}
            journal.write(json.dumps({**record, "input": {"seed": i}, "vars": {}}) + "\n")


def test_merge_refuses_a_source_a_run_holds_naming_it(spec, tmp_path, capsys):
    """Merging a folder a live run is writing would let a resume of the merge submit the
    rows that run is submitting: refused, naming the run like a second run's refusal does."""
    live = tmp_path / "live"
    fake_run(live, 2)
    merged = tmp_path / "merged"
    with locked(live):
        assert main(["merge", str(live), "--out", str(merged)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{live} is in use by another run (pid {os.getpid()} on " in err
    assert ", started " in err and "wait for it to finish, then merge it" in err
    assert not merged.exists()


def test_a_run_on_a_source_or_on_out_is_refused_while_a_merge_goes_on(write_spec, tmp_path, capsys):
    source, merged = tmp_path / "src", tmp_path / "dst" / "merged"
    fake_run(source, 40)
    merged.parent.mkdir()
    proc = start_slowed(
        "runner.folder.merge:_place", 0.05, "merge", str(source), "--out", str(merged)
    )
    wait_for(lambda: any(merged.parent.glob(".merged.partial-*")))
    spec = write_spec()
    for folder in (source, merged):
        assert run(spec, folder) == 2
        err = capsys.readouterr().err
        assert f"{folder} is in use by `runner merge` (pid {proc.pid} on " in err
    assert proc.poll() is None, "the merge finished before the runs were tried"
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert len(last_records(merged)) == 40


@pytest.mark.parametrize("spelling", ["./a", "a/", "link", "../here/a"])
def test_merge_refuses_one_folder_given_twice(spec, tmp_path, monkeypatch, capsys, spelling):
    here = tmp_path / "here"
    here.mkdir()
    fake_run(here / "a", 1)
    (here / "link").symlink_to(here / "a")
    monkeypatch.chdir(here)
    assert main(["merge", "a", spelling, "--out", "m"]) == 2
    err = capsys.readouterr().err
    assert f"are the same folder ({here / 'a'}); name each folder once" in err
    assert not (here / "m").exists()


def test_merge_refuses_out_inside_a_source_and_a_source_inside_out(tmp_path, capsys):
    fake_run(tmp_path / "a", 1)
    assert main(["merge", str(tmp_path / "a"), "--out", str(tmp_path / "a" / "m")]) == 2
    assert "is inside" in capsys.readouterr().err and not (tmp_path / "a" / "m").exists()
    (tmp_path / "b").mkdir()
    fake_run(tmp_path / "b" / "a", 1)
    assert main(["merge", str(tmp_path / "b" / "a"), "--out", str(tmp_path / "b")]) == 2
    assert "is inside --out" in capsys.readouterr().err


def test_folders_of_different_specs_are_merged_with_a_one_line_note(write_spec, tmp_path, capsys):
    first = write_spec("one.yaml", matrix={"seed": [1, 2, 3, 4, 5, 6]})
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert run(first, a, "--shard", "1/2") == 0 and run(first, b, "--shard", "2/2") == 0
    capsys.readouterr()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "ab")]) == 0
    assert "note" not in capsys.readouterr().err  # one spec, two shards
    assert run(write_spec("one.yaml", matrix={"seed": [7]}), c) == 0  # the spec, edited
    capsys.readouterr()
    assert main(["merge", str(a), str(c), "--out", str(tmp_path / "ac")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "note: the folders hold runs of different specs" in err
    assert f": {a})" not in err and f": {a}; " in err and f": {c})" in err


def test_a_killed_merge_leaves_no_run_folder_and_a_rerun_succeeds(tmp_path, capsys):
    source, merged = tmp_path / "src", tmp_path / "dst" / "merged"
    fake_run(source, 60)
    merged.parent.mkdir()
    proc = start_slowed(
        "runner.folder.merge:_place", 0.05, "merge", str(source), "--out", str(merged)
    )
    kill_mid_way(proc, merged.parent)
    assert not (merged / "manifest.jsonl").exists()  # absent: no command takes it for a run
    assert main(["report", str(merged)]) == 2
    assert (
        main(["export", str(merged), "--format", "jsonl", "--to", str(tmp_path / "x.jsonl")]) == 2
    )
    capsys.readouterr()
    assert main(["merge", str(source), "--out", str(merged)]) == 0
    assert "60 ok, 0 failed, 0 pending from 1 folder (60 images)" in capsys.readouterr().out
    assert sorted(p.name for p in merged.parent.iterdir()) == ["merged"]  # the partial is gone
    assert len(last_records(merged)) == 60


def test_merge_into_an_existing_empty_folder_but_not_the_working_folder(tmp_path, monkeypatch):
    fake_run(tmp_path / "a", 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["merge", str(tmp_path / "a"), "--out", str(empty)]) == 0
    assert len(last_records(empty)) == 1
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["merge", str(tmp_path / "a"), "--out", "."]) == 2
    assert not any(here.iterdir())
