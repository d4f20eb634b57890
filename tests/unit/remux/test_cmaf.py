"""CMAF segmenter and window: real clips in every carried codec, checked with PyAV and a box reader."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av
import av.logging
import pytest
from mp4probe import fragments
from support.codec_clips import codec_clip, config_frame, media_frames

from mediaserver.errors import MediaError, UsageError
from mediaserver.media.flv_body import audio_frame, video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux.cmaf import (
    AUDIO,
    VIDEO,
    CmafName,
    CmafPart,
    CmafSegment,
    CmafSegmenter,
    init_name,
    parse_cmaf_name,
    part_name,
    segment_name,
)
from mediaserver.remux.cmaf_window import CmafWindow
from mediaserver.remux.fmp4 import SAMPLE_SYNC

NOW = 1_700_000_000.0
Item = CmafPart | CmafSegment


# -- helpers ---------------------------------------------------------------------------------------


def run(frames: list[Frame], segmenter: CmafSegmenter | None = None, finish: bool = True) -> list[Item]:
    segmenter = segmenter or CmafSegmenter()
    items: list[Item] = []
    for frame in frames:
        items += segmenter.push(frame, NOW + frame.dts_ms / 1000)
    if finish:
        items += segmenter.finish()
    return items


def segments_of(items: list[Item], track: str) -> list[CmafSegment]:
    return [i for i in items if isinstance(i, CmafSegment) and i.track == track]


def parts_of(items: list[Item], track: str) -> list[CmafPart]:
    return [i for i in items if isinstance(i, CmafPart) and i.track == track]


def retime(frame: Frame, offset_ms: int) -> Frame:
    """The same frame rebuilt by flv_body at dts + offset."""
    rebuilt = (audio_frame if frame.kind == FrameKind.AUDIO else video_frame)(bytes(frame.body), frame.dts_ms + offset_ms)
    assert rebuilt is not None
    return rebuilt


@dataclass
class Probe:
    """What PyAV sees in one track's init + segments."""

    codec: str = ""
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0
    dts: list[int] = field(default_factory=list)
    pts: list[int] = field(default_factory=list)
    keyframes: list[bool] = field(default_factory=list)
    decoded: int = 0
    first_picture_keyframe: bool | None = None
    logs: list = field(default_factory=list)


def probe(data: bytes) -> Probe:
    """Demux and decode everything; decoder and demuxer warnings land in `logs`."""
    result = Probe()
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs, av.open(io.BytesIO(data), format="mp4") as container:
            (stream,) = container.streams
            ctx = stream.codec_context
            result.codec = ctx.name
            if stream.type == "video":
                result.width, result.height = ctx.width, ctx.height
            else:
                result.sample_rate, result.channels = ctx.sample_rate, ctx.layout.nb_channels
            for packet in container.demux(stream):
                if packet.size:
                    result.dts.append(packet.dts)
                    result.pts.append(packet.pts)
                    result.keyframes.append(packet.is_keyframe)
                for decoded in packet.decode():
                    result.decoded += 1
                    if stream.type == "video" and result.first_picture_keyframe is None:
                        result.first_picture_keyframe = decoded.key_frame
        result.logs = [entry for entry in logs if "Could not update timestamps for skipped samples" not in entry[2]]
    finally:
        av.logging.set_level(previous)
    return result


def track_file(segments: list[CmafSegment]) -> bytes:
    return segments[0].init.data + b"".join(s.data for s in segments)


CODEC_PAIRS = [("h264", "aac"), ("hevc", "aac"), ("hevc", "opus"), ("av1", "opus")]
DECODER_NAMES = {"h264": {"h264"}, "hevc": {"hevc"}, "av1": {"libdav1d", "av1", "libaom-av1"}, "aac": {"aac"}, "opus": {"opus", "libopus"}}


