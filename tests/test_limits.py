import asyncio
import time

from runner.limits import SubmitGate


async def test_rate_spaces_submissions():
    gate = SubmitGate(rate=20)
    stamps = []

    async def one():
        await gate.admit()
        stamps.append(time.monotonic())

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(10)))
    # 10 admissions at 20/s: the last one no sooner than 9 intervals after the first
    assert stamps[-1] - start >= 9 / 20 - 0.02
    gaps = [b - a for a, b in zip(sorted(stamps), sorted(stamps)[1:], strict=False)]
    assert min(gaps) >= 1 / 20 - 0.01


async def test_no_rate_means_no_wait():
    gate = SubmitGate(None)
    start = time.monotonic()
    for _ in range(1000):
        await gate.admit()
    assert time.monotonic() - start < 0.5


async def test_pause_holds_everyone():
    gate = SubmitGate(None)
    gate.pause(0.3)
    start = time.monotonic()
    await asyncio.gather(gate.admit(), gate.admit(), gate.admit())
    assert time.monotonic() - start >= 0.29
