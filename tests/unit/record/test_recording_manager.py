"""RecordingManager with a real hub, real media and a real SQLite catalog: each closed file reaches the disk
(its last fsync runs) and holds no descriptor after the recording ends, however it ends; catalog writes wait
for a database that is away for as long as it is away, without piling up; a recording a disk error ended
starts again in a new file; a tail the disk lost after the close leaves the row with what the file holds."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest

from mediaserver.config import RecordConfig
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.media.frames import FrameKind
from mediaserver.record import manager as manager_module
from mediaserver.record import recorder as recorder_module
from mediaserver.record.catalog import Catalog, CatalogUnavailable
from mediaserver.record.manager import RecordingManager, catalog_url
from mediaserver.record.vod import index_file

from support.codec_clips import codec_clip

KEY = StreamKey("live", "cam")


class Publisher:
    peer = "127.0.0.1:5000"

    def close(self, reason: str) -> None:
        pass


@pytest.fixture(scope="module")
def clip():
    return codec_clip("h264", "aac", seconds=3.0, gop_frames=25)


def publish(stream: Stream, frames) -> None:
    for frame in frames:
        if frame.kind == FrameKind.VIDEO:
            stream.publish_video(frame.dts_ms, bytes(frame.body), 0.0)
        elif frame.kind == FrameKind.AUDIO:
            stream.publish_audio(frame.dts_ms, bytes(frame.body), 0.0)
        stream.flush_sinks()


def open_fds_on(root: Path) -> list[str]:
    """The paths under `root` this process holds a descriptor of (deleted files included)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)) and ".mp4" in target:
            held.append(target)
    return held


@pytest.fixture
async def manager(tmp_path, monkeypatch):
    monkeypatch.setattr(manager_module, "SYNC_S", 0.05)
    registry = StreamRegistry()
    manager = await RecordingManager.open(registry, RecordConfig(mode="api", path=str(tmp_path / "rec"),
                                                                 min_free_gb=0, fragment_duration=2.0), "node-1")
    yield manager
    await manager.close()


@pytest.fixture
def fsyncs(monkeypatch):
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


async def settle(manager: RecordingManager) -> None:
    await asyncio.sleep(0.3)  # a few syncer rounds
    await asyncio.wait_for(manager._ops.join(), 5)


@pytest.mark.parametrize("how", ["stop", "stream end", "close"])
async def test_a_finished_file_is_synced_and_no_descriptor_stays_open(manager, clip, fsyncs, how):
    root = Path(manager.cfg.path).resolve()
    stream = manager.registry.claim_publisher(KEY, Publisher())
    manager.start(KEY)
    publish(stream, clip)
    await manager.disk_writer.caught_up()  # the writer's thread creates the file
    assert open_fds_on(root), "the file being written is open"
    if how == "stop":
        assert manager.stop(KEY)
    elif how == "stream end":
        manager.registry._end(stream)
    else:
        await manager.close()
    if how != "close":
        await settle(manager)
    assert fsyncs, "the closed file's last fsync ran"
    assert open_fds_on(root) == []
    [path] = [p for p in root.rglob("*.mp4")]
    path.unlink()  # a deleted recording frees its space: nothing of ours holds it
    assert open_fds_on(root) == []


async def test_catalog_writes_wait_for_a_database_away_longer_than_any_backoff_and_do_not_pile_up(
        manager, clip, monkeypatch):
    monkeypatch.setattr(manager_module, "RETRY_S", (0.01, 0.02))
    monkeypatch.setattr(manager_module, "PROGRESS_S", 0.0)  # every tick of the syncer reports progress
    catalog = manager.catalog
    tries = {"n": 0}
    down = True
    real_add, real_update, real_progress = catalog.add, catalog.update, catalog.progress

    async def add(row):
        if down:
            tries["n"] += 1
            raise CatalogUnavailable("catalog database test is unavailable")
        return await real_add(row)

    async def update(rec_id, **fields):
        if down:
            raise CatalogUnavailable("catalog database test is unavailable")
        return await real_update(rec_id, **fields)

    async def progress(figures):
        if down:
            raise CatalogUnavailable("catalog database test is unavailable")
        return await real_progress(figures)

    monkeypatch.setattr(catalog, "add", add)
    monkeypatch.setattr(catalog, "update", update)
    monkeypatch.setattr(catalog, "progress", progress)
    stream = manager.registry.claim_publisher(KEY, Publisher())
    rec = manager.start(KEY)
    publish(stream, clip)
    await manager.disk_writer.caught_up()  # the file created: its row is known
    manager.report_progress()
    rec_id = manager.current(KEY)
    for _ in range(100):  # far past the five tries after which writes used to be dropped
        await asyncio.sleep(0.02)
        manager.report_progress()
        if tries["n"] >= 20:
            break
    assert tries["n"] >= 20
    assert manager.pending_writes <= 2, "one row's progress updates merge into one pending write"
    down = False
    await asyncio.wait_for(manager._ops.join(), 5)
    row = await catalog.get(rec_id)
    assert row is not None and row.status == "recording"
    assert row.bytes == rec.recorder._file.bytes  # the newest figures, not the first ones
    on_disk = Path(row.location).read_bytes()  # those bytes, then (direct writes) the `free` box padding them
    assert on_disk[row.bytes:] == b"" or on_disk[row.bytes + 4:row.bytes + 8] == b"free"
    assert manager.stats.failures["catalog"] == 1  # one outage, counted once


