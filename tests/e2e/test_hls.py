"""HLS (MPEG-TS segments): the playlist a player polls, the segments it fetches, and their HTTP headers.
The server runs with hls.segment_duration = 2 and hls.playlist_length = 6 (the defaults)."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urljoin

import aiohttp
import pytest

from support.decode import decode_media
from support.hls import PLAYLIST_CONTENT_TYPES, check_playlist_rules, check_sliding_window

SEGMENT_S = 2.0
PLAYLIST_LENGTH = 6


def max_age(cache_control: str) -> int | None:
    m = re.search(r"max-age=(\d+)", cache_control)
    return int(m.group(1)) if m else None


@pytest.fixture
def hls_server(server_factory):
    return server_factory(**{"hls.segment_duration": str(SEGMENT_S), "hls.playlist_length": str(PLAYLIST_LENGTH)})


async def test_playlist_lists_three_decodable_two_second_segments_with_the_right_headers(hls_server, publish, media, stream_name):
    server = hls_server
    clip = media.av
    publish(server, stream_name, clip, loop=True)
    async with aiohttp.ClientSession() as http:
        poller = server.hls_poller(stream_name, http)
        pl = await poller.poll_until(lambda p: len(p.segments) >= 3, timeout_s=20)

    # The playlist, as every poll saw it.
    for p in poller.history:
        check_playlist_rules(p, max_segments=PLAYLIST_LENGTH)
        assert not p.ended, "#EXT-X-ENDLIST in a live playlist"
    check_sliding_window(poller.history)
    assert pl.target_duration is not None and pl.target_duration >= SEGMENT_S
    status, headers = poller.playlist_responses[-1]
    assert status == 200
    assert headers.get("Content-Type", "").split(";")[0].strip().lower() in PLAYLIST_CONTENT_TYPES, headers
    cache = headers.get("Cache-Control", "")
    assert "no-store" in cache or "no-cache" in cache or (max_age(cache) or 99) <= SEGMENT_S, (
        f"a live playlist must not be cached for long: Cache-Control {cache!r}"
    )
    assert "Access-Control-Allow-Origin" in headers, headers

    # Every segment it listed.
    segments = [poller.segments[s.sequence] for s in pl.segments]
    previous_end_ms = None
    for seg in segments:
        where = f"segment {seg.sequence} ({seg.uri}, EXTINF {seg.duration_s})"
        assert seg.status == 200, where
        assert seg.headers.get("Content-Type", "").split(";")[0].strip().lower() == "video/mp2t", (where, seg.headers)
        assert (max_age(seg.headers.get("Cache-Control", "")) or 0) >= 60, (where, seg.headers.get("Cache-Control"))
        assert "Access-Control-Allow-Origin" in seg.headers, (where, seg.headers)
        assert abs(seg.duration_s - SEGMENT_S) <= 0.3, where
        assert len(seg.data) % 188 == 0 and seg.data[:1] == b"\x47", f"{where}: not whole TS packets"

        report = decode_media(seg.data, "mpegts")
        assert report.errors == [], f"{where}: {report.summary()}"
        assert (report.video_codec, report.audio_codec) == ("h264", "aac"), f"{where}: {report.summary()}"
        assert (report.width, report.height) == (clip.width, clip.height), f"{where}: {report.summary()}"
        assert report.first_video_frame_key, f"{where}: {report.summary()}"
        assert report.non_monotonic() == [], f"{where}: {report.summary()}"
        frames_expected = seg.duration_s * clip.fps
        assert abs(report.video_frames - frames_expected) <= 2, f"{where}: {report.summary()}"
        audio_expected = seg.duration_s * clip.sample_rate / 1024
        assert abs(report.audio_frames - audio_expected) <= 5, f"{where}: {report.summary()}"
        # Segments follow each other: the next one starts one frame after this one ends.
        start_ms, end_ms = min(report.video_pts_ms), max(report.video_pts_ms)
        if previous_end_ms is not None:
            assert abs(start_ms - previous_end_ms - clip.frame_interval_ms) <= 5, (
                f"{where} starts at {start_ms:.0f} ms; the previous segment ended at {previous_end_ms:.0f} ms"
            )
        previous_end_ms = end_ms


async def test_a_segment_that_never_existed_is_404(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    async with aiohttp.ClientSession() as http:
        poller = server.hls_poller(stream_name, http)
        pl = await poller.poll_until(lambda p: len(p.segments) >= 1, timeout_s=15, fetch_segments=False)
        uri = pl.segments[-1].uri
        numbers = list(re.finditer(r"\d+", uri))
        assert numbers, f"segment URI {uri!r} has no number to change"
        last = numbers[-1]
        never = uri[: last.start()] + "987654321" + uri[last.end() :]
        url = urljoin(server.hls_url(stream_name), never)
        async with http.get(url) as resp:
            assert resp.status == 404, f"GET {never} answered {resp.status}"


async def test_a_stream_that_does_not_exist_answers_404_over_hls(server):
    async with aiohttp.ClientSession() as http:
        async with http.get(server.hls_url("no-such-stream")) as resp:
            assert resp.status == 404


async def test_the_playlist_carries_an_etag_that_answers_304_until_it_changes(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    async with aiohttp.ClientSession() as http:
        poller = server.hls_poller(stream_name, http)
        await poller.poll_until(lambda p: len(p.segments) >= 1, timeout_s=15, fetch_segments=False)
        async with http.get(server.hls_url(stream_name)) as resp:
            assert resp.status == 200
            etag = resp.headers.get("ETag")
            body = await resp.read()
        assert etag, resp.headers
        async with http.get(server.hls_url(stream_name), headers={"If-None-Match": etag}) as again:
            # 304 while the playlist is the same; a segment closed meanwhile gives the new one
            assert again.status in (200, 304)
            if again.status == 200:
                assert await again.read() != body and again.headers.get("ETag") != etag
            else:
                assert await again.read() == b""


async def test_a_player_on_a_kept_alive_connection_is_answered_by_the_fast_lane(server, publish, media, stream_name):
    """Playlist and segment GETs after the first take the fast lane (edge/fastlane.py), which answers with the
    same bytes and headers as the full stack but without aiohttp's Server header."""
    publish(server, stream_name, media.av, loop=True)
    connector = aiohttp.TCPConnector(limit=1)  # one connection, kept alive
    async with aiohttp.ClientSession(connector=connector) as http:
        poller = server.hls_poller(stream_name, http)
        pl = await poller.poll_until(lambda p: len(p.segments) >= 1, timeout_s=15, fetch_segments=False)
        url = urljoin(server.hls_url(stream_name), pl.segments[-1].uri)
        answers = []
        for _ in range(5):
            # A player's requests come apart (a segment every few seconds): the lane takes a request once
            # aiohttp's side of the connection is idle again, which a busy machine may delay a moment.
            await asyncio.sleep(0.2)
            async with http.get(url) as resp:
                answers.append((resp.status, dict(resp.headers), await resp.read()))
    assert all(status == 200 for status, _, _ in answers)
    assert len({body for _, _, body in answers}) == 1, "the same segment, the same bytes"
    lane = [headers for _, headers, _ in answers if "Server" not in headers]
    assert lane, "no answer came from the fast lane"
    for headers in lane:
        assert headers["Content-Type"] == "video/mp2t" and "immutable" in headers["Cache-Control"], headers
        assert int(headers["Content-Length"]) == len(answers[0][2])
        assert "Access-Control-Allow-Origin" in headers and "Date" in headers, headers
