"""Spending: fal's megapixel rounding, the cap that refuses a run before anything is sent, and
what a folder has committed (in the summary line and OUT/stats.json)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import pytest

from runner.cli.commands import main
from runner.emulator import Faults
from runner.execution.run import run_requests
from runner.grid.plan import billed_megapixels

from .conftest import png_bytes
from .test_executor import last_records_or_none, settings_for


@pytest.mark.parametrize(
    ("size", "mp"),
    [((1, 1), 1), ((1024, 768), 1), ((1024, 1024), 1), ((1025, 1024), 2), ((1280, 1024), 2)],
)
def test_fal_bills_whole_megapixels_of_1024x1024(size, mp):
    assert billed_megapixels(*size) == mp


def test_plan_bills_a_1024_square_input_as_one_megapixel(write_spec, tmp_path, capsys):
    (tmp_path / "images" / "sq.png").write_bytes(png_bytes(1024, 1024))
    spec = write_spec(defaults={"image_url": "images/sq.png"}, matrix={"seed": [1, 2]})
    assert main(["plan", str(spec), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["estimated_megapixels"] == 2 and plan["estimated_usd"] == 0.05


def fal_run(spec, out, *extra):
    """`runner run --backend fal`, against the server the `fal_server` fixture started."""
    return main(["run", str(spec), "--out", str(out), "--no-progress", "--backend", "fal", *extra])


def test_a_run_over_its_cap_is_refused_with_nothing_sent(write_spec, tmp_path, fal_server, capsys):
    server = fal_server()
    # 12 rows of a 48x32 input: 12 MP at $0.025 = $0.30
    spec = write_spec(matrix={"seed": {"range": [1, 12]}}, limits={"max_usd": 0.25})
    out = tmp_path / "out"
    assert fal_run(spec, out) == 2
    err = capsys.readouterr().err
    assert "estimated cost $0.30 of the rows still to send (12 output megapixels)" in err
    assert "exceeds the spending cap $0.25" in err and "nothing was sent" in err
    assert sum(server.stats.requests.values()) == 0 and not out.exists()
    # --max-usd overrides the spec, both ways
    assert fal_run(spec, out, "--max-usd", "0.1") == 2
    assert sum(server.stats.requests.values()) == 0
    assert fal_run(spec, out, "--max-usd", "0.30") == 0
    assert server.stats.submissions == 12
    assert "about $0.30 spent (12 MP)" in capsys.readouterr().out


def test_the_cap_counts_only_this_shard_and_not_a_local_run(
    write_spec, tmp_path, fal_server, capsys
):
    server = fal_server()
    spec = write_spec(matrix={"seed": {"range": [1, 12]}}, limits={"max_usd": 0.25})
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0  # local: free
    assert "spent" not in capsys.readouterr().out
    assert fal_run(spec, tmp_path / "part", "--shard", "1/3") == 0
    assert 0 < server.stats.submissions < 10


def test_a_cap_must_be_positive(write_spec, capsys):
    for usd in (0, -1, float("inf"), float("nan"), "5"):
        spec = write_spec(limits={"max_usd": usd})
        assert main(["validate", str(spec)]) == 2
        err = capsys.readouterr().err
        assert "'max_usd' must be" in err or "is not a finite number" in err, err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(spec), "--max-usd", "0"])
    assert exit_info.value.code == 2


def test_the_cap_is_the_budget_of_the_output_folder_across_its_runs(
    write_spec, tmp_path, fal_server, capsys
):
    server = fal_server()
    out = tmp_path / "out"
    spec = write_spec(matrix={"seed": {"range": [1, 12]}})  # $0.30
    assert fal_run(spec, out, "--max-usd", "0.30") == 0
    # the job grows by 4 rows ($0.10 more): the cap must cover the $0.30 already paid too
    spec = write_spec(matrix={"seed": {"range": [1, 16]}})
    capsys.readouterr()
    assert fal_run(spec, out, "--max-usd", "0.25") == 2
    err = capsys.readouterr().err
    assert (
        "this folder has already committed $0.30 ($0.30 for outputs received) and the rows "
        "still to send are estimated at $0.10 (4 output megapixels): $0.40 in all exceeds the "
        "spending cap $0.25" in err
    )
    assert "nothing was sent" in err and server.stats.submissions == 12
    assert fal_run(spec, out, "--max-usd", "0.40") == 0
    assert server.stats.submissions == 16
    # a finished job resumes under any cap: it has nothing left to send
    assert fal_run(spec, out, "--max-usd", "0.01") == 0
    assert server.stats.submissions == 16
    spec = write_spec(matrix={"seed": {"range": [1, 24]}})  # 8 new rows: $0.20
    assert fal_run(spec, out, "--max-usd", "0.55") == 2
    assert "$0.60 in all exceeds the spending cap $0.55" in capsys.readouterr().err
    assert server.stats.submissions == 16


def test_possible_double_charges_count_against_the_cap_and_in_the_spend_shown(
    write_spec, tmp_path, fal_server, capsys
):
    # the server accepts every submission, but drops the connection after half of them: the
    # runner sends those again, and the first copy may have been charged too
    faults = Faults(p_drop_after_accept=0.5, routes=frozenset({"submit"}))
    server = fal_server(faults=faults, seed=3)
    spec = write_spec(matrix={"seed": {"range": [1, 20]}}, execution={"retries": 10})
    out = tmp_path / "out"
    assert fal_run(spec, out, "--max-usd", "0.50") == 3
    printed = capsys.readouterr()
    accepted = server.stats.submissions
    # every submission counted at its estimate (1 MP) as it went out: none passed the cap
    assert 10 < accepted <= 20
    assert "the spending cap $0.50 is reached: this folder has committed $0.50" in printed.err
    up_to = float(re.search(r"up to \$(\d+\.\d+) if every uncertain", printed.out)[1])
    assert up_to >= accepted * 0.025 - 1e-9  # what the server may bill is covered
    document = json.loads((out / "stats.json").read_text())
    assert document["estimated_usd_up_to"] == up_to and document["max_usd"] == 0.5
    assert accepted * 0.025 - 1e-9 <= document["committed_usd"] <= 0.5
    # the resume gets no fresh budget: the folder's $0.50 counts, nothing is sent
    assert fal_run(spec, out, "--max-usd", "0.50") == 2
    err = capsys.readouterr().err
    assert "this folder has already committed $0.50" in err and "may have been charged" in err
    assert server.stats.submissions == accepted
    assert fal_run(spec, out, "--max-usd", "5") == 0
    document = json.loads((out / "stats.json").read_text())
    assert document["committed_usd"] >= server.stats.submissions * 0.025 - 1e-9


def test_a_resume_counts_the_requests_accepted_before_it_was_interrupted(
    write_spec, tmp_path, fal_server, capsys
):
    server = fal_server(latency=4.0)  # 1 s a request at 10 steps: none done when interrupted
    spec = write_spec(matrix={"seed": {"range": [1, 8]}})
    out = tmp_path / "out"
    settings, requests = settings_for(spec, out, concurrency=8)

    async def interrupted() -> None:  # like a second Ctrl-C: the 8 stay `submitted`
        task = asyncio.create_task(run_requests(settings, requests, env=server.env()))
        async with asyncio.timeout(20):
            while [r["status"] for r in last_records_or_none(out)] != ["submitted"] * 8:
                await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    # 4 more rows: $0.10 to send, and $0.20 accepted before, which the resume receives
    spec = write_spec(matrix={"seed": {"range": [1, 12]}})
    assert fal_run(spec, out, "--max-usd", "0.15") == 2
    err = capsys.readouterr().err
    assert (
        "this folder has already committed $0.20 ($0.20 for 8 submissions that may have been "
        "charged without an output" in err
    )
    assert "estimated at $0.10 (4 output megapixels): $0.30 in all" in err
    assert server.stats.submissions == 8
    assert fal_run(spec, out, "--max-usd", "0.30") == 0
    assert server.stats.submissions == 12
    assert "12 ok, 0 failed; 4 submissions, 8 resumed, about $0.30 spent (12 MP) in" in (
        capsys.readouterr().out
    )
    assert json.loads((out / "stats.json").read_text())["committed_usd"] == 0.3


def _errors(out):
    """The error messages of the journal's failed lines, in order."""
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    return [x["error"]["message"] for x in lines if x.get("status") == "failed"]


