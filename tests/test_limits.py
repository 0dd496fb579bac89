import asyncio
import time

import pytest

from runner.execution.limits import SubmitGate


async def test_rate_spaces_submissions():
    gate = SubmitGate(rate=20)
    stamps = []

    async def one():
        await gate.admit()
        stamps.append(time.monotonic())

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(10)))
    # No bursts: the k-th admission comes no sooner than k intervals after the start. Only
    # lower bounds: a busy machine may wake any of them late, which is not a burst.
    for k, stamp in enumerate(sorted(stamps)):
        assert stamp - start >= k / 20 - 0.005, (k, stamp - start)


def test_no_rate_means_no_wait():
    gate = SubmitGate(None)
    for _ in range(1000):
        admission = gate.admit()
        with pytest.raises(StopIteration):  # done at the first step: it never waited
            admission.send(None)


async def test_pause_holds_everyone():
    gate = SubmitGate(None)
    gate.pause(0.3)
    start = time.monotonic()
    await asyncio.gather(gate.admit(), gate.admit(), gate.admit())
    assert time.monotonic() - start >= 0.29
