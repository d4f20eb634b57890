"""The Recorder as the hub drives it: real ffmpeg clips published through a Stream, files decoded by PyAV."""

from __future__ import annotations

import dataclasses

import errno
import math
import os
from pathlib import Path

import av
import pytest

from mediaserver.errors import UsageError
from mediaserver.hub.gop import GopLimits
from mediaserver.hub.pacing import MergePolicy
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.hub.subscriber import SlowPolicy
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.record import vod
from mediaserver.record.recorder import COMPLETE, FAILED, ROTATED, FileClosed, Recorder

from support.codec_clips import codec_clip, media_frames

KEY = StreamKey("live", "cam")
FPS = 25


class FakePublisher:
    peer = "127.0.0.1:1"

    def close(self, reason: str) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def new_stream() -> Stream:
    stream = Stream(KEY, GopLimits(), SlowPolicy(), 0.0)
    stream.begin_session(FakePublisher(), 0.0)
    return stream


def publish(stream: Stream, frames: list[Frame], clock: Clock | None = None, per_read: int = 1) -> None:
    """Publish a clip's tags as ingest does: a flush after every `per_read` tags, as after each socket read."""
    for i, frame in enumerate(frames, 1):
        if clock is not None:
            clock.now += 0.001
        if frame.kind == FrameKind.VIDEO:
            stream.publish_video(frame.dts_ms, bytes(frame.body), 0.0)
        elif frame.kind == FrameKind.AUDIO:
            stream.publish_audio(frame.dts_ms, bytes(frame.body), 0.0)
        if i % per_read == 0:
            stream.flush_sinks()
    stream.flush_sinks()


def record(tmp_path: Path, frames: list[Frame], per_read: int = 1, **kwargs) -> tuple[Recorder, Stream, list]:
    events: list = []
    stream = new_stream()
    clock = Clock()
    rec = Recorder(
        KEY, tmp_path, wall_clock=clock,
        on_file_opened=lambda path, at: events.append(("opened", path, at)),
        on_progress=lambda size, duration: events.append(("progress", size, duration)),
        on_file_closed=lambda closed: events.append(("closed", closed)),
        **kwargs,
    )
    for frame in stream.history():
        rec.on_frame(frame)
    stream.add_sink(rec)
    publish(stream, frames, clock, per_read)
    stream.end()
    return rec, stream, events


def decode(path: Path, *, until_error: bool = False) -> dict[str, list[float]]:
    """Every decoded frame's time (s) per stream type; any decoding error raises, or with `until_error`
    ends the decoding (a cut file's last packet is cut short too)."""
    out: dict[str, list[float]] = {"video": [], "audio": []}
    with av.open(str(path)) as container:
        try:
            for packet in container.demux():
                for frame in packet.decode():
                    out[packet.stream.type].append(float(frame.time))
        except av.error.InvalidDataError:
            if not until_error:
                raise
    return out


@pytest.mark.parametrize("video,audio", [("h264", "aac"), ("h264", None), (None, "aac")])
def test_a_recorded_clip_decodes_whole(tmp_path, video, audio):
    frames = codec_clip(video, audio, seconds=5.0, gop_frames=FPS)
    rec, stream, events = record(tmp_path, frames)
    assert stream.sinks == [] and rec.stopped
    [closed] = rec.files
    assert closed.status == COMPLETE and closed.error is None
    assert closed.path.is_relative_to(tmp_path / "live" / "cam") and closed.path.suffix == ".mp4"
    assert closed.bytes == closed.path.stat().st_size
    assert events[0][0] == "opened" and events[0][1] == closed.path
    assert events[-1] == ("closed", closed)
    progress = [e for e in events if e[0] == "progress"]
    assert progress and progress[-1][1] == closed.bytes
    assert abs(closed.duration_s - 5.0) <= 1.0  # within one GOP

    decoded = decode(closed.path)
    if video:
        assert len(decoded["video"]) == len(media_frames(frames, FrameKind.VIDEO))
        assert closed.codecs[0].startswith("avc1.") and (closed.width, closed.height) == (320, 240)
        span = max(decoded["video"]) - min(decoded["video"]) + 1 / FPS
        assert abs(span - 5.0) <= 1.0
    else:
        assert decoded["video"] == [] and closed.width == 0
    if audio:
        assert closed.codecs[-1] == "mp4a.40.2"
        # All but the last few AAC frames the segmenter may still hold at the very end.
        assert len(decoded["audio"]) >= len(media_frames(frames, FrameKind.AUDIO)) - 3
        assert abs(max(decoded["audio"]) - min(decoded["audio"]) - 5.0) <= 1.0
    else:
        assert decoded["audio"] == []
    with av.open(str(closed.path)) as container:
        assert len(container.streams) == (1 if video is None or audio is None else 2)


