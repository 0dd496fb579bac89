"""The executor against the emulator over HTTP: happy path, resume, faults, deadlines."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner.cli.progress import in_flight_note, summary_line
from runner.emulator import Emulator, EmulatorSettings, Faults
from runner.execution.executor import UNREACHABLE_AFTER
from runner.execution.run import run_requests
from runner.execution.settings import RunSettings
from runner.execution.stops import StopKind
from runner.execution.tracking import RunStats
from runner.grid.expand import expand
from runner.models import GivenRow, Request
from runner.spec.check import check

from .conftest import closed_port, fal_env, last_records


def settings_for(spec: Path, out: Path, **execution: Any) -> tuple[RunSettings, list[Request]]:
    checked = check(spec, out=out)
    exe = replace(checked.spec.execution, **execution)
    settings = RunSettings(
        endpoint=checked.spec.endpoint,
        backend="fal",
        out=out,
        execution=exe,
        spec_path=str(spec),
        spec_sha256=checked.spec.sha256,
    )
    return settings, list(expand(checked.spec, checked.endpoint))


def last_records_or_none(out: Path) -> list[dict[str, Any]]:
    """The journal's last line per key, [] before it exists."""
    return list(last_records(out).values()) if (out / "manifest.jsonl").exists() else []


async def run(
    settings: RunSettings, requests: Any, emulator: Any, key: str = "test-key", **kw: Any
) -> RunStats:
    return await run_requests(settings, requests, env=fal_env(emulator, key), **kw)


async def test_all_ok_then_resume_sends_nothing(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 5]}, "strength": [0.5, 0.9]})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=4)
    stats = await run(settings, requests, em)
    assert (stats.ok, stats.failed, stats.submitted) == (12, 0, 12)
    records = last_records(tmp_path / "out")
    assert len(records) == 12 and all(r["status"] == "ok" for r in records.values())
    for record in records.values():
        for output in record["outputs"]:
            with Image.open(tmp_path / "out" / output["file"]) as img:
                assert img.size == (output["width"], output["height"])
    assert em.stats.submissions == 12

    again = await run(settings, requests, em)
    assert (again.skipped, again.submitted) == (12, 0)
    assert em.stats.submissions == 12