# -- real clips ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("video", "audio"), CODEC_PAIRS)
def test_each_track_of_a_real_clip_plays_back_frame_for_frame(video: str, audio: str) -> None:
    frames = codec_clip(video, audio)
    items = run(frames)
    start = media_frames(frames, FrameKind.VIDEO)[0].dts_ms  # audio before the first keyframe is left out
    for track, codec, kind in ((VIDEO, video, FrameKind.VIDEO), (AUDIO, audio, FrameKind.AUDIO)):
        sent = [f for f in media_frames(frames, kind) if f.dts_ms >= start]
        segments = segments_of(items, track)
        assert segments and segments[0].init.codec == codec
        seen = probe(track_file(segments))
        assert seen.codec in DECODER_NAMES[codec]
        assert seen.logs == [], f"{codec}: {seen.logs}"
        assert len(seen.dts) == len(sent) and seen.decoded == len(sent)
        assert seen.dts == sorted(seen.dts) and len(set(seen.dts)) == len(seen.dts)
        assert seen.keyframes[0]
        if track == VIDEO:
            assert (seen.width, seen.height) == (320, 240)
            assert seen.first_picture_keyframe
            assert seen.pts == [f.pts_ms * 90 for f in sent]  # composition offsets survive
            assert seen.keyframes == [f.keyframe for f in sent]
        else:
            assert (seen.sample_rate, seen.channels) == (48000, 2)
            # Audio runs on sample counts: within a millisecond of the sent timestamps.
            assert all(abs(pts * 1000 / 48000 - f.dts_ms) <= 1 for pts, f in zip(seen.pts, sent))


@pytest.mark.parametrize(("video", "audio"), CODEC_PAIRS)
def test_every_segment_decodes_alone_after_its_init(video: str, audio: str) -> None:
    items = run(codec_clip(video, audio))
    for track in (VIDEO, AUDIO):
        for segment in segments_of(items, track):
            seen = probe(segment.init.data + segment.data)
            assert seen.logs == [] and seen.keyframes[0] and seen.decoded == segment.samples


def test_parts_joined_are_their_segment_and_decode_times_run_on_without_gaps() -> None:
    items = run(codec_clip("h264", "aac"))
    for track in (VIDEO, AUDIO):
        segments = segments_of(items, track)
        parts = parts_of(items, track)
        for segment in segments:
            mine = [p for p in parts if p.sequence == segment.sequence]
            assert [p.index for p in mine] == list(range(segment.part_count))
            assert b"".join(p.data for p in mine) == segment.data
        found = fragments(b"".join(s.data for s in segments))
        assert [f.sequence_number for f in found] == list(range(1, len(found) + 1))
        for before, after in zip(found, found[1:]):
            assert after.base_media_decode_time == before.base_media_decode_time + sum(s["duration"] for s in before.samples)
        assert [s.start for s in segments[1:]] == [s.end for s in segments[:-1]]
        assert all(f.moof_offset + f.data_offset == f.mdat_offset + 8 for f in found)


def test_decode_times_are_the_stream_timeline_in_each_track_timescale() -> None:
    frames = codec_clip("h264", "aac")
    items = run(frames)
    first_video = media_frames(frames, FrameKind.VIDEO)[0]
    first_audio = media_frames(frames, FrameKind.AUDIO)[0]
    video, audio = segments_of(items, VIDEO)[0], segments_of(items, AUDIO)[0]
    assert (video.timescale, audio.timescale) == (90000, 48000)
    assert fragments(video.data)[0].base_media_decode_time == first_video.dts_ms * 90
    assert abs(fragments(audio.data)[0].base_media_decode_time - first_audio.dts_ms * 48) <= 24


def test_video_segments_start_at_the_first_keyframe_past_the_target_duration() -> None:
    frames = codec_clip("h264", "aac")  # a keyframe every second
    assert [s.start_ms for s in segments_of(run(frames), VIDEO)] == [0, 2000, 4000]
    assert [s.start_ms for s in segments_of(run(frames, CmafSegmenter(target_duration_s=1.5)), VIDEO)] == [0, 2000, 4000]
    assert [s.start_ms for s in segments_of(run(frames, CmafSegmenter(target_duration_s=1)), VIDEO)] == [0, 1000, 2000, 3000, 4000]
    for segment in segments_of(run(frames), VIDEO):
        assert segment.independent and fragments(segment.data)[0].samples[0]["flags"] == SAMPLE_SYNC


