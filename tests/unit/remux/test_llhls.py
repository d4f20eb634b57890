"""LL-HLS playlists over CMAF, parsed back with the m3u8 package and held to RFC 8216bis rules."""

from __future__ import annotations

import math

import av
import m3u8
import pytest
from support.codec_clips import codec_clip

from mediaserver.errors import UsageError
from mediaserver.media.flv_body import audio_frame, video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux.cmaf import AUDIO, VIDEO, CmafSegmenter, parse_cmaf_name
from mediaserver.remux.cmaf_window import CmafWindow
from mediaserver.remux.llhls import (
    Readiness,
    advance_part_limit,
    playlist_request,
    render_media_playlist,
    render_multivariant_playlist,
    resource_request,
)

NOW = 1_700_000_000.0


def feed(frames: list[Frame], window: CmafWindow, segmenter: CmafSegmenter | None = None, *, until_ms: int | None = None,
         finish: bool = False) -> CmafSegmenter:
    segmenter = segmenter or CmafSegmenter()
    for frame in frames:
        if until_ms is not None and frame.dts_ms > until_ms:
            break
        window.extend(segmenter.push(frame, NOW + frame.dts_ms / 1000))
    if finish:
        window.extend(segmenter.finish())
        window.end()
    return segmenter


def retime(frame: Frame, offset_ms: int) -> Frame:
    rebuilt = (audio_frame if frame.kind == FrameKind.AUDIO else video_frame)(bytes(frame.body), frame.dts_ms + offset_ms)
    assert rebuilt is not None
    return rebuilt


def check_media_playlist(text: str, window: CmafWindow, track: str) -> m3u8.M3U8:
    """Parse a media playlist and hold it to RFC 8216bis; returns the parsed playlist."""
    playlist = m3u8.loads(text)
    tw = window.track(track)
    assert tw is not None
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:9\n")
    target = playlist.target_duration
    part_target = playlist.part_inf.part_target
    control = playlist.server_control
    assert control.can_block_reload == "YES"
    assert control.part_hold_back >= 3 * part_target - 1e-9  # SHOULD be three part targets (MUST be two)
    assert control.hold_back >= 3 * target
    complete = [s for s in playlist.segments if s.uri is not None]
    assert playlist.media_sequence == tw.media_sequence
    assert [parse_cmaf_name(s.uri).number for s in complete] == [s.sequence for s in tw.listed]
    for segment, mine in zip(complete, tw.listed):
        assert round(segment.duration) <= target  # 4.4.3.1
        assert segment.duration == pytest.approx(mine.duration_s, abs=1e-5)
        assert segment.discontinuity == mine.discontinuity
        assert segment.program_date_time is not None
    # EXT-X-MAP comes before the first segment (4.4.4.5), and before the parts when no segment is done.
    first_map = text.index("#EXT-X-MAP:")
    assert first_map < min(text.find(tag) % len(text) for tag in ("#EXTINF", "#EXT-X-PART:"))
    init = parse_cmaf_name(text[first_map:].split('"')[1])
    assert init.kind == "init" and tw.init(init.number) is not None
    dates = [s.program_date_time for s in complete]
    assert dates == sorted(dates)
    # Parts: each within PART-TARGET; all but a segment's last at least 85 % of it (4.4.4.9).
    with_parts = [s for s in playlist.segments if s.parts]
    for segment in playlist.segments:
        for index, part in enumerate(segment.parts):
            assert part.duration <= part_target
            name = parse_cmaf_name(part.uri)
            assert name.kind == "part" and tw.part(name.number, name.part) is not None
            if index < len(segment.parts) - 1:
                assert part.duration >= 0.85 * part_target
            assert bool(part.independent) == tw.part(name.number, name.part).independent
    if with_parts:  # parts only within the last three target durations (plus the segment crossing that line)
        first = playlist.segments.index(with_parts[0])
        assert sum(s.duration or 0 for s in playlist.segments[first + 1 :]) < 3 * target
        assert all(s.parts for s in playlist.segments[first:])
    if window.ended:
        assert playlist.is_endlist and playlist.preload_hint is None
    else:
        sequence, index = tw.next_part
        hint = parse_cmaf_name(playlist.preload_hint.uri)
        assert playlist.preload_hint.hint_type == "PART" and (hint.number, hint.part) == (sequence, index)
    return playlist


