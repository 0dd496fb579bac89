"""What a run shows: the progress bar (progress.Progress) and the summary line
(progress.summary_line), rows apart from submissions."""

from __future__ import annotations

import sys
from pathlib import Path

from runner.cli.progress import Progress, in_flight_note, summary_line
from runner.execution.tracking import RunStats


def test_the_summary_counts_the_rows_a_stopped_run_did_not_reach():
    stats = RunStats(ok=2, skipped=1, submitted=2)
    line = summary_line(stats, Path("out"), 1.0, total=5)  # a run's, or a shard's, row count
    assert line.startswith("5 requests: 3 ok, 0 failed, 1 already done, 2 not run; 2 submissions")
    assert summary_line(stats, Path("out"), 1.0, total=3).startswith("3 requests: 3 ok, 0 fail")


def test_counts_of_one_are_singular():
    stats = RunStats(ok=1, submitted=1, repaired=1, lost=1)
    line = summary_line(stats, Path("out"), 1.0, total=1)
    assert line.startswith("1 request: 1 ok, 0 failed, 1 missing output fetched again, 1 output ")
    assert "; 1 submission in " in line
    assert in_flight_note(RunStats(in_flight_at_stop=1)) == (
        "the request in flight finished and is journaled"
    )
    assert in_flight_note(RunStats(in_flight_at_stop=2, unfinished=1)).startswith(
        "of 2 requests in flight, 1 finished and 1 is journaled as submitted"
    )


def test_the_spend_says_what_uncertain_submissions_may_have_added():
    # 20 outputs received; 14 more submissions may have been charged (sent twice, unanswered)
    stats = RunStats(ok=20, submitted=34, possible_duplicates=14, usd_per_megapixel=0.025)
    stats.megapixels, stats.worst_megapixels = 20, 34
    line = summary_line(stats, Path("out"), 1.0, total=20)
    assert "14 possibly charged twice, about $0.50 spent (20 MP), up to $0.85 if every " in line
    stats.worst_megapixels = 20  # nothing uncertain: no "up to"
    assert "about $0.50 spent (20 MP) in" in summary_line(stats, Path("out"), 1.0, total=20)


def test_a_stopped_run_tells_rows_sent_and_unfinished_from_rows_not_run():
    # rows sent and not finished were paid for: they are never counted as "not run"
    stats = RunStats(ok=2, submitted=4, in_flight_at_stop=3, unfinished=1, unanswered=1)
    line = summary_line(stats, Path("out"), 1.0, total=6)
    assert line.startswith(
        "6 requests: 2 ok, 0 failed, 1 awaiting a result, 1 sent without an answer, 2 not run;"
    )
    assert in_flight_note(stats) == (
        "of 3 requests in flight, 1 finished, 1 is journaled as submitted (the next run polls it "
        "by request id, without paying again) and 1 got no answer to its submission (the next "
        "run sends it again, counted as possibly charged twice)"
    )
    # offline, the emulator that took the submitted one ended with the run: both are sent
    # again, at no cost, and nothing is said to be polled or charged
    assert in_flight_note(stats, free=True) == (
        "of 3 requests in flight, 1 finished, 1 is journaled as submitted (the emulator ended "
        "with this run: the next run sends it again, free) and 1 got no answer to its "
        "submission (the next run sends it again, free)"
    )


def test_an_offline_run_says_sent_again_where_fal_may_charge_twice():
    # an offline run costs nothing: a submission sent again is only that
    stats = RunStats(ok=2, submitted=3, possible_duplicates=1, flagged_before=2)
    line = summary_line(stats, Path("out"), 1.0, total=2, free=True)
    assert "2 submissions in the folder sent again; 3 submissions, 1 sent again in " in line
    assert "charged" not in line
    line = summary_line(stats, Path("out"), 1.0, total=2)
    assert "2 submissions in the folder possibly charged twice; " in line
    assert "3 submissions, 1 possibly charged twice in " in line


def test_dollars_are_written_as_the_cap_writes_them_never_rounded_down():
    # $0.025 a megapixel: 3 MP is $0.075 and 5 MP $0.125, not "$0.07" and "$0.12"
    stats = RunStats(ok=3, submitted=5, possible_duplicates=2, usd_per_megapixel=0.025)
    stats.megapixels, stats.worst_megapixels = 3, 5
    line = summary_line(stats, Path("out"), 1.0, total=3)
    assert "about $0.075 spent (3 MP), up to $0.125 if every uncertain submission" in line


def _last_frame(err: str) -> str:
    """The bar as last drawn (tqdm redraws a line with carriage returns)."""
    return err.replace("\n", "\r").rstrip("\r").rsplit("\r", 1)[-1]


def test_the_bar_shows_rows_done_and_what_became_of_them(capsys):
    progress = Progress(6, enabled=True)
    stats = RunStats(usd_per_megapixel=0.025)
    stats.skipped = 1  # already ok: counted as ok, and as done
    progress.update("skipped", stats)
    stats.ok, stats.megapixels, stats.worst_megapixels = 2, 2, 2
    progress.update("ok", stats)
    stats.failed, stats.failed_before, stats.retrying = 1, 1, 3
    stats.worst_megapixels = 5  # 3 submissions unanswered or sent twice: "up to"
    progress.update("failed", stats)
    progress.close()
    frame = _last_frame(capsys.readouterr().err)
    assert "5/6" in frame, frame
    assert "ok=3, failed=2, retrying=3, spent=~$0.05 (up to $0.125)" in frame, frame


def test_a_local_run_shows_no_spend_and_a_disabled_bar_shows_nothing(capsys):
    progress = Progress(2, enabled=True)
    progress.update("ok", RunStats(ok=2))  # no price: the local backend costs nothing
    progress.close()
    frame = _last_frame(capsys.readouterr().err)
    assert "2/2" in frame and "ok=2, failed=0, retrying=0" in frame and "spent" not in frame
    quiet = Progress(2, enabled=False)
    quiet.update("ok", RunStats(ok=2))
    quiet.close()
    assert capsys.readouterr().err == ""


def test_the_bar_of_a_fal_run_never_shows_the_key(
    write_spec, tmp_path, fal_server, capsys, monkeypatch
):
    from runner.cli import main

    key = "sk-progress-0123456789abcdef"
    fal_server(key, keys=frozenset({key}))
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal")
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as on a terminal: the bar shows
    assert main(["run", str(spec), "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "2/2" in _last_frame(captured.err) and "spent=~$0.05" in captured.err, captured.err
    assert key not in captured.err + captured.out
