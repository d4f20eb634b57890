"""StuckWriters: a transport whose queued bytes do not shrink for the write timeout is aborted; one that
drains, or keeps draining slowly, is left alone."""

from __future__ import annotations

import asyncio

from mediaserver.edge.stuck import StuckWriters


class Transport:
    def __init__(self, queued: int) -> None:
        self.queued = queued
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return 0 if self.aborted else self.queued

    def is_closing(self) -> bool:
        return self.aborted

    def get_extra_info(self, name: str):
        return None  # no socket to set SO_LINGER on: a plain abort

    def abort(self) -> None:
        self.aborted = True


async def test_a_reader_that_takes_nothing_is_dropped_and_one_that_reads_is_not():
    stuck = StuckWriters(lambda: 0.4)
    taken_whole, stalled, slow, drained = Transport(0), Transport(300_000), Transport(300_000), Transport(1000)
    for t in (taken_whole, stalled, slow, drained):
        stuck.wrote(t)
    assert len(stuck) == 3  # an answer the socket took whole is not watched
    drained.queued = 0
    for _ in range(10):  # 1 s: 2.5 timeouts
        await asyncio.sleep(0.1)
        slow.queued -= 1000  # a slow reader, but a reader
    assert stalled.aborted and not slow.aborted and not drained.aborted and not taken_whole.aborted
    assert stuck.aborted == 1
    assert len(stuck) == 1  # the slow one, still watched
    slow.queued = 0
    await asyncio.sleep(0.25)
    assert len(stuck) == 0 and stuck._timer is None  # nothing watched: no timer ticks
    stuck.close()


async def test_a_new_write_counts_as_progress():
    stuck = StuckWriters(lambda: 0.3)
    t = Transport(5000)
    stuck.wrote(t)
    for _ in range(5):
        await asyncio.sleep(0.1)
        t.queued += 5000
        stuck.wrote(t)  # each answer of a kept-alive connection re-arms its deadline
    assert not t.aborted
    await asyncio.sleep(0.6)
    assert t.aborted
    stuck.close()
