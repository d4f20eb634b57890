"""Streams with a single track: video only (no microphone) and audio only (radio) play over FLV and HLS."""

from __future__ import annotations

import aiohttp

from mediaserver.media.frames import FrameKind
from support.checks import is_media, timeline_problems
from support.decode import decode_media
from support.hls import check_playlist_rules


async def test_a_video_only_stream_plays_over_http_flv(server, publish, media, stream_name):
    clip = media.video_only
    publish(server, stream_name, clip)
    async with server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(50, timeout_s=10), viewer.describe_start()
    assert not any(t.kind == FrameKind.AUDIO for t in viewer.tags), "audio tags in a video-only stream"
    first_media = next(t for t in viewer.tags if is_media(t))
    assert first_media.is_video_keyframe
    report = decode_media(viewer.complete_flv(), "flv")
    assert report.errors == [], report.summary()
    assert (report.video_codec, report.audio_codec) == ("h264", None), report.summary()
    assert (report.width, report.height) == (clip.width, clip.height), report.summary()
    assert report.first_video_frame_key and report.video_frames >= 45, report.summary()
    assert report.non_monotonic() == [] and timeline_problems(viewer.tags) == [], report.summary()


async def test_an_audio_only_stream_plays_over_http_flv(server, publish, media, stream_name):
    clip = media.audio_only
    publish(server, stream_name, clip)
    async with server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_until(lambda v: v.audio_frame_count >= 100, timeout_s=10), viewer.describe_start()
    assert not any(t.kind == FrameKind.VIDEO for t in viewer.tags), "video tags in an audio-only stream"
    seq = [t for t in viewer.tags if t.is_sequence_header]
    assert seq and seq[0].kind == FrameKind.AUDIO, "no AAC sequence header before the audio"
    assert viewer.tags.index(seq[0]) < viewer.tags.index(next(t for t in viewer.tags if is_media(t)))
    report = decode_media(viewer.complete_flv(), "flv")
    assert report.errors == [], report.summary()
    assert (report.video_codec, report.audio_codec) == (None, "aac"), report.summary()
    assert (report.sample_rate, report.channels) == (clip.sample_rate, clip.channels), report.summary()
    assert report.audio_frames >= 95, report.summary()
    assert report.non_monotonic() == [] and timeline_problems(viewer.tags) == [], report.summary()


async def hls_segments(server, publish, clip, stream_name):
    """Publish `clip` and return (segment, its decode report, where) for every listed segment (two or more), each
    already checked for status 200 and a clean decode."""
    publish(server, stream_name, clip, loop=True)
    async with aiohttp.ClientSession() as http:
        poller = server.hls_poller(stream_name, http)
        pl = await poller.poll_until(lambda p: len(p.segments) >= 2, timeout_s=15)
    check_playlist_rules(pl)
    out = []
    for s in pl.segments:
        seg = poller.segments[s.sequence]
        assert seg.status == 200
        report = decode_media(seg.data, "mpegts")
        where = f"segment {seg.uri}: {report.summary()}"
        assert report.errors == [], where
        out.append((seg, report, where))
    return out


async def test_a_video_only_stream_plays_over_hls(server, publish, media, stream_name):
    clip = media.video_only
    for seg, report, where in await hls_segments(server, publish, clip, stream_name):
        assert (report.video_codec, report.audio_codec) == ("h264", None), where
        assert report.first_video_frame_key, where
        assert abs(report.video_frames - seg.duration_s * clip.fps) <= 2, where


async def test_an_audio_only_stream_plays_over_hls(server, publish, media, stream_name):
    clip = media.audio_only
    for seg, report, where in await hls_segments(server, publish, clip, stream_name):
        assert (report.video_codec, report.audio_codec) == (None, "aac"), where
        assert 1.0 <= seg.duration_s <= 3.0, where
        assert abs(report.audio_frames - seg.duration_s * clip.sample_rate / 1024) <= 5, where
        assert report.non_monotonic() == [], where
