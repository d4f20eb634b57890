"""DiskWriter: a Recorder's writes go to a thread, so a disk that stalls never stalls the event loop; what
waits is bounded, and a disk that falls too far behind fails the recording with a clear error; an error on
the thread comes back to the Recorder once, with the file cut back to its last whole piece."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from mediaserver.media.frames import FrameKind
from mediaserver.record import recorder as recorder_module, vod, writer as writer_module
from mediaserver.record.recorder import COMPLETE, FAILED, FileClosed, Recorder
from mediaserver.record.writer import HUGE_PAGE, IOV_MAX, PAGE_SIZE, DiskWriter, direct_buffer, write_whole
from mediaserver.remux.fmp4 import Pieces

from support.codec_clips import codec_clip
from support.sinks import CollectingSink
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
    for _ in range(500):  # the file's close is told once the writer's thread has created it
        if rec.files:
            break
        await asyncio.sleep(0.01)
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

    closed = await _recorded_until_the_disk_fails(DiskWriter(asyncio.get_running_loop(), write=filling), frames,
                                                  tmp_path)
    assert closed.bytes == sum(written) == closed.path.stat().st_size


async def _recorded_until_the_disk_fails(disk: DiskWriter, frames, root: Path) -> FileClosed:
    """`frames` recorded through `disk`, whose writes fail at some point: the one file it reports, failed
    for want of space, cut back to its whole pieces (it plays)."""
    stream = new_stream()
    closed_events = []
    rec = Recorder(KEY, root, wall_clock=Clock(), fragment_s=1.0, disk=disk, on_file_closed=closed_events.append)
    stream.add_sink(rec)
    publish(stream, frames)
    for _ in range(200):
        if rec.stopped:
            break
        await asyncio.sleep(0.01)
    await asyncio.to_thread(disk.stop)
    stream.end()
    [closed] = closed_events
    assert closed.status == FAILED and "No space left" in closed.error
    assert vod.index_file(closed.path.read_bytes()).trailing_bytes == 0
    assert decode(closed.path)["video"]
    return closed


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
    fd = -1  # the writer's thread creates it


async def test_each_fsync_lets_the_page_cache_drop_what_the_fsync_before_made_durable(tmp_path):
    advised = []
    disk = DiskWriter(asyncio.get_running_loop(),
                      advise=lambda fd, offset, length, advice: advised.append((offset, length, advice)))
    path = tmp_path / "f"
    f = _File()
    disk.create(f, path, recorder_module.create_file, lambda *a: None, lambda *a: None)
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
    f = _File()
    disk.create(f, path, recorder_module.create_file, lambda *a: None, lambda *a: None)
    for _ in range(3):
        disk.write(f, b"x" * 100)
        disk.sync(f)
    disk.close(f, sync=True)
    await asyncio.to_thread(disk.stop)
    assert path.read_bytes() == b"x" * 300


def _recorder_with_events(tmp_path, disk: DiskWriter) -> tuple[Recorder, list]:
    events: list = []
    rec = Recorder(
        KEY, tmp_path, wall_clock=Clock(), fragment_s=1.0, disk=disk,
        on_file_opened=lambda path, at: events.append(("opened", path)),
        on_progress=lambda size, duration: events.append(("progress", size)),
        on_file_closed=lambda closed: events.append(("closed", closed)),
    )
    return rec, events


def _held_create(monkeypatch) -> threading.Event:
    """File creation that waits (mkdir and open on a stalled network filesystem) until the event is set."""
    gate = threading.Event()
    real_create = recorder_module.create_file

    def held_create(path):
        gate.wait(10)
        return real_create(path)

    monkeypatch.setattr(recorder_module, "create_file", held_create)
    return gate


@pytest.mark.parametrize("ends_before_created", [True, False])
async def test_a_disk_that_stalls_when_a_file_is_created_never_holds_the_event_loop(
        tmp_path, monkeypatch, ends_before_created):
    frames = codec_clip("h264", "aac", seconds=4.0, gop_frames=FPS)
    gate = _held_create(monkeypatch)
    disk = DiskWriter(asyncio.get_running_loop())
    stream = new_stream()
    rec, events = _recorder_with_events(tmp_path, disk)
    stream.add_sink(rec)
    started = time.monotonic()
    publish(stream, frames if ends_before_created else frames[:len(frames) // 2])
    if ends_before_created:
        stream.end()  # the file closes before the thread has created it
    assert time.monotonic() - started < 1.0  # (created here, it would wait 10 s)
    assert events == [], "nothing is told of a file before it exists"
    gate.set()
    await disk.caught_up()
    if ends_before_created:
        assert [e[0] for e in events] == ["opened", "closed"]  # in order; the close carries the last figures
    else:
        # Opened, then every piece so far in one report; the rest as it comes.
        assert [e[0] for e in events] == ["opened", "progress"] and events[1][1] == rec._file.bytes
        publish(stream, frames[len(frames) // 2:])
        stream.end()
        assert [e[0] for e in events][-1] == "closed"
    await asyncio.to_thread(disk.stop)
    [closed] = rec.files
    assert events[0][1] == closed.path and closed.status == COMPLETE
    assert closed.bytes == closed.path.stat().st_size
    assert len(decode(closed.path)["video"]) == 4 * FPS


async def test_a_taken_name_gets_the_next_one_and_every_report_says_so(tmp_path):
    frames = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    disk = DiskWriter(asyncio.get_running_loop())
    stream = new_stream()
    rec, events = _recorder_with_events(tmp_path, disk)
    taken = rec._name(Clock()())  # the name the first file would get (the clip starts at the clock's time)
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"an older recording")
    stream.add_sink(rec)
    publish(stream, frames)
    stream.end()
    await disk.caught_up()
    await asyncio.to_thread(disk.stop)
    [closed] = rec.files
    assert closed.path == taken.with_name(f"{taken.stem}-1{taken.suffix}") and events[0][1] == closed.path
    assert taken.read_bytes() == b"an older recording"
    assert decode(closed.path)["video"]


async def test_a_file_that_cannot_be_created_ends_the_recording_once_and_the_stream_goes_on(tmp_path):
    frames = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")  # record.path's app directory cannot be made under a file
    disk = DiskWriter(asyncio.get_running_loop())
    stream = new_stream()
    rec, events = _recorder_with_events(blocker, disk)
    stream.add_sink(rec)
    viewer = CollectingSink()
    stream.add_sink(viewer)
    publish(stream, frames[:len(frames) // 2])
    await disk.caught_up()
    publish(stream, frames[len(frames) // 2:])
    assert rec.stopped
    [failed] = [e[1] for e in events if e[0] == "closed"]
    assert failed.status == FAILED and failed.bytes == 0 and "Not a directory" in failed.error
    assert [e[0] for e in events] == ["closed"], "a file that never existed is never reported opened"
    media = [f for f in frames if f.kind in (FrameKind.VIDEO, FrameKind.AUDIO)]  # what `publish` sends
    assert len(viewer.frames) == len(media)  # the hub's other consumers got every frame
    stream.end()
    await asyncio.to_thread(disk.stop)


# ----- direct writes (record.direct_io) ---------------------------------------------------------------


def _direct_supported(tmp_path) -> bool:
    fd = os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    os.close(fd)
    return True


async def _record_clip(tmp_path, frames, **disk_args) -> tuple[Recorder, list[bytes]]:
    """`frames` recorded through a DiskWriter; the file's whole bytes after each write the thread made (read
    from the disk, as a reader or a crash would find them)."""
    seen: list[bytes] = []
    disk = DiskWriter(asyncio.get_running_loop(), **disk_args)
    stream = new_stream()
    rec = Recorder(KEY, tmp_path, wall_clock=Clock(), fragment_s=1.0, disk=disk)
    stream.add_sink(rec)
    for frame in frames:
        publish(stream, [frame])
        await disk.caught_up()
        if rec._file is not None and not rec._file.creating and rec._file.path.exists():
            now = rec._file.path.read_bytes()
            if not seen or seen[-1] != now:
                seen.append(now)
    stream.end()
    await asyncio.to_thread(disk.stop)
    return rec, seen


def _mapping(address: int) -> dict[str, str]:
    """The /proc/self/smaps entry that holds `address`: its permissions (`perms`) and its fields."""
    entry: dict[str, str] | None = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:  # a mapping's first line: start-end perms offset dev inode
                start, end = (int(x, 16) for x in head[0].split("-"))
                if entry is not None:
                    return entry
                if start <= address < end:
                    entry = {"perms": head[1]}
            elif entry is not None:
                key, _, value = line.partition(":")
                entry[key] = value.strip()
    assert entry is not None, f"no mapping holds {address:#x}"
    return entry


def test_the_direct_buffer_is_private_whole_huge_pages_and_advised_onto_them():
    # mmap's default anonymous mapping is shared (shmem), which gets no transparent huge page unless
    # shmem_enabled says so: every O_DIRECT write then pins 4 kB pages (bench/README.md, "Recording cost").
    size = (4 << 20) + 4096  # the writer's: DIRECT_BUFFER and the padding past a full one
    buffer = direct_buffer(size)
    assert len(buffer) % HUGE_PAGE == 0 and len(buffer) >= size
    buffer[:] = bytes(len(buffer))  # touched, as the writer's thread touches it
    entry = _mapping(ctypes.addressof(ctypes.c_char.from_buffer(buffer)))
    assert entry["perms"] == "rw-p"  # private, not shared
    if os.path.isdir("/sys/kernel/mm/transparent_hugepage"):  # a kernel built with them (madvise fails without)
        assert "hg" in entry["VmFlags"].split()  # MADV_HUGEPAGE: the kernel takes huge pages when it has them


@pytest.mark.parametrize("buffer", [8192, 4 << 20], ids=["fragments-past-the-buffer", "one-write-each"])
async def test_direct_writes_make_the_same_file_and_a_valid_mp4_after_every_write(tmp_path, buffer):
    assert _direct_supported(tmp_path)
    frames = codec_clip("h264", "aac", seconds=4.0, gop_frames=FPS)
    buffered, _ = await _record_clip(tmp_path / "buffered", frames)
    direct, seen = await _record_clip(tmp_path / "direct", frames, direct=True, direct_buffer=buffer)
    [a], [b] = buffered.files, direct.files
    assert b.status == COMPLETE and b.path.read_bytes() == a.path.read_bytes()  # the `free` padding cut at close
    assert b.bytes == b.path.stat().st_size
    assert len(decode(b.path)["video"]) == 4 * FPS
    final = b.path.read_bytes()
    assert len(seen) >= 3  # the init with the first GOP, then a write per GOP (the last at the end)
    for on_disk in seen:
        # What a crash at that moment leaves: whole blocks, the file's bytes so far, then one `free` box of
        # zeros to the block's end; every whole fragment indexes and plays.
        assert len(on_disk) % 4096 == 0
        index = vod.index_file(on_disk)
        real = index.total_bytes  # the whole fragments: the padding is what trails them
        assert on_disk[:real] == final[:real] and real == final.index(b"moof", real - 1) - 4
        assert on_disk[real + 4:real + 8] == b"free" and int.from_bytes(on_disk[real:real + 4], "big") == len(on_disk) - real
        assert set(on_disk[real + 8:]) <= {0}


async def test_a_direct_write_that_fails_cuts_the_file_back_to_its_last_whole_piece(tmp_path):
    assert _direct_supported(tmp_path)
    frames = codec_clip("h264", "aac", seconds=4.0, gop_frames=FPS)
    calls = []

    def filling(fd, block, at) -> int:
        calls.append(len(block))
        if len(calls) == 3:
            os.pwrite(fd, block[:4096], at)  # a block of it, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.pwrite(fd, block, at)

    closed = await _recorded_until_the_disk_fails(
        DiskWriter(asyncio.get_running_loop(), direct=True, pwrite=filling), frames, tmp_path)
    assert closed.path.stat().st_size == closed.bytes > 0  # the two writes before, without their padding


async def test_a_short_direct_write_goes_on_and_an_unaligned_one_is_an_error(tmp_path):
    assert _direct_supported(tmp_path)
    frames = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)

    def in_blocks(fd, block, at) -> int:  # a kernel that takes one block a call
        return os.pwrite(fd, block[:4096], at)

    rec, _ = await _record_clip(tmp_path / "short", frames, direct=True, pwrite=in_blocks)
    [closed] = rec.files
    assert closed.status == COMPLETE and len(decode(closed.path)["video"]) == 3 * FPS

    def unaligned(fd, block, at) -> int:  # what no kernel should answer to whole blocks; never taken as done
        return 100 if at else os.pwrite(fd, block, at)

    rec, _ = await _record_clip(tmp_path / "odd", frames, direct=True, pwrite=unaligned)
    [closed] = rec.files
    assert closed.status == FAILED and "direct write wrote 100 of" in closed.error


async def test_a_filesystem_without_o_direct_gets_the_file_buffered(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, "mediaserver.record.writer")

    def told() -> list[str]:
        return [str(r.fields) for r in caplog.records if r.getMessage() == "recording_direct_io_refused"]

    frames = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    buffered, _ = await _record_clip(tmp_path / "buffered", frames)
    assert not told()

    def refusing(fd, block, at) -> int:  # O_DIRECT taken at open, refused at the first write (as some FUSE do)
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    rec, seen = await _record_clip(tmp_path / "refused", frames, direct=True, pwrite=refusing)
    [closed], [expected] = rec.files, buffered.files
    assert closed.status == COMPLETE and closed.path.read_bytes() == expected.path.read_bytes()
    assert all(len(s) % 4096 for s in seen[:2]), "appended as they come, no padding"
    [line] = told()  # once, with the file and why: the operator learns recording costs more there
    assert str(closed.path) in line and "first direct write failed" in line and "record.direct_io" in line

    real_fcntl = writer_module.fcntl.fcntl

    def no_direct(fd, cmd, arg=0):
        if cmd == writer_module.fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))  # refused when asked for
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(writer_module.fcntl, "fcntl", no_direct)
    rec, _ = await _record_clip(tmp_path / "refused-at-open", frames, direct=True)
    [closed] = rec.files
    assert closed.status == COMPLETE and closed.path.read_bytes() == expected.path.read_bytes()
    assert len(told()) == 2 and "refused when the file was opened" in told()[1]
