"""HLS: the TS segmenter checked with a real demuxer and decoder (PyAV), the window, and the playlist."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.logging
import pytest
from conftest import flv_frames, make_flv_clip
from tsprobe import parse_packets, parse_pmt, pes_units, read_section

from mediaserver.errors import MediaError, UsageError
from mediaserver.media.flv_body import audio_frame, video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux.hls import (
    SegmentWindow,
    TsSegmenter,
    format_program_date_time,
    render_media_playlist,
)
from mediaserver.remux.mpegts import PID_AUDIO, PID_VIDEO
from mediaserver.remux.segment import Segment, parse_segment_name, segment_name

NOW = 1_700_000_000.0


# -- helpers ---------------------------------------------------------------------------------------


@dataclass
class Probe:
    """What PyAV sees in a transport stream."""

    streams: dict[str, tuple] = field(default_factory=dict)
    dts: dict[str, list[int]] = field(default_factory=dict)
    first_packet_keyframe: dict[str, bool] = field(default_factory=dict)
    decoded: dict[str, int] = field(default_factory=dict)
    first_picture_keyframe: bool | None = None
    logs: list = field(default_factory=list)


def probe(data: bytes) -> Probe:
    """Demux and decode everything; any decoder or demuxer warning is recorded in `logs`."""
    result = Probe()
    previous_level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs, av.open(io.BytesIO(data), format="mpegts") as container:
            for stream in container.streams:
                ctx = stream.codec_context
                if stream.type == "video":
                    result.streams["video"] = (ctx.name, ctx.width, ctx.height)
                else:
                    result.streams["audio"] = (ctx.name, ctx.sample_rate, ctx.layout.nb_channels)
            for packet in container.demux():
                kind = packet.stream.type
                if packet.size:
                    result.dts.setdefault(kind, []).append(packet.dts)
                    result.first_packet_keyframe.setdefault(kind, packet.is_keyframe)
                for frame in packet.decode():
                    result.decoded[kind] = result.decoded.get(kind, 0) + 1
                    if kind == "video" and result.first_picture_keyframe is None:
                        result.first_picture_keyframe = frame.key_frame
        result.logs = list(logs)
    finally:
        av.logging.set_level(previous_level)
    return result


def segment_all(frames: list[Frame], segmenter: TsSegmenter | None = None, now: float = NOW) -> list[Segment]:
    segmenter = segmenter or TsSegmenter()
    segments: list[Segment] = []
    for frame in frames:
        segments += segmenter.push(frame, now + frame.dts_ms / 1000)
    last = segmenter.finish()
    if last is not None:
        segments.append(last)
    return segments


def media(frames: list[Frame], kind: FrameKind) -> list[Frame]:
    return [f for f in frames if f.kind == kind and not f.is_config and not f.is_end]


def retime(frame: Frame, offset_ms: int, keyframe: bool | None = None) -> Frame:
    """The same frame rebuilt by flv_body at dts + offset (and optionally with its frame type changed)."""
    body = bytes(frame.body)
    if frame.kind == FrameKind.AUDIO:
        rebuilt = audio_frame(body, frame.dts_ms + offset_ms)
    else:
        if keyframe is not None and not frame.is_config:
            body = bytes(((0x10 if keyframe else 0x20) | (body[0] & 0x0F),)) + body[1:]
        rebuilt = video_frame(body, frame.dts_ms + offset_ms)
    assert rebuilt is not None
    return rebuilt


def video_pids(segment: Segment) -> dict[int, int]:
    return parse_pmt(read_section(parse_packets(segment.data)[1])).streams


# -- a real clip, segment by segment ---------------------------------------------------------------


def test_segments_of_a_real_clip_decode_alone_and_back_to_back(av_clip: list[Frame]) -> None:
    segments = segment_all(av_clip)
    videos, audios = media(av_clip, FrameKind.VIDEO), media(av_clip, FrameKind.AUDIO)
    totals = {"video": 0, "audio": 0}
    for segment in segments:
        seen = probe(segment.data)
        assert seen.streams == {"video": ("h264", 320, 240), "audio": ("aac", 44100, 2)}
        assert seen.first_packet_keyframe["video"] and seen.first_picture_keyframe
        for kind, dts in seen.dts.items():
            assert dts == sorted(dts), f"{kind} DTS go backwards in segment {segment.sequence}"
        assert seen.logs == []
        for kind in totals:
            totals[kind] += seen.decoded[kind]
    assert totals == {"video": len(videos), "audio": len(audios)}

    whole = probe(b"".join(s.data for s in segments))
    assert whole.logs == []
    assert whole.decoded == {"video": len(videos), "audio": len(audios)}
    assert len(whole.dts["video"]) == len(videos)
    for dts in whole.dts.values():
        assert dts == sorted(dts) and len(set(dts)) == len(dts)


def test_segments_are_cut_at_the_first_keyframe_after_the_target_duration(av_clip: list[Frame]) -> None:
    segments = segment_all(av_clip)
    keyframe_times = {f.dts_ms for f in media(av_clip, FrameKind.VIDEO) if f.keyframe}
    assert [s.sequence for s in segments] == [0, 1, 2]
    assert [s.start_ms for s in segments] == [0, 2000, 4000]
    assert all(s.start_ms in keyframe_times for s in segments)
    assert [s.duration_ms for s in segments[:-1]] == [2000, 2000]
    last_audio = media(av_clip, FrameKind.AUDIO)[-1]
    assert segments[-1].duration_ms == pytest.approx(last_audio.dts_ms + 23 - 4000, abs=2)
    assert all(s.independent and not s.discontinuity for s in segments)
    # Program date times start at the wall clock of the first frame and advance with media time.
    assert [s.program_date_time for s in segments] == [NOW, NOW + 2.0, NOW + 4.0]


def test_a_longer_target_duration_spans_more_gops(av_clip: list[Frame]) -> None:
    segments = segment_all(av_clip, TsSegmenter(target_duration_s=3.0))
    assert [s.start_ms for s in segments] == [0, 3000]


def test_consecutive_aac_frames_share_a_pes(av_clip: list[Frame]) -> None:
    segments = segment_all(av_clip, TsSegmenter(audio_frames_per_pes=4))
    pes = [p for s in segments for p in pes_units(parse_packets(s.data), PID_AUDIO)]
    frames = sum(p.payload.count(b"\xff\xf1") for p in pes)
    assert frames >= len(media(av_clip, FrameKind.AUDIO))
    assert len(pes) <= len(media(av_clip, FrameKind.AUDIO)) / 4 + len(segments)


def test_audio_only_stream_is_cut_on_duration(audio_clip: list[Frame]) -> None:
    assert not media(audio_clip, FrameKind.VIDEO)
    segments = segment_all(audio_clip)
    assert len(segments) == 3
    assert segments[0].start_ms == media(audio_clip, FrameKind.AUDIO)[0].dts_ms
    for segment in segments[:-1]:
        assert 2000 <= segment.duration_ms <= 2022  # cut at the first AAC frame (21.3 ms) past 2 s
        assert segment.independent
    assert video_pids(segments[0]) == {PID_AUDIO: 0x0F}
    total = 0
    for segment in segments:
        seen = probe(segment.data)
        assert seen.streams == {"audio": ("aac", 48000, 1)} and seen.logs == []
        total += seen.decoded["audio"]
    assert total == len(media(audio_clip, FrameKind.AUDIO))


def test_video_only_stream_is_cut_at_keyframes(video_clip: list[Frame]) -> None:
    segments = segment_all(video_clip)
    assert [s.start_ms for s in segments] == [0, 2000, 4000]
    assert video_pids(segments[0]) == {PID_VIDEO: 0x1B}
    total = 0
    for segment in segments:
        seen = probe(segment.data)
        assert seen.streams == {"video": ("h264", 640, 360)} and seen.logs == []
        assert seen.first_picture_keyframe
        total += seen.decoded["video"]
    assert total == len(media(video_clip, FrameKind.VIDEO))


# -- the start of a stream -------------------------------------------------------------------------


def test_media_before_any_config_is_dropped_and_counted(av_clip: list[Frame]) -> None:
    configs = [f for f in av_clip if f.is_config]
    rest = [f for f in av_clip if not f.is_config]
    segmenter = TsSegmenter()
    early = rest[:30]
    for frame in early:
        assert segmenter.push(frame, NOW) == []
    assert segmenter.frames_without_config == len([f for f in early if not f.is_end])
    assert not segmenter.in_segment
    # Once the configs arrive the stream starts at the next keyframe.
    segments = segment_all(configs + rest[30:], segmenter)
    keyframe = next(f for f in rest[30:] if f.kind == FrameKind.VIDEO and f.keyframe)
    assert segments[0].start_ms == keyframe.dts_ms
    assert segmenter.frames_waiting_for_keyframe > 0
    assert probe(segments[0].data).first_picture_keyframe


def test_a_stream_joined_mid_gop_starts_at_the_next_keyframe(av_clip: list[Frame]) -> None:
    configs = [f for f in av_clip if f.is_config]
    joined = configs + [f for f in av_clip if not f.is_config and f.dts_ms >= 500]
    segments = segment_all(joined)
    assert segments[0].start_ms == 1000
    for segment in segments:
        seen = probe(segment.data)
        assert seen.first_packet_keyframe["video"] and seen.logs == []


def test_audio_that_leads_the_video_config_waits_for_the_keyframe(av_clip: list[Frame]) -> None:
    audio_config = next(f for f in av_clip if f.kind == FrameKind.AUDIO and f.is_config)
    video_config = next(f for f in av_clip if f.kind == FrameKind.VIDEO and f.is_config)
    leading_audio = [retime(f, -400) for f in media(av_clip, FrameKind.AUDIO)[:10]]
    rest = [f for f in av_clip if not f.is_config]
    segmenter = TsSegmenter()
    segments = segment_all([audio_config, *leading_audio, video_config, *rest], segmenter)
    assert segments[0].start_ms == 0 and not any(s.discontinuity for s in segments)
    assert set(video_pids(segments[0])) == {PID_VIDEO, PID_AUDIO}


def test_video_that_appears_after_audio_only_segments_starts_a_discontinuity(
    av_clip: list[Frame], audio_clip: list[Frame]
) -> None:
    # 4 s of audio alone, then the A/V clip (whose AAC config differs) continues the timeline.
    audio = [f for f in audio_clip if f.dts_ms < 4000]
    later = [retime(f, 4000) for f in av_clip if f.kind != FrameKind.DATA]
    segments = segment_all(audio + later)
    kinds = [set(video_pids(s)) for s in segments]
    switch = kinds.index({PID_VIDEO, PID_AUDIO})
    assert switch >= 1 and all(k == {PID_AUDIO} for k in kinds[:switch])
    assert segments[switch].discontinuity and segments[switch].start_ms == 4000
    seen = probe(b"".join(s.data for s in segments[switch:]))
    assert seen.streams["video"] == ("h264", 320, 240) and seen.logs == []


# -- codecs the TS flavour does not carry ----------------------------------------------------------


def test_unsupported_video_codec_is_skipped_and_audio_carries_on(av_clip: list[Frame]) -> None:
    av1 = [video_frame(b"\x90av01" + bytes.fromhex("81000c00"), 0)]  # Enhanced RTMP sequence start
    for i in range(150):
        frame_type = 0x90 if i % 25 == 0 else 0xA0
        av1.append(video_frame(bytes((frame_type | 1,)) + b"av01" + b"\x12\x00\x32\x01\x00", i * 40))
    audio = [f for f in av_clip if f.kind == FrameKind.AUDIO]
    frames = sorted(av1 + audio, key=lambda f: f.dts_ms)  # stable: configs stay first
    segmenter = TsSegmenter()
    segments = segment_all(frames, segmenter)
    assert segmenter.skipped_codecs == {"av1"}
    assert segments and all(video_pids(s) == {PID_AUDIO: 0x0F} for s in segments)
    assert sum(probe(s.data).decoded["audio"] for s in segments) == len(media(audio, FrameKind.AUDIO))


def test_unsupported_audio_codec_is_skipped_and_video_carries_on(video_clip: list[Frame]) -> None:
    mp3 = [audio_frame(b"\x2f" + b"\xff\xfb\x90\x00" + bytes(100), t) for t in range(0, 5000, 26)]
    frames = sorted(video_clip + mp3, key=lambda f: (f.dts_ms, not f.is_config))
    segmenter = TsSegmenter()
    segments = segment_all(frames, segmenter)
    assert segmenter.skipped_codecs == {"mp3"}
    assert [s.start_ms for s in segments] == [0, 2000, 4000]


def test_aac_that_adts_cannot_describe_is_skipped(video_clip: list[Frame]) -> None:
    aac_ld = audio_frame(b"\xaf\x00" + bytes.fromhex("b990"), 0)
    segmenter = TsSegmenter()
    segmenter.push(aac_ld, NOW)
    segmenter.push(audio_frame(b"\xaf\x01" + bytes(50), 0), NOW)
    assert len(segmenter.skipped_codecs) == 1 and "aac" in next(iter(segmenter.skipped_codecs))
    segments = segment_all(video_clip, segmenter)
    assert all(video_pids(s) == {PID_VIDEO: 0x1B} for s in segments)


# -- bad input -------------------------------------------------------------------------------------


def test_malformed_frame_raises_media_error_and_the_segmenter_carries_on(av_clip: list[Frame]) -> None:
    victim_index = next(
        i for i, f in enumerate(av_clip)
        if f.kind == FrameKind.VIDEO and not f.keyframe and not f.is_config and f.dts_ms > 2500
    )
    victim = av_clip[victim_index]
    body = bytearray(victim.body)
    body[5:9] = (0x7FFFFFFF).to_bytes(4, "big")  # first NAL length far beyond the payload
    broken = video_frame(bytes(body), victim.dts_ms)
    assert broken is not None
    segmenter = TsSegmenter()
    segments: list[Segment] = []
    for i, frame in enumerate(av_clip):
        if i == victim_index:
            with pytest.raises(MediaError, match="claims 2147483647 bytes"):
                segmenter.push(broken, NOW)
        else:
            segments += segmenter.push(frame, NOW)
    last = segmenter.finish()
    assert last is not None
    segments.append(last)
    seen = probe(b"".join(s.data for s in segments))
    assert seen.decoded["video"] == len(media(av_clip, FrameKind.VIDEO)) - 1


def test_malformed_config_raises_media_error_and_keeps_the_old_one(av_clip: list[Frame]) -> None:
    segmenter = TsSegmenter()
    frames = iter(av_clip)
    for frame in frames:
        segmenter.push(frame, NOW)
        if frame.dts_ms > 1000:
            break
    with pytest.raises(MediaError):
        segmenter.push(video_frame(b"\x17\x00\x00\x00\x00\x01\x64\x00", 1000), NOW)
    with pytest.raises(MediaError):
        segmenter.push(audio_frame(b"\xaf\x00\x12", 1000), NOW)
    rest = [s for f in frames for s in segmenter.push(f, NOW)]
    assert rest and not any(s.discontinuity for s in rest)


def test_segmenter_settings_are_checked() -> None:
    with pytest.raises(UsageError):
        TsSegmenter(target_duration_s=0)
    with pytest.raises(UsageError):
        TsSegmenter(target_duration_s=12, max_segment_duration_s=10)
    with pytest.raises(UsageError):
        TsSegmenter(audio_frames_per_pes=0)


# -- changes mid-stream ----------------------------------------------------------------------------


def test_new_resolution_mid_stream_starts_a_discontinuity_that_decodes(av_clip: list[Frame], tmp_path: Path) -> None:
    bigger = flv_frames(make_flv_clip(tmp_path / "b.flv", width=480, height=272, seconds=4.0))
    first = [f for f in av_clip if f.dts_ms < 3000 and f.kind != FrameKind.DATA]
    second = [retime(f, 3000) for f in bigger if f.kind != FrameKind.DATA]
    segments = segment_all(first + second)
    flagged = [s for s in segments if s.discontinuity]
    assert len(flagged) == 1 and flagged[0].start_ms == 3000
    index = segments.index(flagged[0])
    assert segments[index - 1].duration_ms == 1000  # cut early, at the new config's keyframe
    assert probe(segments[index - 1].data).streams["video"] == ("h264", 320, 240)
    seen = probe(b"".join(s.data for s in segments[index:]))
    assert seen.streams["video"] == ("h264", 480, 272) and seen.logs == []
    assert seen.decoded["video"] == len(media(bigger, FrameKind.VIDEO))


def test_identical_config_resent_changes_nothing(av_clip: list[Frame]) -> None:
    configs = [f for f in av_clip if f.is_config and f.kind != FrameKind.DATA]
    frames = []
    for frame in av_clip:
        frames.append(frame)
        if frame.kind == FrameKind.VIDEO and frame.keyframe:
            frames += [retime(c, frame.dts_ms) for c in configs]
    segments = segment_all(frames)
    assert [s.start_ms for s in segments] == [0, 2000, 4000]
    assert not any(s.discontinuity for s in segments)


def test_discontinuity_closes_the_segment_and_flags_the_next(av_clip: list[Frame]) -> None:
    segmenter = TsSegmenter()
    before = [s for f in av_clip if f.dts_ms < 3000 for s in segmenter.push(f, NOW + f.dts_ms / 1000)]
    assert [s.start_ms for s in before] == [0]
    segmenter.discontinuity()
    assert not segmenter.in_segment
    segmenter.discontinuity()  # nothing open: nothing more to close
    # The publisher comes back: timestamps restart at 0, and the wall clock has moved on. The first
    # push hands out the segment the discontinuity closed.
    restart = NOW + 60
    after = segment_all(list(av_clip), segmenter, now=restart)
    closed, after = after[0], after[1:]
    assert closed.start_ms == 2000 and not closed.discontinuity
    assert 960 <= closed.duration_ms <= 1050
    assert after[0].discontinuity and after[0].start_ms == 0
    assert after[0].program_date_time == restart
    assert not any(s.discontinuity for s in after[1:])
    assert [s.sequence for s in before + [closed] + after] == list(range(2 + len(after)))


def test_a_segment_closed_by_a_discontinuity_comes_out_of_finish_if_nothing_follows(av_clip: list[Frame]) -> None:
    segmenter = TsSegmenter()
    before = [s for f in av_clip if f.dts_ms < 3000 for s in segmenter.push(f, NOW)]
    segmenter.discontinuity()
    last = segmenter.finish(NOW)
    assert last is not None and last.sequence == before[-1].sequence + 1 and last.start_ms == 2000
    assert segmenter.finish(NOW) is None


def test_a_segment_closed_by_a_discontinuity_survives_a_malformed_next_frame(av_clip: list[Frame]) -> None:
    segmenter = TsSegmenter()
    for frame in av_clip[:60]:
        segmenter.push(frame, NOW)
    segmenter.discontinuity()
    with pytest.raises(MediaError):
        segmenter.push(video_frame(b"\x27\x01\x00\x00\x00\x00\x00\x00\x09\x41", 5000), NOW)
    (closed,) = segmenter.push(av_clip[60], NOW)
    assert closed.start_ms == 0


def test_a_restarted_publisher_without_audio_gets_video_only_segments(
    av_clip: list[Frame], video_clip: list[Frame]
) -> None:
    segmenter = TsSegmenter()
    before = segment_all(av_clip, segmenter)
    assert set(video_pids(before[0])) == {PID_VIDEO, PID_AUDIO}
    segmenter.discontinuity(forget_configs=True)
    after = segment_all(video_clip, segmenter)
    assert after[0].discontinuity
    assert all(video_pids(s) == {PID_VIDEO: 0x1B} for s in after)
    assert probe(b"".join(s.data for s in after)).streams == {"video": ("h264", 640, 360)}


def test_missing_keyframes_force_a_cut_at_the_maximum_duration(av_clip: list[Frame]) -> None:
    first_key = True
    frames = []
    for frame in av_clip:
        if frame.kind == FrameKind.VIDEO and frame.keyframe and not frame.is_end:
            frames.append(retime(frame, 0, keyframe=first_key))
            first_key = False
        else:
            frames.append(frame)
    segments = segment_all(frames, TsSegmenter(target_duration_s=2.0, max_segment_duration_s=2.5))
    assert [s.start_ms for s in segments] == [0, 2520, 5040]
    assert [s.independent for s in segments] == [True, False, False]


def test_video_that_stops_while_audio_goes_on_is_cut_by_audio_at_the_maximum_duration(av_clip: list[Frame]) -> None:
    frames = [f for f in av_clip if f.kind != FrameKind.VIDEO or f.is_config or f.dts_ms <= 2080]
    segments = segment_all(frames, TsSegmenter(target_duration_s=2.0, max_segment_duration_s=2.5))
    assert [s.start_ms for s in segments[:2]] == [0, 2000]
    assert 4500 <= segments[2].start_ms <= 4530 and not segments[2].independent
    assert all(s.duration_ms <= 2530 for s in segments)


def test_timestamps_that_stop_moving_cannot_grow_a_segment_without_bound(av_clip: list[Frame]) -> None:
    frozen = [retime(f, -f.dts_ms) if not f.is_config else f for f in av_clip if f.kind != FrameKind.DATA]
    segmenter = TsSegmenter(max_segment_bytes=50_000)
    segments = segment_all(frozen, segmenter)
    assert len(segments) > 3
    assert all(len(s.data) < 50_000 + 20_000 for s in segments)


def test_finish_without_frames_gives_nothing() -> None:
    assert TsSegmenter().finish(NOW) is None


# -- the window ------------------------------------------------------------------------------------


def make_segment(sequence: int, duration_ms: int = 2000, discontinuity: bool = False, independent: bool = True) -> Segment:
    return Segment(
        sequence=sequence,
        data=b"",
        start_ms=sequence * 2000,
        duration_ms=duration_ms,
        program_date_time=NOW + sequence * 2,
        discontinuity=discontinuity,
        independent=independent,
    )


def test_window_lists_the_last_segments_and_retains_a_few_more() -> None:
    window = SegmentWindow(listed=6, retained=3)
    for sequence in range(20):
        window.add(make_segment(sequence))
    assert [s.sequence for s in window.listed] == list(range(14, 20))
    assert window.media_sequence == 14
    assert [s.sequence for s in window] == list(range(11, 20))
    assert window.get(11) is not None and window.get(19) is not None
    assert window.get(10) is None and window.get(20) is None


def test_window_retains_by_default_enough_for_a_player_with_an_old_playlist() -> None:
    window = SegmentWindow()
    for sequence in range(30):
        window.add(make_segment(sequence))
    assert len(window) == 6 + 7


def test_window_refuses_out_of_order_segments_and_segments_after_the_end() -> None:
    window = SegmentWindow()
    window.add(make_segment(5))
    with pytest.raises(UsageError):
        window.add(make_segment(5))
    window.end()
    with pytest.raises(UsageError):
        window.add(make_segment(6))
    with pytest.raises(UsageError):
        SegmentWindow(listed=0)


def test_discontinuities_that_leave_the_listing_raise_the_discontinuity_sequence() -> None:
    window = SegmentWindow(listed=3, retained=1)
    flags = {2, 4, 5}
    history = []
    for sequence in range(9):
        window.add(make_segment(sequence, discontinuity=sequence in flags))
        listed_first = window.listed[0].sequence
        history.append(window.discontinuity_sequence)
        assert window.discontinuity_sequence == sum(1 for f in flags if f < listed_first)
    assert history == [0, 0, 0, 0, 0, 1, 1, 2, 3]


# -- the playlist ----------------------------------------------------------------------------------


@dataclass
class ParsedPlaylist:
    version: int
    target_duration: int
    media_sequence: int
    discontinuity_sequence: int
    independent: bool
    ended: bool
    segments: list[dict]


_PDT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def parse_playlist(text: str) -> ParsedPlaylist:
    """A strict RFC 8216 media playlist reader for the tags the server writes; anything else fails."""
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    assert lines[0] == "#EXTM3U"
    header: dict[str, int] = {}
    independent = ended = False
    segments: list[dict] = []
    pending: dict = {}
    for line in lines[1:]:
        assert line and line == line.strip(), f"blank or padded line {line!r}"
        assert not ended, "nothing may follow EXT-X-ENDLIST"
        name, _, value = line.partition(":")
        if name in ("#EXT-X-VERSION", "#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-DISCONTINUITY-SEQUENCE"):
            assert not segments and not pending and name not in header, f"{name} misplaced or repeated"
            assert value.isdigit(), f"{name} needs a decimal integer"
            header[name] = int(value)
        elif line == "#EXT-X-INDEPENDENT-SEGMENTS":
            assert not segments and not pending
            independent = True
        elif name == "#EXTINF":
            match = re.fullmatch(r"(\d+\.\d{3}),", value)
            assert match and "duration" not in pending, f"bad EXTINF {line!r}"
            pending["duration"] = float(match.group(1))
        elif line == "#EXT-X-DISCONTINUITY":
            pending["discontinuity"] = True
        elif name == "#EXT-X-PROGRAM-DATE-TIME":
            assert _PDT.fullmatch(value), f"bad date {value!r}"
            pending["pdt"] = value
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#"):
            raise AssertionError(f"unexpected tag {line!r}")
        else:
            assert "duration" in pending, f"URI {line!r} without EXTINF"
            segments.append({"uri": line, "discontinuity": False, **pending})
            pending = {}
    assert not pending, "tags after the last URI"
    target = header["#EXT-X-TARGETDURATION"]
    for segment in segments:
        assert int(segment["duration"] + 0.5) <= target, "EXTINF rounded exceeds the target duration (4.3.3.1)"
    return ParsedPlaylist(
        version=header["#EXT-X-VERSION"],
        target_duration=target,
        media_sequence=header["#EXT-X-MEDIA-SEQUENCE"],
        discontinuity_sequence=header.get("#EXT-X-DISCONTINUITY-SEQUENCE", 0),
        independent=independent,
        ended=ended,
        segments=segments,
    )


def test_playlist_of_a_sliding_window_parses_back() -> None:
    window = SegmentWindow(listed=6)
    for sequence in range(10):
        window.add(make_segment(sequence, duration_ms=2000 + sequence))
    playlist = parse_playlist(render_media_playlist(window))
    assert playlist.version == 3 and playlist.target_duration == 2 and playlist.media_sequence == 4
    assert [s["uri"] for s in playlist.segments] == [f"seg-{n}.ts" for n in range(4, 10)]
    assert [s["duration"] for s in playlist.segments] == [2.004, 2.005, 2.006, 2.007, 2.008, 2.009]
    assert playlist.segments[0]["pdt"] == "2023-11-14T22:13:28.000Z"
    assert playlist.independent and not playlist.ended and playlist.discontinuity_sequence == 0


def test_playlist_marks_discontinuities_and_counts_those_gone() -> None:
    window = SegmentWindow(listed=3)
    for sequence in range(7):
        window.add(make_segment(sequence, discontinuity=sequence in (2, 5)))
    text = render_media_playlist(window)
    playlist = parse_playlist(text)
    assert playlist.discontinuity_sequence == 1
    assert [s["discontinuity"] for s in playlist.segments] == [False, True, False]
    assert text.index("#EXT-X-DISCONTINUITY-SEQUENCE:1") < text.index("#EXTINF")


def test_playlist_of_an_ended_stream_has_endlist() -> None:
    window = SegmentWindow()
    window.add(make_segment(0))
    window.end()
    text = render_media_playlist(window)
    assert text.endswith("#EXT-X-ENDLIST\n")
    assert parse_playlist(text).ended


@pytest.mark.parametrize(
    "durations, configured, expected",
    [
        ([2000, 2000], 2.0, 2),
        ([2000, 2499], 2.0, 2),
        ([2000, 2500], 2.0, 3),  # 2.5 rounds to 3
        ([1000], 2.0, 2),  # never below the configured target
        ([2000], 2.5, 3),
        ([8300, 2000], 2.0, 8),
    ],
)
def test_target_duration_covers_every_rounded_extinf(durations: list[int], configured: float, expected: int) -> None:
    window = SegmentWindow()
    for sequence, duration in enumerate(durations):
        window.add(make_segment(sequence, duration_ms=duration))
    playlist = parse_playlist(render_media_playlist(window, target_duration_s=configured))
    assert playlist.target_duration == expected


def test_target_duration_does_not_shrink_when_a_long_segment_slides_out() -> None:
    window = SegmentWindow(listed=2, retained=0)
    window.add(make_segment(0, duration_ms=6000))
    for sequence in range(1, 5):
        window.add(make_segment(sequence))
    assert parse_playlist(render_media_playlist(window)).target_duration == 6


def test_playlist_appends_the_uri_suffix_and_refuses_line_breaks() -> None:
    window = SegmentWindow()
    window.add(make_segment(7))
    playlist = parse_playlist(render_media_playlist(window, uri_suffix="?token=abc.def"))
    assert playlist.segments[0]["uri"] == "seg-7.ts?token=abc.def"
    with pytest.raises(UsageError):
        render_media_playlist(window, uri_suffix="?t=1\n#EXT-X-ENDLIST")


def test_playlist_uses_the_callers_uri_function_and_ended_flag() -> None:
    window = SegmentWindow()
    window.add(make_segment(7))
    text = render_media_playlist(window, uri=lambda s: f"k3x9-{s.sequence}.ts?t=1", ended=True)
    playlist = parse_playlist(text)
    assert playlist.segments[0]["uri"] == "k3x9-7.ts?t=1" and playlist.ended
    with pytest.raises(UsageError):
        render_media_playlist(window, uri=lambda s: "a.ts\r\n#EXT-X-ENDLIST")


def test_playlist_leaves_out_independent_segments_when_one_is_not() -> None:
    window = SegmentWindow()
    window.add(make_segment(0))
    window.add(make_segment(1, independent=False))
    assert not parse_playlist(render_media_playlist(window)).independent


def test_empty_window_renders_a_valid_playlist_header() -> None:
    playlist = parse_playlist(render_media_playlist(SegmentWindow()))
    assert playlist.segments == [] and playlist.media_sequence == 0


def test_playlist_of_real_segments_lists_their_durations(av_clip: list[Frame]) -> None:
    window = SegmentWindow()
    for segment in segment_all(av_clip):
        window.add(segment)
    playlist = parse_playlist(render_media_playlist(window))
    assert [s["duration"] for s in playlist.segments][:2] == [2.0, 2.0]
    assert playlist.target_duration == 2


@pytest.mark.parametrize(
    "unix_s, text",
    [
        (NOW, "2023-11-14T22:13:20.000Z"),
        (NOW + 0.1234, "2023-11-14T22:13:20.123Z"),
        (NOW + 0.9996, "2023-11-14T22:13:21.000Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_program_date_time_is_iso_8601_utc_with_milliseconds(unix_s: float, text: str) -> None:
    assert format_program_date_time(unix_s) == text


@pytest.mark.parametrize("sequence", [0, 1, 123, 10**17])
def test_segment_names_round_trip(sequence: int) -> None:
    assert parse_segment_name(segment_name(sequence)) == sequence


@pytest.mark.parametrize("name", ["seg-01.ts", "seg-1.m4s", "seg-.ts", "seg-1.ts/..", "../seg-1.ts", "seg--1.ts", "seg-1e3.ts"])
def test_names_that_are_not_segment_names_are_refused(name: str) -> None:
    assert parse_segment_name(name) is None


def test_no_frame_before_next_cut_ms_closes_a_segment(av_clip: list[Frame]) -> None:
    """What lets a publisher's reads merge while only this packager consumes: the cut is named in advance."""
    segmenter = TsSegmenter()
    assert segmenter.next_cut_ms() == float("-inf")  # no segment open yet: any frame may matter
    cuts = 0
    for frame in av_clip:
        due = segmenter.next_cut_ms()
        if segmenter.push(frame, NOW + frame.dts_ms / 1000):
            cuts += 1
            assert frame.dts_ms >= due
    assert cuts == 2
    assert segmenter.next_cut_ms() == 4000 + 2000