async def test_concurrency_limit_is_reached_and_holds_at_the_server(
    write_spec, emulator_factory, tmp_path
):
    # 0.5 s a request (10 steps): three submitted together are surely in progress together
    em = await emulator_factory(latency=2.0, concurrency=64)
    spec = write_spec(matrix={"seed": {"range": [0, 5]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=3)
    stats = await run(settings, requests, em)
    assert stats.ok == 6
    assert em.stats.max_in_progress == 3


async def test_one_status_stream_per_request(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(latency=1.0)
    spec = write_spec(matrix={"seed": {"range": [0, 3]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=4)
    await run(settings, requests, em)
    assert (em.stats.stream_calls, em.stats.status_calls) == (4, 0)


async def test_fault_storm_ends_all_ok_with_exactly_one_submission_each(
    write_spec, emulator_factory, tmp_path
):
    faults = Faults(p_429=0.15, p_500=0.05, p_503_ingress=0.05, p_drop=0.03)
    em = await emulator_factory(faults=faults, retry_after=0.2, seed=7)
    spec = write_spec(matrix={"seed": {"range": [0, 59]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=8, retries=10)
    stats = await run(settings, requests, em)
    assert stats.ok == 60 and stats.failed == 0
    assert em.stats.submissions == 60
    assert em.stats.duplicate_submissions == 0
    assert em.stats.faults_of("429") > 0 and em.stats.faults_of("drop") > 0
    assert stats.retrying > 0


async def test_ambiguous_submits_are_counted_or_refused(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(faults=Faults(p_drop_after_accept=0.3), seed=3)
    spec = write_spec(matrix={"seed": {"range": [0, 19]}})
    settings, requests = settings_for(spec, tmp_path / "out", retries=10)
    stats = await run(settings, requests, em)
    assert stats.ok == 20
    # every extra accepted submission is one the runner owned up to
    assert em.stats.submissions - 20 == stats.possible_duplicates > 0
    records = last_records(tmp_path / "out").values()
    assert sum(r["possible_duplicates"] for r in records) == stats.possible_duplicates
    for record in records:  # each possible double charge says why the row was sent again
        reasons = record.get("resubmitted", [])
        assert len(reasons) == record["possible_duplicates"]
        assert all("may have been accepted" in reason for reason in reasons)

    em2 = await emulator_factory(faults=Faults(p_drop_after_accept=1.0))
    strict = replace(settings, out=tmp_path / "strict", resubmit_ambiguous=False)
    stats = await run(strict, requests[:3], em2)
    assert stats.failed == 3 and em2.stats.submissions == 3
    for record in last_records(tmp_path / "strict").values():
        assert record["error"]["type"] == "ambiguous"


async def test_validation_error_recorded_once_not_retried(emulator_factory, write_spec, tmp_path):
    em = await emulator_factory()
    spec = write_spec()
    settings, requests = settings_for(spec, tmp_path / "out")
    bad = replace(
        requests[0], key="badbadbadbadbad0", input={**requests[0].input, "strength": 5}
    )  # skips our own validation
    stats = await run(settings, [bad], em)
    assert stats.failed == 1 and em.stats.submissions == 1
    record = last_records(tmp_path / "out")["badbadbadbadbad0"]
    assert record["status"] == "failed"
    assert record["error"]["type"] == "validation" and record["error"]["http_status"] == 422
    assert "strength" in record["error"]["message"]
    assert record["attempts"] == 1


async def test_infra_errors_are_resubmitted(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(faults=Faults(p_infra_error=0.3), seed=5)
    spec = write_spec(matrix={"seed": {"range": [0, 9]}})
    settings, requests = settings_for(spec, tmp_path / "out", retries=10)
    stats = await run(settings, requests, em)
    assert stats.ok == 10
    resubmitted = [r for r in last_records(tmp_path / "out").values() if r.get("resubmitted")]
    assert resubmitted and em.stats.submissions == 10 + sum(
        len(r["resubmitted"]) for r in resubmitted
    )


async def test_deadline_cancels_and_records_timeout(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(latency=30)
    spec = write_spec()
    settings, requests = settings_for(spec, tmp_path / "out", timeout=0.5)
    stats = await run(settings, requests, em)
    assert stats.failed == 1
    record = next(iter(last_records(tmp_path / "out").values()))
    assert record["error"]["type"] == "timeout"
    assert em.stats.cancels == 1


async def test_a_failing_status_endpoint_costs_a_bounded_number_of_calls(
    write_spec, emulator_factory, tmp_path
):
    faults = Faults(p_429=1.0, routes=frozenset({"status", "stream"}))
    em = await emulator_factory(faults=faults, retry_after=0.01)
    settings, requests = settings_for(write_spec(), tmp_path / "out", timeout=20)
    stats = await run(settings, requests, em)
    assert stats.failed == 1
    record = next(iter(last_records(tmp_path / "out").values()))
    assert (record["error"]["type"], record["error"]["http_status"]) == ("http", 429)
    # one stream, then status calls retried where they are made, never retried again on top
    calls = settings.execution.retries + 1
    assert (em.stats.requests["stream"], em.stats.requests["status"]) == (1, calls)


async def test_queue_timeout(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(queue_wait=30)
    spec = write_spec()
    settings, requests = settings_for(spec, tmp_path / "out", queue_timeout=0.5, timeout=20)
    stats = await run(settings, requests, em)
    assert stats.failed == 1
    record = next(iter(last_records(tmp_path / "out").values()))
    assert record["error"]["type"] == "queue_timeout"


async def test_interrupted_run_resumes_by_request_id(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(latency=4.0)  # 1 s a request: most are running when cancelled
    spec = write_spec(matrix={"seed": {"range": [0, 7]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=8)
    task = asyncio.create_task(run(settings, requests, em))
    out = tmp_path / "out"

    def all_accepted() -> bool:  # one that finished already, on a slow machine, counts too
        records = last_records_or_none(out)
        return len(records) == 8 and all(r["status"] in ("submitted", "ok") for r in records)

    async with asyncio.timeout(20):  # fails, not hangs, if the submissions never all land
        while not all_accepted():
            await asyncio.sleep(0.02)
    task.cancel()  # like a second Ctrl-C: in-flight requests stay `submitted`
    with pytest.raises(asyncio.CancelledError):
        await task
    waiting = [r for r in last_records(out).values() if r["status"] == "submitted"]
    assert waiting  # something to resume
    stats = await run(settings, requests, em)
    assert (stats.ok + stats.skipped, stats.resumed, stats.submitted) == (8, len(waiting), 0)
    assert em.stats.submissions == 8


async def test_a_stop_event_ends_submissions_and_lets_requests_in_flight_finish(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory(latency=2.0)  # 0.5 s a request at 10 steps
    spec = write_spec(matrix={"seed": {"range": [0, 9]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=2)
    stop = asyncio.Event()

    def on_event(event: str, stats: RunStats) -> None:
        if event == "ok":
            stop.set()  # as the first Ctrl-C does

    stats = await run(settings, requests, em, stop=stop, on_event=on_event)
    assert stats.interrupted and stats.ok == em.stats.submissions < 10
    assert {r["status"] for r in last_records(tmp_path / "out").values()} == {"ok"}


async def test_a_stop_says_a_row_whose_submission_got_no_answer_is_sent_again(
    write_spec, emulator_factory, tmp_path
):
    # The server takes every submission and drops the connection before answering: the row
    # has no request id to poll, so the next run must send it again (a possible double charge)
    em = await emulator_factory(faults=Faults(p_drop_after_accept=1.0))
    spec = write_spec(matrix={"seed": [1]})
    settings, requests = settings_for(spec, tmp_path / "out", retries=3)
    stop = asyncio.Event()

    def on_event(event: str, stats: RunStats) -> None:
        if event == "retrying":
            stop.set()  # a first Ctrl-C while the lost submission waits to be sent again

    stats = await run(settings, requests, em, stop=stop, on_event=on_event)
    assert stats.interrupted and stats.in_flight_at_stop == 1
    assert [r["status"] for r in last_records(tmp_path / "out").values()] == ["submitting"]
    note = in_flight_note(stats)
    assert "journaled as submitted" not in note, note
    assert "1 got no answer to its submission (the next run sends it again, counted as " in note
    line = summary_line(stats, tmp_path / "out", 1.0, total=1)
    assert line.startswith("1 request: 0 ok, 0 failed, 1 sent without an answer;"), line


async def test_sync_mode(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": [1, 2]})
    settings, requests = settings_for(spec, tmp_path / "out", mode="sync")
    stats = await run(settings, requests, em)
    assert stats.ok == 2 and em.stats.run_calls == 2 and em.stats.submissions == 0


async def test_rate_limit(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 5]}})
    settings, requests = settings_for(spec, tmp_path / "out", rate=10, concurrency=6)
    await run(settings, requests, em)
    # When the server took each submission, not how long the run took: six workers with no
    # rate would send all six within milliseconds. The gate spaces them 0.1 s apart; a gap
    # may shrink by what the loopback delays, hence 0.4 s over the five gaps, not 0.5 s.
    arrived = sorted(queued.submitted_at for queued in em.state.by_id.values())
    assert len(arrived) == 6 and arrived[-1] - arrived[0] >= 0.4, arrived


async def test_large_local_file_is_uploaded(write_spec, emulator_factory, tmp_path, monkeypatch):
    import runner.execution.attachments as attachments

    monkeypatch.setattr(attachments, "DATA_URI_MAX_BYTES", 10)
    em = await emulator_factory()
    spec = write_spec()
    settings, requests = settings_for(spec, tmp_path / "out")
    stats = await run(settings, requests, em)
    assert stats.ok == 1 and em.stats.uploads == 1


async def test_one_large_file_is_uploaded_once_for_all_its_requests(
    write_spec, emulator_factory, tmp_path, monkeypatch
):
    import runner.execution.attachments as attachments

    monkeypatch.setattr(attachments, "DATA_URI_MAX_BYTES", 10)
    em = await emulator_factory(latency=0.2)
    spec = write_spec(matrix={"seed": {"range": [1, 6]}})  # six rows, one image
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=6)
    stats = await run(settings, requests, em)
    assert stats.ok == 6 and em.stats.uploads == 1


async def test_disk_full_mid_run_stops_with_a_resumable_journal(
    write_spec, emulator_factory, tmp_path, monkeypatch
):
    import errno

    import runner.folder.journal as journal_module
    from runner.execution.stops import StopKind

    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 9]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=2)
    real_write, lines = journal_module._write_all, []

    def write_all(fh, data):
        if fh.name.endswith("manifest.jsonl"):
            lines.append(data)
            if len(lines) > 6:  # the disk fills up after six lines
                raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fh, data)

    monkeypatch.setattr(journal_module, "_write_all", write_all)
    stats = await run(settings, requests, em)  # a stop, not an exception
    assert stats.stop is not None and stats.stop.kind is StopKind.CANNOT_WRITE
    assert "No space left on device" in stats.stop.reason and "manifest.jsonl" in stats.stop.reason
    # what the summary says of the rows in flight is what their journal says
    states = [r["status"] for r in last_records(tmp_path / "out").values()]
    assert stats.unfinished == states.count("submitted")
    assert stats.unanswered == states.count("submitting")
    assert stats.submitted == em.stats.submissions  # a line not written sent nothing
    monkeypatch.setattr(journal_module, "_write_all", real_write)
    stats = await run(settings, requests, em)  # space is back: the same command resumes
    assert stats.ok + stats.skipped == 10
    assert em.stats.duplicate_submissions <= 2  # only submits caught mid-journal can repeat


async def test_an_output_that_cannot_be_saved_stops_the_run_and_is_fetched_on_resume(
    write_spec, emulator_factory, tmp_path, monkeypatch
):
    import errno

    import runner.execution.executor as executor_module
    from runner.errors import cannot_write
    from runner.execution.stops import StopKind

    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 9]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=1)
    real_save, saved = executor_module.save_image, []

    def save_image(out_dir, key, index, data):
        if len(saved) == 3:
            raise cannot_write(out_dir / key, OSError(errno.ENOSPC, "No space left on device"))
        saved.append(key)
        return real_save(out_dir, key, index, data)

    monkeypatch.setattr(executor_module, "save_image", save_image)
    stats = await run(settings, requests, em)
    assert stats.stop is not None and stats.stop.kind is StopKind.CANNOT_WRITE
    assert (stats.ok, stats.unfinished, em.stats.submissions) == (3, 1, 4)
    monkeypatch.setattr(executor_module, "save_image", real_save)
    stats = await run(settings, requests, em)
    # the paid result is fetched by its request id, not paid again
    assert (stats.skipped, stats.resumed, stats.ok) == (3, 1, 7)
    assert em.stats.submissions == 10 and em.stats.duplicate_submissions == 0


async def test_a_result_the_server_lost_is_resubmitted_and_recorded(
    write_spec, emulator_factory, tmp_path
):
    from runner.folder.journal import SUBMITTED, Journal

    em = await emulator_factory()
    spec = write_spec()
    settings, requests = settings_for(spec, tmp_path / "out")
    journal = Journal(tmp_path / "out")  # an earlier run got this id, long ago
    journal.append(
        {"key": requests[0].key, "status": SUBMITTED, "request_id": "gone-0001", "attempts": 1}
    )
    journal.close()
    stats = await run(settings, requests, em)
    assert stats.ok == 1 and stats.resumed == 1 and em.stats.submissions == 1
    record = last_records(tmp_path / "out")[requests[0].key]
    assert record["attempts"] == 2
    assert "no longer on the server" in record["resubmitted"][0]
    # the lost result was most likely billed: the new submission may pay twice
    assert record["possible_duplicates"] == stats.possible_duplicates == 1
    assert em.stats.stream_calls == 2  # an unknown request id does not turn the stream off


async def test_a_lost_result_counts_a_double_charge_only_once_it_is_sent_again(
    write_spec, emulator_factory, tmp_path
):
    from runner.folder.journal import SUBMITTED, Journal

    em = await emulator_factory()
    spec = write_spec()
    settings, requests = settings_for(spec, tmp_path / "out")
    journal = Journal(tmp_path / "out")  # an earlier run got this id, long ago
    journal.append(
        {"key": requests[0].key, "status": SUBMITTED, "request_id": "gone-0001", "attempts": 1}
    )
    journal.close()
    stop = asyncio.Event()

    def on_event(event: str, stats: RunStats) -> None:
        if event == "retrying":
            stop.set()  # a first Ctrl-C before the new submission goes out

    stats = await run(settings, requests, em, stop=stop, on_event=on_event)
    assert em.stats.submissions == 0 and stats.submitted == 0
    assert stats.possible_duplicates == 0  # nothing was sent again: nothing may pay twice
    record = last_records(tmp_path / "out")[requests[0].key]
    assert record["status"] == "submitted" and record.get("possible_duplicates", 0) == 0


async def test_stalled_responses_do_not_hang_the_run(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(faults=Faults(p_stall=0.3), stall=0.3, seed=11)
    spec = write_spec(matrix={"seed": {"range": [0, 9]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=4)
    stats = await asyncio.wait_for(run(settings, requests, em), 30)
    assert stats.ok == 10 and em.stats.faults_of("stall") > 0
    assert em.stats.submissions == 10


async def test_a_local_input_removed_after_validation_stops_the_run(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory()
    spec = write_spec()
    settings, requests = settings_for(spec, tmp_path / "out")
    (tmp_path / "images" / "a.png").unlink()
    stats = await run(settings, requests, em)
    assert stats.failed == 0 and em.stats.submissions == 0
    assert stats.stop_reason is not None and "a.png" in stats.stop_reason


async def test_a_refused_key_charges_nothing_and_counts_no_duplicate(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory(keys=frozenset({"right"}))
    spec = write_spec(matrix={"seed": {"range": [0, 4]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=4)
    stopped = await run(settings, requests, em, key="wrong")
    assert stopped.stop is not None and stopped.stop.kind is StopKind.REFUSED_KEY
    statuses = [r["status"] for r in last_records(tmp_path / "out").values()]
    assert "submitting" not in statuses and statuses == ["refused"]
    stats = await run(settings, requests, em, key="right")  # the key is fixed
    assert stats.ok == 5 and stats.possible_duplicates == 0 and stats.submitted == 5
    for record in last_records(tmp_path / "out").values():
        assert (record["attempts"], record["possible_duplicates"]) == (1, 0)


async def test_429_refusals_are_counted_apart_from_attempts(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(faults=Faults(p_429=0.4), retry_after=0.01, seed=5)
    spec = write_spec(matrix={"seed": {"range": [0, 9]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=4, retries=20)
    stats = await run(settings, requests, em)
    refused = stats.refused["429"]
    assert stats.ok == 10 and refused > 0 and stats.possible_duplicates == 0
    assert stats.submitted == em.stats.submissions == 10
    assert stats.submissions == 10 + refused
    for record in last_records(tmp_path / "out").values():
        assert (record["attempts"], record["possible_duplicates"]) == (1, 0)


async def test_resuming_in_sync_mode_polls_queued_rows(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(latency=1.0)
    spec = write_spec(matrix={"seed": {"range": [0, 3]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=4)
    task = asyncio.create_task(run(settings, requests, em))
    while em.stats.submissions < 4:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sync = replace(settings, execution=replace(settings.execution, mode="sync"))
    stats = await run(sync, requests, em)
    assert stats.ok == 4 and stats.resumed == 4 and stats.submitted == 0
    assert em.stats.submissions == 4 and em.stats.run_calls == 0


async def test_another_backends_row_is_never_done(write_spec, emulator_factory, tmp_path):
    """The row-level rule, under the folder-level refusal: a record made by another backend
    is not this row's result, even when the executor is handed such a journal."""
    import aiohttp

    from runner.execution.executor import Executor
    from runner.execution.falapi import FalClient, ServerConfig
    from runner.folder.journal import Journal

    em = await emulator_factory()
    spec = write_spec(matrix={"seed": [1, 2]})
    settings, requests = settings_for(spec, tmp_path / "out")
    local = replace(settings, backend="local")
    await run_requests(local, requests)  # the embedded emulator made these two rows
    assert {r["backend"] for r in last_records(tmp_path / "out").values()} == {"local"}
    journal = Journal(tmp_path / "out")
    config = ServerConfig(em.queue_url, em.run_url, em.queue_url, "k")
    try:
        async with aiohttp.ClientSession() as session:
            executor = Executor(FalClient(session, config), journal, settings, "r1")
            stats = await executor.run(GivenRow(r) for r in requests)
    finally:
        journal.close()
    assert (stats.skipped, stats.ok, em.stats.submissions) == (0, 2, 2)


async def test_a_request_that_cannot_be_built_is_refused_never_left_submitting(
    write_spec, emulator_factory, tmp_path
):
    # a URL the environment check would refuse, handed to the executor directly: the client
    # cannot build the request, so nothing is sent and nothing may count as maybe-charged
    import aiohttp

    from runner.execution.executor import Executor
    from runner.execution.falapi import FalClient, ServerConfig
    from runner.folder.journal import Journal

    em = await emulator_factory()
    bad = em.queue_url.replace("http://", "http://me:pw-0451@")
    spec = write_spec(matrix={"seed": [1, 2]})
    settings, requests = settings_for(spec, tmp_path / "out")
    journal = Journal(tmp_path / "out")
    try:
        async with aiohttp.ClientSession() as session:
            client = FalClient(session, ServerConfig(bad, bad, bad, "k"))
            stats = await Executor(client, journal, settings, "r1").run(
                GivenRow(r) for r in requests
            )
    finally:
        journal.close()
    assert em.stats.submissions == 0 and sum(em.stats.requests.values()) == 0
    assert stats.submitted == 0 and stats.possible_duplicates == 0 and stats.failed == 2
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    for line in lines:  # every submitting line is followed by its refusal
        assert "pw-0451" not in json.dumps(line)
    for record in last_records(tmp_path / "out").values():
        assert record["status"] == "failed" and "not sent" in record["error"]["message"]
        assert (record["attempts"], record["possible_duplicates"]) == (0, 0)
    statuses = [line["status"] for line in lines]
    assert statuses.count("submitting") == statuses.count("refused") == 2


@pytest.mark.parametrize("mode", ["queue", "sync"])
async def test_submissions_forbid_model_fallbacks_unless_the_spec_allows_them(
    write_spec, emulator_factory, tmp_path, mode
):
    # an image from an "equivalent" other model would be a silent wrong result in a sweep
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": [1, 2]})
    settings, requests = settings_for(spec, tmp_path / "strict", mode=mode)
    assert (await run(settings, requests, em)).ok == 2
    assert em.stats.platform_headers[("x-fal-disable-fallbacks", "true")] == 2
    allowed, _ = settings_for(spec, tmp_path / "allowed", mode=mode, allow_fallbacks=True)
    assert (await run(allowed, requests, em)).ok == 2
    # the allowed run's two submissions carried no platform header at all
    assert sum(em.stats.platform_headers.values()) == 2


async def test_a_run_never_sends_more_than_the_validated_count(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 9]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=3)
    stats = await run(replace(settings, validated_requests=4), requests, em)
    assert stats.ok == 4 and em.stats.submissions == 4


async def test_a_key_revoked_mid_run_leaves_nothing_maybe_sent(
    write_spec, emulator_factory, tmp_path
):
    # every call stalls a little: at the revocation several submissions are under way
    em = await emulator_factory(keys=frozenset({"test-key"}), faults=Faults(p_stall=1.0), stall=0.3)
    spec = write_spec(matrix={"seed": {"range": [0, 11]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=6)
    task = asyncio.create_task(run(settings, requests, em))
    while em.stats.submissions < 3:
        await asyncio.sleep(0.01)
    em._state.settings = replace(em._state.settings, keys=frozenset({"new"}))  # revoked
    stopped = await asyncio.wait_for(task, 10)
    assert stopped.stop is not None and stopped.stop.kind is StopKind.REFUSED_KEY
    records = last_records(tmp_path / "out").values()
    # every row is refused (nothing charged) or submitted (polled next time); none "maybe"
    assert {r["status"] for r in records} <= {"submitted", "refused", "ok"}
    # the key back, and no more stalls: the resume only has to show nothing is sent twice
    em._state.settings = replace(em._state.settings, keys=frozenset({"test-key"}), faults=Faults())
    stats = await run(settings, requests, em)
    assert stats.ok + stats.skipped == 12 and stats.possible_duplicates == 0
    assert em.stats.duplicate_submissions == 0


async def test_an_unreachable_server_stops_the_run_and_the_same_run_resumes(write_spec, tmp_path):
    # nobody listens yet: a few refused connections stop the run, nothing is marked failed
    port = closed_port()
    spec = write_spec(matrix={"seed": {"range": [0, 49]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=8)
    url = f"http://127.0.0.1:{port}"
    env = {"FAL_KEY": "k", "FAL_QUEUE_URL": url, "FAL_RUN_URL": url, "FAL_REST_URL": url}
    started = time.monotonic()
    stopped = await run_requests(settings, requests, env=env)
    assert time.monotonic() - started < 5
    assert stopped.stop is not None and stopped.stop.kind is StopKind.UNREACHABLE
    assert f"cannot connect to {url}: connection refused" in stopped.stop.reason
    records = last_records(tmp_path / "out")
    assert len(records) == UNREACHABLE_AFTER  # one refused submission each, the rest untouched
    for record in records.values():
        assert record["status"] == "refused" and "connection refused" in record["error"]["message"]
        assert (record["attempts"], record["possible_duplicates"]) == (0, 0)
    # the server is back at that address: the same run sends every row once, as new
    em = Emulator(EmulatorSettings())
    await em.start(port=port)
    try:
        stats = await run_requests(settings, requests, env=fal_env(em, "k") | env)
    finally:
        await em.stop()
    assert stats.ok == 50 and stats.possible_duplicates == 0 and stats.failed == 0


async def test_a_name_that_does_not_resolve_stops_the_run(write_spec, tmp_path, no_dns):
    spec = write_spec(matrix={"seed": {"range": [0, 19]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=4)
    url = "https://queue.fal.invalid"
    env = {"FAL_KEY": "k", "FAL_QUEUE_URL": url, "FAL_RUN_URL": url, "FAL_REST_URL": url}
    stopped = await run_requests(settings, requests, env=env)
    assert stopped.stop is not None and stopped.stop.kind is StopKind.UNREACHABLE
    said = stopped.stop.reason
    assert "cannot connect to https://queue.fal.invalid:443: name not resolved" in said
    assert "refused" not in said
    records = last_records(tmp_path / "out").values()
    assert {r["status"] for r in records} == {"refused"}
    assert all(r["error"]["message"].endswith("name not resolved") for r in records)


async def test_an_untrusted_tls_certificate_stops_the_run(write_spec, tmp_path, monkeypatch):
    import ssl

    import trustme

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the test CA is trusted by no one
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    em = Emulator(EmulatorSettings())
    await em.start(ssl_context=context)
    try:
        spec = write_spec(matrix={"seed": {"range": [0, 9]}})
        settings, requests = settings_for(spec, tmp_path / "out")
        stopped = await run_requests(settings, requests, env=fal_env(em))
        assert stopped.stop is not None and stopped.stop.kind is StopKind.UNREACHABLE
        assert "TLS certificate not trusted" in stopped.stop.reason
        assert em.stats.submissions == 0
    finally:
        await em.stop()
    assert {r["status"] for r in last_records(tmp_path / "out").values()} == {"refused"}


async def test_resumed_requests_of_an_unreachable_server_stay_submitted(write_spec, tmp_path):
    # accepted earlier, and now no status call can connect: the run stops, nothing is failed
    port = closed_port()
    em = Emulator(EmulatorSettings(latency=4.0))
    await em.start(port=port)
    spec = write_spec(matrix={"seed": {"range": [0, 2]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=3, retries=1)
    env = fal_env(em)
    task = asyncio.create_task(run_requests(settings, requests, env=env))
    try:
        while em.stats.submissions < 3:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await em.stop()
    stopped = await asyncio.wait_for(run_requests(settings, requests, env=env), 30)
    assert stopped.stop is not None and stopped.stop.kind is StopKind.UNREACHABLE
    assert "connection refused" in stopped.stop.reason
    assert {r["status"] for r in last_records(tmp_path / "out").values()} == {"submitted"}


async def test_connect_failures_after_the_server_answered_keep_the_retry_rules(
    write_spec, threaded_emulator, tmp_path
):
    # the server answers the first row, then goes away: the later rows fail after their
    # retries, as before (the run does not stop), each saying why it could not connect
    server = threaded_emulator()
    spec = write_spec(matrix={"seed": {"range": [0, 3]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=1, retries=1)
    first, *rest = requests

    def rows():
        yield first
        stop = asyncio.run_coroutine_threadsafe(server.emulator.stop(), server._loop)
        stop.result(10)
        yield from rest

    stats = await asyncio.wait_for(run_requests(settings, rows(), env=server.env()), 30)
    assert stats.ok == 1 and stats.failed == 3 and stats.refused["connection refused"] >= 5
    failed = [r for r in last_records(tmp_path / "out").values() if r["status"] == "failed"]
    assert len(failed) == 3
    for record in failed:
        assert record["error"]["type"] == "transport"
        assert record["error"]["message"].endswith("connection refused")
        assert record["possible_duplicates"] == 0


async def test_a_failed_upload_fails_its_row_not_the_run(
    write_spec, emulator_factory, tmp_path, monkeypatch
):
    import runner.execution.attachments as attachments

    monkeypatch.setattr(attachments, "DATA_URI_MAX_BYTES", 10)
    em = await emulator_factory()
    spec = write_spec()
    settings, requests = settings_for(spec, tmp_path / "out")
    # the storage host answers, but not to storage calls (404 on both upload routes)
    env = {**fal_env(em), "FAL_REST_URL": f"{em.queue_url}/no-storage-here"}
    stats = await run_requests(settings, requests, env=env)
    assert stats.failed == 1 and em.stats.submissions == 0
    record = next(iter(last_records(tmp_path / "out").values()))
    assert record["error"]["type"] == "upload"


async def test_an_unreachable_storage_host_stops_the_run(
    write_spec, emulator_factory, tmp_path, monkeypatch
):
    import runner.execution.attachments as attachments

    monkeypatch.setattr(attachments, "DATA_URI_MAX_BYTES", 10)
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 9]}})
    settings, requests = settings_for(spec, tmp_path / "out")
    rest = f"http://127.0.0.1:{closed_port()}"
    stopped = await run_requests(settings, requests, env={**fal_env(em), "FAL_REST_URL": rest})
    assert stopped.stop is not None and stopped.stop.kind is StopKind.UNREACHABLE
    assert f"cannot connect to {rest}: connection refused" in stopped.stop.reason
    assert em.stats.submissions == 0
    assert not (tmp_path / "out" / "manifest.jsonl").exists() or not last_records(tmp_path / "out")


async def test_the_spending_cap_holds_at_run_time_when_the_estimate_was_short(
    write_spec, emulator_factory, tmp_path
):
    # the estimate counts what it can see; the outputs received are what fal bills
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [1, 6]}})  # 1 MP each: $0.025 a request
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=1)
    stats = await run(replace(settings, max_usd=0.05), requests, em)
    assert stats.ok == 2 and em.stats.submissions == 2
    assert stats.stop_reason is not None and "spending cap $0.05 is reached" in stats.stop_reason


async def test_requests_in_flight_count_against_the_cap_at_their_estimate(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory(latency=2.0)  # 0.5 s a request: 8 go out before any is done
    spec = write_spec(matrix={"seed": {"range": [1, 20]}})  # 1 MP each: $0.025 a request
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=8)
    stats = await run(replace(settings, max_usd=0.1), requests, em)
    assert em.stats.submissions == stats.ok == 4 and stats.committed_megapixels == 4
    assert stats.stop_reason is not None and "spending cap $0.10 is reached" in stats.stop_reason


async def test_retry_failed_flags_a_row_only_when_its_failure_may_have_been_charged(
    write_spec, emulator_factory, tmp_path
):
    from runner.execution.http import origin
    from runner.folder.journal import Journal

    em = await emulator_factory()
    spec = write_spec(matrix={"seed": [1, 2, 3]})
    out = tmp_path / "out"
    settings, requests = settings_for(spec, out)
    journal = Journal(out)
    failures = [
        ("transport", 0),  # every submission refused (connection refused): nothing went out
        ("transport", 1),  # sent, and no answer came: it may have run and been billed
        ("runner_disconnected", 1),  # an infrastructure failure, which fal does not bill
    ]
    for request, (kind, attempts) in zip(requests, failures, strict=True):
        journal.append(
            {
                "key": request.key,
                "status": "failed",
                "backend": "fal",
                "server": origin(em.queue_url),
                "attempts": attempts,
                "possible_duplicates": 0,
                "error": {"type": kind, "message": "", "http_status": None},
                "input": dict(request.input),
            }
        )
    journal.close()
    stats = await run(replace(settings, retry_failed=True), requests, em)
    assert stats.ok == 3 and stats.possible_duplicates == 1 and em.stats.submissions == 3
    dups = [last_records(out)[r.key]["possible_duplicates"] for r in requests]
    assert dups == [0, 1, 0]


async def test_retry_failed_sends_a_timed_out_row_again_unflagged_when_it_never_left_the_queue(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory(queue_wait=30)  # still queued when its deadline cancels it
    out = tmp_path / "out"
    settings, requests = settings_for(write_spec(), out, timeout=0.3, queue_timeout=60)
    assert (await run(settings, requests, em)).failed == 1
    record = last_records(out)[requests[0].key]
    assert record["error"]["type"] == "timeout" and record["request_id"]
    em._state.settings = replace(em._state.settings, queue_wait=0.0)
    # polled first: the server says it was cancelled before it ran (never billed), so it is
    # sent again as new, not counted as a possible double charge
    stats = await run(replace(settings, retry_failed=True), requests, em)
    assert (stats.ok, stats.resumed, stats.possible_duplicates) == (1, 1, 0)
    assert em.stats.submissions == 2
    record = last_records(out)[requests[0].key]
    assert record["possible_duplicates"] == 0
    assert record["resubmitted"] == [
        "cancelled on the server before it ran (an earlier deadline): submitted again"
    ]


async def test_retry_failed_polls_an_http_failure_and_resubmits_an_unbilled_server_failure_once(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory(faults=Faults(p_infra_error=1.0))  # every request: an infra error
    out = tmp_path / "out"
    settings, requests = settings_for(write_spec(), out, retries=0)
    assert (await run(settings, requests, em)).failed == 1
    # the row as a run records it when every result it got was a 5xx: type http
    manifest = out / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace('"runner_disconnected"', '"http"'))
    assert last_records(out)[requests[0].key]["error"]["type"] == "http"
    retry = replace(settings, retry_failed=True, execution=replace(settings.execution, retries=1))
    stats = await run(retry, requests, em)
    # polled (nothing sent), its result the same unbilled failure: submitted again once, not
    # flagged, then recorded as that failure; the next --retry-failed sends it as new
    assert (stats.failed, stats.resumed, stats.submitted, stats.possible_duplicates) == (1, 1, 1, 0)
    record = last_records(out)[requests[0].key]
    assert record["error"]["type"] == "runner_disconnected" and record["possible_duplicates"] == 0
    stats = await run(retry, requests, em)
    assert (stats.resumed, stats.submitted, stats.possible_duplicates) == (0, 2, 0)
    assert em.stats.submissions == 4