def test_retry_failed_counts_a_failed_row_that_may_have_been_charged(
    write_spec, tmp_path, fal_server, capsys
):
    server = fal_server(latency=4.0)  # 1 s a request at 10 steps
    out = tmp_path / "out"
    # the row times out on a sync call (no request id to fetch it by): it may have been
    # charged, and --retry-failed can only send it again
    spec = write_spec(matrix={"seed": [1]}, execution={"timeout": 0.3, "mode": "sync"})
    assert fal_run(spec, out, "--max-usd", "1") == 1
    assert "about $0.00 spent (0 MP), up to $0.025 if every" in capsys.readouterr().out
    # a sync call has no request id: nothing was cancelled, and the record does not say so
    assert _errors(out) == ["no result within 0.3 s"]
    spec = write_spec(matrix={"seed": [1]}, execution={"timeout": 20, "mode": "sync"})
    assert fal_run(spec, out, "--max-usd", "0.01") == 1  # nothing to send without the option
    assert fal_run(spec, out, "--max-usd", "0.025", "--retry-failed") == 2
    assert "already committed $0.025 ($0.025 for 1 submission" in capsys.readouterr().err
    assert server.stats.run_calls == 1
    assert fal_run(spec, out, "--max-usd", "0.05", "--retry-failed") == 0
    printed = capsys.readouterr().out
    assert "1 submission, 1 possibly charged twice, about $0.025 spent (1 MP), up to $0.05" in (
        printed
    )
    assert server.stats.run_calls == 2


