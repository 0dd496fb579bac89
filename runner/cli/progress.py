"""What `runner run` shows (CLI side): a tqdm bar on stderr with ok/failed/retrying counts and
the estimated spend of a fal run, fed by the executor's events and silent when stderr is not a
terminal; the summary line, and the lines that say why a run stopped early."""

from __future__ import annotations

import sys
from pathlib import Path

from ..execution.spending import usd_text
from ..execution.stops import StopKind
from ..execution.tracking import RunStats
from ..folder.names import MANIFEST
from ..words import counted


class Progress:
    """tqdm on stderr with ok/failed/retrying counts and spend; silent when not a TTY."""

    def __init__(self, total: int | None, enabled: bool) -> None:  # None: not known
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="req", file=sys.stderr, dynamic_ncols=True)

    def update(self, event: str, stats: RunStats) -> None:
        if self._bar is None:
            return
        shown: dict[str, object] = {
            "ok": stats.ok + stats.skipped,
            "failed": stats.failed + stats.failed_before,
            "retrying": stats.retrying,
        }
        if stats.usd is not None:
            shown["spent"] = f"~{usd_text(stats.usd)}" + _up_to(stats, " ({})")
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(stats.done - self._bar.n)  # redraws at most every mininterval

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summary_line(
    stats: RunStats, out: Path, seconds: float, total: int | None = None, *, free: bool = False
) -> str:
    """Rows apart from submissions: "20 requests: 18 ok, 2 failed; 23 submissions (3 refused
    with 429)". A row already done counts as ok; `submissions` includes refused ones. `free`:
    an offline run (backend local), where a submission sent again costs nothing."""
    again = "sent again" if free else "possibly charged twice"
    ok, failed = stats.ok + stats.skipped, stats.failed + stats.failed_before
    rows = [f"{ok} ok", f"{failed} failed"]
    if stats.skipped:
        rows.append(f"{stats.skipped} already done")
    if stats.repaired:
        rows.append(f"{counted(stats.repaired, 'missing output')} fetched again")
    if stats.lost:
        rows.append(f"{counted(stats.lost, 'output')} lost (marked failed)")
    if stats.unfetched:
        rows.append(f"{counted(stats.unfetched, 'missing output')} not fetched now")
    # a stopped run's rows that were sent and not finished are not "not run": they are paid for
    if stats.unfinished:
        rows.append(f"{stats.unfinished} awaiting a result")
    if stats.unanswered:
        rows.append(f"{stats.unanswered} sent without an answer")
    reached = ok + failed + stats.unfinished + stats.unanswered
    if total is not None and total > reached:
        rows.append(f"{total - reached} not run")
    if stats.flagged_before:  # an earlier run killed mid-send said so only in its own summary
        flagged = counted(stats.flagged_before, "submission")
        rows.append(f"{flagged} in the folder {again}")
    sends = counted(stats.submissions, "submission")
    if stats.refused:
        refused = ", ".join(
            f"{n} refused with {_reason(why)}" for why, n in sorted(stats.refused.items())
        )
        sends += f" ({refused})"
    more = [sends]
    if stats.resumed:
        more.append(f"{stats.resumed} resumed")
    if stats.possible_duplicates:
        more.append(f"{stats.possible_duplicates} {again}")
    if stats.usd is not None:
        more.append(
            f"about {usd_text(stats.usd)} spent ({stats.megapixels} MP)"
            + _up_to(stats, ", {} if every uncertain submission was charged")
        )
    head = f"{counted(total, 'request')}: " if total is not None else ""
    return f"{head}{', '.join(rows)}; {', '.join(more)} in {seconds:.2f} s -> {out / MANIFEST}"


def in_flight_note(stats: RunStats, *, free: bool = False) -> str:
    """What became of the requests in flight when the run stopped (all of them are journaled):
    finished, still queued on the server (polled next time) or sent with no answer (sent again
    next time, which may pay twice). `free`: an offline run, whose emulator ends with it, so
    the next run sends both kinds again, at no cost."""
    n = stats.in_flight_at_stop
    if n == 0:
        return "no request was in flight"
    queued, unanswered = stats.unfinished, stats.unanswered
    if queued + unanswered == 0:
        if n == 1:
            return "the request in flight finished and is journaled"
        return f"the {n} requests in flight finished and are journaled"
    said = [f"{max(0, n - queued - unanswered)} finished"]
    if queued:
        one = queued == 1
        then = (
            f"the emulator ended with this run: the next run sends {'it' if one else 'them'} "
            "again, free"
            if free
            else f"the next run polls {'it' if one else 'them'} by request id, without paying again"
        )
        said.append(f"{queued} {'is' if one else 'are'} journaled as submitted ({then})")
    if unanswered:
        one = unanswered == 1
        said.append(
            f"{unanswered} got no answer to {'its' if one else 'their'} submission (the next "
            f"run sends {'it' if one else 'them'} again"
            + (", free)" if free else ", counted as possibly charged twice)")
        )
    return f"of {counted(n, 'request')} in flight, {', '.join(said[:-1])} and {said[-1]}"


def stop_lines(stats: RunStats, *, free: bool = False) -> list[str]:
    """Why the run stopped early (stats.stop) and how to go on, and what became of the
    requests in flight: the lines `runner run` prints before it exits 3. `free`: an offline
    run (in_flight_note)."""
    stop = stats.stop
    if stop is None:
        return []
    if stop.kind is StopKind.INTERRUPTED:
        note = in_flight_note(stats, free=free)
        return [f"runner: interrupted; {note}. Run the same command again to resume."]
    if stop.kind is StopKind.REFUSED_KEY:
        said = f"runner: stopped: {stop.reason}. Fix the key and run the same command again."
    elif stop.kind is StopKind.UNREACHABLE:
        said = f"runner: stopped: {stop.reason}"  # it says how to go on (a HINT)
    elif stop.kind is StopKind.CANNOT_WRITE:
        said = (
            f"runner: stopped: {stop.reason}; no more submissions (what the journal holds is "
            "kept). HINT: free space on that disk (or make the folder writable), then run the "
            "same command again to resume"
        )
    else:
        said = (
            f"runner: stopped: {stop.reason}; no more submissions (what was sent is journaled). "
            "Once that is dealt with, run again to go on."
        )
    if stats.unfinished or stats.unanswered:
        return [said, f"runner: {in_flight_note(stats, free=free)}"]
    return [said]


def _up_to(stats: RunStats, words: str) -> str:
    """`words` with "up to $X" in it when this run's rows may have cost more than the outputs
    received (possible duplicates, submissions unanswered), else nothing."""
    worst, spent = stats.worst_usd, stats.usd
    if worst is None or spent is None or stats.worst_megapixels <= stats.megapixels:
        return ""
    return words.format(f"up to {usd_text(worst)}")


def _reason(why: str) -> str:
    return {"connect": "connection refused", "auth": "a refused key"}.get(why, why)
