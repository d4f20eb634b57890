"""Bad media from a publisher never stops a packager (issue 9, defect 1; ARCHITECTURE.md section 4).

A frame or sequence header the MPEG-TS or CMAF packager cannot parse, live or in the replayed history, is
skipped and counted on the stream, logged once per interval; the output goes on. A packager that fails
anyway is ended (its playlist says so) and the pool starts a fresh one at the next request.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from mediaserver.config import HlsConfig
from mediaserver.edge.cmaf import CmafPackager
from mediaserver.edge.packagers import HlsPackager, PackagerPool
from mediaserver.hub.gop import GopLimits
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.media.frames import Frame, FrameKind

KEY = StreamKey("live", "bad")
CFG = HlsConfig(segment_duration=1.0)

# A non-key H.264 frame whose first NAL unit length prefix claims far more than the frame holds.
CORRUPT_FRAME = bytes((0x27, 1, 0, 0, 0)) + (0xFFFFFF00).to_bytes(4, "big") + b"\x41\x9a" * 40
CORRUPT_KEYFRAME = bytes((0x17, 1, 0, 0, 0)) + (0xFFFFFF00).to_bytes(4, "big") + b"\x65\x88" * 40
# An AVCDecoderConfigurationRecord whose SPS claims 0 bytes.
BAD_AVC_CONFIG = bytes((0x17, 0, 0, 0, 0, 1, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x00, 0x01, 0x00, 0x01, 0x68))
# (track, tag body) of a malformed sequence header per codec.
BAD_CONFIGS = {
    "hevc": (FrameKind.VIDEO, bytes((0x1C, 0, 0, 0, 0)) + b"\x01\x01"),  # legacy codec id 12: a truncated hvcC
    "av1": (FrameKind.VIDEO, bytes((0x90,)) + b"av01" + b"\x00\x00\x00\x00"),  # Enhanced RTMP: bad av1C marker
    "aac": (FrameKind.AUDIO, bytes((0xAF, 0, 0x00, 0x00))),  # audio object type 0
    "opus": (FrameKind.AUDIO, bytes((0x90,)) + b"Opus" + b"NotAnOpusHeadAtAll!"),  # Enhanced RTMP audio
}


class Publisher:
    peer = "test"

    def close(self, reason: str) -> None:
        pass


def new_stream(history_ms: int = 8000) -> tuple[StreamRegistry, Stream]:
    registry = StreamRegistry(limits=GopLimits(history_ms=history_ms))
    return registry, registry.claim_publisher(KEY, Publisher())


def publish(stream: Stream, frames: list[Frame], offset_ms: int = 0) -> None:
    for frame in frames:
        if frame.kind == FrameKind.VIDEO:
            stream.publish_video(frame.dts_ms + offset_ms, bytes(frame.body), 0.0)
        elif frame.kind == FrameKind.AUDIO:
            stream.publish_audio(frame.dts_ms + offset_ms, bytes(frame.body), 0.0)
    stream.flush_sinks()


def media(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.kind != FrameKind.DATA and not f.is_config]


def configs(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.kind != FrameKind.DATA and f.is_config]


def segments(packager: HlsPackager | CmafPackager) -> int:
    """Segments the packager holds (its video track's, for CMAF)."""
    if isinstance(packager, HlsPackager):
        return len(packager.window)
    track = packager.window.track("video")
    return len(track) if track is not None else 0


@pytest.mark.parametrize("factory", [HlsPackager, CmafPackager], ids=["hls", "cmaf"])
def test_a_corrupt_frame_is_skipped_and_counted_and_the_output_goes_on(av_clip, factory, caplog):
    async def scenario() -> None:
        _, stream = new_stream()
        packager = factory(stream, CFG)
        stream.add_sink(packager)
        half = len(av_clip) // 2
        publish(stream, av_clip[:half])
        before = segments(packager)
        last_dts = av_clip[half - 1].dts_ms
        for i in range(25):  # a burst of bad frames between two good ones
            stream.publish_video(last_dts, CORRUPT_KEYFRAME if i % 2 else CORRUPT_FRAME, 0.0)
        publish(stream, av_clip[half:])
        assert packager in stream.sinks and not packager.ended
        assert segments(packager) > before, "segments kept coming after the bad frames"
        assert packager.skipped.count == 25 and stream.frames_skipped == {packager.format: 25}
        assert stream.snapshot(0.0)["frames_skipped"] == {packager.format: 25}

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    lines = [r for r in caplog.records if r.getMessage() == "packager_frame_skipped"]
    assert len(lines) == 1, "logged once per interval, not once per frame"
    assert lines[0].fields["frames"] == 1 and lines[0].fields["codec"] == "h264"
    assert not [r for r in caplog.records if "sink failed" in r.getMessage()]


def test_hls_segments_after_a_corrupt_frame_hold_no_trace_of_it(av_clip):
    async def scenario() -> None:
        _, stream = new_stream()
        packager = HlsPackager(stream, CFG)
        stream.add_sink(packager)
        third = len(av_clip) // 3
        publish(stream, av_clip[:third])
        stream.publish_video(av_clip[third - 1].dts_ms, CORRUPT_FRAME, 0.0)
        publish(stream, av_clip[third:])
        stream.end()
        assert packager.ended and b"#EXT-X-ENDLIST" in packager.playlist()
        data = b"".join(seg.data for seg in packager.window)
        assert (0xFFFFFF00).to_bytes(4, "big") + b"\x41\x9a" not in data

    asyncio.run(scenario())


@pytest.mark.parametrize("codec", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("factory", [HlsPackager, CmafPackager], ids=["hls", "cmaf"])
def test_a_bad_config_of_any_codec_neither_stops_a_packager_nor_its_output(av_clip, factory, codec):
    async def scenario() -> None:
        _, stream = new_stream()
        packager = factory(stream, CFG)
        stream.add_sink(packager)
        half = len(av_clip) // 2
        publish(stream, av_clip[:half])
        before = segments(packager)
        track, body = BAD_CONFIGS[codec]
        ts = av_clip[half - 1].dts_ms
        frame = (stream.publish_video if track == FrameKind.VIDEO else stream.publish_audio)(ts, body, 0.0)
        assert frame is not None and frame.codec == codec and frame.is_config
        publish(stream, av_clip[half:])
        assert packager in stream.sinks and not packager.ended
        assert segments(packager) > before
        # MPEG-TS carries neither AV1 nor Opus: it leaves those tracks out without parsing them.
        parsed = isinstance(packager, CmafPackager) or codec in ("hevc", "aac")
        assert packager.skipped.count == (1 if parsed else 0)
        assert stream.bad_sequence_headers == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("factory", [HlsPackager, CmafPackager], ids=["hls", "cmaf"])
def test_a_packager_replaying_bad_frames_and_configs_skips_them(av_clip, factory):
    async def scenario() -> None:
        _, stream = new_stream()
        frames = av_clip
        publish(stream, configs(frames))
        # Bad frames and a bad config inline in the history a starting packager replays.
        for frame in media(frames):
            if frame.kind == FrameKind.VIDEO and frame.dts_ms in (400, 1400, 2400):
                stream.publish_video(frame.dts_ms, CORRUPT_KEYFRAME, 0.0)
                stream.publish_video(frame.dts_ms, BAD_AVC_CONFIG, 0.0)
            publish(stream, [frame])
        packager = factory(stream, CFG)
        packager.replay(stream.history(), stream.gop.newest_dts)
        assert packager.skipped.count == 6
        assert segments(packager) >= 3

    asyncio.run(scenario())


@pytest.mark.parametrize("table", ["hls", "cmaf"])
def test_a_packager_started_after_a_bad_config_and_frame_serves_segments(av_clip, table):
    async def scenario() -> None:
        registry, stream = new_stream()
        half = len(av_clip) // 2
        publish(stream, av_clip[:half])
        stream.publish_video(av_clip[half - 1].dts_ms, BAD_AVC_CONFIG, 0.0)
        stream.publish_video(av_clip[half - 1].dts_ms, CORRUPT_KEYFRAME, 0.0)
        publish(stream, av_clip[half:])
        pool = PackagerPool(registry, CFG)
        try:
            packager = getattr(pool, table)(KEY)
            assert packager is not None and not packager.ended
            if table == "hls":
                assert packager.has_segments and b"#EXTINF" in packager.playlist()
            else:
                assert packager.has_every_track() and b"<MPD" in packager.mpd()
                assert b"#EXT-X-PART" in packager.media_playlist("video")
        finally:
            pool.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("table", ["hls", "cmaf"])
def test_a_packager_that_fails_ends_its_playlist_and_the_next_request_starts_a_fresh_one(av_clip, table):
    async def scenario() -> None:
        registry, stream = new_stream()
        publish(stream, av_clip[: len(av_clip) // 2])
        pool = PackagerPool(registry, CFG)
        try:
            first = getattr(pool, table)(KEY)
            assert first is not None

            def broken(frame, now):
                raise RuntimeError("a bug in the segmenter")

            first.segmenter.push = broken
            publish(stream, av_clip[len(av_clip) // 2 :], offset_ms=0)
            assert first not in stream.sinks and first.ended
            if table == "hls":
                assert b"#EXT-X-ENDLIST" in first.playlist()
            else:
                assert b"#EXT-X-ENDLIST" in first.media_playlist("video")
            second = getattr(pool, table)(KEY)
            assert second is not None and second is not first and not second.ended
            assert second in stream.sinks and segments(second) > 0
            assert getattr(pool, table)(KEY) is second
        finally:
            pool.close()

    asyncio.run(scenario())


def test_an_ended_streams_packager_lingers_rather_than_restarting(av_clip):
    async def scenario() -> None:
        registry, stream = new_stream()
        publish(stream, av_clip)
        pool = PackagerPool(registry, CFG)
        try:
            packager = pool.hls(KEY)
            registry.kick(KEY)
            assert stream.ended and packager.ended
            assert pool.hls(KEY) is packager
        finally:
            pool.close()

    asyncio.run(scenario())


def test_the_pool_says_when_packagers_left_it_so_their_memory_can_be_swept(av_clip):
    async def scenario() -> None:
        registry, stream = new_stream()
        publish(stream, av_clip)
        clock = [0.0]
        pool = PackagerPool(registry, HlsConfig(segment_duration=1.0, idle_timeout=5.0), clock=lambda: clock[0])
        released: list[int] = []
        pool.on_released.append(lambda: released.append(len(pool)))
        try:
            assert pool.hls(KEY) is not None and pool.cmaf(KEY) is not None
            pool._sweep()
            assert released == []  # still watched
            clock[0] = 6.0
            pool._sweep()
            assert released == [0]  # both idle packagers left, told once
        finally:
            pool.close()

    asyncio.run(scenario())


def test_a_replay_that_fails_starts_the_packager_from_the_live_frames(av_clip, monkeypatch, caplog):
    async def scenario() -> None:
        registry, stream = new_stream()
        half = len(av_clip) // 2
        publish(stream, av_clip[:half])
        pool = PackagerPool(registry, CFG)

        def broken(self, frames, newest_dts):
            if len(frames) > 2:  # the history fails; the configs alone go through
                raise RuntimeError("a bug in replay")
            original(self, frames, newest_dts)

        original = HlsPackager.replay

        try:
            with monkeypatch.context() as patch:
                patch.setattr(HlsPackager, "replay", broken)
                packager = pool.hls(KEY)
            assert packager is not None and not packager.ended and packager in stream.sinks
            assert not packager.has_segments
            publish(stream, av_clip[half:])
            assert packager.has_segments and pool.hls(KEY) is packager
        finally:
            pool.close()

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "packager replay failed; stream live/bad starts again with less history"
    ]
