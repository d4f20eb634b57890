"""Tests of the benchmark tools' own parts: parsers fed with bytes, the /proc sampler on real processes,
and the viewer clients against a small aiohttp server. Run with `pytest bench/test_bench_tools.py`."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time

import pytest
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _procstats  # noqa: E402
from _flv_viewers import FlvError, FlvTagScanner, first_keyframe_ms, open_viewer  # noqa: E402
from _hls_viewers import (  # noqa: E402
    HlsPlayer,
    ListingProbe,
    PlayerStats,
    PlaylistError,
    parse_media_playlist,
    resolve,
    ts_first_video_pts,
)
from _http import MAX_HEAD, HttpError, HttpResponseParser, parse_head  # noqa: E402
from _latency import SendLog, listing_delays, match_delays  # noqa: E402
from _media import FlvFormatError, FlvTag, is_keyframe_body, loop_duration_ms, parse_flv  # noqa: E402
from _report import pct, summary  # noqa: E402

# ------------------------------------------------------------------ helpers

AVC_SEQ = bytes([0x17, 0x00, 0, 0, 0]) + b"\x01\x64\x00\x1f\xff"
AVC_KEY = bytes([0x17, 0x01, 0, 0, 0x43]) + b"\x00" * 200
AVC_INTER = bytes([0x27, 0x01, 0, 0, 0x43]) + b"\x00" * 50
AAC_SEQ = bytes([0xAF, 0x00, 0x11, 0x90])
AAC_RAW = bytes([0xAF, 0x01]) + b"\x21" * 30
META = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"
FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"


def tag(kind: int, ts: int, body: bytes) -> bytes:
    n = len(body)
    head = bytes([kind, n >> 16 & 255, n >> 8 & 255, n & 255, ts >> 16 & 255, ts >> 8 & 255, ts & 255, ts >> 24 & 255,
                  0, 0, 0])
    return head + body + (n + 11).to_bytes(4, "big")


def sample_flv(seconds: int = 4) -> bytes:
    """A small FLV stream: metadata, configs, then 30 fps video with a keyframe every 2 s, and audio."""
    out = [FLV_HEADER, tag(18, 0, META), tag(9, 0, AVC_SEQ), tag(8, 0, AAC_SEQ)]
    for i in range(seconds * 30):
        ts = i * 1000 // 30
        out.append(tag(9, ts, AVC_KEY if i % 60 == 0 else AVC_INTER))
        out.append(tag(8, ts, AAC_RAW))
    return b"".join(out)


def feed_split(parser, data: bytes, sizes) -> None:
    pos = 0
    for n in sizes:
        if pos >= len(data):
            break
        parser.feed(data, pos, min(len(data), pos + n))
        pos += n
    if pos < len(data):
        parser.feed(data, pos, len(data))


class Collect:
    def __init__(self) -> None:
        self.heads: list[tuple[int, dict]] = []
        self.body = bytearray()
        self.ends = 0

    def parser(self) -> HttpResponseParser:
        return HttpResponseParser(lambda s, h: self.heads.append((s, h)),
                                  lambda b, s, e: self.body.extend(b[s:e]), self._end)

    def _end(self) -> None:
        self.ends += 1


def chunked(body: bytes, size: int) -> bytes:
    out = []
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out.append(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    return b"".join(out) + b"0\r\n\r\n"


# ------------------------------------------------------------------ HTTP parser


def test_content_length_response_body_arrives_whole_at_any_split():
    body = bytes(range(256)) * 40
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: b\r\n\r\n" % len(body) + body
    for size in (1, 2, 3, 7, 100, 10000):
        c = Collect()
        feed_split(c.parser(), raw, [size] * len(raw))
        assert c.heads == [(200, {"content-length": str(len(body)), "x-a": "b"})]
        assert bytes(c.body) == body and c.ends == 1


def test_chunked_body_with_extensions_and_trailers_is_dechunked_at_every_split():
    body = os.urandom(3000)
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunked(body, 700).replace(b"0\r\n\r\n", b"0;ext=1\r\nX-Trailer: 1\r\n\r\n"))
    raw = raw.replace(b"2bc\r\n", b"2bc;name=value\r\n", 1)
    for size in (1, 2, 5, 64, 4096):
        c = Collect()
        feed_split(c.parser(), raw, [size] * len(raw))
        assert bytes(c.body) == body and c.ends == 1


def test_two_keep_alive_responses_in_one_read_are_both_parsed():
    raw = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
           b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
    c = Collect()
    c.parser().feed(raw, 0, len(raw))
    assert [s for s, _ in c.heads] == [200, 404] and bytes(c.body) == b"abcx" and c.ends == 2


def test_body_without_length_runs_until_close():
    c = Collect()
    p = c.parser()
    raw = b"HTTP/1.0 200 OK\r\n\r\nstream bytes"
    p.feed(raw, 0, len(raw))
    assert c.ends == 0 and bytes(c.body) == b"stream bytes"
    assert p.feed_eof() is True and c.ends == 1


def test_no_content_and_zero_length_responses_end_at_the_head():
    c = Collect()
    raw = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    c.parser().feed(raw, 0, len(raw))
    assert c.ends == 2


@pytest.mark.parametrize("raw, message", [
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "bad HTTP status line"),
    (b"ICY 200 OK\r\n\r\n", "bad HTTP status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad HTTP header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n", "not followed by CRLF"),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nab", "after the end of a response"),
])
def test_malformed_responses_raise_a_clear_error(raw, message):
    c = Collect()
    with pytest.raises(HttpError, match=message):
        c.parser().feed(raw, 0, len(raw))


def test_endless_head_is_refused_before_memory_grows_unbounded():
    p = Collect().parser()
    junk = b"HTTP/1.1 200 OK\r\n" + b"X" * 1000
    with pytest.raises(HttpError, match="head exceeds"):
        for _ in range(MAX_HEAD // 1000 + 2):
            p.feed(junk, 0, len(junk))


def test_endless_chunk_size_line_is_refused():
    p = Collect().parser()
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    p.feed(head, 0, len(head))
    with pytest.raises(HttpError, match="longer than"):
        for _ in range(10):
            p.feed(b"0" * 1000, 0, 1000)


def test_header_names_are_lower_cased_and_values_trimmed():
    assert parse_head(b"HTTP/1.1 301 Moved\r\nLocation:  /x \r\nContent-Type: a") == (
        301, {"location": "/x", "content-type": "a"})


# ------------------------------------------------------------------ FLV scanner and file reader


def test_scanner_counts_tags_and_keyframes_at_every_split_size():
    data = sample_flv(4)
    for size in (1, 2, 3, 11, 13, 14, 97, 1 << 16):
        s = FlvTagScanner()
        feed_split(s, data, [size] * len(data))
        assert (s.tags, s.video_tags, s.audio_tags, s.keyframes) == (243, 121, 121, 2)
        assert s.newest_ts == 119 * 1000 // 30 and s.bytes == len(data)


def test_scanner_reports_each_tag_when_its_last_byte_arrives():
    data = FLV_HEADER + tag(9, 40, AVC_KEY)
    seen = []
    s = FlvTagScanner(lambda k, ts, kf: seen.append((k, ts, kf)))
    s.feed(data, 0, len(data) - 1)
    assert seen == []
    s.feed(data, len(data) - 1, len(data))
    assert seen == [(9, 40, True)]


def test_scanner_tells_sequence_headers_and_inter_frames_from_keyframes():
    enhanced_key = bytes([0x90 | 1]) + b"hvc1" + b"\0\0\0" + b"\0" * 20  # frame type 1, coded frames
    enhanced_seq = bytes([0x90 | 0]) + b"hvc1" + b"\0" * 20
    data = FLV_HEADER + b"".join(tag(9, i, b) for i, b in enumerate([AVC_SEQ, AVC_INTER, AVC_KEY, enhanced_seq,
                                                                     enhanced_key]))
    s = FlvTagScanner()
    s.feed(data, 0, len(data))
    assert s.keyframes == 2 and s.video_tags == 5


@pytest.mark.parametrize("data, message", [
    (b"FLX\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00", "not an FLV header"),
    (b"FLV\x01\x05\x00\x00\x00\x02\x00\x00\x00\x00", "DataOffset 2 is invalid"),
    (FLV_HEADER + b"\x07" + b"\x00" * 20, "tag type 7"),
])
def test_scanner_rejects_a_stream_that_is_not_flv(data, message):
    with pytest.raises(FlvError, match=message):
        FlvTagScanner().feed(data, 0, len(data))


def test_scanner_does_not_buffer_tag_bodies():
    big = FLV_HEADER + tag(9, 0, bytes([0x17, 1]) + b"\0" * 5_000_000)
    s = FlvTagScanner()
    feed_split(s, big, [65536] * 100)
    assert s.keyframes == 1 and len(s._part) == 0


def test_flv_file_round_trips_through_parse_flv():
    tags = parse_flv(sample_flv(2))
    assert len(tags) == 3 + 120
    assert [t.kind for t in tags[:3]] == [18, 9, 8] and all(t.is_config for t in tags[:3])
    assert sum(t.is_video_keyframe for t in tags) == 1
    assert loop_duration_ms(tags) == 59 * 1000 // 30 + 33  # last video timestamp + one frame


@pytest.mark.parametrize("data", [b"", b"FLV", b"NOT AN FLV FILE AT ALL", sample_flv(1)[:-3], sample_flv(1)[:20]])
def test_truncated_or_foreign_flv_files_are_refused(data):
    with pytest.raises(FlvFormatError):
        parse_flv(data)


def test_keyframe_body_detection_covers_legacy_and_enhanced_video():
    assert is_keyframe_body(AVC_KEY) and not is_keyframe_body(AVC_SEQ) and not is_keyframe_body(AVC_INTER)
    assert not is_keyframe_body(b"")
    assert FlvTag(9, 0, AVC_SEQ).is_config and not FlvTag(9, 0, AVC_KEY).is_config


# ------------------------------------------------------------------ HLS playlist and TS


PLAYLIST = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:41
#EXTINF:2.002,
seg-41.ts
#EXT-X-DISCONTINUITY
#EXTINF:1.5,title
sub/seg-42.ts?x=1
"""


