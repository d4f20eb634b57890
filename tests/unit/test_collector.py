"""The cycle sweeper: one full collection shortly after something ended, not one per ending."""

from __future__ import annotations

import asyncio
import gc
import weakref

from mediaserver.collector import CycleSweeper


class Holder:
    """Stands for an ended stream: a cycle with something large inside."""

    def __init__(self) -> None:
        self.me = self
        self.payload = bytes(1 << 20)


async def test_things_that_end_together_are_swept_once_after_the_delay() -> None:
    calls: list[int] = []
    sweeper = CycleSweeper(delay_s=0.05, collect=lambda: calls.append(1) or 0)
    for _ in range(5):
        sweeper.ended()
    assert calls == []
    await asyncio.sleep(0.15)
    assert calls == [1] and sweeper.sweeps == 1
    sweeper.ended()
    await asyncio.sleep(0.15)
    assert calls == [1, 1]


async def test_a_cycle_left_by_an_ended_stream_is_freed_by_the_sweep() -> None:
    gc.disable()  # only the sweep may collect during this test
    try:
        ref = weakref.ref(Holder())
        assert ref() is not None, "the cycle outlives its last reference until a collection"
        sweeper = CycleSweeper(delay_s=0.01)
        sweeper.ended()
        await asyncio.sleep(0.1)
        assert ref() is None
    finally:
        gc.enable()


async def test_close_cancels_a_pending_sweep() -> None:
    calls: list[int] = []
    sweeper = CycleSweeper(delay_s=0.05, collect=lambda: calls.append(1) or 0)
    sweeper.ended()
    sweeper.close()
    await asyncio.sleep(0.1)
    assert calls == []
