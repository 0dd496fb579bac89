"""OUT/stats.json: one run's counters as one JSON object (counts by status and error type,
retries, 429s, throughput, elapsed, estimated spend), rewritten atomically (a temporary file
renamed over it) every few seconds while the run goes and once at its end, so a script can
watch a long run. Modelled on img2dataset's per-shard stats files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .manifest import utc_now
from .tracking import RunStats

STATS = "stats.json"
INTERVAL = 2.0  # seconds between rewrites during a run


def stats_document(
    stats: RunStats, info: Mapping[str, Any], elapsed: float, finished: bool, http_429: int
) -> dict[str, Any]:
    worked = stats.ok + stats.failed  # rows this run finished (skipped ones cost nothing)
    return {
        **info,
        "updated": utc_now(),
        "finished": finished,
        "interrupted": stats.interrupted,
        # why the run stopped sending before its last row (a cap, a changed input, a refused
        # key, an unreachable server), else null
        "stop_reason": stats.stop_reason,
        "elapsed_s": round(elapsed, 3),
        "counts": {
            "ok": stats.ok,
            "failed": stats.failed,
            "already_ok": stats.skipped,
            "failed_before": stats.failed_before,
            "in_flight": stats.in_flight,
            # a stopped run's rows left sent and unfinished: polled, or sent again, next time
            "awaiting_result": stats.unfinished,
            "unanswered": stats.unanswered,
        },
        "errors": dict(sorted(stats.errors.items())),
        "submitted": stats.submitted,
        "resumed": stats.resumed,
        "retries": stats.retrying,
        "http_429": http_429,
        "possible_duplicates": stats.possible_duplicates,
        "requests_per_s": round(worked / elapsed, 3) if elapsed > 0 else None,
        "megapixels": stats.megapixels,
        "usd_per_megapixel": stats.usd_per_megapixel,
        "estimated_usd": stats.usd,
        # what this run's rows may have cost at most: outputs, possible duplicates, unanswered
        "estimated_usd_up_to": stats.worst_usd,
        "max_usd": stats.max_usd,
        "committed_usd": stats.committed_usd,  # the output folder's, against max_usd
    }


def write_stats(out_dir: Path, document: Mapping[str, Any]) -> None:
    """Replace OUT/stats.json at once (readers never see half a file). Best effort: the
    journal, not this file, is the record, and a full disk stops the run there."""
    tmp = out_dir / (STATS + ".tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", "utf-8")
        os.replace(tmp, out_dir / STATS)


async def keep_writing(out_dir: Path, document: Callable[[], Mapping[str, Any]]) -> None:
    """Rewrite stats.json every INTERVAL seconds until cancelled."""
    while True:
        await asyncio.sleep(INTERVAL)
        write_stats(out_dir, document())
