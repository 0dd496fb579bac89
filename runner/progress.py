"""What `runner run` shows (CLI side): a tqdm bar on stderr with ok/failed/retrying counts and
the estimated spend of a fal run, fed by the executor's events and silent when stderr is not a
terminal, and the summary line."""

from __future__ import annotations

import sys
from pathlib import Path

from .tracking import RunStats
from .words import counted


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
            shown["spent"] = f"~${stats.usd:.2f}" + _up_to(stats, " ({})")
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(stats.done - self._bar.n)  # redraws at most every mininterval

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summary_line(stats: RunStats, out: Path, seconds: float, total: int | None = None) -> str:
    """Rows apart from submissions: "20 requests: 18 ok, 2 failed; 23 submissions (3 refused
    with 429)". A row already done counts as ok; `submissions` includes refused ones."""
    ok, failed = stats.ok + stats.skipped, stats.failed + stats.failed_before
    rows = [f"{ok} ok", f"{failed} failed"]
    if stats.skipped:
        rows.append(f"{stats.skipped} already done")
    if stats.repaired:
        rows.append(f"{counted(stats.repaired, 'missing output')} fetched again")
    if stats.lost:
        rows.append(f"{counted(stats.lost, 'output')} lost (marked failed)")
    if total is not None and total > ok + failed:
        rows.append(f"{total - ok - failed} not run")
    if stats.flagged_before:  # an earlier run killed mid-send said so only in its own summary
        rows.append(f"{stats.flagged_before} in the folder flagged as possibly charged twice")
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
        more.append(f"{stats.possible_duplicates} possibly charged twice")
    if stats.usd is not None:
        more.append(
            f"about ${stats.usd:.2f} spent ({stats.megapixels} MP)"
            + _up_to(stats, ", {} if every uncertain submission was charged")
        )
    head = f"{counted(total, 'request')}: " if total is not None else ""
    return (
        f"{head}{', '.join(rows)}; {', '.join(more)} in {seconds:.2f} s -> {out / 'manifest.jsonl'}"
    )


def in_flight_note(stats: RunStats) -> str:
    """What became of the requests in flight when Ctrl-C came (all of them are journaled)."""
    n = stats.in_flight_at_stop
    if n == 0:
        return "no request was in flight"
    left = stats.unfinished
    done = max(0, n - left)
    if left == 0:
        if n == 1:
            return "the request in flight finished and is journaled"
        return f"the {n} requests in flight finished and are journaled"
    return (
        f"of {counted(n, 'request')} in flight, {done} finished and {left} "
        f"{'is' if left == 1 else 'are'} journaled as submitted "
        "(the next run polls them by request id, without paying again)"
    )


def _up_to(stats: RunStats, words: str) -> str:
    """`words` with "up to $X" in it when this run's rows may have cost more than the outputs
    received (possible duplicates, submissions unanswered), else nothing."""
    worst, spent = stats.worst_usd, stats.usd
    if worst is None or spent is None or stats.worst_megapixels <= stats.megapixels:
        return ""
    return words.format(f"up to ${worst:.2f}")


def _reason(why: str) -> str:
    return {"connect": "connection refused", "auth": "a refused key"}.get(why, why)