def test_audio_segments_share_numbers_with_the_video_and_start_with_it() -> None:
    frames = codec_clip("h264", "aac")
    items = run(frames)
    video, audio = segments_of(items, VIDEO), segments_of(items, AUDIO)
    assert [s.sequence for s in video] == [s.sequence for s in audio] == [0, 1, 2]
    assert audio[0].start_ms == media_frames(frames, FrameKind.AUDIO)[0].dts_ms  # the encoder's first frame
    for v, a in zip(video[1:], audio[1:]):
        assert v.start_ms <= a.start_ms < v.start_ms + 1024 / 48 + 1
    assert all(a.timeline is v.timeline and a.independent for v, a in zip(video, audio))


@pytest.mark.parametrize(("video", "audio"), CODEC_PAIRS)
def test_parts_fit_the_part_target_and_only_the_last_of_a_segment_is_short(video: str, audio: str) -> None:
    window = CmafWindow()
    items = run(codec_clip(video, audio))
    window.extend(items)
    for track in (VIDEO, AUDIO):
        target = window.part_target(track)
        assert target == 0.334
        for part in parts_of(items, track):
            assert part.duration_s <= target
            segment = next(s for s in segments_of(items, track) if s.sequence == part.sequence)
            if part.index < segment.part_count - 1:
                assert part.duration_s >= 0.85 * target
            first = fragments(part.data)[0]
            flags = first.samples[0].get("flags", first.default_sample_flags)
            assert part.independent == (flags == SAMPLE_SYNC)


def test_a_part_comes_out_when_the_frame_after_it_arrives() -> None:
    segmenter = CmafSegmenter()
    for frame in codec_clip("h264", None):
        for item in segmenter.push(frame, NOW):
            if isinstance(item, CmafPart):
                assert item.start + item.duration == frame.dts_ms * 90  # no waiting beyond one frame


def test_output_comes_in_order_with_each_segment_after_its_last_part() -> None:
    items = run(codec_clip("hevc", "opus"))
    for track in (VIDEO, AUDIO):
        mine = [i for i in items if i.track == track]
        for index, item in enumerate(mine):
            if isinstance(item, CmafSegment):
                previous = mine[index - 1]
                assert isinstance(previous, CmafPart) and previous.sequence == item.sequence
                assert previous.index == item.part_count - 1


# -- stream shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("audio", ["aac", "opus"])
def test_audio_only_stream_is_cut_on_duration(audio: str) -> None:
    frames = codec_clip(None, audio, seconds=5.0)
    items = run(frames)
    segments = segments_of(items, AUDIO)
    assert not segments_of(items, VIDEO)
    assert [s.sequence for s in segments] == [0, 1, 2]
    assert all(1.98 <= s.duration_s <= 2.05 for s in segments[:-1])
    seen = probe(track_file(segments))
    assert seen.logs == [] and seen.decoded == len(media_frames(frames, FrameKind.AUDIO))


def test_video_only_stream_is_cut_at_keyframes() -> None:
    frames = codec_clip("hevc", None, seconds=6.0, fps=30, gop_frames=30)
    items = run(frames)
    assert not segments_of(items, AUDIO)
    keyframes = [f.dts_ms for f in media_frames(frames, FrameKind.VIDEO) if f.keyframe]
    starts = [s.start_ms for s in segments_of(items, VIDEO)]
    assert len(starts) >= 2 and set(starts) <= set(keyframes)
    assert all(b - a >= 2000 for a, b in zip(starts, starts[1:]))
    assert probe(track_file(segments_of(items, VIDEO))).decoded == len(media_frames(frames, FrameKind.VIDEO))


def test_a_stream_joined_mid_gop_starts_at_the_next_keyframe_and_audio_with_it() -> None:
    frames = codec_clip("h264", "aac")
    configs = [f for f in frames if f.is_config]
    joined = configs + [f for f in frames if not f.is_config and f.dts_ms >= 500]
    segmenter = CmafSegmenter()
    items = run(joined, segmenter)
    assert segments_of(items, VIDEO)[0].start_ms == 1000
    assert 1000 <= segments_of(items, AUDIO)[0].start_ms < 1022
    assert segmenter.frames_waiting_for_keyframe > 0


