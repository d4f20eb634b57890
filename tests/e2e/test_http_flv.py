"""HTTP-FLV viewers: what they receive, in which order, how fast, and that one viewer cannot hurt another."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from mediaserver.media.frames import FrameKind
from support.checks import is_media, largest_gap_ms, timeline_problems, track_timestamps, wait_live
from support.decode import decode_media
from support.flv_viewer import describe_tag
from support.raw_net import stalled_viewer


async def test_viewer_receives_decodable_h264_and_aac_as_published(server, publish, media, stream_name):
    clip = media.av
    publish(server, stream_name, clip)
    async with server.flv_viewer(stream_name) as viewer:
        assert viewer.headers.get("Content-Type", "").startswith("video/x-flv")
        got = await viewer.wait_video_frames(100, timeout_s=15)  # 4 s of video at 25 fps
        assert got, f"only {viewer.video_frame_count} video frames in 15 s; start: {viewer.describe_start()}"
    assert viewer.raw[:3] == b"FLV"

    report = decode_media(viewer.complete_flv(), "flv")
    assert report.errors == [], report.summary()
    assert (report.video_codec, report.audio_codec) == ("h264", "aac"), report.summary()
    assert (report.width, report.height) == (clip.width, clip.height), report.summary()
    assert (report.sample_rate, report.channels) == (clip.sample_rate, clip.channels), report.summary()
    assert report.first_video_frame_key, report.summary()
    assert report.non_monotonic() == [], report.summary()

    # Every frame sent during the period the viewer covered arrived and decoded: at 25 fps, a span of
    # S ms holds S/40 + 1 frames.
    video_ts = track_timestamps(viewer.tags, FrameKind.VIDEO)
    expected = round((video_ts[-1] - video_ts[0]) / clip.frame_interval_ms) + 1
    assert len(video_ts) == expected, f"{len(video_ts)} video tags over {video_ts[0]}..{video_ts[-1]} ms"
    assert abs(report.video_frames - len(video_ts)) <= 2, report.summary()
    assert largest_gap_ms(video_ts) <= 2 * clip.frame_interval_ms, "video frames were dropped"
    audio_ts = track_timestamps(viewer.tags, FrameKind.AUDIO)
    assert abs(report.audio_frames - len(audio_ts)) <= 2, report.summary()
    assert largest_gap_ms(audio_ts) <= 60, "audio frames were dropped"


async def test_late_joiner_gets_metadata_then_sequence_headers_then_a_keyframe_at_once(server, publish, media, stream_name):
    publisher = publish(server, stream_name, media.av)
    first_seen = await wait_live(server, stream_name)
    await asyncio.sleep(max(0.0, publisher.started_at + 3.0 - time.monotonic()))

    async with server.flv_viewer(stream_name, live_timeout_s=2) as viewer:
        assert await viewer.wait_until(lambda v: v.first_keyframe_index() is not None, timeout_s=5)
        first_key = viewer.first_keyframe_index()
        assert first_key is not None
        latency_s = viewer.arrivals[first_key] - viewer.requested_at
        await viewer.wait_video_frames(10, timeout_s=3)

    tags = viewer.tags
    start = ", ".join(describe_tag(t) for t in tags[:5])
    assert tags[0].kind == FrameKind.DATA and b"onMetaData" in tags[0].body[:20], start
    assert tags[1].kind == FrameKind.VIDEO and tags[1].is_sequence_header, start
    assert tags[2].kind == FrameKind.AUDIO and tags[2].is_sequence_header, start
    assert tags[3].is_video_keyframe, start
    print(f"late joiner: first keyframe {latency_s * 1000:.0f} ms after the request")
    assert latency_s < 1.0, f"the first keyframe took {latency_s:.2f} s"
    # The cached GOP is a recent one (GOP 1 s), not the start of the stream.
    assert tags[3].timestamp_ms - first_seen.timestamp_ms >= 1500, (
        f"late joiner starts at {tags[3].timestamp_ms} ms; the stream started at {first_seen.timestamp_ms} ms"
    )


async def test_two_viewers_started_together_receive_identical_tags(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    a = server.flv_viewer(stream_name)
    b = server.flv_viewer(stream_name)
    try:
        await asyncio.gather(a.start(), b.start())
        ok = await asyncio.gather(a.wait_video_frames(75, timeout_s=10), b.wait_video_frames(75, timeout_s=10))
        assert all(ok), (a.video_frame_count, b.video_frame_count)
    finally:
        await asyncio.gather(a.close(), b.close())

    b_keys = {(t.timestamp_ms, t.body): i for i, t in enumerate(b.tags) if t.is_video_keyframe}
    shared = next(((i, b_keys[(t.timestamp_ms, t.body)]) for i, t in enumerate(a.tags)
                   if t.is_video_keyframe and (t.timestamp_ms, t.body) in b_keys), None)
    assert shared is not None, "the two viewers share no keyframe"
    ia, ib = shared
    n = min(len(a.tags) - ia, len(b.tags) - ib)
    assert n >= 50, f"only {n} tags to compare after the shared keyframe"
    for k in range(n):
        ta, tb = a.tags[ia + k], b.tags[ib + k]
        assert (ta.kind, ta.timestamp_ms, ta.body) == (tb.kind, tb.timestamp_ms, tb.body), (
            f"tag {k} after the shared keyframe differs: {describe_tag(ta)} vs {describe_tag(tb)}"
        )


async def test_a_viewer_that_stops_reading_does_not_stall_another_viewer(server, publish, media, stream_name):
    clip = media.heavy  # ~6 Mbit/s: kernel socket buffers fill within seconds
    publish(server, stream_name, clip, loop=True)
    await wait_live(server, stream_name)
    rss_before = server.rss_bytes()
    stalled = [stalled_viewer(server.http_port, f"/live/{stream_name}.flv") for _ in range(3)]
    try:
        async with server.flv_viewer(stream_name) as viewer:
            window_s = 8.0
            rss_peak = rss_before
            t0 = time.monotonic()
            while time.monotonic() - t0 < window_s:
                await asyncio.sleep(0.5)
                rss_peak = max(rss_peak, server.rss_bytes())
                server.assert_alive()
            arrivals = viewer.arrivals
            tags = viewer.tags
            assert not viewer.done, f"the reading viewer was cut off: {viewer.error!r}"
    finally:
        for s in stalled:
            s.close()

    # Real-time pace: over the last 6 s of wall time, the stream timeline advanced about as much.
    since = t0 + 2.0
    recent = [t.timestamp_ms for t, at in zip(tags, arrivals) if at >= since and t.kind == FrameKind.VIDEO and is_media(t)]
    assert recent, "the reading viewer received nothing while the others were stalled"
    media_s = (recent[-1] - recent[0]) / 1000
    wall_s = arrivals[-1] - since
    print(f"stalled viewers: reader got {media_s:.1f} s of media in {wall_s:.1f} s; "
          f"RSS {rss_before / 2**20:.0f} -> peak {rss_peak / 2**20:.0f} MiB")
    assert media_s >= 0.75 * (window_s - 2.0) - 0.5, f"{media_s:.1f} s of media in {wall_s:.1f} s of wall time"
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert max(gaps, default=0) < 1.5, f"the reading viewer waited {max(gaps):.1f} s for data"
    assert rss_peak - rss_before < 100 * 2**20, f"RSS grew by {(rss_peak - rss_before) / 2**20:.0f} MiB"
    assert timeline_problems(tags) == []


async def test_a_stream_that_does_not_exist_answers_404_over_http_flv(server):
    async with server.flv_viewer("no-such-stream", expect_status=404) as viewer:
        assert viewer.status == 404


async def _bursts(url: str, seconds: float) -> int:
    """How many separate bursts an FLV viewer's bytes arrive in over `seconds` (reads 25 ms or less apart
    are one burst: one merged write of the server's may take a few reads)."""
    bursts, last = 0, 0.0
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        await resp.content.readany()  # the start: headers, sequence headers, the GOP so far
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            async with asyncio.timeout(5):
                if not await resp.content.readany():
                    break
            now = time.monotonic()
            if now - last > 0.025:
                bursts += 1
            last = now
    return bursts


async def test_fixed_merging_writes_a_viewers_frames_a_window_at_a_time_and_adaptive_at_once(
        server_factory, publish, media, stream_name):
    """http.flv_merge_mode: "fixed" (the whole http.flv_merge_ms window, always: least CPU) against the default
    "adaptive" (a lone viewer of an idle server gets each frame as it comes: least delay)."""
    fixed = server_factory(**{"http.flv_merge_mode": "fixed", "http.flv_merge_ms": "400"})
    adaptive = server_factory()
    for server in (fixed, adaptive):
        publish(server, stream_name, media.av, loop=True)
        await wait_live(server, stream_name)
    seconds = 3.0
    merged = await _bursts(fixed.flv_url(stream_name), seconds)
    at_once = await _bursts(adaptive.flv_url(stream_name), seconds)
    assert merged <= seconds / 0.4 + 3, f"{merged} bursts in {seconds} s with 400 ms windows"
    assert at_once >= seconds * 12, f"{at_once} bursts in {seconds} s of 25 fps video written as it came"
