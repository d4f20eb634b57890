"""The DVR window across a recording's files (record/dvr.py): rotated files listed in one live playlist whose
segment numbers run on across a rotation and never go back as the window slides, each file with its own
EXT-X-MAP, a codec change marked as a discontinuity; played with ffmpeg (PyAV) across the files. A file gone
from the disk leaves the others listed; with record.storage = "s3" (moto) the uploader keeps a rotated file's
local copy while the window reaches it, and removes it after (or at the next start)."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone

import m3u8
import pytest

import av

from mediaserver.config import RecordConfig
from mediaserver.errors import MediaError
from mediaserver.media.frames import FrameKind
from mediaserver.record import vod
from mediaserver.record.catalog import Catalog, Recording, default_url
from mediaserver.record.dvr import DvrTrail
from mediaserver.record.objectstore import ObjectStore
from mediaserver.record.recorder import create_file
from mediaserver.record.uploader import KEPT_FILE, Uploader
from mediaserver.record.writer import DiskWriter

from support.codec_clips import codec_clip, media_frames
from test_recorder import FPS, KEY, Clock, Recorder, new_stream, publish
import test_objectstore
from test_objectstore import _until, s3_config

s3, aws_env = test_objectstore.s3, test_objectstore.aws_env  # fixtures: moto in server mode, its credentials


def uri(rec_id: str) -> str:
    return f"{rec_id}.mp4"


def recorded(tmp_path, clips, segment_minutes: float):
    """Record `clips` one after another; returns the Recorder and a trail told of every file it opened."""
    stream = new_stream()
    clock = Clock()
    opened = []
    rec = Recorder(KEY, tmp_path, wall_clock=clock, segment_minutes=segment_minutes, fragment_s=1.0,
                   on_file_opened=lambda path, at: opened.append((path, at)))
    stream.add_sink(rec)
    for clip in clips:
        publish(stream, clip, clock)
    stream.end()
    trail = DvrTrail(3600.0, clock=clock)
    for n, (path, at) in enumerate(opened):
        trail.opened(f"f{n}", path, at)
    for n, closed in enumerate(rec.files):
        trail.closed(f"f{n}", closed.bytes)
    return rec, trail


def test_a_window_over_rotated_files_numbers_segments_on_and_plays_across_them(tmp_path):
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [frames], segment_minutes=0.05)  # 3 s files
    assert len(rec.files) >= 2
    playlist = m3u8.loads(trail.render(uri))
    indexes = [vod.index_path(f.path) for f in rec.files]
    expected = [f"{x.size}@{x.offset}" for index in indexes for x in index.fragments][:-1]  # newest left out
    assert [s.byterange for s in playlist.segments] == expected
    assert [s.uri for s in playlist.segments] == [
        f"f{n}.mp4" for n, index in enumerate(indexes) for _ in index.fragments][:-1]
    assert playlist.media_sequence == 0 and not playlist.is_endlist and playlist.playlist_type is None
    assert [s.discontinuity for s in playlist.segments] == [False] * len(expected)  # same codecs: one timeline
    assert len({s.init_section.uri for s in playlist.segments}) == len(rec.files)

    # ffmpeg reloads a live playlist for ever: ended here, to play what it lists once
    text = trail.render(lambda rec_id: str(rec.files[int(rec_id[1:])].path)) + "#EXT-X-ENDLIST\n"
    (tmp_path / "dvr.m3u8").write_text(text)
    video = 0
    with av.open(str(tmp_path / "dvr.m3u8"), options={"allowed_extensions": "ALL"}) as container:
        for packet in container.demux(video=0):
            video += len(packet.decode())
    last = indexes[-1].fragments[-1]
    assert len(media_frames(frames, FrameKind.VIDEO)) - video == round(indexes[-1].fragment_seconds(last) * FPS)


def test_rendering_the_window_asks_the_kernel_to_read_the_live_edge_segment_ahead(tmp_path, monkeypatch):
    frames = codec_clip("h264", "aac", seconds=4.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [frames], segment_minutes=60)
    advised = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, size, advice: advised.append((offset, size, advice)))
    playlist = m3u8.loads(trail.render(uri))
    size, offset = playlist.segments[-1].byterange.split("@")
    # The newest segment listed (the one live-edge viewers fetch next), read ahead without waiting: written
    # past the page cache, it would otherwise be read from the disk inside the first viewer's sendfile.
    assert advised == [(int(offset), int(size), os.POSIX_FADV_WILLNEED)]


def test_numbers_never_go_back_as_the_window_slides_and_files_leave(tmp_path):
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [frames], segment_minutes=0.05)
    whole = m3u8.loads(trail.render(uri))
    numbered = {s.byterange + s.uri: whole.media_sequence + n for n, s in enumerate(whole.segments)}
    trail.window_s = 2.5
    short = m3u8.loads(trail.render(uri))
    assert 1 <= len(short.segments) < len(whole.segments)
    assert sum(s.duration for s in short.segments) <= 2.5 or len(short.segments) == 1
    for n, s in enumerate(short.segments):
        assert numbered[s.byterange + s.uri] == short.media_sequence + n
    # The oldest file leaves the trail once the next began before the window: the numbers stay.
    trail.opened("later", rec.files[-1].path, trail._clock() + 1.0)
    trail._clock.now += 4000.0
    trail.opened("latest", rec.files[-1].path, trail._clock())
    assert [f.rec_id for f in trail.files] == ["f2", "later", "latest"]  # "later" has no number yet: f2 stays
    trail.render(uri)
    assert trail.files[1].sequence == len(whole.segments) + 1  # f2's last segment, no longer the newest
    trail.closed("later", rec.files[-1].bytes)
    trail.render(uri)  # "latest" is numbered once "later" is whole on disk
    trail._clock.now += 4000.0
    trail.opened("last", rec.files[-1].path, trail._clock())
    assert [f.rec_id for f in trail.files] == ["latest", "last"] and trail.files[0].sequence is not None


def test_a_codec_change_is_a_discontinuity_counted_as_the_window_slides(tmp_path):
    first = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    second = codec_clip("h264", "aac", width=352, height=288, seconds=3.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [first, second], segment_minutes=60)
    assert [(f.width, f.height) for f in rec.files] == [(320, 240), (352, 288)]
    playlist = m3u8.loads(trail.render(uri))
    flags = [s.discontinuity for s in playlist.segments]
    assert flags.count(True) == 1 and flags.index(True) == len(vod.index_path(rec.files[0].path).fragments)
    assert playlist.discontinuity_sequence == 0
    trail.window_s = 1.0  # only the second file's segments: the discontinuity has slid out, and is counted
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in trail.render(uri)


def test_a_file_gone_from_the_disk_is_left_out(tmp_path):
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [frames], segment_minutes=0.05)
    trail.render(uri)  # numbers learnt
    gone = len(vod.index_path(rec.files[0].path).fragments)
    rec.files[0].path.unlink()  # retention, or an operator
    playlist = m3u8.loads(trail.render(uri))
    assert playlist.segments and playlist.segments[0].uri == "f1.mp4"
    assert playlist.media_sequence == gone  # the next file keeps its numbers
    with pytest.raises(MediaError):
        DvrTrail(0)


def test_an_empty_trail_has_no_key_to_render_by():
    assert DvrTrail(10).key() == ("", "", -1, -1, 0)


async def test_a_direct_write_that_leaves_the_size_as_it_was_still_changes_the_key(tmp_path):
    disk = DiskWriter(asyncio.get_running_loop(), direct=True)

    class File:
        fd = -1

    f = File()
    path = tmp_path / "a.mp4"
    disk.create(f, path, create_file, lambda *a: None, lambda *a: None)
    disk.write(f, b"x" * 1000)
    await disk.caught_up()
    trail = DvrTrail(10)
    trail.opened("a", path, 0.0)
    before = trail.key()
    await asyncio.sleep(0.05)  # past the filesystem's clock step
    disk.write(f, b"y" * 100)  # within the block the padding fills: the size stays 4096
    await disk.caught_up()
    assert path.stat().st_size == 4096 and trail.key() != before
    disk.close(f, sync=False)
    await asyncio.to_thread(disk.stop)
    assert path.read_bytes() == b"x" * 1000 + b"y" * 100


def test_the_next_file_waits_for_its_predecessors_last_pieces_to_reach_the_disk(tmp_path):
    # The writer's thread may still hold a closed file's last pieces when the next file is rendered:
    # numbering the next one from a short index would give two segments the same number.
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [frames], segment_minutes=0.05)
    first = rec.files[0]
    data = first.path.read_bytes()
    last = vod.index_file(data).fragments[-1]
    first.path.write_bytes(data[:last.offset])  # its last fragment not written yet
    cut = m3u8.loads(trail.render(uri))
    assert {s.uri for s in cut.segments} == {"f0.mp4"}  # the files after it wait for their numbers
    first.path.write_bytes(data)  # the writer caught up
    whole = m3u8.loads(trail.render(uri))
    assert [s.uri for s in whole.segments][len(cut.segments) + 1] == "f1.mp4"
    assert whole.media_sequence == 0 and len({s.uri for s in whole.segments}) == len(rec.files)


def _segments(trail) -> list[tuple[str, str]]:
    return [(s.uri, s.byterange) for s in m3u8.loads(trail.render(uri)).segments]


def _all_segments(rec) -> list[tuple[str, str]]:
    """Every segment of the recording's files as a render lists them (the newest one's last left out)."""
    return [(f"f{n}.mp4", f"{x.size}@{x.offset}") for n, f in enumerate(rec.files)
            for x in vod.index_path(f.path).fragments][:-1]


def test_a_file_gone_before_any_render_leaves_the_later_ones_listed_and_numbered(tmp_path):
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [frames], segment_minutes=0.05)
    assert len(rec.files) >= 3
    expected = _all_segments(rec)
    first = len(vod.index_path(rec.files[0].path).fragments)
    rec.files[0].path.unlink()  # uploaded to object storage and removed, or retention, before anyone played
    playlist = m3u8.loads(trail.render(uri))
    assert [(s.uri, s.byterange) for s in playlist.segments] == expected[first:]
    assert playlist.media_sequence == 0 and m3u8.loads(trail.render(uri)).media_sequence == 0  # numbers kept


def test_a_file_gone_in_the_middle_is_a_discontinuity_and_numbers_never_go_back(tmp_path):
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [frames], segment_minutes=0.05)
    counts = [len(vod.index_path(f.path).fragments) for f in rec.files]
    expected = _all_segments(rec)
    rec.files[1].path.unlink()
    playlist = m3u8.loads(trail.render(uri))
    after = expected[:counts[0]] + expected[counts[0] + counts[1]:]
    assert [(s.uri, s.byterange) for s in playlist.segments] == after
    assert [n for n, s in enumerate(playlist.segments) if s.discontinuity] == [counts[0]]  # time is missing there
    assert playlist.media_sequence == 0
    numbered = {(s.uri, s.byterange): n for n, s in enumerate(playlist.segments)}
    rec.files[0].path.unlink()  # now the head: its segments leave, the others keep their numbers
    later = m3u8.loads(trail.render(uri))
    assert later.segments and later.segments[0].uri == "f2.mp4" and later.discontinuity_sequence == 1
    for n, s in enumerate(later.segments):
        assert numbered[(s.uri, s.byterange)] == later.media_sequence + n


def test_a_file_read_then_gone_in_the_middle_takes_the_segments_before_it_out_from_the_head(tmp_path):
    # Its segments were listed: a live playlist may only drop segments from its head, never from its middle.
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [frames], segment_minutes=0.05)
    whole = m3u8.loads(trail.render(uri))
    numbered = {(s.uri, s.byterange): n for n, s in enumerate(whole.segments)}
    rec.files[1].path.unlink()
    playlist = m3u8.loads(trail.render(uri))
    assert {s.uri for s in playlist.segments} == {f"f{n}.mp4" for n in range(2, len(rec.files))}
    for n, s in enumerate(playlist.segments):
        assert numbered[(s.uri, s.byterange)] == playlist.media_sequence + n


def test_the_window_holds_a_file_until_the_next_one_started_before_it(tmp_path):
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, trail = recorded(tmp_path, [frames], segment_minutes=0.05)
    files = trail.files
    trail._clock.now = files[2].started_at + trail.window_s - 0.5
    assert [trail.holds(f.rec_id) for f in files] == [False, True] + [True] * (len(files) - 2)
    trail._clock.now += 10_000.0
    assert trail.holds(files[-1].rec_id) and not trail.holds(files[-2].rec_id)  # the newest: always
    assert not trail.holds("unknown")


# ----- record.storage = "s3": the uploader keeps a file's local copy while the window reaches it ---------


async def test_with_object_storage_uploaded_files_stay_listed_while_in_the_window(s3, aws_env, tmp_path):
    s3.create_bucket("dvr")
    root = tmp_path / "rec"
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, trail = recorded(root, [frames], segment_minutes=0.05)
    assert len(rec.files) >= 3
    expected = _all_segments(rec)
    first = len(vod.index_path(rec.files[0].path).fragments)
    catalog = await Catalog.open(default_url(tmp_path))
    rotated = rec.files[:-1]  # uploaded; the newest is still being recorded
    for n, f in enumerate(rotated):
        await catalog.add(Recording(id=f"f{n}", app="live", stream="cam", node="n1", location=str(f.path),
                                    started_at=datetime.fromtimestamp(f.started_at, timezone.utc),
                                    status="uploading", final_status="complete", bytes=f.bytes))
    cfg = RecordConfig(path=str(root), storage="s3", s3=s3_config(s3, "dvr"))
    store = await ObjectStore.open(cfg.s3)
    uploader = Uploader(catalog, store, cfg, "n1", lambda row: None, held=lambda row: trail.holds(row.id))
    restarted: Uploader | None = None
    try:
        await uploader.start()
        for n in range(len(rotated)):
            await _until(lambda: _in_bucket(catalog, f"f{n}"))
        assert len(s3.keys("dvr")) == 2 * len(rotated)
        assert all(f.path.exists() for f in rotated), "kept: the DVR window still lists them"
        assert _segments(trail) == expected  # the window goes on across the rotations
        assert (root / KEPT_FILE).exists()

        # The window slides past the first file: the next pass removes its copy; the numbers stay.
        trail._clock.now = trail.files[2].started_at + trail.window_s - 0.5
        await uploader.sweep()
        assert not rotated[0].path.exists() and all(f.path.exists() for f in rotated[1:])
        playlist = m3u8.loads(trail.render(uri))
        assert [(s.uri, s.byterange) for s in playlist.segments] == expected[first:]
        assert playlist.media_sequence == first

        # A restart: what the last run kept is removed at start (no window reaches it any more).
        await uploader.close()
        restarted = Uploader(catalog, await ObjectStore.open(cfg.s3), cfg, "n1", lambda row: None,
                             held=lambda row: True)
        await restarted.start()
        assert not any(f.path.exists() for f in rotated) and not (root / KEPT_FILE).exists()
        assert rec.files[-1].path.exists()  # the one being recorded is never touched
    finally:
        await uploader.close()
        if restarted is not None:
            await restarted.close()
        await catalog.close()


async def _in_bucket(catalog, rec_id: str) -> bool:
    row = await catalog.get(rec_id)
    return row is not None and row.location.startswith("s3://")
