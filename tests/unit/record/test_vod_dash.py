"""The static DASH manifest of a recording (record/vod.py `dash_manifest`): parsed by mpegdash, its byte
ranges cover the file exactly and its timeline is the fragments' times. (dash.js plays it and seeks in it:
tests/browser/test_vod.py.)"""

from __future__ import annotations

import pytest
from mpegdash.parser import MPEGDASHParser

from mediaserver.errors import MediaError
from mediaserver.record import vod

from support.codec_clips import codec_clip
from test_recorder import FPS, record


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    frames = codec_clip("h264", "aac", seconds=5.0, gop_frames=FPS)
    rec, _, _ = record(tmp_path_factory.mktemp("dash"), frames, fragment_s=1.0)
    return rec.files[0].path


def _range(text: str) -> tuple[int, int]:
    first, last = (int(x) for x in text.split("-"))
    return first, last - first + 1


def test_the_manifest_is_static_and_its_ranges_cover_the_file(recording):
    path = recording
    data = path.read_bytes()
    index = vod.index_file(data)
    assert index.codecs == ("avc1.64000d", "mp4a.40.2") and (index.width, index.height) == (320, 240)
    mpd = MPEGDASHParser.parse(vod.dash_manifest(index, "../abc.mp4?token=a&b=c"))
    assert mpd.type == "static" and mpd.profiles == "urn:mpeg:dash:profile:isoff-main:2011"
    seconds = float(mpd.media_presentation_duration.removeprefix("PT").removesuffix("S"))
    assert abs(seconds - index.duration_s) < 0.002
    [period] = mpd.periods
    [adaptation] = period.adaptation_sets
    [rep] = adaptation.representations
    assert adaptation.mime_type == "video/mp4" and adaptation.content_type == "video"
    # One muxed Representation: both codecs, and no ContentComponent (dash.js refuses declared muxing).
    assert rep.codecs == "avc1.64000d,mp4a.40.2" and (rep.width, rep.height) == (320, 240)
    assert not adaptation.content_components
    assert rep.base_urls[0].base_url_value == "../abc.mp4?token=a&b=c"
    [segments] = rep.segment_lists
    assert segments.timescale == index.timescale and segments.presentation_time_offset == index.fragments[0].start
    ranges = [_range(segments.initializations[0].range)] + [_range(u.media_range) for u in segments.segment_urls]
    position = 0
    for offset, size in ranges:
        assert offset == position and size > 0
        position += size
    assert position == len(data) and len(segments.segment_urls) == len(index.fragments)
    # One S per SegmentURL, each with its time (dash.js pairs them one to one and ignores S@r here).
    timeline = [(s.t, s.d, s.r) for s in segments.segment_timelines[0].Ss]
    assert timeline == [(x.start, x.duration, None) for x in index.fragments]
    assert int(rep.bandwidth) > 100_000


def test_an_audio_only_recording_is_an_audio_representation(tmp_path):
    rec, _, _ = record(tmp_path, codec_clip(None, "aac", seconds=3.0), fragment_s=1.0)
    index = vod.index_file(rec.files[0].path.read_bytes())
    mpd = MPEGDASHParser.parse(vod.dash_manifest(index, "rec.mp4"))
    adaptation = mpd.periods[0].adaptation_sets[0]
    assert adaptation.mime_type == "audio/mp4" and adaptation.representations[0].codecs == "mp4a.40.2"
    assert adaptation.representations[0].width is None


def test_a_file_without_a_whole_fragment_has_no_manifest(recording):
    data = recording.read_bytes()
    index = vod.index_file(data[:vod.index_file(data).fragments[0].offset])
    with pytest.raises(MediaError):
        vod.dash_manifest(index, "rec.mp4")