def test_retry_failed_fetches_timed_out_rows_the_server_completed_without_paying_again(
    write_spec, tmp_path, fal_server, capsys
):
    server = fal_server(latency=4.0)  # 1 s a request at 10 steps
    out = tmp_path / "out"
    # both rows time out while running: the cancel does not stop them, the server completes
    # them (and bills them)
    spec = write_spec(matrix={"seed": [1, 2]}, execution={"timeout": 0.3})
    assert fal_run(spec, out, "--max-usd", "1") == 1
    assert "2 of them accepted by the server" in capsys.readouterr().err
    assert _errors(out) == ["no result within 0.3 s (cancelled on the server)"] * 2
    spec = write_spec(matrix={"seed": [1, 2]}, execution={"timeout": 20})
    # what they may have cost ($0.05) is committed; fetching their results costs nothing more
    assert fal_run(spec, out, "--max-usd", "0.05", "--retry-failed") == 0
    printed = capsys.readouterr().out
    assert "2 resumed" in printed and "possibly charged twice" not in printed
    assert server.stats.submissions == 2


def test_a_failed_row_the_server_took_is_fetched_not_counted_as_a_row_to_send(
    write_spec, tmp_path, fal_server, capsys
):
    from dataclasses import replace

    # accepted, then every status call dropped: the row failed with its request id. With
    # --retry-failed it is polled, so the cap's check counts nothing more to send for it
    drops = Faults(p_drop=1.0, routes=frozenset({"status", "stream", "result"}))
    server = fal_server(faults=drops)
    out = tmp_path / "out"
    spec = write_spec(matrix={"seed": [1]}, execution={"retries": 0})
    assert fal_run(spec, out, "--max-usd", "1") == 1
    server.emulator._state.settings = replace(server.emulator._state.settings, faults=Faults())
    capsys.readouterr()
    # what it may have cost ($0.025) is committed; fetching its result costs nothing more
    assert fal_run(spec, out, "--max-usd", "0.025", "--retry-failed") == 0, capsys.readouterr()
    assert "1 resumed" in capsys.readouterr().out
    assert server.stats.submissions == 1


@pytest.mark.parametrize(
    "kind",
    ["transport", "http", "timeout", "download", "validation", "refused", "request_cancelled"]
    + ["queue_timeout", "runner_disconnected", "output", "output_lost", "ambiguous"],
)
@pytest.mark.parametrize("http_status", [None, 400, 404, 410, 422, 429, 500, 503])
def test_a_row_polled_by_request_id_counts_once_against_the_cap(kind, http_status):
    from runner.execution.spending import fetchable, may_be_charged, row_megapixels

    # polling pays nothing more, but what it fetches may have been charged once: the cap
    # counts such a row at its estimate until its outputs arrive
    if fetchable("failed", kind, http_status, "r1"):
        assert may_be_charged("failed", kind, attempts=1)
        assert row_megapixels("failed", 0, 3, error_type=kind, attempts=1) == 3


def test_a_folder_taken_past_its_cap_by_a_short_estimate_says_so(
    write_spec, tmp_path, fal_server, capsys
):
    # an input given as a URL is estimated at 1 MP; its output is 2 MP: the cap ($0.025)
    # let the one submission go, and what came back took the folder past it
    server = fal_server(max_side=4096)
    hosted = server.emulator._state.add_file(png_bytes(2048, 1024), "image/png", ext="png")
    url = f"{server.env()['FAL_QUEUE_URL']}/files/{hosted}"
    spec = write_spec(defaults={"image_url": url}, matrix={"seed": [1]})
    assert fal_run(spec, tmp_path / "out", "--max-usd", "0.025") == 0
    captured = capsys.readouterr()
    assert "about $0.05 spent (2 MP)" in captured.out
    assert "has committed $0.05, over its spending cap $0.025: outputs came back larger" in (
        captured.err
    )