def test_media_playlist_segments_get_their_sequence_numbers():
    pl = parse_media_playlist(PLAYLIST)
    assert pl.target_duration_s == 2 and pl.media_sequence == 41 and not pl.ended
    assert [(s.msn, s.duration_s, s.uri) for s in pl.segments] == [(41, 2.002, "seg-41.ts"),
                                                                   (42, 1.5, "sub/seg-42.ts?x=1")]
    assert parse_media_playlist(PLAYLIST + "#EXT-X-ENDLIST\n").ended


@pytest.mark.parametrize("text, message", [
    ("", "does not start with #EXTM3U"),
    ("#EXTM3U\n#EXTINF:2,\na.ts\n", "no #EXT-X-TARGETDURATION"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:2\na.ts\n", "has no #EXTINF"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:two\n", "bad value"),
    ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow.m3u8\n", "multivariant"),
])
def test_bad_playlists_are_refused_with_the_reason(text, message):
    with pytest.raises(PlaylistError, match=message):
        parse_media_playlist(text)


def test_segment_uris_resolve_against_the_playlist_path():
    assert resolve("/live/x/index.m3u8?t=1", "seg-1.ts") == "/live/x/seg-1.ts"
    assert resolve("/live/x/index.m3u8", "/abs/seg.ts") == "/abs/seg.ts"
    assert resolve("/live/x/index.m3u8", "http://h:1/a/b.ts") == "/a/b.ts"


def ts_packet_with_pes(stream_id: int, pts: int, adaptation: int = 0) -> bytes:
    pes = bytes([0, 0, 1, stream_id, 0, 0, 0x80, 0x80, 5,
                 0x21 | ((pts >> 29) & 0x0E), (pts >> 22) & 0xFF, 0x01 | ((pts >> 14) & 0xFE),
                 (pts >> 7) & 0xFF, 0x01 | ((pts << 1) & 0xFE)])
    if adaptation:
        head = bytes([0x47, 0x41, 0x00, 0x30, adaptation - 1]) + b"\xff" * (adaptation - 1)
    else:
        head = bytes([0x47, 0x41, 0x00, 0x10])
    return (head + pes).ljust(188, b"\xff")


def test_first_video_pts_is_read_from_the_pes_header():
    pts = (1 << 32) + 123_456
    audio = ts_packet_with_pes(0xC0, 99)
    assert ts_first_video_pts(audio + ts_packet_with_pes(0xE0, pts, adaptation=8)) == pts
    assert ts_first_video_pts(audio) is None
    assert ts_first_video_pts(b"") is None
    with pytest.raises(ValueError, match="sync byte"):
        ts_first_video_pts(b"\x00" * 188)


# ------------------------------------------------------------------ latency matching


def test_live_delay_matches_sent_and_received_tags_after_the_viewer_joined():
    log = SendLog(sent_at={(9, 0): 10.0, (9, 33): 10.033, (8, 33): 10.033, (9, 66): 10.066})
    arrivals = {(9, 0): 10.5, (9, 33): 10.133, (8, 33): 10.083}
    d = match_delays(log, arrivals, since=10.01)
    assert [round(x) for x in d["video"]] == [100] and [round(x) for x in d["audio"]] == [50]
    assert d["unmatched"] == [66]


def test_segment_listing_delay_is_measured_from_the_segments_last_frame():
    # Keyframes every 2 s (pts = dts + 67 ms), frames every 100 ms sent at 100 + dts/1000 s.
    log = SendLog()
    for dts in range(0, 8000, 100):
        sent = 100 + dts / 1000
        log.video.append((dts, sent))
        if dts % 2000 == 0:
            log.keyframes.append((dts, dts + 67, sent))
    offset = 126_000  # the muxer's constant PTS offset (1.4 s)
    first_pts = {5: (67 * 90 + offset), 6: (2067 * 90 + offset)}
    first_seen = {5: 100 + 2.0 + 0.25, 6: 100 + 4.0 + 0.05}  # listed 250 ms / 50 ms after the closing keyframe
    res = listing_delays(log, first_seen, first_pts, {5: 2.0, 6: 2.0})
    assert res["delays_ms"] == [350.0, 150.0]  # the last frame went out 100 ms before the closing keyframe
    assert res["ts_offset_ms"] == 1400.0


def test_percentiles_interpolate_and_summaries_handle_no_data():
    assert pct([1, 2, 3, 4], 50) == 2.5 and pct([5], 95) == 5 and pct([], 50) is None
    assert summary([])["count"] == 0 and summary([1.0, 3.0])["max"] == 3.0


# ------------------------------------------------------------------ /proc sampler


def test_process_tree_cpu_includes_children_and_grows_while_they_work():
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ntime.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess,sys,time\np=subprocess.Popen([sys.executable,'-c',{burn!r}])\n"
                               "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while True:
            s = _procstats.sample_tree(parent.pid)
            if len(s.pids) == 2 and s.cpu_s >= 0.3:
                break
            assert time.monotonic() < deadline, f"tree {s} never showed the child's CPU"
            time.sleep(0.05)
        assert s.pids[0] == parent.pid and s.rss_bytes > 0 and s.hwm_bytes >= s.rss_bytes
    finally:
        for pid in _procstats.tree_pids(parent.pid)[::-1]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        parent.wait()


def test_a_vanished_process_reads_as_none_not_an_error():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert _procstats.read_stat(p.pid) is None
    assert _procstats.sample_tree(p.pid).pids == ()
    assert _procstats.read_status_kb(p.pid) == {}


# ------------------------------------------------------------------ clients against a small server


@pytest.fixture
async def flv_server():
    data = sample_flv(6)

    async def flv(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "video/x-flv"})
        await resp.prepare(request)
        rnd = random.Random(1)
        pos = 0
        while pos < len(data):  # chunked, in uneven writes
            n = rnd.randint(1, 5000)
            await resp.write(data[pos:pos + n])
            pos += n
        await resp.write_eof()
        return resp

    state = {"listed": 2}

    async def playlist(request: web.Request) -> web.Response:
        n = state["listed"]
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{max(0, n - 3)}"]
        for m in range(max(0, n - 3), n):
            lines += ["#EXTINF:0.2,", f"seg-{m}.ts"]
        return web.Response(text="\n".join(lines) + "\n")

    async def segment(request: web.Request) -> web.Response:
        m = int(request.match_info["m"])
        return web.Response(body=ts_packet_with_pes(0xE0, 90 * 200 * m) * 100)

    app = web.Application()
    app.router.add_get("/live/a.flv", flv)
    app.router.add_get("/live/a/index.m3u8", playlist)
    app.router.add_get(r"/live/a/seg-{m:\d+}.ts", segment)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield port, data, state
    await runner.cleanup()