# -- media playlists -------------------------------------------------------------------------------


@pytest.mark.parametrize(("video", "audio"), [("h264", "aac"), ("av1", "opus")])
def test_live_playlists_follow_the_rules_at_every_step(video: str, audio: str) -> None:
    frames = codec_clip(video, audio, seconds=10.0)
    window = CmafWindow(listed=3)
    segmenter = CmafSegmenter()
    seen: dict[str, dict[int, str]] = {VIDEO: {}, AUDIO: {}}
    last_sequence = {VIDEO: -1, AUDIO: -1}
    for frame in frames:
        items = segmenter.push(frame, NOW + frame.dts_ms / 1000)
        window.extend(items)
        for track in {i.track for i in items}:
            playlist = check_media_playlist(render_media_playlist(window, track), window, track)
            # Media sequence numbers never go back and a number always names the same segment.
            assert playlist.media_sequence >= last_sequence[track]
            last_sequence[track] = playlist.media_sequence
            for offset, segment in enumerate(s for s in playlist.segments if s.uri):
                assert seen[track].setdefault(playlist.media_sequence + offset, segment.uri) == segment.uri
    window.extend(segmenter.finish())
    window.end()
    for track in (VIDEO, AUDIO):
        check_media_playlist(render_media_playlist(window, track), window, track)


def test_old_segments_are_listed_without_their_parts() -> None:
    window = CmafWindow(listed=6)
    feed(codec_clip("h264", "aac", seconds=12.0), window, until_ms=11_500)
    playlist = check_media_playlist(render_media_playlist(window, VIDEO), window, VIDEO)
    complete = [s for s in playlist.segments if s.uri]
    assert not complete[0].parts and complete[-1].parts
    assert playlist.segments[-1].uri is None and playlist.segments[-1].parts  # the segment in progress


def test_a_new_config_brings_a_discontinuity_and_a_new_map() -> None:
    small = codec_clip("h264", "aac", seconds=4.0)
    large = codec_clip("h264", "aac", seconds=4.0, width=640, height=360)
    frames = [f for f in small if f.kind != FrameKind.DATA and f.dts_ms < 4000]
    frames += [retime(f, 4000) for f in large if f.kind != FrameKind.DATA]
    window = CmafWindow(listed=6)
    feed(frames, window, until_ms=7000)
    text = render_media_playlist(window, VIDEO)
    playlist = check_media_playlist(text, window, VIDEO)
    assert "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"video-init-2.mp4\"" in text
    changed = [s for s in playlist.segments if s.discontinuity]
    assert len(changed) == 1 and changed[0].init_section.uri == "video-init-2.mp4"


def test_discontinuities_that_slid_out_are_counted_in_the_discontinuity_sequence() -> None:
    frames = codec_clip("h264", "aac", seconds=4.0)
    window = CmafWindow(listed=2)
    segmenter = feed(frames, window)
    segmenter.discontinuity()
    feed([retime(f, 20_000) for f in frames], window, segmenter)
    feed([retime(f, 24_000) for f in frames], window, segmenter)
    playlist = m3u8.loads(render_media_playlist(window, VIDEO))
    assert playlist.discontinuity_sequence == 1 and not any(s.discontinuity for s in playlist.segments)


def test_an_ended_stream_gets_endlist_and_no_preload_hint() -> None:
    window = CmafWindow()
    feed(codec_clip("h264", "aac", seconds=5.0), window, finish=True)
    for track in (VIDEO, AUDIO):
        text = render_media_playlist(window, track, rendition_reports={"audio.m3u8": AUDIO})
        check_media_playlist(text, window, track)
        assert "PRELOAD-HINT" not in text and "RENDITION-REPORT" not in text and text.endswith("#EXT-X-ENDLIST\n")


