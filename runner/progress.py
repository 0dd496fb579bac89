"""What `runner run` shows (CLI side): a tqdm bar on stderr with ok/failed/retrying counts and
the estimated spend of a fal run, fed by the executor's events and silent when stderr is not a
terminal, and the summary line."""

from __future__ import annotations

import sys
from pathlib import Path

from .jobs import RunStats


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
            shown["spent"] = f"~${stats.usd:.2f}"
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(stats.done - self._bar.n)  # redraws at most every mininterval

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summary_line(stats: RunStats, out: Path, seconds: float) -> str:
    parts = [f"{stats.ok} ok", f"{stats.failed + stats.failed_before} failed"]
    if stats.skipped:
        parts.append(f"{stats.skipped} already done")
    parts.append(f"{stats.submitted} submitted")
    if stats.resumed:
        parts.append(f"{stats.resumed} resumed")
    if stats.possible_duplicates:
        parts.append(f"{stats.possible_duplicates} possibly charged twice")
    if stats.usd is not None:
        parts.append(f"about ${stats.usd:.2f} spent ({stats.megapixels} MP)")
    return f"{', '.join(parts)} in {seconds:.2f} s -> {out / 'manifest.jsonl'}"