async def test_flv_viewer_counts_a_chunked_stream_and_sees_its_end(flv_server):
    port, data, _ = flv_server
    v = await open_viewer("127.0.0.1", port, "/live/a.flv")
    for _ in range(200):
        if v.closed_at:
            break
        await asyncio.sleep(0.01)
    assert v.status == 200 and v.error is None and v.ended
    assert (v.scanner.tags, v.scanner.keyframes) == (3 + 6 * 60, 3)
    assert v.scanner.bytes == len(data)


async def test_first_keyframe_probe_times_the_first_picture_and_gives_none_on_404(flv_server):
    port, _, _ = flv_server
    ms = await first_keyframe_ms("127.0.0.1", port, "/live/a.flv", 5)
    assert ms is not None and 0 < ms < 5000
    assert await first_keyframe_ms("127.0.0.1", port, "/live/missing.flv", 5) is None


async def test_hls_player_fetches_each_new_segment_once(flv_server):
    port, _, state = flv_server
    stop = asyncio.Event()
    stats = PlayerStats(stream=0)
    first_seen: dict[int, float] = {}
    lat = {"playlist": [], "segment": []}
    p = HlsPlayer("127.0.0.1", port, "/live/a/index.m3u8", stats, first_seen, lat, (0, time.monotonic() + 100))
    task = asyncio.ensure_future(p.run(stop))
    for n in range(3, 8):
        await asyncio.sleep(0.25)
        state["listed"] = n
    await asyncio.sleep(0.7)
    stop.set()
    await task
    assert sorted(stats.fetched) == list(range(1, 7)) and stats.segments == 6 and stats.errors == 0
    assert stats.started_msn == 1 and stats.bytes == 6 * 188 * 100
    assert set(first_seen) == set(range(0, 7))


