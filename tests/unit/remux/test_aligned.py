"""Aligned renditions: a rendition's TS and CMAF segmenters follow the source's cuts (CutPlan).

The source is a real clip with B-frames; a rendition is the same picture encoded smaller without
B-frames, stamped with the source's presentation times (as the transcoder publishes it), carrying the
source's audio. Segment N of both must start at the same instant with the same duration and number.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
from conftest import flv_frames, make_flv_clip, media, rendition_of

from mediaserver.media.flv_body import video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux.cmaf import AUDIO, VIDEO, CmafPart, CmafSegment, CmafSegmenter
from mediaserver.remux.hls import TsSegmenter
from mediaserver.remux.segment import Cut, CutPlan, Segment

NOW = 1_700_000_000.0


# -- clips -----------------------------------------------------------------------------------------


def ts_run(frames: list[Frame], segmenter: TsSegmenter) -> list[Segment]:
    out: list[Segment] = []
    for frame in frames:
        out += segmenter.push(frame, NOW + frame.dts_ms / 1000)
    last = segmenter.finish()
    return out + ([last] if last is not None else [])


def first_video_pts(segment: Segment) -> int:
    with av.open(io.BytesIO(segment.data), format="mpegts") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is not None:
                return packet.pts
    raise AssertionError(f"segment {segment.sequence} has no video")


def timing(segments: list[Segment]) -> list[tuple[int, int, int, float]]:
    return [(s.sequence, s.start_ms, s.duration_ms, round(s.program_date_time, 3)) for s in segments]


# -- the plan --------------------------------------------------------------------------------------


def test_the_plan_keeps_the_newest_cuts_and_knows_how_far_the_reference_got() -> None:
    plan = CutPlan(keep=3)
    assert not plan.decided(0) and plan.at(0) is None
    for n in range(5):
        plan.record(n * 1000, Cut(n, 0, NOW + n, 80))
    assert len(plan) == 3 and plan.at(1000) is None and plan.at(4000) == Cut(4, 0, NOW + 4, 80)
    plan.passed(4500)
    assert plan.decided(4500) and not plan.decided(4501)
    plan.passed(100)  # an older keyframe never moves the horizon back
    assert plan.horizon_ms == 4500


# -- MPEG-TS ---------------------------------------------------------------------------------------


def test_a_rendition_cuts_its_ts_segments_where_the_source_does(av_clip: list[Frame], rendition: list[Frame]) -> None:
    plan = CutPlan()
    source = ts_run(av_clip, TsSegmenter(target_duration_s=2, cuts=plan))
    follower = TsSegmenter(target_duration_s=2, follow=plan)
    segments = ts_run(rendition, follower)
    # B-frames in the source, none in the rendition: the same instants all the same.
    assert any(f.cts_ms for f in media(av_clip, FrameKind.VIDEO) if f.keyframe)
    assert len(source) >= 3 and timing(segments) == timing(source)
    assert [first_video_pts(s) for s in segments] == [first_video_pts(s) for s in source]
    assert follower.plan_mismatches == 0 and all(s.independent for s in segments)


def test_a_rendition_that_starts_late_takes_the_sources_numbers(av_clip: list[Frame], rendition: list[Frame]) -> None:
    plan = CutPlan()
    source = ts_run(av_clip, TsSegmenter(target_duration_s=2, cuts=plan))
    # It joins 2.5 s in (a viewer asked for it later): its history starts mid-segment.
    late = [f for f in rendition if f.is_config or f.dts_ms >= 2500]
    follower = TsSegmenter(target_duration_s=2, follow=plan)
    segments = ts_run(late, follower)
    assert segments[0].sequence == source[2].sequence == 2
    assert timing(segments) == timing(source[2:])
    assert follower.frames_waiting_for_keyframe > 0  # media before the planned cut was dropped


def test_a_rendition_that_starts_before_the_source_drops_what_comes_before_its_first_cut(
    av_clip: list[Frame], rendition: list[Frame]
) -> None:
    plan = CutPlan()
    joined = [f for f in av_clip if f.is_config or f.dts_ms >= 1500]  # the source's history is shorter
    source = ts_run(joined, TsSegmenter(target_duration_s=2, first_sequence=40, cuts=plan))
    segments = ts_run(rendition, TsSegmenter(target_duration_s=2, follow=plan))
    assert segments[0].sequence == 40
    assert timing(segments) == timing(source)


def test_a_rendition_fed_alongside_the_source_with_a_lag_cuts_the_same(
    av_clip: list[Frame], rendition: list[Frame]
) -> None:
    # Live: the transcoder's output arrives some 300 ms after the source's frames.
    plan = CutPlan()
    reference = TsSegmenter(target_duration_s=2, cuts=plan)
    follower = TsSegmenter(target_duration_s=2, follow=plan)
    events = [(f.dts_ms, 0, f) for f in av_clip] + [(f.dts_ms + 300, 1, f) for f in rendition]
    out: tuple[list[Segment], list[Segment]] = ([], [])
    for at, which, frame in sorted(events, key=lambda e: (e[0], e[1])):
        segmenter = follower if which else reference
        out[which].extend(segmenter.push(frame, NOW + at / 1000))
    assert timing(out[1]) == timing(out[0]) and len(out[0]) >= 2


def test_without_the_plan_in_reach_a_rendition_cuts_by_the_same_rule(av_clip: list[Frame], rendition: list[Frame]) -> None:
    # The rendition runs ahead of the source (on an edge the two may arrive in any order).
    plan = CutPlan()
    reference = TsSegmenter(target_duration_s=2, cuts=plan)
    for frame in [f for f in av_clip if f.is_config or f.dts_ms < 1000]:
        reference.push(frame, NOW)
    follower = TsSegmenter(target_duration_s=2, follow=plan)
    ahead = ts_run(rendition, follower)
    rest = ts_run([f for f in av_clip if f.dts_ms >= 1000 and not f.is_config], reference)
    assert [(s.start_ms, s.duration_ms) for s in ahead[:-1]] == [(s.start_ms, s.duration_ms) for s in rest[:-1]]
    assert [s.sequence for s in ahead] == list(range(len(ahead)))


def test_a_forced_cut_in_the_source_is_followed(av_clip: list[Frame], small_clip: list[Frame]) -> None:
    # The publisher skipped the keyframe at 2 s: the source is cut without one at the maximum duration.
    gone = 2000 + next(f for f in media(av_clip, FrameKind.VIDEO) if f.keyframe).cts_ms
    source = [f if not (f.keyframe and f.pts_ms == gone) else _frame_type(f, False) for f in av_clip]
    rendition = rendition_of(source, small_clip)
    plan = CutPlan()
    reference = ts_run(source, TsSegmenter(target_duration_s=1, max_segment_duration_s=1.5, cuts=plan))
    assert not all(s.independent for s in reference)
    follower = TsSegmenter(target_duration_s=1, max_segment_duration_s=1.5, follow=plan)
    segments = ts_run(rendition, follower)
    assert [s.sequence for s in segments] == [s.sequence for s in reference]
    assert [s.independent for s in segments] == [s.independent for s in reference]
    assert follower.plan_mismatches == 0


def test_a_rendition_that_misses_a_planned_cut_keeps_its_numbers_contiguous(
    av_clip: list[Frame], rendition: list[Frame]
) -> None:
    plan = CutPlan()
    source = ts_run(av_clip, TsSegmenter(target_duration_s=1, cuts=plan))
    # The rendition lost the frame the source's third segment starts with (a frame the worker skipped).
    lost = next(pts for pts, cut in _cuts(plan) if cut.sequence == 2)
    follower = TsSegmenter(target_duration_s=1, follow=plan)
    segments = ts_run([f for f in rendition if not (f.kind == FrameKind.VIDEO and f.pts_ms == lost)], follower)
    assert follower.plan_mismatches == 1
    assert [s.sequence for s in segments] == list(range(len(segments)))
    # Its later segments still start where the source's do.
    assert [s.start_ms for s in segments[2:]] == [s.start_ms for s in source[3:]]


def _frame_type(frame: Frame, keyframe: bool) -> Frame:
    body = bytes(frame.body)
    body = bytes(((0x10 if keyframe else 0x20) | (body[0] & 0x0F),)) + body[1:]
    rebuilt = video_frame(body, frame.dts_ms)
    assert rebuilt is not None
    return rebuilt


def _cuts(plan: CutPlan) -> list[tuple[int, Cut]]:
    return sorted((pts, plan.at(pts)) for pts in range(0, 10_000) if plan.at(pts) is not None)  # type: ignore[misc]


# -- CMAF ------------------------------------------------------------------------------------------


def cmaf_run(frames: list[Frame], segmenter: CmafSegmenter) -> list[CmafPart | CmafSegment]:
    out: list[CmafPart | CmafSegment] = []
    for frame in frames:
        out += segmenter.push(frame, NOW + frame.dts_ms / 1000)
    return out + segmenter.finish()


def cmaf_timing(items: list[CmafPart | CmafSegment], track: str) -> list[tuple[int, int, int, float]]:
    return [(i.sequence, i.start, i.duration, round(i.program_date_time, 3))
            for i in items if isinstance(i, CmafSegment) and i.track == track]


def part_keys(items: list[CmafPart | CmafSegment]) -> list[tuple[int, int]]:
    return [(i.sequence, i.index) for i in items if isinstance(i, CmafPart) and i.track == VIDEO]


def test_a_rendition_cuts_its_cmaf_segments_and_parts_where_the_source_does(
    av_clip: list[Frame], rendition: list[Frame]
) -> None:
    plan = CutPlan()
    source = cmaf_run(av_clip, CmafSegmenter(target_duration_s=2, part_target_s=0.5, cuts=plan))
    follower = CmafSegmenter(target_duration_s=2, part_target_s=0.5, follow=plan)
    items = cmaf_run(rendition, follower)
    assert len(cmaf_timing(source, VIDEO)) >= 3
    assert cmaf_timing(items, VIDEO) == cmaf_timing(source, VIDEO)
    assert cmaf_timing(items, AUDIO) == cmaf_timing(source, AUDIO)  # audio follows the same cuts
    assert part_keys(items) == part_keys(source)
    assert follower.plan_mismatches == 0


def test_parts_of_a_rendition_of_a_source_without_b_frames_match_exactly(
    small_clip: list[Frame], tmp_path: Path
) -> None:
    # Two no-B encodes of one picture at two sizes with the same timestamps: parts match tick for tick.
    big = flv_frames(make_flv_clip(tmp_path / "big.flv", width=320, height=240, bframes=0, seconds=4))
    small = [f for f in small_clip if f.is_config or f.dts_ms < 4000]
    plan = CutPlan()
    source = cmaf_run(big, CmafSegmenter(target_duration_s=1, part_target_s=0.3, cuts=plan))
    items = cmaf_run(rendition_of(big, small), CmafSegmenter(target_duration_s=1, part_target_s=0.3, follow=plan))
    parts = [(i.sequence, i.index, i.start, i.duration) for i in source if isinstance(i, CmafPart) and i.track == VIDEO]
    assert parts and parts == [(i.sequence, i.index, i.start, i.duration)
                               for i in items if isinstance(i, CmafPart) and i.track == VIDEO]


def test_a_late_cmaf_rendition_takes_the_sources_numbers_and_dates(av_clip: list[Frame], rendition: list[Frame]) -> None:
    plan = CutPlan()
    source = cmaf_run(av_clip, CmafSegmenter(target_duration_s=1, cuts=plan))
    late = [f for f in rendition if f.is_config or f.dts_ms >= 2500]
    items = cmaf_run(late, CmafSegmenter(target_duration_s=1, follow=plan))
    expected = cmaf_timing(source, VIDEO)
    got = cmaf_timing(items, VIDEO)
    assert got[0][0] == 3 and got == expected[3:]


def test_a_rendition_without_a_keyframe_where_the_source_cut_does_not_cut_there(
    av_clip: list[Frame], rendition: list[Frame]
) -> None:
    plan = CutPlan()
    ts_run(av_clip, TsSegmenter(target_duration_s=1, cuts=plan))
    cmaf_run(av_clip, CmafSegmenter(target_duration_s=1, cuts=(cmaf_plan := CutPlan())))
    # The encoder restarted and made no keyframe where the source's second segment starts.
    at = next(pts for pts, cut in _cuts(plan) if cut.sequence == 1)
    damaged = [_frame_type(f, False) if f.kind == FrameKind.VIDEO and f.pts_ms == at and not f.is_config else f
               for f in rendition]
    follower = TsSegmenter(target_duration_s=1, follow=plan)
    segments = ts_run(damaged, follower)
    assert all(s.independent for s in segments) and follower.plan_mismatches == 1
    assert [s.sequence for s in segments] == list(range(len(segments)))
    cmaf_follower = CmafSegmenter(target_duration_s=1, follow=cmaf_plan)
    items = cmaf_run(damaged, cmaf_follower)
    assert all(i.independent for i in items if isinstance(i, CmafSegment)) and cmaf_follower.plan_mismatches == 1


def test_a_cmaf_rendition_whose_own_config_changes_starts_a_segment_at_its_next_keyframe(
    av_clip: list[Frame], rendition: list[Frame], small_clip: list[Frame]
) -> None:
    plan = CutPlan()
    cmaf_run(av_clip, CmafSegmenter(target_duration_s=2, cuts=plan))
    # The worker restarted with another encoder setup: a new sequence header at 1 s, between two planned cuts.
    other = next(f for f in av_clip if f.kind == FrameKind.VIDEO and f.is_config)
    at = next(f.dts_ms for f in rendition if f.kind == FrameKind.VIDEO and f.keyframe and f.dts_ms >= 1000)
    frames: list[Frame] = []
    for f in rendition:
        if f.kind == FrameKind.VIDEO and f.dts_ms == at and not f.is_config:
            frames.append(other)
        frames.append(f)
    items = cmaf_run(frames, CmafSegmenter(target_duration_s=2, follow=plan))
    video = [i for i in items if isinstance(i, CmafSegment) and i.track == VIDEO]
    changed = next(s for s in video if s.init.version == 2)
    assert changed.start == (at - next(c for _, c in _cuts(plan)).decode_delay_ms) * 90 and changed.discontinuity
    assert all(s.init.version == 1 for s in video if s.start < changed.start)
