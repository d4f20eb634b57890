"""HEVC in MPEG-TS: stream_type 0x24, Annex B with an AUD first and VPS/SPS/PPS before each keyframe."""

from __future__ import annotations

import io

import av
import av.logging
from support.codec_clips import codec_clip, config_frame, media_frames
from tsprobe import parse_packets, parse_pmt, pes_units, read_section

from mediaserver.media.flv_body import video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.media.hevc import parse_hevc_config
from mediaserver.remux.hls import TsSegmenter
from mediaserver.remux.mpegts import PID_AUDIO, PID_VIDEO, STREAM_TYPE_HEVC
from mediaserver.remux.segment import Segment

NOW = 1_700_000_000.0


def segment_all(frames: list[Frame], segmenter: TsSegmenter) -> list[Segment]:
    segments: list[Segment] = []
    for frame in frames:
        segments += segmenter.push(frame, NOW + frame.dts_ms / 1000)
    last = segmenter.finish()
    return segments + ([last] if last else [])


def decode(data: bytes) -> tuple[dict[str, tuple], dict[str, int], list]:
    streams: dict[str, tuple] = {}
    decoded: dict[str, int] = {}
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs, av.open(io.BytesIO(data), format="mpegts") as container:
            for stream in container.streams:
                ctx = stream.codec_context
                streams[stream.type] = (ctx.name, ctx.width, ctx.height) if stream.type == "video" else (ctx.name,)
            for packet in container.demux():
                for _ in packet.decode():
                    decoded[packet.stream.type] = decoded.get(packet.stream.type, 0) + 1
        return streams, decoded, list(logs)
    finally:
        av.logging.set_level(previous)


def test_hevc_and_aac_go_into_transport_streams_that_decode_frame_for_frame() -> None:
    frames = codec_clip("hevc", "aac", seconds=5.0)
    segmenter = TsSegmenter()
    segments = segment_all(frames, segmenter)
    assert segmenter.skipped_codecs == set()
    assert [s.start_ms for s in segments] == [0, 2000, 4000]
    total = {"video": 0, "audio": 0}
    for segment in segments:
        packets = parse_packets(segment.data)
        assert parse_pmt(read_section(packets[1])).streams == {PID_VIDEO: STREAM_TYPE_HEVC, PID_AUDIO: 0x0F}
        streams, decoded, logs = decode(segment.data)  # each segment decodes alone
        assert streams["video"] == ("hevc", 320, 240) and logs == []
        for kind in total:
            total[kind] += decoded.get(kind, 0)
    assert total["video"] == len(media_frames(frames, FrameKind.VIDEO))
    start = media_frames(frames, FrameKind.VIDEO)[0].dts_ms
    assert total["audio"] == len([f for f in media_frames(frames, FrameKind.AUDIO) if f.dts_ms >= start])


def test_every_hevc_pes_starts_with_an_aud_and_keyframes_carry_the_parameter_sets() -> None:
    frames = codec_clip("hevc", None, seconds=3.0)
    config = parse_hevc_config(config_frame(frames, FrameKind.VIDEO).payload)
    segments = segment_all(frames, TsSegmenter())
    units = [u for s in segments for u in pes_units(parse_packets(s.data), PID_VIDEO)]
    video = media_frames(frames, FrameKind.VIDEO)
    assert len(units) == len(video)
    for unit, frame in zip(units, video):
        assert unit.payload.startswith(b"\x00\x00\x00\x01\x46\x01\x50")  # AUD, NAL type 35
        assert unit.payload.count(b"\x00\x00\x00\x01\x46\x01") == 1
        has_parameter_sets = config.annexb_parameter_sets() in unit.payload
        assert has_parameter_sets == frame.keyframe
        assert unit.first_packet.random_access == frame.keyframe


def test_hevc_with_opus_keeps_the_video_and_leaves_the_opus_out() -> None:
    segmenter = TsSegmenter()
    segments = segment_all(codec_clip("hevc", "opus", seconds=3.0), segmenter)
    assert segmenter.skipped_codecs == {"opus"}
    assert segments and all(
        parse_pmt(read_section(parse_packets(s.data)[1])).streams == {PID_VIDEO: STREAM_TYPE_HEVC} for s in segments
    )


def test_a_switch_from_h264_to_hevc_starts_a_discontinuity_with_a_new_stream_type() -> None:
    h264 = [f for f in codec_clip("h264", None, seconds=2.0) if f.kind == FrameKind.VIDEO]
    hevc = [f for f in codec_clip("hevc", None, seconds=2.0) if f.kind == FrameKind.VIDEO]
    later = [video_frame(bytes(f.body), f.dts_ms + 2000) for f in hevc]
    segments = segment_all(h264 + [f for f in later if f is not None], TsSegmenter())
    switched = next(s for s in segments if s.start_ms == 2000)
    assert switched.discontinuity
    assert parse_pmt(read_section(parse_packets(switched.data)[1])).streams == {PID_VIDEO: STREAM_TYPE_HEVC}
    assert decode(switched.data)[0]["video"][0] == "hevc"