def test_rendition_reports_name_the_other_playlists_last_segment_and_part() -> None:
    window = CmafWindow()
    feed(codec_clip("h264", "aac", seconds=6.0), window, until_ms=5100)
    text = render_media_playlist(window, VIDEO, rendition_reports={"audio.m3u8": AUDIO, "video.m3u8": VIDEO})
    audio = window.track(AUDIO)
    assert audio is not None
    sequence, index = audio.next_part
    expected = f'#EXT-X-RENDITION-REPORT:URI="audio.m3u8",LAST-MSN={sequence},LAST-PART={index - 1}'
    assert expected in text.splitlines() and text.count("RENDITION-REPORT") == 1


def test_prefix_and_query_go_on_every_uri_and_hostile_ones_are_refused() -> None:
    window = CmafWindow()
    feed(codec_clip("h264", "aac", seconds=3.0), window, until_ms=2500)
    text = render_media_playlist(window, VIDEO, prefix="k3j2-", query="token=a%20b")
    uris = [line.split('URI="')[1].split('"')[0] for line in text.splitlines() if 'URI="' in line]
    uris += [line for line in text.splitlines() if line and not line.startswith("#")]
    assert uris and all(u.startswith("k3j2-video-") and u.endswith("?token=a%20b") for u in uris)
    for bad in ("a\n#EXT-X-ENDLIST", 'x"y', "a#b"):
        with pytest.raises(UsageError):
            render_media_playlist(window, VIDEO, query=bad)


def test_a_track_with_nothing_yet_renders_a_valid_header() -> None:
    text = render_media_playlist(CmafWindow(), VIDEO)
    playlist = m3u8.loads(text)
    assert playlist.target_duration == 2 and playlist.part_inf.part_target == 0.334 and not playlist.segments


# -- multivariant ----------------------------------------------------------------------------------


def test_multivariant_lists_the_video_variant_with_its_audio_rendition() -> None:
    window = CmafWindow()
    feed(codec_clip("hevc", "opus", seconds=5.0), window)
    playlist = m3u8.loads(render_multivariant_playlist(window, query="t=1"))
    assert playlist.is_variant and len(playlist.playlists) == 1
    variant = playlist.playlists[0]
    assert variant.uri == "video.m3u8?t=1"
    assert variant.stream_info.codecs == "hvc1.1.6.L60.90,opus"
    assert variant.stream_info.resolution == (320, 240) and variant.stream_info.frame_rate == pytest.approx(25)
    assert variant.stream_info.bandwidth >= variant.stream_info.average_bandwidth > 50_000
    (media,) = playlist.media
    assert (media.type, media.group_id, media.uri, media.default, media.channels) == ("AUDIO", "audio", "audio.m3u8?t=1", "YES", "2")
    assert variant.stream_info.audio == "audio"


def test_multivariant_of_video_only_and_audio_only_streams() -> None:
    video_only = CmafWindow()
    feed(codec_clip("h264", None, seconds=3.0), video_only)
    playlist = m3u8.loads(render_multivariant_playlist(video_only))
    assert not playlist.media and playlist.playlists[0].uri == "video.m3u8"
    assert playlist.playlists[0].stream_info.codecs.startswith("avc1.")
    audio_only = CmafWindow()
    feed(codec_clip(None, "aac", seconds=3.0), audio_only)
    playlist = m3u8.loads(render_multivariant_playlist(audio_only))
    assert playlist.playlists[0].uri == "audio.m3u8" and playlist.playlists[0].stream_info.codecs == "mp4a.40.2"
    assert render_multivariant_playlist(CmafWindow()) == "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n"


# -- blocking reload -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_window() -> CmafWindow:
    """Segments 0 and 1 complete (7 parts each); segment 2 in progress with parts 0-2."""
    window = CmafWindow()
    feed(codec_clip("h264", "aac", seconds=6.0), window, until_ms=5000)
    tw = window.track(VIDEO)
    assert tw is not None and tw.last_sequence == 1 and tw.next_part == (2, 3)
    assert len(tw.parts_of(1) or ()) == 7
    return window


