import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import runner
from runner.errors import ManifestError
from runner.folder.journal import (
    FAILED,
    OK,
    SUBMITTED,
    SUBMITTING,
    Journal,
    KeyState,
    RunLine,
    append_run,
    encode,
    latest,
    read_records,
    read_runs,
)

from .conftest import last_records, png_bytes


def test_last_line_wins_and_state_survives_reopen(tmp_path):
    journal = Journal(tmp_path)
    journal.append({"key": "a", "status": SUBMITTED, "request_id": "r1", "attempts": 1})
    journal.append(
        {
            "key": "b",
            "status": FAILED,
            "attempts": 1,
            "error": {"type": "validation", "message": "x", "http_status": 422},
        }
    )
    journal.append({"key": "a", "status": OK, "request_id": "r1", "attempts": 1})
    journal.close()
    again = Journal(tmp_path)
    assert again.state("a").status == OK
    assert again.state("b").error_type == "validation"
    again.close()
    assert [r["status"] for r in latest(tmp_path).values()] == [OK, FAILED]
    assert all("time" in r for r in read_records(tmp_path))


def test_a_refused_run_leaves_no_empty_journal(tmp_path):
    Journal(tmp_path / "new").close(keep_empty=False)  # a run refused before its first line
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "manifest.jsonl").exists()
    Journal(tmp_path / "new").close()  # a run with no row to send (an empty shard) keeps it
    assert (tmp_path / "new" / "manifest.jsonl").read_bytes() == b""
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.jsonl").write_bytes(b"")  # there before: never removed
    Journal(tmp_path / "old").close(keep_empty=False)
    assert (tmp_path / "old" / "manifest.jsonl").exists()
    journal = Journal(tmp_path / "written")
    journal.append({"key": "a", "status": OK})
    journal.close(keep_empty=False)
    assert [r["key"] for r in read_records(tmp_path / "written")] == ["a"]


def test_torn_last_line_is_ignored_and_cut(tmp_path):
    journal = Journal(tmp_path)
    journal.append({"key": "a", "status": SUBMITTED, "request_id": "r1"})
    journal.close()
    with (tmp_path / "manifest.jsonl").open("ab") as fh:
        fh.write(b'{"key": "b", "status": "ok", "outp')  # kill -9 mid-write
    reopened = Journal(tmp_path)
    assert reopened.state("b") is None
    reopened.append({"key": "c", "status": OK})
    reopened.close()
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "c"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_a_manifest_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ManifestError, match="cannot write"):
            Journal(tmp_path / "out")
    finally:
        tmp_path.chmod(0o700)