async def test_a_recording_a_disk_error_ended_starts_a_new_file_when_asked_again(manager, clip, monkeypatch):
    stream = manager.registry.claim_publisher(KEY, Publisher())
    rec = manager.start(KEY)
    half = len(clip) // 2
    publish(stream, clip[:half])

    def full(fd, *data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(manager.disk_writer, "_write", full)  # buffered writes
    monkeypatch.setattr(manager.disk_writer, "_pwrite", full)  # direct ones (record.direct_io)
    publish(stream, clip[half:half + 60])
    for _ in range(100):  # the writer's thread reports it on the loop
        if rec.recorder.stopped:
            break
        await asyncio.sleep(0.01)
    assert rec.recorder.stopped and rec.recorder.files[-1].status == "failed"
    failed = rec.recorder.files[-1]
    assert failed.bytes == failed.path.stat().st_size  # cut back to its last whole piece
    monkeypatch.undo()
    again = manager.start(KEY)
    assert again is not rec and not again.recorder.stopped
    assert rec.recorder not in stream.sinks  # the failed one left the stream
    publish(stream, clip[half + 60:])
    manager.stop(KEY)
    await settle(manager)
    assert len(list(Path(manager.cfg.path).rglob("*.mp4"))) == 2


async def test_a_tail_the_disk_lost_after_the_close_leaves_the_row_with_what_the_file_holds(manager, clip, monkeypatch):
    stream = manager.registry.claim_publisher(KEY, Publisher())
    rec = manager.start(KEY)
    publish(stream, clip)
    # The pieces so far on disk: done, not only taken (a write the thread has taken but not made would meet
    # the full disk below).
    await manager.disk_writer.caught_up()

    def full(fd, *data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(manager.disk_writer, "_write", full)
    monkeypatch.setattr(manager.disk_writer, "_pwrite", full)
    assert manager.stop(KEY)  # the last GOP's pieces are queued, then the file is closed: they fail after
    closed = rec.recorder.files[-1]
    assert closed.status == "complete"
    await settle(manager)
    on_disk = closed.path.stat().st_size
    assert 0 < on_disk < closed.bytes
    [row] = (await manager.catalog.list())[0]
    assert (row.status, row.bytes) == ("failed", on_disk)
    assert row.duration_s < closed.duration_s - 0.5  # the last GOP (1 s) is not in the file
    assert manager.stats.failures["disk_full"] == 1
    assert rec.dvr.files[-1].final_bytes == on_disk  # DVR numbers the next file once this one is whole


async def test_every_recordings_progress_goes_to_the_catalog_in_one_write_and_before_its_end(manager, monkeypatch):
    clip = codec_clip("h264", "aac", seconds=6.0, gop_frames=25)  # a cut (2 s) in each half
    monkeypatch.setattr(manager_module, "PROGRESS_S", 3600.0)  # only the reports this test asks for
    catalog = manager.catalog
    writes: list[dict] = []
    real_progress = catalog.progress

    async def progress(figures):
        writes.append(dict(figures))
        await asyncio.sleep(0.05)  # a slow database: what the next report brings waits for this write
        await real_progress(figures)

    monkeypatch.setattr(catalog, "progress", progress)
    keys = [KEY, StreamKey("live", "cam2"), StreamKey("live", "cam3")]
    streams = []
    for key in keys:
        streams.append(manager.registry.claim_publisher(key, Publisher()))
        manager.start(key)
    for stream in streams:
        publish(stream, clip[:len(clip) // 2])
    await manager.disk_writer.caught_up()  # the files created: their rows are known
    ids = [manager.current(key) for key in keys]
    manager.report_progress()
    for _ in range(500):
        if writes:
            break  # the write is under way
        await asyncio.sleep(0.01)
    publish(streams[0], clip[len(clip) // 2:])  # more of one file while the first write waits
    manager.report_progress()
    manager.report_progress()  # nothing new since: no write of its own
    assert manager.stop(keys[0])  # its end is queued after the figures it had
    await asyncio.wait_for(manager._ops.join(), 5)

    assert [set(w) for w in writes] == [set(ids), {ids[0]}], "one write for every row, then the newer figures"
    assert writes[1][ids[0]][0] > writes[0][ids[0]][0]
    done, *going = [await catalog.get(rec_id) for rec_id in ids]
    assert done.status == "complete" and done.bytes > writes[1][ids[0]][0]  # no figure came after its end (the last GOP)
    assert [(row.status, row.bytes) for row in going] == [("recording", writes[0][rec_id][0]) for rec_id in ids[1:]]


async def test_deleting_a_file_the_dvr_window_lists_renders_the_window_again(tmp_path, monkeypatch):
    monkeypatch.setattr(manager_module, "SYNC_S", 0.05)
    manager = await RecordingManager.open(StreamRegistry(), RecordConfig(
        mode="api", path=str(tmp_path / "rec"), min_free_gb=0, segment_minutes=0.05, fragment_duration=2.0), "node-1")
    try:
        stream = manager.registry.claim_publisher(KEY, Publisher())
        rec = manager.start(KEY)
        publish(stream, codec_clip("h264", "aac", seconds=8.0, gop_frames=25))  # 3 s files: a rotation or two
        await settle(manager)
        assert len(rec.dvr.files) >= 2, [f.path.name for f in rec.dvr.files]
        first = rec.dvr.files[0].rec_id
        before = rec.dvr.key()
        assert await manager.delete(first) is True
        assert rec.dvr.key() != before  # the text that listed it is not served again
        after = rec.dvr.key()
        rec.dvr.deleted("another-streams-file")
        assert rec.dvr.key() == after
    finally:
        await manager.close()


async def test_a_file_the_writer_creates_only_as_the_manager_closes_still_gets_its_row(manager, clip, monkeypatch):
    gate = threading.Event()
    real_create = recorder_module.create_file

    def held_create(path):
        gate.wait(10)  # mkdir and open on a slow disk: the file exists only after the recording stopped
        return real_create(path)

    monkeypatch.setattr(recorder_module, "create_file", held_create)
    stream = manager.registry.claim_publisher(KEY, Publisher())
    manager.start(KEY)
    publish(stream, clip)
    assert manager.current(KEY) is None  # no row before the file exists
    threading.Timer(0.3, gate.set).start()
    await manager.close()
    catalog = await Catalog.open(catalog_url(manager.cfg))
    try:
        rows, _ = await catalog.list()
    finally:
        await catalog.close()
    [row] = rows
    assert row.status == "complete" and row.bytes == Path(row.location).stat().st_size > 0


@pytest.mark.parametrize("fragment_s", [None, 2.0])
async def test_fragments_last_record_fragment_duration_six_seconds_by_default(tmp_path, fragment_s):
    """A GOP of 1 s: by default a fragment (one write, the DVR's and VOD's segment) holds the GOPs of 6 s."""
    more = {} if fragment_s is None else {"fragment_duration": fragment_s}
    manager = await RecordingManager.open(StreamRegistry(), RecordConfig(
        mode="api", path=str(tmp_path / "rec"), min_free_gb=0, **more), "node-1")
    try:
        stream = manager.registry.claim_publisher(KEY, Publisher())
        rec = manager.start(KEY)
        publish(stream, codec_clip("h264", "aac", seconds=20.0, gop_frames=25))
        path = rec.recorder.current_path
    finally:
        await manager.close()
    with open(path, "rb") as f:
        index = index_file(f)
    seconds = [index.fragment_seconds(f) for f in index.fragments]
    wanted = 6.0 if fragment_s is None else fragment_s
    assert all(abs(s - wanted) < 0.05 for s in seconds[:-1]), seconds  # the last: what was left at the end
    assert len(seconds) == -(-20 // int(wanted)), seconds
