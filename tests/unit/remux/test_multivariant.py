"""Multivariant playlists over a ladder (HLS-TS master, CMAF) and the MPD with a Representation per
rendition, parsed back with the m3u8 and mpegdash packages."""

from __future__ import annotations

from dataclasses import replace

import m3u8
import pytest
from conftest import config
from mpegdash.parser import MPEGDASHParser

from mediaserver.errors import UsageError
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux import dash, llhls
from mediaserver.remux.cmaf import VIDEO, CmafInit, CmafSegmenter
from mediaserver.remux.cmaf_window import CmafWindow
from mediaserver.remux.multivariant import AudioGroup, Variant, codec_string, codecs_of, render_multivariant
from mediaserver.remux.segment import CutPlan

NOW = 1_700_000_000.0


def windows(source: list[Frame], rendition: list[Frame], *, end: bool = False) -> tuple[CmafWindow, CmafWindow]:
    """The source's and a rendition's CMAF windows, the rendition cut where the source is."""
    plan = CutPlan()
    out = []
    for frames, segmenter in ((source, CmafSegmenter(cuts=plan)), (rendition, CmafSegmenter(follow=plan))):
        window = CmafWindow(listed=10)
        for frame in frames:
            window.extend(segmenter.push(frame, NOW + frame.dts_ms / 1000))
        if end:
            window.extend(segmenter.finish())
            window.end()
        out.append(window)
    return out[0], out[1]


# -- the HLS-TS master -----------------------------------------------------------------------------


def test_master_lists_the_source_first_then_each_rendition(av_clip: list[Frame]) -> None:
    codecs = codecs_of(config(av_clip, FrameKind.VIDEO), config(av_clip, FrameKind.AUDIO))
    text = render_multivariant([
        Variant("index.m3u8", 2_600_000, codecs, 1280, 720, 30.0, 2_400_000),
        Variant("../demo@480p/index.m3u8", 1_328_000, codecs, 854, 480, 30.0),
        Variant("../demo@240p/index.m3u8", 528_000, codecs, 426, 240),
    ], query="token=abc.def")
    playlist = m3u8.loads(text)
    assert playlist.is_variant
    got = [(p.uri, p.stream_info.bandwidth, p.stream_info.resolution, p.stream_info.codecs) for p in playlist.playlists]
    assert got == [
        ("index.m3u8?token=abc.def", 2_600_000, (1280, 720), ",".join(codecs)),
        ("../demo@480p/index.m3u8?token=abc.def", 1_328_000, (854, 480), ",".join(codecs)),
        ("../demo@240p/index.m3u8?token=abc.def", 528_000, (426, 240), ",".join(codecs)),
    ]
    assert playlist.playlists[0].stream_info.frame_rate == 30.0
    assert playlist.playlists[0].stream_info.average_bandwidth == 2_400_000
    assert playlist.playlists[2].stream_info.frame_rate is None
    assert "#EXT-X-MEDIA" not in text


def test_codecs_come_from_the_sequence_headers(av_clip: list[Frame]) -> None:
    video, audio = codecs_of(config(av_clip, FrameKind.VIDEO), config(av_clip, FrameKind.AUDIO))
    assert video.startswith("avc1.") and len(video) == len("avc1.64000d")
    assert audio == "mp4a.40.2"
    broken = Frame(FrameKind.VIDEO, 0, 0, "h264", True, True, b"\x00" * 20, 16)
    assert codec_string(broken) is None and codecs_of(None, broken) == ()


@pytest.mark.parametrize("bad", ['a"b', "x\ny", "#EXT-X-ENDLIST"])
def test_a_uri_or_query_cannot_smuggle_tags(bad: str) -> None:
    with pytest.raises(UsageError):
        render_multivariant([Variant(bad, 1)])
    with pytest.raises(UsageError):
        render_multivariant([Variant("index.m3u8", 1)], query=bad)


# -- CMAF ------------------------------------------------------------------------------------------


