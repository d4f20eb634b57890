"""Metadata and sequence headers in the hub: they carry the stream's current time and never count as a
viewer's lag; a malformed sequence header does not replace the last good one; a sink that fails is
detached and ended (issue 9, defects 1 and 2)."""

from __future__ import annotations

import pytest

from mediaserver.hub.stream import Stream
from mediaserver.hub.subscriber import SlowConsumer
from mediaserver.media import h264
from mediaserver.media.frames import FrameKind

from test_hub import KEY, FakeClock, FakePublisher, audio_body, make_registry, publish_gop, video_body

METADATA = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"
SPS = bytes((0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40))
PPS = bytes((0x68, 0xEB, 0xE3, 0xCB))
GOOD_AVC = bytes((0x17, 0, 0, 0, 0)) + h264.build_avc_config([SPS], [PPS])
# An AVCDecoderConfigurationRecord whose one SPS claims 0 bytes.
BAD_AVC = bytes((0x17, 0, 0, 0, 0, 1, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x00, 0x01, 0x00, 0x04)) + PPS


class RecordingSink:
    def __init__(self, fail_on_frame: int | None = None) -> None:
        self.frames: list = []
        self.discontinuities = 0
        self.ends = 0
        self.fail_on_frame = fail_on_frame

    def on_frame(self, frame) -> None:
        if self.fail_on_frame is not None and len(self.frames) == self.fail_on_frame:
            raise RuntimeError("a bug in the packager")
        self.frames.append(frame)

    def on_discontinuity(self) -> None:
        self.discontinuities += 1

    def on_end(self) -> None:
        self.ends += 1


def publish_watched(stream: Stream, viewer, start_ms: int, seconds: int, clock: FakeClock) -> int:
    """Publish `seconds` of 30 fps GOPs, the viewer reading after each one (a viewer in sync)."""
    ts = start_ms
    for _ in range(seconds):
        ts = publish_gop(stream, ts, frames=30)
        assert len(viewer.take(clock())) == 60
    return ts


def live_stream(clock: FakeClock) -> Stream:
    stream = make_registry(clock).claim_publisher(KEY, FakePublisher())
    stream.publish_metadata(METADATA, {}, clock())
    stream.publish_video(0, GOOD_AVC, clock())
    stream.publish_audio(0, audio_body(config=True), clock())
    return stream


def test_metadata_sent_mid_stream_three_times_is_not_lag_for_a_viewer_in_sync():
    clock = FakeClock()
    stream = live_stream(clock)
    viewer, _ = stream.subscribe("flv", "viewer", clock())
    ts = publish_watched(stream, viewer, 0, 5, clock)  # 5 s: more than the 3 s window
    for _ in range(3):  # what three publisher reconnects within a minute send
        stream.publish_metadata(METADATA, {"n": 1}, clock())
        ts = publish_gop(stream, ts, frames=2)
        got = viewer.take(clock())
        assert [f.kind for f in got][0] == FrameKind.DATA and len(got) == 5
    assert viewer.frames_dropped == 0 and viewer.overflows == 0 and not viewer.closed
    assert stream.frames_dropped == 0


def test_metadata_and_configs_carry_the_streams_current_time_not_their_own():
    clock = FakeClock()
    stream = live_stream(clock)
    sink = RecordingSink()
    stream.add_sink(sink)
    ts = publish_gop(stream, 0, frames=90)
    newest = stream.gop.newest_dts
    meta = stream.publish_metadata(METADATA, {}, clock())
    config = stream.publish_video(0, GOOD_AVC, clock())  # an encoder resending its config stamped 0
    audio_config = stream.publish_audio(12, audio_body(config=True), clock())
    assert meta.dts_ms == config.dts_ms == audio_config.dts_ms == newest
    assert int.from_bytes(config.tag[4:7], "big") == newest  # the FLV tag says so too
    assert meta.tag[4:8] == bytes(4), "onMetaData's FLV tag stays at 0, as players built on ffmpeg want it"
    publish_gop(stream, ts, frames=3)
    stream.flush_sinks()
    assert sink.discontinuities == 0, "a config stamped 0 is not a timestamp jump"
    video = [f.dts_ms for f in sink.frames if f.kind == FrameKind.VIDEO and not f.is_config]
    assert video == sorted(video) and video[-1] == ts + 66