@pytest.mark.parametrize("segment_minutes", [60.0, 2.0 / 60])
def test_moof_sequence_numbers_run_through_the_file(tmp_path, segment_minutes):
    # (Rotated every 2 s: each later file starts again at 1, the fragmenter's own numbers running on.)
    frames = codec_clip("h264", "aac", seconds=5.0, gop_frames=FPS)
    rec, _, _ = record(tmp_path, frames, fragment_s=1.0, segment_minutes=segment_minutes)
    assert len(rec.files) == (1 if segment_minutes == 60.0 else 3)
    for closed in rec.files:
        data = closed.path.read_bytes()
        numbers, tracks, pos = [], set(), 0
        while pos < len(data):
            size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
            if kind == b"moof":
                numbers.append(int.from_bytes(data[pos + 20:pos + 24], "big"))
                tracks.add(int.from_bytes(data[pos + 44:pos + 48], "big"))  # tfhd track_ID
            pos += size
        assert numbers == list(range(1, len(numbers) + 1)) and tracks == {1, 2}
        assert decode(closed.path)["video"]


def test_a_file_cut_anywhere_plays_up_to_its_last_whole_fragment(tmp_path):
    frames = codec_clip("h264", "aac", seconds=5.0, gop_frames=FPS)
    rec, _, _ = record(tmp_path, frames, fragment_s=1.0)
    data = rec.files[0].path.read_bytes()
    whole = vod.index_file(data)
    assert whole.total_bytes == len(data) and len(whole.fragments) >= 4
    ends = [x.offset + x.size for x in whole.fragments]
    cuts = sorted({whole.init_size + 5, *(e - 1 for e in ends), *(e + 7 for e in ends[:-1]),
                   *(x.offset + x.size // 2 for x in whole.fragments)})
    for cut in cuts:
        path = tmp_path / f"cut-{cut}.mp4"
        path.write_bytes(data[:cut])
        index = vod.index_file(path.open("rb"))
        expected = [x for x in whole.fragments if x.offset + x.size <= cut]
        listed = list(index.fragments)
        # The whole ones, and maybe the start of the next: its video without the audio that followed.
        assert listed[: len(expected)] == expected, cut
        assert len(listed) - len(expected) in (0, 1), cut
        if len(listed) > len(expected):
            nxt, tail = whole.fragments[len(expected)], listed[-1]
            assert (tail.offset, tail.start, tail.duration) == (nxt.offset, nxt.start, nxt.duration), cut
            assert tail.size < nxt.size
        assert index.total_bytes + index.trailing_bytes == cut
        decoded = decode(path, until_error=True)
        frames_whole = sum(x.duration for x in expected) * FPS // whole.timescale
        assert len(decoded["video"]) >= frames_whole, cut


def test_rotation_by_duration_gives_several_playable_files(tmp_path):
    frames = codec_clip("h264", "aac", seconds=8.0, gop_frames=FPS)
    rec, _, events = record(tmp_path, frames, segment_minutes=0.05, fragment_s=1.0)  # 3 s files
    assert len(rec.files) >= 2
    assert [f.status for f in rec.files] == [ROTATED] * (len(rec.files) - 1) + [COMPLETE]
    assert len({f.path for f in rec.files}) == len(rec.files)
    assert [e[0] for e in events if e[0] != "progress"] == ["opened", "closed"] * len(rec.files)
    total = 0
    for closed in rec.files[:-1]:
        assert 3.0 <= closed.duration_s <= 4.5
    for closed in rec.files:
        decoded = decode(closed.path)
        assert decoded["audio"] and decoded["video"]
        total += len(decoded["video"])
    assert total == len(media_frames(frames, FrameKind.VIDEO))


def test_an_audio_only_stream_rotates_too(tmp_path):
    frames = codec_clip(None, "aac", seconds=8.0)
    rec, _, _ = record(tmp_path, frames, segment_minutes=0.05, fragment_s=1.0)
    assert len(rec.files) >= 2 and rec.files[0].status == ROTATED
    assert all(decode(f.path)["audio"] for f in rec.files)


def test_a_publisher_reconnecting_continues_the_same_file(tmp_path):
    frames = codec_clip("h264", "aac", seconds=4.0, gop_frames=FPS)
    stream = new_stream()
    rec = Recorder(KEY, tmp_path, wall_clock=Clock())
    stream.add_sink(rec)
    publish(stream, frames)
    stream.end_session()
    stream.begin_session(FakePublisher(), 1.0)  # within the grace period: the hub rebases the timestamps
    publish(stream, frames)
    stream.end()
    [closed] = rec.files
    assert closed.status == COMPLETE
    decoded = decode(closed.path)
    assert len(decoded["video"]) == 2 * len(media_frames(frames, FrameKind.VIDEO))
    assert decoded["video"] == sorted(decoded["video"])
    assert 7.5 <= closed.duration_s <= 9.0


def test_a_stream_only_recorded_waits_for_nobody_so_its_reads_may_merge_as_if_unwatched(tmp_path):
    stream = new_stream()
    rec = Recorder(KEY, tmp_path, wall_clock=Clock())
    stream.add_sink(rec)
    assert stream.waiting_sinks == 0 and stream.output_due_ms() == math.inf
    policy = MergePolicy(50, merge_when_unwatched=True, unwatched_ms=250)
    assert policy.read_pause(0, len(stream.sinks), math.inf, 0.0) == (0.0, 0.25)
    rec.stop()


def test_a_new_video_config_starts_a_new_file(tmp_path):
    first = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    second = codec_clip("h264", "aac", width=352, height=288, seconds=3.0, gop_frames=FPS)
    stream = new_stream()
    rec = Recorder(KEY, tmp_path, wall_clock=Clock())
    stream.add_sink(rec)
    publish(stream, first)
    publish(stream, second)  # new SPS, and timestamps back at 0 (rebased by the hub)
    stream.end()
    assert [(f.status, f.width, f.height) for f in rec.files] == [(ROTATED, 320, 240), (COMPLETE, 352, 288)]
    for closed, clip in zip(rec.files, (first, second)):
        assert len(decode(closed.path)["video"]) == len(media_frames(clip, FrameKind.VIDEO))


def test_a_full_disk_stops_the_recording_once_and_never_raises_into_the_hub(tmp_path):
    frames = codec_clip("h264", "aac", seconds=5.0, gop_frames=FPS)
    writes = []

    def write(fd: int, buffers) -> int:
        if len(writes) == 3:  # the init and two segments fit; then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        writes.append(sum(map(len, buffers)))
        return os.writev(fd, buffers)

    rec, stream, events = record(tmp_path, frames, write=write, fragment_s=1.0)
    closed_events = [e for e in events if e[0] == "closed"]
    assert len(closed_events) == 1
    closed: FileClosed = closed_events[0][1]
    assert closed.status == FAILED and "No space left" in (closed.error or "")
    assert closed.bytes == sum(writes) == closed.path.stat().st_size
    assert rec.stopped and len(writes) == 3
    assert stream.frames_skipped == {}  # not detached as a failed sink: it stopped by itself
    assert vod.index_file(closed.path.read_bytes()).trailing_bytes == 0
    assert decode(closed.path)["video"]


def test_reads_of_many_frames_record_every_frame_and_skip_only_a_bad_one(tmp_path):
    frames = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    video = media_frames(frames, FrameKind.VIDEO)
    bad = video[7]  # inside the first GOP: its first NAL length overruns the sample
    body = bytearray(bad.body)
    body[5:9] = (0xFFFFFF00).to_bytes(4, "big")
    broken = [dataclasses.replace(f, tag=bytes(f.tag[:11]) + bytes(body) + bytes(f.tag[-4:])) if f is bad else f
              for f in frames]
    rec, _, _ = record(tmp_path, broken, per_read=12)  # about 200 ms of media per read
    assert rec.frames_skipped == 1
    decoded = decode(rec.files[0].path)
    assert len(decoded["video"]) == len(video) - 1
    assert len(decoded["audio"]) == len(media_frames(frames, FrameKind.AUDIO))


def test_a_short_write_is_finished(tmp_path):
    frames = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    rec, _, _ = record(tmp_path, frames, write=lambda fd, buffers: os.write(fd, b"".join(buffers)[:1000]))
    assert rec.files[0].status == COMPLETE
    assert len(decode(rec.files[0].path)["video"]) == len(media_frames(frames, FrameKind.VIDEO))


def test_a_template_that_escapes_the_root_fails_the_recording_cleanly(tmp_path):
    frames = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    rec, _, events = record(tmp_path / "root", frames, template="../{stream}.mp4")
    [closed] = rec.files
    assert closed.status == FAILED and "escapes" in (closed.error or "")
    assert not (tmp_path / "cam.mp4").exists()


def test_a_second_recording_in_the_same_second_gets_its_own_name(tmp_path):
    frames = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    first, _, _ = record(tmp_path, frames)
    second, _, _ = record(tmp_path, frames)
    assert first.files[0].path != second.files[0].path
    assert second.files[0].path.name == first.files[0].path.stem + "-1.mp4"


def test_fsync_jobs_come_due_by_the_clock_and_at_close(tmp_path):
    frames = codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS)
    clock = Clock()
    stream = new_stream()
    rec = Recorder(KEY, tmp_path, wall_clock=clock, fsync_interval_s=10.0, fragment_s=1.0)
    stream.add_sink(rec)
    publish(stream, frames[: len(frames) // 2])
    assert rec.current_path is not None
    assert rec.take_sync_jobs() == []
    clock.now += 10.0
    jobs = rec.take_sync_jobs()
    assert len(jobs) == 1 and rec.take_sync_jobs() == []
    publish(stream, frames[len(frames) // 2:])
    stream.end()
    jobs += rec.take_sync_jobs()  # the close adds one more
    assert len(jobs) == 2
    for job in jobs:
        job()  # each fsyncs its own duplicate descriptor, even after the file closed


def test_bad_arguments_are_refused():
    with pytest.raises(UsageError, match="segment_minutes"):
        Recorder(KEY, "/tmp", segment_minutes=0)
    for template in ("{app}/{nope}.mp4", "{start:%Y", "{0}.mp4"):
        with pytest.raises(UsageError, match="template"):
            Recorder(KEY, "/tmp", template=template)


_KILLED_RECORDER = """
import sys, time
from pathlib import Path
from mediaserver.media.frames import FrameKind
from support.codec_clips import codec_clip
from test_recorder import KEY, Clock, new_stream, publish
from mediaserver.record.recorder import Recorder
frames = codec_clip("h264", "aac", seconds=6.0, gop_frames=25)
stream = new_stream()
rec = Recorder(KEY, Path(sys.argv[1]), wall_clock=Clock(), fragment_s=1.0,
               on_progress=lambda size, duration: print(size, flush=True))
stream.add_sink(rec)
for frame in frames:
    publish(stream, [frame])
    time.sleep(0.002)
time.sleep(60)  # killed before this ends
"""


def test_a_recorder_killed_mid_stream_leaves_a_playable_file(tmp_path):
    import signal
    import subprocess
    import sys

    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parents[2]), str(here.parents[1]), str(here)])}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RECORDER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    try:
        written = [int(proc.stdout.readline()) for _ in range(6)]  # the init's first segments are on disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    [path] = list(tmp_path.rglob("*.mp4"))
    index = vod.index_file(path.open("rb"))
    assert index.total_bytes >= written[-1] and index.trailing_bytes == 0
    assert len(index.fragments) >= 2
    decoded = decode(path)
    assert len(decoded["video"]) >= sum(x.duration for x in index.fragments) * FPS // index.timescale
    assert decoded["audio"]