def test_audio_that_leads_the_video_config_waits_and_starts_with_the_keyframe() -> None:
    frames = codec_clip("h264", "aac")
    audio = [f for f in frames if f.kind == FrameKind.AUDIO]
    video = [f for f in frames if f.kind == FrameKind.VIDEO]
    items = run(audio[:15] + video + audio[15:])  # 300 ms of audio before any video
    assert segments_of(items, AUDIO)[0].sequence == 0
    assert segments_of(items, AUDIO)[0].start_ms == media_frames(frames, FrameKind.AUDIO)[0].dts_ms


def test_video_that_appears_after_audio_only_segments_takes_the_next_number() -> None:
    audio = codec_clip(None, "aac", seconds=5.0)
    video = [retime(f, 3000) for f in codec_clip("h264", None, seconds=2.0) if not f.is_config]
    video_config = config_frame(codec_clip("h264", None, seconds=2.0), FrameKind.VIDEO)
    late = [video_config] + video
    frames = sorted(audio + late, key=lambda f: (f.dts_ms, not f.is_config))
    frames.remove(video_config)
    cut = next(i for i, f in enumerate(frames) if f.dts_ms >= 3000)
    frames.insert(cut, retime(video_config, 3000))
    items = run(frames)
    video_segments = segments_of(items, VIDEO)
    audio_segments = segments_of(items, AUDIO)
    assert video_segments[0].start_ms == 3000
    follower = next(s for s in audio_segments if s.sequence == video_segments[0].sequence)
    assert 3000 <= follower.start_ms < 3022
    assert [s.sequence for s in audio_segments] == list(range(len(audio_segments)))
    assert probe(track_file(audio_segments)).decoded == len(media_frames(audio, FrameKind.AUDIO))


def test_audio_with_a_video_config_but_no_video_becomes_audio_only_after_the_maximum_duration() -> None:
    frames = codec_clip("h264", "aac", seconds=5.0)
    no_video = [f for f in frames if f.kind != FrameKind.VIDEO or f.is_config]
    segmenter = CmafSegmenter(max_segment_duration_s=2.0)
    items = run(no_video, segmenter)
    assert segments_of(items, AUDIO) and segments_of(items, AUDIO)[0].start_ms >= 2000


# -- configs ---------------------------------------------------------------------------------------


def test_frames_before_their_config_are_dropped_and_counted() -> None:
    frames = codec_clip("h264", "aac")
    segmenter = CmafSegmenter()
    run([f for f in frames if not f.is_config], segmenter)
    assert segmenter.frames_without_config == len(media_frames(frames, FrameKind.VIDEO)) + len(
        media_frames(frames, FrameKind.AUDIO)
    )
    assert segmenter.init(VIDEO) is None


def test_identical_configs_resent_change_nothing() -> None:
    frames = codec_clip("h264", "aac")
    configs = [f for f in frames if f.is_config and f.kind != FrameKind.DATA]
    noisy: list[Frame] = []
    for frame in frames:
        noisy.append(frame)
        if frame.kind == FrameKind.VIDEO and frame.keyframe:
            noisy += [retime(c, frame.dts_ms - c.dts_ms) for c in configs]
    plain = run(frames)
    again = run(noisy)
    assert [i.data for i in again] == [i.data for i in plain]
    assert all(i.init.version == 1 for i in again)


def test_a_new_video_config_starts_a_discontinuity_with_a_new_init_at_its_keyframe() -> None:
    small = codec_clip("h264", "aac", seconds=3.0)
    large = codec_clip("h264", "aac", seconds=3.0, width=640, height=360)
    frames = [f for f in small if f.kind != FrameKind.DATA] + [retime(f, 3000) for f in large if f.kind != FrameKind.DATA]
    items = run(frames)
    video = segments_of(items, VIDEO)
    audio = segments_of(items, AUDIO)
    changed = next(s for s in video if s.init.version == 2)
    assert changed.start_ms == 3000 and changed.discontinuity
    assert changed.timeline.index == 1 and changed.timeline.wall_time(3000) == pytest.approx(NOW + 3)
    assert (changed.init.width, changed.init.height) == (640, 360)
    follower = next(s for s in audio if s.sequence == changed.sequence)
    assert follower.discontinuity and follower.timeline is changed.timeline
    before = [s for s in video if s.init.version == 1]
    after = [s for s in video if s.init.version == 2]
    assert not any(s.discontinuity for s in before) and not any(s.discontinuity for s in after[1:])
    assert (probe(track_file(before)).width, probe(track_file(after)).width) == (320, 640)
    assert probe(track_file(after)).decoded == len(media_frames(large, FrameKind.VIDEO))


