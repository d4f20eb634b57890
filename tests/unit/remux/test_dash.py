"""DASH MPD over the CMAF window: parsed with mpegdash and held to DASH-IF live rules."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import datetime

import pytest
from mpegdash.parser import MPEGDASHParser
from support.codec_clips import codec_clip
from support.media import ffmpeg_exe

from mediaserver.errors import UsageError
from mediaserver.media.flv_body import audio_frame, video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux.cmaf import AUDIO, VIDEO, CmafSegment, CmafSegmenter, parse_cmaf_name
from mediaserver.remux.cmaf_window import CmafWindow
from mediaserver.remux.dash import render_mpd
from mediaserver.remux.llhls import render_media_playlist

NOW = 1_700_000_000.0

MARGIN = 0.2  # render_mpd's default availability_margin_s


def retime(frame: Frame, offset_ms: int) -> Frame:
    rebuilt = (audio_frame if frame.kind == FrameKind.AUDIO else video_frame)(bytes(frame.body), frame.dts_ms + offset_ms)
    assert rebuilt is not None
    return rebuilt


def seconds(duration: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(\d+(?:\.\d+)?)S", duration)
    assert match, f"{duration} is not an xs:duration this test reads"
    hours, minutes, secs = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs)


def wall(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Listed:
    track: str
    number: int
    name: str
    t: int
    d: int
    available_at: float
    """AST + Period@start + (t + d - PTO) / timescale: when the segment may be fetched."""


class Feeder:
    """Pushes frames as a live publisher would, remembering the wall time each segment came out."""

    def __init__(self, window: CmafWindow) -> None:
        self.window = window
        self.segmenter = CmafSegmenter()
        self.produced: dict[tuple[str, int], float] = {}
        self.now = NOW

    def feed(self, frames: list[Frame], base: float) -> None:
        for frame in frames:
            self.now = base + frame.dts_ms / 1000
            for item in self.segmenter.push(frame, self.now):
                self.window.add(item)
                if isinstance(item, CmafSegment):
                    self.produced[(item.track, item.sequence)] = self.now


def check_mpd(text: str, window: CmafWindow, now: float, produced: dict[tuple[str, int], float]) -> list[Listed]:
    """Parse an MPD and check it against the window; returns what it lists."""
    mpd = MPEGDASHParser.parse(text)
    assert set(mpd.profiles.split(",")) == {"urn:mpeg:dash:profile:isoff-live:2011", "urn:mpeg:dash:profile:cmaf:2019"}
    (timing,) = mpd.utc_timings
    assert timing.scheme_id_uri == "urn:mpeg:dash:utc:http-iso:2014"
    dynamic = mpd.type == "dynamic"
    assert dynamic == (not window.ended)
    ast = wall(mpd.availability_start_time) if dynamic else 0.0
    if dynamic:
        assert wall(mpd.publish_time) == pytest.approx(now, abs=0.001)
        assert seconds(mpd.minimum_update_period) > 0 and seconds(mpd.time_shift_buffer_depth) > 0
        assert seconds(mpd.suggested_presentation_delay) >= seconds(mpd.min_buffer_time)
    assert seconds(mpd.max_segment_duration) >= max(tw.max_duration_s for tw in window.tracks.values()) - 0.001
    listed: list[Listed] = []
    starts = [seconds(p.start) for p in mpd.periods]
    assert starts == sorted(starts) and len({p.id for p in mpd.periods}) == len(mpd.periods)
    for period, start in zip(mpd.periods, starts):
        for adaptation in period.adaptation_sets:
            track = adaptation.content_type
            assert adaptation.mime_type == f"{track}/mp4" and str(adaptation.start_with_sap) == "1"
            (template,) = adaptation.segment_templates
            (representation,) = adaptation.representations
            timescale, offset = template.timescale, template.presentation_time_offset or 0
            number = template.start_number
            end = None
            for s in template.segment_timelines[0].Ss:
                t = s.t if s.t is not None else end
                assert t is not None, "the first S of a timeline needs @t"
                for _ in range((s.r or 0) + 1):
                    assert t >= offset
                    name = template.media.replace("$Number$", str(number))
                    listed.append(Listed(track, number, name, t, s.d, ast + start + (t + s.d - offset) / timescale))
                    number += 1
                    t += s.d
                end = t
            tw = window.track(track)
            assert tw is not None
            init = parse_cmaf_name(template.initialization)
            assert init.kind == "init" and tw.init(init.number) is not None
            assert representation.codecs == tw.init(init.number).codec_string and representation.bandwidth > 0
            if track == VIDEO:
                assert (representation.width, representation.height) == (tw.init(init.number).width, tw.init(init.number).height)
            else:
                assert representation.audio_sampling_rate == str(tw.init(init.number).sample_rate)
    for track in (VIDEO, AUDIO):
        tw = window.track(track)
        mine = [item for item in listed if item.track == track]
        if tw is None:
            assert not mine
            continue
        # The timeline lists exactly the window's segments: same names, times and durations.
        assert [(m.name, m.t, m.d) for m in mine] == [(s.name(), s.start, s.duration) for s in tw.listed]
        for item, segment in zip(mine, tw.listed):
            if dynamic:
                # Availability arithmetic lands on the segment's end on the wall clock plus the
                # margin for cutting and listing it (the frame after it must arrive first).
                assert item.available_at == pytest.approx(segment.program_date_time + segment.duration_s + MARGIN, abs=0.002)
                assert item.available_at <= now + MARGIN + 0.002
    return listed


# -- live ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("video", "audio"), [("h264", "aac"), ("hevc", "opus"), ("av1", "opus"), ("vp9", "opus")])
def test_live_mpd_lists_what_exists_at_every_step(video: str, audio: str) -> None:
    window = CmafWindow(listed=3)
    feeder = Feeder(window)
    frames = codec_clip(video, audio, seconds=10.0)
    for frame in frames:
        before = len(feeder.produced)
        feeder.feed([frame], NOW)
        if len(feeder.produced) != before:
            check_mpd(render_mpd(window, now=feeder.now), window, feeder.now, feeder.produced)


@pytest.mark.parametrize(("target", "delay"), [(0.5, 4.0), (1.0, 4.0), (2.0, 6.0), (4.0, 12.0)])
def test_the_suggested_presentation_delay_is_three_segments_and_never_under_four_seconds(target: float, delay: float) -> None:
    # With a SegmentTimeline a player learns of a segment at its next MPD refresh: three 1 s segments left
    # dash.js under half a second of buffer at times, and a stall on any slow fetch (DASH-IF IOP 4.3.3.2.2).
    window = CmafWindow(target_duration_s=target)
    Feeder(window).feed(codec_clip("h264", "aac", seconds=3.0), NOW)
    mpd = MPEGDASHParser.parse(render_mpd(window, now=NOW + 3))
    assert seconds(mpd.suggested_presentation_delay) == pytest.approx(delay)
    chosen = MPEGDASHParser.parse(render_mpd(window, now=NOW + 3, suggested_presentation_delay_s=1.5))
    assert seconds(chosen.suggested_presentation_delay) == pytest.approx(1.5)


def test_mpd_and_hls_playlists_name_the_same_segment_files() -> None:
    window = CmafWindow()
    feeder = Feeder(window)
    feeder.feed(codec_clip("h264", "aac", seconds=8.0), NOW)
    listed = check_mpd(render_mpd(window, now=feeder.now), window, feeder.now, feeder.produced)
    for track in (VIDEO, AUDIO):
        hls = [line for line in render_media_playlist(window, track).splitlines() if line.endswith(".m4s") and not line.startswith("#")]
        assert [item.name for item in listed if item.track == track] == hls


def test_a_new_config_starts_a_new_period_with_the_new_init() -> None:
    small = codec_clip("h264", "aac", seconds=4.0)
    large = codec_clip("h264", "aac", seconds=4.0, width=640, height=360)
    window = CmafWindow()
    feeder = Feeder(window)
    feeder.feed([f for f in small if f.kind != FrameKind.DATA and f.dts_ms < 4000], NOW)
    feeder.feed([retime(f, 4000) for f in large if f.kind != FrameKind.DATA], NOW)
    text = render_mpd(window, now=feeder.now)
    check_mpd(text, window, feeder.now, feeder.produced)
    mpd = MPEGDASHParser.parse(text)
    assert [p.id for p in mpd.periods] == ["p0", "p1"]
    assert seconds(mpd.periods[1].start) == pytest.approx(4.0, abs=0.001)
    second = {a.content_type: a for a in mpd.periods[1].adaptation_sets}
    assert second[VIDEO].segment_templates[0].initialization == "video-init-2.mp4"
    assert second[VIDEO].representations[0].width == 640
    assert second[VIDEO].segment_templates[0].presentation_time_offset == 4000 * 90


def test_a_new_publisher_after_a_discontinuity_gets_a_period_on_the_new_wall_clock() -> None:
    frames = codec_clip("h264", "aac", seconds=4.0)
    window = CmafWindow()
    feeder = Feeder(window)
    feeder.feed(frames, NOW)
    feeder.segmenter.discontinuity()
    feeder.feed(frames, NOW + 30)  # timestamps from 0 again, 30 s later
    text = render_mpd(window, now=feeder.now)
    check_mpd(text, window, feeder.now, feeder.produced)
    mpd = MPEGDASHParser.parse(text)
    assert len(mpd.periods) == 2 and seconds(mpd.periods[1].start) == pytest.approx(30.0, abs=0.001)


def test_an_ended_stream_gets_a_static_mpd_that_plays_from_zero() -> None:
    window = CmafWindow()
    feeder = Feeder(window)
    feeder.feed(codec_clip("h264", "aac", seconds=5.0), NOW)
    window.extend(feeder.segmenter.finish())
    window.end()
    text = render_mpd(window, now=feeder.now)
    check_mpd(text, window, feeder.now, feeder.produced)
    mpd = MPEGDASHParser.parse(text)
    assert mpd.type == "static" and mpd.availability_start_time is None and mpd.minimum_update_period is None
    video = window.track(VIDEO)
    assert video is not None
    assert seconds(mpd.media_presentation_duration) == pytest.approx(sum(s.duration_s for s in video.listed), abs=0.1)
    offsets = {a.content_type: a.segment_templates[0].presentation_time_offset for a in mpd.periods[0].adaptation_sets}
    assert offsets[VIDEO] == 0 and offsets[AUDIO] == 0  # both tracks start from the same instant


def test_utc_timing_url_prefix_and_query_are_escaped_for_xml_and_templates() -> None:
    window = CmafWindow()
    feeder = Feeder(window)
    feeder.feed(codec_clip("h264", "aac", seconds=3.0), NOW)
    text = render_mpd(window, now=feeder.now, prefix="a$b-", query="t=1&u=$2", utc_timing_url="https://example.test/time?x=1&y=2")
    assert 'media="a$$b-video-$Number$.m4s?t=1&amp;u=$$2"' in text
    assert 'initialization="a$$b-video-init-1.mp4?t=1&amp;u=$$2"' in text
    assert 'value="https://example.test/time?x=1&amp;y=2"' in text
    mpd = MPEGDASHParser.parse(text)
    assert mpd.utc_timings[0].value == "https://example.test/time?x=1&y=2"
    with pytest.raises(UsageError):
        render_mpd(window, now=feeder.now, query="a\nb")


def test_an_empty_window_still_renders_a_valid_mpd() -> None:
    mpd = MPEGDASHParser.parse(render_mpd(CmafWindow(), now=NOW))
    assert mpd.type == "dynamic" and len(mpd.periods) == 1 and not mpd.periods[0].adaptation_sets


def test_an_ended_stream_plays_in_ffmpegs_dash_demuxer(tmp_path) -> None:
    # An independent client: ffmpeg's DASH demuxer (PyAV's build has none) reads the MPD, the
    # inits and the segments from disk and decodes every frame of both tracks.
    window = CmafWindow(listed=10)
    feeder = Feeder(window)
    feeder.feed(codec_clip("av1", "opus", seconds=6.0), NOW)
    window.extend(feeder.segmenter.finish())
    window.end()
    for tw in window.tracks.values():
        for segment in tw:
            (tmp_path / segment.name()).write_bytes(segment.data)
            (tmp_path / segment.init.name()).write_bytes(segment.init.data)
    (tmp_path / "manifest.mpd").write_text(render_mpd(window, now=feeder.now))
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(tmp_path / "manifest.mpd"), "-map", "0", "-f", "framecrc", "-"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert result.stderr == ""
    per_stream: dict[str, int] = {}
    for line in result.stdout.splitlines():
        if not line.startswith("#"):
            index = line.split(",")[0].strip()
            per_stream[index] = per_stream.get(index, 0) + 1
    expected = sorted(sum(s.samples for s in tw) for tw in window.tracks.values())
    assert sorted(per_stream.values()) == expected