def test_a_viewer_waiting_on_a_config_is_judged_by_the_next_media_frame():
    clock = FakeClock()
    stream = live_stream(clock)
    viewer, _ = stream.subscribe("flv", "viewer", clock())
    ts = publish_watched(stream, viewer, 0, 5, clock)
    stream.publish_video(0, GOOD_AVC, clock())
    publish_gop(stream, ts, frames=1)
    assert stream.gop.media_dts_from(viewer.cursor) == ts
    assert len(viewer.take(clock())) == 3 and viewer.overflows == 0


def test_a_viewer_behind_in_media_still_overflows_and_is_ended_as_before():
    clock = FakeClock()
    stream = live_stream(clock)
    viewer, _ = stream.subscribe("flv", "viewer", clock())
    ts = 0
    with pytest.raises(SlowConsumer):
        for _ in range(10):
            stream.publish_metadata(METADATA, {}, clock())
            ts = publish_gop(stream, ts, frames=150)
            viewer.take(clock())
    assert viewer.closed and viewer.close_reason == "slow_consumer"


def test_a_malformed_sequence_header_is_passed_on_but_late_joiners_get_the_last_good_one():
    clock = FakeClock()
    stream = live_stream(clock)
    good = stream.info.video_config
    ts = publish_gop(stream, 0, frames=30)
    bad = stream.publish_video(ts, BAD_AVC, clock())
    publish_gop(stream, ts, frames=30)
    assert bad is not None and bad.is_config
    assert stream.info.video_config is good and stream.bad_sequence_headers == 1
    assert any(f is bad for f in stream.gop.frames_from(stream.gop.base)), "viewers in sync get it as sent"
    _, start = stream.subscribe("flv", "late", clock())
    assert start[1] is good
    assert stream.history()[0] is good, "a packager starting now gets the good one first"
    assert stream.snapshot(clock())["bad_sequence_headers"] == 1


def test_a_first_sequence_header_that_does_not_parse_is_still_the_streams_config():
    clock = FakeClock()
    stream = make_registry(clock).claim_publisher(KEY, FakePublisher())
    first = stream.publish_video(0, BAD_AVC, clock())
    assert stream.info.video_config is first and stream.info.video_codec == "h264"
    later = stream.publish_video(0, video_body(False, config=True), clock())  # malformed too: the newer one
    assert stream.info.video_config is later
    good = stream.publish_video(0, GOOD_AVC, clock())
    stream.publish_video(0, BAD_AVC, clock())
    assert stream.info.video_config is good and stream.bad_sequence_headers == 3


def test_a_sink_that_fails_is_detached_and_ended_so_its_owner_can_replace_it():
    clock = FakeClock()
    stream = live_stream(clock)
    failing, healthy = RecordingSink(fail_on_frame=5), RecordingSink()
    stream.add_sink(failing)
    stream.add_sink(healthy)
    publish_gop(stream, 0, frames=10)
    stream.flush_sinks()
    assert failing not in stream.sinks and failing.ends == 1
    assert healthy in stream.sinks and len(healthy.frames) == 20 and healthy.ends == 0
    stream.end()
    assert failing.ends == 1 and healthy.ends == 1


class BatchSink(RecordingSink):
    """A sink that takes a read's frames in one call (as the Recorder does)."""

    def __init__(self, fail_on_batch: int | None = None) -> None:
        super().__init__()
        self.batches: list[list] = []
        self.fail_on_batch = fail_on_batch

    def on_frames(self, frames) -> None:
        if self.fail_on_batch is not None and len(self.batches) == self.fail_on_batch:
            raise RuntimeError("a bug in the packager")
        self.batches.append(list(frames))
        self.frames.extend(frames)


def test_a_sink_with_on_frames_gets_each_read_in_one_call_in_order():
    clock = FakeClock()
    stream = live_stream(clock)
    batch, single = BatchSink(), RecordingSink()
    stream.add_sink(batch)
    stream.add_sink(single)
    publish_gop(stream, 0, frames=5)
    stream.flush_sinks()  # one read
    publish_gop(stream, 200, frames=3)
    stream.flush_sinks()  # the next
    assert [len(b) for b in batch.batches] == [10, 6]
    assert batch.frames == single.frames and len(single.frames) == 16, "the same frames, in the same order"
    assert [f.dts_ms for f in batch.frames if f.kind == FrameKind.VIDEO] == sorted(
        f.dts_ms for f in batch.frames if f.kind == FrameKind.VIDEO)