def test_a_new_audio_config_closes_audio_at_once_and_resumes_with_the_next_segment() -> None:
    first = codec_clip("h264", "aac", seconds=3.0)
    second = codec_clip("h264", "aac", seconds=3.0, sample_rate=44100, channels=1)
    # The encoder's audio runs a little past 3 s; the new config's audio starts where the old one stops.
    frames = [f for f in first if f.kind != FrameKind.DATA and f.dts_ms < 3000]
    frames += [retime(f, 3000) for f in second if f.kind != FrameKind.DATA]
    items = run(frames)
    audio = segments_of(items, AUDIO)
    new = [s for s in audio if s.init.version == 2]
    assert new and new[0].discontinuity and new[0].timescale == 44100 and new[0].init.channels == 1
    assert new[0].sequence == next(s for s in segments_of(items, VIDEO) if s.start_ms == 3000).sequence
    seen = probe(track_file(new))
    assert seen.logs == [] and (seen.sample_rate, seen.channels) == (44100, 1)


def test_a_malformed_config_raises_and_leaves_the_segmenter_as_it_was() -> None:
    frames = codec_clip("hevc", "opus")
    config = config_frame(frames, FrameKind.VIDEO)
    broken = video_frame(bytes(config.body)[:30], 0)
    bad_head = audio_frame(b"\x90Opus" + b"OpusHead\x01\x00" + bytes(9), 0)
    segmenter = CmafSegmenter()
    items: list[Item] = []
    for index, frame in enumerate(frames):
        if index == 40:
            with pytest.raises(MediaError, match="HEVC decoder configuration record"):
                segmenter.push(broken, NOW)
            with pytest.raises(MediaError, match="0 output channels"):
                segmenter.push(bad_head, NOW)
        items += segmenter.push(frame, NOW + frame.dts_ms / 1000)
    items += segmenter.finish()
    assert [i.data for i in items] == [i.data for i in run(frames)]


def test_a_malformed_opus_packet_raises_media_error() -> None:
    frames = codec_clip("hevc", "opus")
    segmenter = CmafSegmenter()
    for frame in frames[:10]:
        segmenter.push(frame, NOW)
    with pytest.raises(MediaError, match="frame count"):
        segmenter.push(audio_frame(b"\x91Opus\x03", 100), NOW)


def test_codecs_cmaf_does_not_carry_are_skipped_and_the_rest_carries_on() -> None:
    frames = codec_clip("h264", "aac")
    vp6 = [video_frame(b"\x14" + bytes(20), 0), video_frame(b"\x24" + bytes(20), 0)]  # FLV codec id 4
    mp3 = [audio_frame(b"\x2f" + b"\xff\xfb\x90\x00" + bytes(50), 0)]
    segmenter = CmafSegmenter()
    items = run(vp6 + mp3 + frames, segmenter)
    assert segmenter.skipped_codecs == {"vp6", "mp3"}
    assert len(segments_of(items, VIDEO)) == 3


def test_init_is_known_once_the_config_arrives() -> None:
    frames = codec_clip("av1", "opus")
    segmenter = CmafSegmenter()
    assert segmenter.init(VIDEO) is None
    segmenter.push(config_frame(frames, FrameKind.VIDEO), NOW)
    init = segmenter.init(VIDEO)
    assert init is not None and init.codec_string == "av01.0.00M.08" and (init.width, init.height) == (320, 240)
    assert init.name() == "video-init-1.mp4"
    with pytest.raises(UsageError):
        segmenter.init("subtitles")


# -- time ------------------------------------------------------------------------------------------