async def test_listing_probe_records_first_appearance_and_first_pts(flv_server):
    port, _, state = flv_server
    stop = asyncio.Event()
    probe = ListingProbe("127.0.0.1", port, "/live/a/index.m3u8", 0.02)
    task = asyncio.ensure_future(probe.run(stop))
    await asyncio.sleep(0.2)
    state["listed"] = 3
    await asyncio.sleep(0.2)
    stop.set()
    await task
    assert sorted(probe.first_seen) == [0, 1, 2] and probe.first_listed_at is not None
    assert probe.first_seen[2] > probe.first_seen[1]
    assert probe.first_pts == {0: 0, 1: 18000, 2: 36000}


# ------------------------------------------------------------------ the whole tool, end to end

LOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "load.py")


def run_load(tmp_path, *argv: str) -> dict:
    proc = subprocess.run([sys.executable, LOAD, *argv, "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    import json

    return json.loads(path.read_text())


@pytest.mark.timeout(180)
def test_flv_command_against_the_fake_server_sees_every_viewer_keep_up(tmp_path):
    out = run_load(tmp_path, "flv", "--server", "fake", "--viewers", "20", "--duration", "3", "--warmup", "2",
                   "--late-joiners", "2")
    r = out["results"]
    assert r["viewers"]["kept_up"] == 20 and r["late_joiner"]["failed"] == 0
    assert r["cpu"]["server_cpu_s"] >= 0 and r["viewers"]["throughput_gbit_s"] > 0.03


def _server_importable() -> bool:
    try:
        import mediaserver.cli  # noqa: F401
        import mediaserver.rtmp.client  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.timeout(180)
@pytest.mark.skipif(not _server_importable(), reason="mediaserver's server or RTMP client is not importable")
def test_latency_command_measures_live_delay_with_the_python_publisher(tmp_path):
    out = run_load(tmp_path, "latency", "--duration", "5", "--late-joiners", "2")
    r = out["results"]
    assert r["publisher"].startswith("python")
    assert r["live_delay_ms"]["video"]["count"] > 100 and r["live_delay_ms"]["video"]["p50"] < 1000
    assert r["late_joiner"]["failed"] == 0
    assert 1.5 < r["hls"]["first_segment_listed_after_first_media_s"] < 10