def test_a_batch_sink_that_fails_is_detached_and_ended_and_the_others_go_on():
    clock = FakeClock()
    stream = live_stream(clock)
    failing, healthy = BatchSink(fail_on_batch=1), RecordingSink()
    stream.add_sink(failing)
    stream.add_sink(healthy)
    for start in (0, 200, 400):
        publish_gop(stream, start, frames=4)
        stream.flush_sinks()
    assert failing not in stream.sinks and failing.ends == 1 and len(failing.batches) == 1
    assert healthy in stream.sinks and len(healthy.frames) == 24


def test_a_sink_removed_gets_the_frames_that_arrived_before_its_removal():
    clock = FakeClock()
    stream = live_stream(clock)
    sink = RecordingSink()
    stream.add_sink(sink)
    publish_gop(stream, 0, frames=10)  # no flush: the publisher's last read, and it left
    stream.remove_sink(sink)
    assert len(sink.frames) == 20
    publish_gop(stream, 400, frames=10)
    stream.flush_sinks()
    assert len(sink.frames) == 20


def test_a_reconnecting_publisher_keeps_the_distance_between_its_first_audio_and_video_frames():
    clock = FakeClock()
    reg = make_registry(clock)
    stream = reg.claim_publisher(KEY, FakePublisher())
    stream.publish_video(0, GOOD_AVC, clock())
    publish_gop(stream, 0, frames=60)
    reg.release_publisher(stream, stream.publisher)
    reg.claim_publisher(KEY, FakePublisher("127.0.0.1:6000"))  # back within the grace
    newest = stream.gop.newest_dts
    stream.publish_metadata(METADATA, {}, clock())
    config = stream.publish_video(0, GOOD_AVC, clock())
    stream.publish_audio(0, audio_body(config=True), clock())
    audio = stream.publish_audio(23, audio_body(), clock())  # audio first, its clock a little ahead
    video = stream.publish_video(0, video_body(True), clock())
    assert config.dts_ms == newest
    assert video.dts_ms == newest + 20 and audio.dts_ms == newest + 43, "the session's origin is its configs' 0"


def test_a_session_cut_off_after_a_p_frame_resumes_after_that_frame_is_shown():
    clock = FakeClock()
    reg = make_registry(clock)
    stream = reg.claim_publisher(KEY, FakePublisher())
    stream.publish_video(0, GOOD_AVC, clock())
    publish_gop(stream, 0, frames=30)
    p_frame = bytes((0x27, 1, 0, 0, 160)) + b"\x00" * 50  # shown 160 ms after its decode time
    last = stream.publish_video(990, p_frame, clock())  # ... and its B-frames never come
    reg.release_publisher(stream, stream.publisher)
    reg.claim_publisher(KEY, FakePublisher("127.0.0.1:6000"))
    stream.publish_video(0, GOOD_AVC, clock())
    key = stream.publish_video(0, bytes((0x17, 1, 0, 0, 80)) + b"\x00" * 50, clock())
    assert key.pts_ms > last.pts_ms and key.dts_ms == last.pts_ms + 20


def test_a_first_viewer_or_sink_calls_on_audience_once_and_segment_sinks_do_not_wait():
    clock = FakeClock()
    stream = live_stream(clock)
    calls: list[str] = []
    stream.on_audience = lambda: calls.append("woken")
    patient = RecordingSink()
    patient.waits_for_frames = False  # as the TS HLS packager
    stream.add_sink(patient)
    assert calls == ["woken"] and stream.on_audience is None
    assert stream.waiting_sinks == 0
    stream.add_sink(RecordingSink())
    assert stream.waiting_sinks == 1
    stream.on_audience = lambda: calls.append("again")
    stream.subscribe("flv", "peer", clock())
    assert calls == ["woken", "again"]
    stream.remove_sink(stream.sinks[1])
    assert stream.waiting_sinks == 0