def test_discontinuity_closes_the_open_segments_and_starts_a_new_timeline() -> None:
    frames = codec_clip("h264", "aac", seconds=3.0)
    segmenter = CmafSegmenter()
    items = run(frames, segmenter, finish=False)
    segmenter.discontinuity()
    again = [retime(f, -f.dts_ms + f.dts_ms) for f in frames]  # a new publisher: timestamps from 0 again
    first_push = segmenter.push(again[0], NOW + 100)
    closed = [i for i in first_push if isinstance(i, CmafSegment)]
    assert {s.track for s in closed} == {VIDEO, AUDIO} and all(s.timeline.index == 0 for s in closed)
    items += first_push
    for frame in again[1:]:
        items += segmenter.push(frame, NOW + 100 + frame.dts_ms / 1000)
    items += segmenter.finish()
    for track in (VIDEO, AUDIO):
        segments = segments_of(items, track)
        later = [s for s in segments if s.timeline.index == 1]
        assert later[0].discontinuity and not any(s.discontinuity for s in later[1:])
        assert later[0].program_date_time == pytest.approx(NOW + 100 + later[0].start_ms / 1000, abs=0.001)
        assert [s.sequence for s in segments] == list(range(len(segments)))
        assert probe(track_file(later)).logs == []


def test_a_discontinuity_with_nothing_open_flags_nothing_until_media_was_written() -> None:
    segmenter = CmafSegmenter()
    segmenter.discontinuity()
    items = run(codec_clip("h264", "aac"), segmenter)
    assert not any(s.discontinuity for s in items)


def test_forgetting_configs_lets_a_new_publisher_choose_other_codecs() -> None:
    segmenter = CmafSegmenter()
    items = run(codec_clip("h264", "aac", seconds=2.0), segmenter, finish=False)
    segmenter.discontinuity(forget_configs=True)
    items += run(codec_clip("hevc", "opus", seconds=2.0), segmenter)
    codecs = [(s.track, s.init.codec, s.init.version) for s in items if isinstance(s, CmafSegment)]
    assert ("video", "hevc", 2) in codecs and ("audio", "opus", 2) in codecs


def test_a_timestamp_jump_starts_a_new_timeline_by_itself() -> None:
    frames = codec_clip("h264", "aac", seconds=4.0)
    jumped = [f if f.dts_ms < 2000 else retime(f, 60_000) for f in frames]
    segmenter = CmafSegmenter()
    items = run(jumped, segmenter)
    assert segmenter.timeline_resets == 1
    video = segments_of(items, VIDEO)
    assert [s.timeline.index for s in video] == [0, 1] and video[1].discontinuity
    assert video[1].start_ms == 62_000


def test_decode_times_that_step_back_a_little_are_nudged_forward_keeping_presentation() -> None:
    frames = codec_clip("h264", None, seconds=2.0)
    victim = next(i for i, f in enumerate(frames) if f.kind == FrameKind.VIDEO and not f.keyframe and f.dts_ms > 500)
    previous = frames[victim - 1].dts_ms
    frames = frames[:victim] + [retime(frames[victim], previous - frames[victim].dts_ms)] + frames[victim + 1 :]
    items = run(frames)
    seen = probe(track_file(segments_of(items, VIDEO)))
    assert seen.dts == sorted(seen.dts) and len(set(seen.dts)) == len(seen.dts)
    assert seen.logs == []


def test_timestamps_that_stop_moving_cannot_grow_a_part_without_bound() -> None:
    frames = codec_clip("h264", None, seconds=1.0)
    config = config_frame(frames, FrameKind.VIDEO)
    video = media_frames(frames, FrameKind.VIDEO)
    stuck = [config, video[0]] + [retime(video[1], 40 - video[1].dts_ms)] * 3000
    items = run(stuck)
    parts = parts_of(items, VIDEO)
    assert len(parts) >= 3 and max(p.samples for p in parts) <= 1000


def test_finish_without_frames_gives_nothing_and_finish_twice_is_harmless() -> None:
    segmenter = CmafSegmenter()
    assert segmenter.finish() == []
    run(codec_clip("h264", "aac", seconds=1.0), segmenter)
    assert segmenter.finish() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_duration_s": 0}, "target duration"),
        ({"target_duration_s": 20}, "target duration"),
        ({"part_target_s": 0.01}, "part target"),
        ({"part_target_s": 3.0}, "part target"),
    ],
)
def test_segmenter_settings_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        CmafSegmenter(**kwargs)


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        (segment_name(VIDEO, 0), CmafName("segment", VIDEO, 0)),
        (segment_name(AUDIO, 123456789), CmafName("segment", AUDIO, 123456789)),
        (part_name(VIDEO, 7, 3), CmafName("part", VIDEO, 7, 3)),
        (init_name(AUDIO, 2), CmafName("init", AUDIO, 2)),
    ],
)
def test_names_round_trip(name: str, parsed: CmafName) -> None:
    assert parse_cmaf_name(name) == parsed


