"""Admission policy for submissions, apart from the scheduling loop: a GCRA-style rate meter
(at most `rate` submissions a second, no bursts), a pause that a 429 sets for everyone, and the
ceiling on requests in flight."""

from __future__ import annotations

import asyncio
import time

# Requests in flight at once, at most: each is a task, a connection and a buffered body, and fal
# accounts allow far fewer concurrent requests (2 to 40); higher values are refused, not clipped.
MAX_CONCURRENCY = 1024


class SubmitGate:
    """Every submission passes `await gate.admit()`; a 429 calls `gate.pause(seconds)`."""

    def __init__(self, rate: float | None = None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next_slot = 0.0
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Hold all new submissions for `seconds` (a 429 applies to the account, not a task)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def admit(self) -> None:
        while True:
            now = time.monotonic()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            # Reserve the next free slot before sleeping, so concurrent callers queue up
            # one interval apart instead of all waking at once.
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
            if slot > now:
                await asyncio.sleep(slot - now)
            if time.monotonic() >= self._paused_until:
                return