def test_cmaf_multivariant_lists_the_ladder_with_the_sources_audio(av_clip: list[Frame], rendition: list[Frame]) -> None:
    source, small = windows(av_clip, rendition)
    init = small.track(VIDEO).current_init  # type: ignore[union-attr]
    audio = source.track("audio").current_init  # type: ignore[union-attr]
    ladder = [Variant("../demo@120p/cmaf-video.m3u8", 300_000, (init.codec_string, audio.codec_string), 160, 120, 25.0)]
    text = llhls.render_multivariant_playlist(source, video_uri="cmaf-video.m3u8", audio_uri="cmaf-audio.m3u8",
                                              query="token=t", renditions=ladder)
    playlist = m3u8.loads(text)
    assert [p.uri for p in playlist.playlists] == ["cmaf-video.m3u8?token=t", "../demo@120p/cmaf-video.m3u8?token=t"]
    assert [p.stream_info.audio for p in playlist.playlists] == ["audio", "audio"]
    assert [m.uri for m in playlist.media] == ["cmaf-audio.m3u8?token=t"]
    assert playlist.playlists[0].stream_info.resolution == (320, 240)
    assert playlist.playlists[1].stream_info.resolution == (160, 120)


def test_an_audio_group_gets_its_channels() -> None:
    text = render_multivariant([Variant("v.m3u8", 10)], audio=AudioGroup("a.m3u8", channels=2), version=9)
    assert '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="a.m3u8"' in text
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:9\n")


# -- DASH ------------------------------------------------------------------------------------------


def _video_set(mpd_text: str):
    mpd = MPEGDASHParser.parse(mpd_text)
    assert len(mpd.periods) == 1
    (video,) = [a for a in mpd.periods[0].adaptation_sets if a.content_type == "video"]
    return mpd, video


@pytest.mark.parametrize("ended", [False, True])
def test_the_mpd_has_a_representation_per_rendition_on_the_same_segments(
    av_clip: list[Frame], rendition: list[Frame], ended: bool
) -> None:
    source, small = windows(av_clip, rendition, end=ended)
    text = dash.render_mpd(source, now=NOW + 10, prefix="abc-", query="token=t",
                           renditions=[dash.DashRendition("120p", small, "../demo@120p/def-")])
    mpd, video = _video_set(text)
    assert mpd.type == ("static" if ended else "dynamic")
    source_rep, ladder_rep = video.representations
    assert (source_rep.id, ladder_rep.id) == ("video", "video-120p")
    assert (source_rep.width, source_rep.height, ladder_rep.width, ladder_rep.height) == (320, 240, 160, 120)
    assert ladder_rep.codecs.startswith("avc1.") and ladder_rep.bandwidth > 0
    assert ladder_rep.bandwidth < source_rep.bandwidth
    source_template = video.segment_templates[0]
    (template,) = ladder_rep.segment_templates
    assert template.media == "../demo@120p/def-video-$Number$.m4s?token=t"
    assert template.initialization == "../demo@120p/def-video-init-1.mp4?token=t"
    # Aligned: the same timescale, numbers, offset and segment times as the source's.
    for attr in ("timescale", "start_number", "presentation_time_offset"):
        assert getattr(template, attr) == getattr(source_template, attr), attr
    def times(t):
        return [(s.t, s.d, s.r) for s in t.segment_timelines[0].Ss]
    assert times(template) == times(source_template)


def test_an_mpd_without_renditions_is_as_before(av_clip: list[Frame], rendition: list[Frame]) -> None:
    source, _ = windows(av_clip, rendition)
    assert dash.render_mpd(source, now=NOW, renditions=()) == dash.render_mpd(source, now=NOW)
    _, video = _video_set(dash.render_mpd(source, now=NOW))
    assert [r.id for r in video.representations] == ["video"]


def test_rendition_segments_older_than_the_period_are_left_out(av_clip: list[Frame], rendition: list[Frame]) -> None:
    # The source's packager started later than the rendition's: its Period begins after their first segments.
    late_source = [f for f in av_clip if f.is_config or f.dts_ms >= 2000]
    source, small = windows(late_source, rendition)
    zero = source.first_timeline.anchor_ms  # type: ignore[union-attr]
    text = dash.render_mpd(source, now=NOW + 10, renditions=[dash.DashRendition("120p", small, "../r/")])
    _, video = _video_set(text)
    (template,) = video.representations[1].segment_templates
    first = template.segment_timelines[0].Ss[0]
    assert first.t is not None and first.t >= zero * 90


def test_a_frame_rate_an_encoder_signals_as_its_millisecond_tick_is_not_believed() -> None:
    init = CmafInit(track=VIDEO, version=1, data=b"", codec="h264", codec_string="avc1.640015", timescale=90000,
                    frame_rate=1000.0)
    assert init.signalled_frame_rate is None
    assert replace(init, frame_rate=29.97).signalled_frame_rate == 29.97
