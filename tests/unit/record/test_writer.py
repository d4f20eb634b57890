"""DiskWriter: a Recorder's writes go to a thread, so a disk that stalls never stalls the event loop; what
waits is bounded, and a disk that falls too far behind fails the recording with a clear error; an error on
the thread comes back to the Recorder once, with the file cut back to its last whole piece."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time

import pytest

from mediaserver.record import vod
from mediaserver.record.recorder import COMPLETE, FAILED, Recorder
from mediaserver.record.writer import IOV_MAX, PAGE_SIZE, DiskWriter, write_whole
from mediaserver.remux.fmp4 import Pieces

from support.codec_clips import codec_clip
from test_recorder import FPS, KEY, Clock, decode, new_stream, publish


async def test_a_stalling_disk_never_holds_the_event_loop_and_the_file_is_whole_in_the_end(tmp_path):
    frames = codec_clip("h264", "aac", seconds=4.0, gop_frames=FPS)
    writes = []

    def slow(fd, buffers) -> int:
        time.sleep(0.2)  # a disk that does not keep up
        writes.append(sum(map(len, buffers)))
        return os.writev(fd, buffers)

    disk = DiskWriter(asyncio.get_running_loop(), write=slow)
    stream = new_stream()
    rec = Recorder(KEY, tmp_path, wall_clock=Clock(), fragment_s=1.0, disk=disk)
    stream.add_sink(rec)
    started = time.monotonic()
    publish(stream, frames)
    stream.end()
    assert time.monotonic() - started < 0.5  # (written here, 4 writes would have taken 0.8 s)
    await asyncio.to_thread(disk.stop)
    # One write per GOP: its video and audio fragments together, the first with the file's init.
    assert len(writes) == 4 and disk.queued_bytes == 0
    [closed] = rec.files
    assert closed.status == COMPLETE and closed.bytes == closed.path.stat().st_size == sum(writes)
    assert vod.index_file(closed.path.read_bytes()).trailing_bytes == 0
    assert len(decode(closed.path)["video"]) == 4 * FPS


async def test_a_disk_too_far_behind_fails_the_recording_and_memory_stays_bounded(tmp_path):
    frames = codec_clip("h264", "aac", seconds=4.0, gop_frames=FPS)
    release = threading.Event()

    def stuck(fd, buffers) -> int:
        release.wait(10)
        return os.writev(fd, buffers)

    disk = DiskWriter(asyncio.get_running_loop(), write=stuck, max_queued_bytes=60_000)  # about one GOP
    stream = new_stream()
    rec = Recorder(KEY, tmp_path, wall_clock=Clock(), fragment_s=1.0, disk=disk)
    stream.add_sink(rec)
    publish(stream, frames)
    assert rec.stopped and disk.queued_bytes <= 60_000
    [closed] = rec.files
    assert closed.status == FAILED and "does not keep up" in closed.error
    release.set()
    await asyncio.to_thread(disk.stop)
    assert closed.path.stat().st_size == closed.bytes  # what was queued before the limit: written whole
    assert vod.index_file(closed.path.read_bytes()).trailing_bytes == 0
    stream.end()


async def test_an_error_on_the_thread_ends_the_recording_once_with_the_file_cut_back(tmp_path):
    frames = codec_clip("h264", "aac", seconds=4.0, gop_frames=FPS)
    written = []

    def filling(fd, buffers) -> int:
        if len(written) == 2:
            os.write(fd, b"".join(buffers)[:100])  # part of a piece, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(sum(map(len, buffers)))
        return os.writev(fd, buffers)

    disk = DiskWriter(asyncio.get_running_loop(), write=filling)
    stream = new_stream()
    closed_events = []
    rec = Recorder(KEY, tmp_path, wall_clock=Clock(), fragment_s=1.0, disk=disk, on_file_closed=closed_events.append)
    stream.add_sink(rec)
    publish(stream, frames)
    for _ in range(200):
        if rec.stopped:
            break
        await asyncio.sleep(0.01)
    await asyncio.to_thread(disk.stop)
    assert [c.status for c in closed_events] == [FAILED] and "No space left" in closed_events[0].error
    closed = closed_events[0]
    assert closed.bytes == sum(written) == closed.path.stat().st_size
    assert decode(closed.path)["video"]
    stream.end()


def test_pieces_go_out_whole_in_order_past_the_iovec_limit_and_after_short_writes(tmp_path):
    parts = [bytes([i % 251]) * (1 + i % 7) for i in range(2 * IOV_MAX + 5)]
    data = Pieces(tuple(memoryview(p) if i % 2 else p for i, p in enumerate(parts)), sum(map(len, parts)))
    calls = []

    def short(fd, buffers) -> int:  # a kernel that takes at most 1,000 bytes a call, cutting pieces
        calls.append(len(buffers))
        return os.write(fd, b"".join(buffers)[:1000])

    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        write_whole(fd, data, short)
        write_whole(fd, b"tail", short)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(parts) + b"tail"
    assert max(calls) <= IOV_MAX and len(calls) > 2


def test_a_write_that_takes_nothing_is_an_error_not_a_loop(tmp_path):
    with pytest.raises(OSError, match="wrote nothing"):
        write_whole(0, Pieces((b"a", b"b"), 2), lambda fd, buffers: 0)


class _File:
    def __init__(self, fd: int) -> None:
        self.fd = fd


async def test_each_fsync_lets_the_page_cache_drop_what_the_fsync_before_made_durable(tmp_path):
    advised = []
    disk = DiskWriter(asyncio.get_running_loop(),
                      advise=lambda fd, offset, length, advice: advised.append((offset, length, advice)))
    path = tmp_path / "f"
    f = _File(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    disk.opened(f, lambda *a: None)
    page = PAGE_SIZE
    sizes = (2 * page + 100, 3 * page, 5 * page)
    for n in sizes:
        disk.write(f, Pieces((b"h" * 10, memoryview(b"x" * (n - 10))), n))
        disk.sync(f)
    disk.write(f, b"t" * 500)
    disk.close(f, sync=True)
    await asyncio.to_thread(disk.stop)
    assert path.stat().st_size == sum(sizes) + 500
    # The first fsync drops nothing; each later one (the close's too) what was durable at the one before and
    # no advice covered yet, from the page the last advice cut through (the kernel drops whole pages only):
    # the newest interval stays cached for readers near the end, and pages a reader brought back into older
    # parts stay for it.
    durable = (sizes[0], sizes[0] + sizes[1], sum(sizes))  # 2 pages + 100, 5 pages + 100, 10 pages + 100
    assert advised == [(0, durable[0], os.POSIX_FADV_DONTNEED),
                       (2 * page, durable[1] - 2 * page, os.POSIX_FADV_DONTNEED),
                       (5 * page, durable[2] - 5 * page, os.POSIX_FADV_DONTNEED)]


async def test_without_fadvise_the_pages_simply_stay(tmp_path):
    disk = DiskWriter(asyncio.get_running_loop(), advise=None)
    path = tmp_path / "f"
    f = _File(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    disk.opened(f, lambda *a: None)
    for _ in range(3):
        disk.write(f, b"x" * 100)
        disk.sync(f)
    disk.close(f, sync=True)
    await asyncio.to_thread(disk.stop)
    assert path.read_bytes() == b"x" * 300