@pytest.mark.parametrize(
    ("msn", "part", "expected"),
    [
        (None, None, Readiness.READY),
        (None, 0, Readiness.BAD_REQUEST),  # _HLS_part without _HLS_msn
        (-1, None, Readiness.BAD_REQUEST),
        (0, None, Readiness.READY),
        (1, None, Readiness.READY),
        (2, None, Readiness.WAIT),  # the segment in progress
        (3, None, Readiness.WAIT),  # last + 2
        (4, None, Readiness.BAD_REQUEST),  # more than two past the last segment
        (2, 2, Readiness.READY),
        (2, 3, Readiness.WAIT),  # the next part (what the preload hint names)
        (1, 6, Readiness.READY),
        (1, 7, Readiness.READY),  # past segment 1's last part: part 0 of segment 2, which exists
        (2, 10, Readiness.WAIT),  # 8 parts ahead: within the Advance Part Limit (3 / 0.334)
        (2, 11, Readiness.BAD_REQUEST),  # 9 parts ahead: beyond it
        (3, 0, Readiness.WAIT),
        (3, 5, Readiness.BAD_REQUEST),
    ],
)
def test_blocking_reload_answers(live_window: CmafWindow, msn: int | None, part: int | None, expected: Readiness) -> None:
    assert playlist_request(live_window, VIDEO, msn, part) == expected


def test_an_ended_stream_answers_every_reload_at_once() -> None:
    window = CmafWindow()
    feed(codec_clip("h264", "aac", seconds=3.0), window, finish=True)
    assert playlist_request(window, VIDEO, 3, 0) == Readiness.READY
    assert playlist_request(window, VIDEO, None, 1) == Readiness.BAD_REQUEST


def test_a_track_without_output_yet_makes_reloads_wait() -> None:
    assert playlist_request(CmafWindow(), VIDEO, 0, 0) == Readiness.WAIT


@pytest.mark.parametrize(
    ("sequence", "part", "expected"),
    [
        (1, None, Readiness.READY),
        (2, None, Readiness.GONE),  # in progress: segments are served once complete
        (0, 0, Readiness.READY),
        (2, 2, Readiness.READY),
        (2, 3, Readiness.WAIT),  # the preload hint
        (2, 5, Readiness.WAIT),
        (3, 0, Readiness.WAIT),
        (2, 12, Readiness.BAD_REQUEST),
        (1, 7, Readiness.GONE),  # segment 1 has parts 0-6
    ],
)
def test_part_and_segment_requests(live_window: CmafWindow, sequence: int, part: int | None, expected: Readiness) -> None:
    assert resource_request(live_window, VIDEO, sequence, part) == expected


def test_parts_of_old_segments_are_gone_once_dropped() -> None:
    window = CmafWindow(part_segments=1)
    feed(codec_clip("h264", "aac", seconds=6.0), window, until_ms=5000)
    assert resource_request(window, VIDEO, 0, 0) == Readiness.GONE
    assert resource_request(window, VIDEO, 1, 0) == Readiness.READY


@pytest.mark.parametrize(("part_target", "limit"), [(0.334, 3 / 0.334), (0.5, 6.0), (1.0, 3.0), (2.0, 3.0)])
def test_advance_part_limit(part_target: float, limit: float) -> None:
    assert math.isclose(advance_part_limit(part_target), limit)


def test_an_ended_stream_plays_in_ffmpegs_hls_demuxer(tmp_path) -> None:
    # An independent client: ffmpeg's HLS demuxer reads the multivariant playlist, both media
    # playlists, the inits and the segments from disk, as a player would over HTTP.
    window = CmafWindow(listed=10)
    feed(codec_clip("hevc", "aac", seconds=6.0), window, finish=True)
    for tw in window.tracks.values():
        for segment in tw:
            (tmp_path / segment.name()).write_bytes(segment.data)
            (tmp_path / segment.init.name()).write_bytes(segment.init.data)
    (tmp_path / "index.m3u8").write_text(render_multivariant_playlist(window))
    for track in (VIDEO, AUDIO):
        (tmp_path / f"{track}.m3u8").write_text(render_media_playlist(window, track))
    decoded: dict[str, int] = {}
    with av.open(str(tmp_path / "index.m3u8")) as container:
        assert {s.type: s.codec_context.name for s in container.streams} == {"video": "hevc", "audio": "aac"}
        for packet in container.demux():
            decoded[packet.stream.type] = decoded.get(packet.stream.type, 0) + len(packet.decode())
    for track in (VIDEO, AUDIO):
        tw = window.track(track)
        assert tw is not None and decoded[track] == sum(s.samples for s in tw)