def test_what_a_folder_has_paid_for_is_read_from_its_journal(tmp_path):
    from runner.endpoints import get_endpoint
    from runner.execution.decision import decide
    from runner.execution.spending import read_paid
    from runner.folder.journal import Journal, read_state
    from runner.grid.plan import Pricing

    out = tmp_path / "out"
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(2048, 1024))  # 2 MP
    (out / "inputs").mkdir(parents=True)
    inline = "ab" * 32
    (out / "inputs" / f"{inline}.png").write_bytes(png_bytes(1500, 1024))  # 2 MP
    fal = {"endpoint": "fal-ai/flux-1/dev/image-to-image", "backend": "fal", "server": "s"}
    sent = {"image_url": "sha256:" + "cd" * 32, "prompt": "p"}

    def row(n, status, dups=0, **more):
        line = {"key": f"{n:016x}", "status": status, **fal, "attempts": 1}
        line.update(possible_duplicates=dups, input=sent, input_files={"image_url": str(photo)})
        return {**line, **more}

    def ok(*sizes):
        return {
            "outputs": [
                {"file": "x.png", "width": w, "height": h, "content_type": "image/png"}
                for w, h in sizes
            ]
        }

    journal = Journal(out)
    for line in [
        row(1, "submitting"),  # sent, then answered with outputs of 2 MP and 1 MP
        {"key": f"{1:016x}", "status": "ok", **fal, "possible_duplicates": 1}
        | ok((1280, 1024), (1024, 1024)),
        row(2, "submitted", request_id="r2"),  # accepted, unanswered: its estimate, 2 MP
        row(3, "submitting", dups=1),  # may have been sent twice: 2 estimates
        row(4, "failed", error={"type": "timeout", "message": "", "http_status": None}),
        row(5, "failed", error={"type": "validation", "message": "", "http_status": 422}),
        row(6, "failed", dups=1, error={"type": "runner_disconnected", "message": ""}),
        row(7, "refused", error={"type": "refused", "message": "", "http_status": 429}),
        {**row(8, "submitted"), "input_files": {}, "input": {"image_url": f"sha256:{inline}"}},
        {**row(9, "submitted"), "input_files": {}, "input": {"image_url": "https://x/y.png"}},
        {**row(10, "ok"), "backend": "local", **ok((1024, 1024))},  # another backend's
        {**row(11, "submitted"), "server": "elsewhere"},  # another fal server's
        # every submission refused (connection refused): nothing went out
        {**row(14, "failed", error={"type": "transport", "message": ""}), "attempts": 0},
    ]:
        journal.append(line)
    journal.close()
    with (out / "manifest.jsonl").open("a") as fh:  # an ok line spelt by another tool
        fh.write(json.dumps({"key": f"{12:016x}", "status": "ok", **fal, **ok((3000, 1024))}))
        fh.write("\n")
    paid = read_paid(out, Pricing(get_endpoint(fal["endpoint"])), "fal", "s")
    assert paid.received == 3 + 3
    # row 1's duplicate at its outputs' size; 2, 3 (twice), 4, 6's duplicate at 2 MP each;
    # the inline input kept in OUT/inputs at 2 MP; a URL input of unknown size at 1 MP
    assert paid.uncertain == 3 + 2 + 4 + 2 + 2 + 2 + 1
    assert paid.submissions == 1 + 1 + 2 + 1 + 1 + 1 + 1
    states = read_state(out)

    def sends(n: int, retry_failed: bool = False) -> bool:  # what the cap counts ahead
        state = states[f"{n:016x}".encode()]
        ours = state.made_by("fal", "s")
        return decide(state, ours=ours, damaged=False, retry_failed=retry_failed).sends

    assert sends(3)  # sent again
    assert not sends(2)  # fetched
    assert sends(4, retry_failed=True)
    assert not sends(4)
    assert sends(11)
    # the folder read again: a line written since is counted
    journal = Journal(out)
    journal.append(row(13, "submitted", request_id="r13"))
    journal.close()
    again = read_paid(out, Pricing(get_endpoint(fal["endpoint"])), "fal", "s")
    assert again.uncertain == paid.uncertain + 2