@pytest.mark.parametrize(
    "name",
    ["video-01.m4s", "video-1.m4s.x", "subs-1.m4s", "video-init-1.m4s", "video-1.mp4", "../video-1.m4s",
     "video-1.2.3.m4s", "video-" + "9" * 19 + ".m4s", "video--1.m4s", ""],
)
def test_names_that_are_not_cmaf_names_are_refused(name: str) -> None:
    assert parse_cmaf_name(name) is None


# -- window ----------------------------------------------------------------------------------------


def test_window_lists_the_last_segments_keeps_parts_of_the_last_few_and_finds_everything() -> None:
    frames = codec_clip("h264", "aac", seconds=10.0)
    window = CmafWindow(listed=3, retained=1, part_segments=2)
    items = run(frames, finish=False)
    window.extend(items)
    video = window.track(VIDEO)
    assert video is not None
    assert [s.sequence for s in video.listed] == [1, 2, 3]
    assert [s.sequence for s in video] == [0, 1, 2, 3]
    assert video.media_sequence == 1 and video.last_sequence == 3
    assert video.parts_of(1) is None and video.parts_of(3) is not None
    assert video.next_part == (4, len(video.open_parts)) and video.open_parts
    assert video.part(4, 0) is video.open_parts[0]
    assert video.segment(0) is not None and video.segment(9) is None
    assert video.init(1) is not None and video.init(2) is None
    assert video.current_init is video.init(1)


def test_window_counts_discontinuities_that_leave_the_listing() -> None:
    frames = codec_clip("h264", "aac", seconds=4.0)
    segmenter = CmafSegmenter()
    window = CmafWindow(listed=2)
    window.extend(run(frames, segmenter, finish=False))
    segmenter.discontinuity()
    window.extend(run([retime(f, 10_000) for f in frames], segmenter, finish=False))
    window.extend(run([retime(f, 14_000) for f in frames], segmenter))
    video = window.track(VIDEO)
    assert video is not None and [s.discontinuity for s in video.listed] == [False, False]
    assert video.discontinuity_sequence == 1


def test_window_refuses_items_out_of_order_and_after_the_end() -> None:
    items = run(codec_clip("h264", "aac", seconds=3.0))
    parts = parts_of(items, VIDEO)
    window = CmafWindow()
    with pytest.raises(UsageError, match="does not start"):
        window.add(parts[1])
    window.add(parts[0])
    with pytest.raises(UsageError, match="in order"):
        window.add(parts[2])
    window.extend(i for i in items if i is not parts[0])
    with pytest.raises(UsageError, match="must grow"):
        window.add(segments_of(items, VIDEO)[0])
    window.end()
    with pytest.raises(UsageError, match="ended"):
        window.add(parts[0])
    with pytest.raises(UsageError):
        CmafWindow(listed=0)


def test_window_target_duration_and_part_target_never_shrink() -> None:
    window = CmafWindow(target_duration_s=2.0, part_target_s=0.333)
    assert window.target_duration() == 2 and window.part_target() == 0.334
    frames = codec_clip("h264", None, seconds=6.0, gop_frames=75)  # 3 s GOPs
    window.extend(run(frames))
    assert window.target_duration(VIDEO) == 3


def test_configs_that_change_before_any_media_start_no_discontinuity() -> None:
    first = codec_clip("h264", "aac", seconds=2.0)
    other = codec_clip("h264", "aac", seconds=2.0, width=640, height=360, sample_rate=44100)
    early = [config_frame(first, FrameKind.VIDEO), config_frame(first, FrameKind.AUDIO)]
    items = run(early + [f for f in other if f.kind != FrameKind.DATA])
    segments = [i for i in items if isinstance(i, CmafSegment)]
    assert segments and not any(s.discontinuity for s in segments)
    assert {(s.track, s.init.version) for s in segments} == {(VIDEO, 2), (AUDIO, 2)}
    assert segments_of(items, VIDEO)[0].init.width == 640
