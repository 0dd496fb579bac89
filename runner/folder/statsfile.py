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

from ..errors import WriteFailed, cannot_write
from .names import STATS

INTERVAL = 2.0  # seconds between rewrites during a run


def write_stats(out_dir: Path, document: Mapping[str, Any]) -> None:
    """Replace OUT/stats.json at once (readers never see half a file); WriteFailed (a full
    disk...) leaves the last one whole and no temporary file behind."""
    tmp = out_dir / (STATS + ".tmp")
    try:
        tmp.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", "utf-8")
        os.replace(tmp, out_dir / STATS)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise cannot_write(out_dir / STATS, exc) from None


async def keep_writing(
    out_dir: Path,
    document: Callable[[], Mapping[str, Any]],
    on_failure: Callable[[WriteFailed], None],
) -> None:
    """Rewrite stats.json every INTERVAL seconds until cancelled, or until a write fails
    (`on_failure` is told; the end of the run tries once more)."""
    while True:
        await asyncio.sleep(INTERVAL)
        try:
            write_stats(out_dir, document())
        except WriteFailed as error:
            on_failure(error)
            return