def test_output_path_that_is_a_file_is_a_manifest_error(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(ManifestError, match="cannot write to the output folder"):
        Journal(tmp_path / "out")


def test_disk_full_is_a_manifest_error(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    journal = Journal(tmp_path)
    journal._fh.close()
    journal._fh = open("/dev/full", "ab")  # noqa: SIM115 - every write fails with ENOSPC
    with pytest.raises(ManifestError, match="No space left"):
        journal.append({"key": "a", "status": OK})
    journal.close()


def test_each_run_appends_one_line_to_the_runs_file(tmp_path):
    (tmp_path / "runs.jsonl").write_text('{"event":"start","run_id":"r0"}\n')  # an earlier run
    append_run(tmp_path, {"event": "start", "run_id": "r1", "spec_sha256": "abc"})
    append_run(tmp_path, {"event": "end", "run_id": "r1", "stop_reason": "café"})
    assert (tmp_path / "runs.jsonl").read_text(encoding="utf-8").splitlines() == [
        '{"event":"start","run_id":"r0"}',  # never rewritten
        '{"event":"start","run_id":"r1","spec_sha256":"abc"}',
        '{"event":"end","run_id":"r1","stop_reason":"café"}',  # one compact line, text as is
    ]


def test_a_runs_file_that_cannot_be_written_is_a_manifest_error(tmp_path):
    (tmp_path / "runs.jsonl").mkdir()  # unwritable, even for root
    with pytest.raises(ManifestError, match="cannot write .*runs.jsonl"):
        append_run(tmp_path, {"event": "start", "run_id": "r1"})


# -- lean lines ----------------------------------------------------------------------------
def _flight(key="00c0ffee00c0ffee", backend="fal"):
    from runner.execution.tracking import InFlight
    from runner.folder.journal import Record
    from runner.models import Request

    fixed: Record = {"endpoint": "fal-ai/x", "backend": backend, "run_id": "run-1"}
    if backend == "fal":
        fixed["server"] = "https://q.example:443"
    request = Request(key, {"prompt": "a cat", "seed": 1}, {"seed": 1})
    return InFlight(request, fixed)


def _state(folder, key):
    journal = Journal(folder)
    journal.close()
    return journal.state(key)


def _journey(flight):
    """The lines one request writes when its first result is lost and it is sent again."""
    from runner.execution.falapi import handle_for

    flight.attempts = 1
    yield flight.record(SUBMITTING)
    flight.handle, flight.submitted_at = handle_for("https://q", "fal-ai/x", "r-1"), "T1"
    yield flight.record(SUBMITTED)
    flight.handle = None
    flight.resubmitted.append("result no longer on the server (404): submitted again")
    flight.attempts = 2
    yield flight.record(SUBMITTING)
    flight.handle, flight.submitted_at = handle_for("https://q", "fal-ai/x", "r-2"), "T2"
    yield flight.record(SUBMITTED)
    outputs = [{"file": "images/00/x-0.png", "sha256": "s", "width": 1, "height": 1}]
    yield flight.record(OK, outputs=outputs, result={"seed": 1})


def test_only_the_first_line_of_a_run_carries_the_input(tmp_path):
    journal = Journal(tmp_path)
    for line in _journey(_flight()):
        journal.append(line)
    journal.close()
    lines = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [("input" in line, "vars" in line) for line in lines] == [(True, True)] + [
        (False, False)
    ] * 4
    for line in lines[1:]:  # every lean line still says the resume state
        assert {"backend", "server", "attempts", "possible_duplicates", "request_id"} <= line.keys()
        assert line["server"] == "https://q.example:443"
        assert "endpoint" not in line and "run_id" not in line
    assert list(lines[2])[:7] == [
        "key",
        "status",
        "backend",
        "server",
        "attempts",
        "possible_duplicates",
        "request_id",
    ]


def test_merged_lean_lines_equal_the_full_record(tmp_path):
    """Merged, a run's lean lines give the whole record, every field as last written."""
    flight, fulls = _flight(), []
    journal = Journal(tmp_path)
    for line in _journey(flight):
        fulls.append({**flight.base, **flight._journaled})
        journal.append(line)
    journal.close()
    merged = latest(tmp_path)["00c0ffee00c0ffee"]
    merged.pop("time")
    fulls[-1].pop("time", None)
    assert merged == fulls[-1]
    assert merged["attempts"] == 2 and merged["request_id"] == "r-2"
    assert merged["input"] == {"prompt": "a cat", "seed": 1} and merged["submitted_at"] == "T2"


def test_a_new_run_starts_the_record_afresh(tmp_path):
    journal = Journal(tmp_path)
    first = _flight(backend="local")
    first.attempts = 1
    journal.append(first.record(SUBMITTING))
    journal.append(first.record(FAILED, error={"type": "http", "message": "x", "http_status": 500}))
    second = _flight()
    second.attempts = 2
    journal.append(second.record(SUBMITTING))
    journal.close()
    record = latest(tmp_path)["00c0ffee00c0ffee"]
    assert record["status"] == SUBMITTING and "error" not in record
    assert record["backend"] == "fal"
    expected = KeyState(SUBMITTING, None, 2, 0, None, "fal", "https://q.example:443")
    assert _state(tmp_path, "00c0ffee00c0ffee") == expected


OLD_LAYOUT = [  # as the runner wrote it before lean lines: every line whole, input first
    '{"key":"a1a1a1a1a1a1a1a1","endpoint":"e","backend":"fal","run_id":"r","input":{"p":1},'
    '"vars":{},"status":"submitting","request_id":null,"attempts":1,"possible_duplicates":0,'
    '"time":"t"}',
    '{"key":"a1a1a1a1a1a1a1a1","endpoint":"e","backend":"fal","run_id":"r","input":{"p":1},'
    '"vars":{},"status":"submitted","request_id":"q1","attempts":1,"possible_duplicates":0,'
    '"submitted_at":"t","time":"t"}',
    '{"key":"b2b2b2b2b2b2b2b2","endpoint":"e","backend":"fal","run_id":"r","input":{"p":2},'
    '"vars":{},"status":"ok","request_id":"q2","attempts":3,"possible_duplicates":1,'
    '"outputs":[{"file":"images/b2b2b2b2b2b2b2b2-0.png"}],"time":"t"}',
    '{"key":"c3c3c3c3c3c3c3c3","endpoint":"e","backend":"local","run_id":"r","input":{"p":3},'
    '"vars":{},"status":"failed","request_id":"q3","attempts":1,"possible_duplicates":0,'
    '"error":{"type":"download","message":"m","http_status":null},"time":"t"}',
]


def test_old_layout_journals_still_read(tmp_path):
    (tmp_path / "manifest.jsonl").write_text("\n".join(OLD_LAYOUT) + "\n")
    journal = Journal(tmp_path)
    assert journal.state("a1a1a1a1a1a1a1a1") == KeyState(SUBMITTED, "q1", 1, 0, None, "fal")
    assert journal.state("b2b2b2b2b2b2b2b2") == KeyState(OK, None, 3, 1, None, "fal")
    assert journal.state("c3c3c3c3c3c3c3c3") == KeyState(FAILED, "q3", 1, 0, "download", "local")
    journal.close()
    records = latest(tmp_path)
    assert records["b2b2b2b2b2b2b2b2"]["outputs"][0]["file"] == "images/b2b2b2b2b2b2b2b2-0.png"
    assert [r["status"] for r in records.values()] == [SUBMITTED, OK, FAILED]


def test_torn_lean_line_is_ignored(tmp_path):
    journal = Journal(tmp_path)
    lines = list(_journey(_flight()))
    for line in lines[:2]:
        journal.append(line)
    journal.close()
    with (tmp_path / "manifest.jsonl").open("ab") as fh:
        fh.write(b'{"key":"00c0ffee00c0ffee","status":"ok","backend":"fal","attem')  # kill -9
    assert _state(tmp_path, "00c0ffee00c0ffee").status == SUBMITTED
    assert latest(tmp_path)["00c0ffee00c0ffee"]["request_id"] == "r-1"


def test_state_is_what_was_read_not_what_is_appended(tmp_path):
    journal = Journal(tmp_path)
    for line in _journey(_flight()):
        journal.append(line)
    assert journal.state("00c0ffee00c0ffee") is None  # not kept: memory stays flat
    journal.close()
    assert _state(tmp_path, "00c0ffee00c0ffee").status == OK


# The resume's fast reader must agree with the plain one (parse every line, merge) on any mix
# of lean lines, old-layout lines, odd keys and corrupt lines.
_KEYS = ["0123456789abcdef", "fedcba9876543210", "00000000000000ab", "a", "not-hex-key-16ch"]


@st.composite
def journals(draw):
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        key = draw(st.sampled_from(_KEYS))
        flight = _flight(key, backend=draw(st.sampled_from(["fal", "local"])))
        flight.attempts = draw(st.integers(0, 3))
        flight.duplicates = draw(st.integers(0, 2))
        steps = list(_journey(flight))[: draw(st.integers(1, 5))]
        if draw(st.booleans()):
            error = {"type": draw(st.sampled_from(["http", "download"])), "message": "m"}
            steps.append(flight.record(FAILED, error={**error, "http_status": None}))
        old = draw(st.booleans())
        for step in steps:
            step["time"] = "t"
            if old:  # the pre-lean layout: the whole record, input first
                text = json.dumps({**flight.base, **step}, separators=(",", ":"))
            else:
                text = encode(step).decode().rstrip("\n")
            lines.append(text)
        if draw(st.booleans()):
            lines.append('{"key": "' + key + '", "status": "ok"')  # corrupt, not torn
    return lines


@given(journals())
def test_resume_state_agrees_with_the_merged_records(tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("j")
    (folder / "manifest.jsonl").write_text("".join(line + "\n" for line in lines))
    records = latest(folder)
    journal = Journal(folder)
    for key in _KEYS:
        state = journal.state(key)
        if key not in records:
            assert state is None
            continue
        record = records[key]
        expected = KeyState(
            record["status"],
            record.get("request_id"),
            record.get("attempts", 0),
            record.get("possible_duplicates", 0),
            record["error"]["type"] if "error" in record else None,
            record.get("backend"),
            record.get("server"),
        )
        if state.status == OK:  # an ok row is never resumed: its request id is not kept
            expected = KeyState(OK, None, *expected[2:])
        assert state == expected
    journal.close()


def test_run_lines_read_back_past_torn_ones(tmp_path):
    assert read_runs(tmp_path) == []
    append_run(tmp_path, {"event": "start", "run_id": "r1"})
    with (tmp_path / "runs.jsonl").open("a") as fh:
        fh.write('{"event": "end", "run_id"\n[1]\n')  # a torn line; not an object
    append_run(tmp_path, {"event": "end", "run_id": "r1", "ok": 2})
    assert read_runs(tmp_path) == [
        {"event": "start", "run_id": "r1"},
        {"event": "end", "run_id": "r1", "ok": 2},
    ]


async def test_a_run_writes_only_the_fields_runline_defines(write_spec, tmp_path):
    checked = runner.check(write_spec(matrix={"seed": [1, 2]}))
    spec = checked.spec
    settings = runner.RunSettings(spec.endpoint, spec.backend, tmp_path / "out", spec.execution)
    await runner.run_requests(settings, runner.expand(spec, checked.endpoint))
    lines = read_runs(tmp_path / "out")
    assert [line["event"] for line in lines] == ["start", "end"]
    for line in lines:
        assert set(line) <= set(RunLine.__annotations__), set(line) - set(RunLine.__annotations__)


# -- input_files: a local input is traceable to its file --------------------------------------
async def _run_locally(spec, out):
    checked = runner.check(spec)
    spec = checked.spec
    settings = runner.RunSettings(spec.endpoint, spec.backend, out, spec.execution)
    return await runner.run_requests(settings, runner.expand(spec, checked.endpoint))


async def test_every_record_of_a_local_input_names_its_file(write_spec, tmp_path):
    """The path stands beside the sha256 that stands for the file in `input`, on the line
    that starts the record (lean lines inherit it when merged)."""
    (tmp_path / "images" / "b.png").write_bytes(png_bytes(20, 20, (0, 90, 200)))
    spec = write_spec(matrix={"image_url": {"files": "images/*.png"}})
    out = tmp_path / "out"
    assert (await _run_locally(spec, out)).ok == 2
    records = last_records(out)
    assert len(records) == 2
    for record in records.values():
        path = Path(record["input_files"]["image_url"])
        assert path.is_absolute() and path.parent == tmp_path / "images"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["input"]["image_url"] == f"sha256:{digest}"
    assert {Path(r["input_files"]["image_url"]).name for r in records.values()} == {
        "a.png",
        "b.png",
    }
    lines = (out / "manifest.jsonl").read_text().splitlines()
    full = [line for line in lines if '"input":' in line]
    assert len(full) == 2 and all('"input_files"' in line for line in full)


async def test_an_inline_or_remote_input_has_no_input_files(write_spec, tmp_path):
    inline = "data:image/png;base64,iVBORw0KGgo="
    spec = write_spec(matrix={"image_url": [inline, "https://example.invalid/x.png"]})
    out = tmp_path / "out"
    await _run_locally(spec, out)  # the offline emulator fails the remote row: still journaled
    records = list(last_records(out).values())
    assert len(records) == 2 and not any("input_files" in record for record in records)
